"""ttsnn's accelerator model: layer workloads, systolic-array cycles (SCALE-Sim closed forms),
SATA's BPTT energy model and schedules of TT-SNN cores (docs/hw.md).

Pure Python (PyYAML, pydantic): no torch, no simulator. Everything returns JSON-ready data;
nothing prints.
"""

from hw.config import AcceleratorConfig, AcceleratorConfigError, load_accelerator, preset_names
from hw.cycles import gemm_cycles, sata_inference_cycles, sata_layer_cycles
from hw.energy import ENERGY_PRESETS, EnergyModel, energy_preset, training_energy
from hw.schedule import SCHEDULES, compare_schedules, simulate_schedules
from hw.workload import (Gemm, LayerWorkload, dense_equivalent, from_csv, tt_conv1d_cores, tt_cores, tt_matrix_steps,
                         workload_path)

__all__ = [
    "AcceleratorConfig",
    "AcceleratorConfigError",
    "ENERGY_PRESETS",
    "EnergyModel",
    "Gemm",
    "LayerWorkload",
    "SCHEDULES",
    "compare_schedules",
    "dense_equivalent",
    "energy_preset",
    "from_csv",
    "gemm_cycles",
    "load_accelerator",
    "preset_names",
    "sata_inference_cycles",
    "sata_layer_cycles",
    "simulate_schedules",
    "training_energy",
    "tt_conv1d_cores",
    "tt_cores",
    "tt_matrix_steps",
    "workload_path",
]

"""Run SCALE-Sim itself (PyPI `scalesim` 3.0.0, the `scalesim` extra) on our GEMMs, to check `cycles.py`.

Why: `hw.cycles` uses closed forms for SCALE-Sim's compute cycles (docs/hw.md). This module
drives the simulator on the same array and dataflow so a test can compare the two (tests/
test_hw_scalesim.py; the measured agreement is in hw/README.md).

How: a config file and a GEMM topology file (SCALE-Sim's `M, N, K` rows) are written to a temporary
folder and read by SCALE-Sim's own parsers (`scalesim.scale_sim.scalesim`); for each layer SCALE-Sim
builds its operand matrices and runs its systolic compute model (`systolic_compute_os/ws/is`), whose
demand matrices hold one row per array cycle. `simulated_cycles` returns that count of cycles.
With `memory=True` the layer also runs through SCALE-Sim's double-buffered memory model and the
reported `total_cycles` (its "compute cycles" column) is returned instead; that path needs
numpy < 2.3 (scalesim 3.0.0 calls int() on 1-element arrays, an error in newer numpy).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hw.workload import Gemm

_CONFIG = """[general]
run_name = ttsnn

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 65536
FilterSramSzkB: 65536
OfmapSramSzkB: 65536
IfmapOffset: 0
FilterOffset: 100000000
OfmapOffset: 200000000
Bandwidth: 1000
Dataflow: {dataflow}
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 1000
IfmapSRAMBankNum: 1
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 1000
FilterSRAMBankNum: 1
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def simulated_cycles(gemms: list[Gemm], *, rows: int, cols: int, dataflow: str = "os",
                     memory: bool = False) -> list[int]:
    """SCALE-Sim's cycles for each GEMM ``A[M, K] @ B[K, N]`` on a rows x cols array (see the
    module docstring for what is counted). Imports scalesim lazily: it is an optional extra."""
    from scalesim.scale_sim import scalesim
    from scalesim.single_layer_sim import single_layer_sim

    with tempfile.TemporaryDirectory(prefix="ttsnn-scalesim-") as folder:
        root = Path(folder)
        config = root / "ttsnn.cfg"
        config.write_text(_CONFIG.format(rows=rows, cols=cols, dataflow=dataflow))
        topology = root / "gemms.csv"
        lines = ["Layer, M, N, K,"] + [f"g{i}, {g.m}, {g.n}, {g.k}," for i, g in enumerate(gemms)]
        topology.write_text("\n".join(lines) + "\n")
        layout = root / "layout.csv"
        layout.write_text("Layer name,\n")
        sim = scalesim(save_disk_space=True, verbose=False, config=str(config), topology=str(topology),
                       layout=str(layout), input_type_gemm=True)
        cycles = []
        for index in range(len(gemms)):
            layer = single_layer_sim()
            layer.set_params(layer_id=index, config_obj=sim.config, topology_obj=sim.topo, layout_obj=sim.layout,
                             verbose=False)
            if memory:
                layer.run()
                layer.calc_report_data()
                cycles.append(int(layer.total_cycles))
                continue
            _, ifmap = layer.op_mat_obj.get_ifmap_matrix()
            _, weights = layer.op_mat_obj.get_filter_matrix()
            _, ofmap = layer.op_mat_obj.get_ofmap_matrix()
            layer.compute_system.set_params(config_obj=sim.config, ifmap_op_mat=ifmap, filter_op_mat=weights,
                                            ofmap_op_mat=ofmap)
            demand, _, _ = layer.compute_system.get_demand_matrices()
            cycles.append(int(demand.shape[0]))
        return cycles

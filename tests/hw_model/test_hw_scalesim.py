"""hw.cycles against SCALE-Sim itself (PyPI scalesim 3.0.0, `pip install -e '.[scalesim]'`): our
closed-form compute cycles for the GEMMs of a dense 3x3 conv, each of its TT cores, a Conv1d and its
TT cores, and a TT-matrix Linear's contraction steps, in all three training phases (FP, BP, WG), for
the OS, WS and IS dataflows on two arrays. Skipped where scalesim is not installed.

SCALE-Sim's compute model emits one demand row per array cycle; its reported compute cycles are
that count minus one (the index of the last cycle, as in the SATA paper's published table: see hw/README.md),
so the closed form must equal rows - 1 exactly, for every shape."""

from __future__ import annotations

import pytest

pytest.importorskip("scalesim")

from hw.cycles import gemm_cycles  # noqa: E402
from hw.scalesim_bridge import simulated_cycles  # noqa: E402
from hw.workload import PHASES, LayerWorkload, tt_conv1d_cores, tt_cores, tt_matrix_steps  # noqa: E402


def _workloads() -> list[LayerWorkload]:
    conv = LayerWorkload("conv3x3", 12, 12, 3, 3, 24, 32, stride=(2, 2), padding=(1, 1))
    conv1d = LayerWorkload("conv1d", 1, 40, 1, 5, 16, 32, stride=(1, 2), padding=(0, 2))
    return [conv, *tt_cores(conv, (6, 8, 6)), conv1d, *tt_conv1d_cores(conv1d, (6, 6)),
            *tt_matrix_steps("fc", (14, 8, 7), (10, 10, 10), (8, 8))]


@pytest.mark.parametrize("rows,cols", [(16, 8), (32, 32)])
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_closed_form_cycles_match_scalesim(rows: int, cols: int, dataflow: str) -> None:
    gemms = [w.gemm(phase) for w in _workloads() for phase in PHASES]  # type: ignore[arg-type]
    simulated = simulated_cycles(gemms, rows=rows, cols=cols, dataflow=dataflow)
    closed = [gemm_cycles(g, rows=rows, cols=cols, dataflow=dataflow) for g in gemms]  # type: ignore[arg-type]
    mismatches = [(g, s - 1, c) for g, s, c in zip(gemms, simulated, closed) if s - 1 != c]
    assert not mismatches, mismatches

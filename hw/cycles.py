"""Compute cycles of a systolic array: SCALE-Sim's closed forms (docs/hw.md, "What is
modelled": Cycles) and SATA_Sim's inference dataflow.

Why closed forms: SCALE-Sim's compute-cycle counts follow them exactly, and simulating them
cycle by cycle takes minutes per network. Cycles here are compute cycles (no DRAM prefetch).

Operand mapping of a GEMM ``A[M, K] @ B[K, N]`` (a conv has M = Ho*Wo, N = filters, K = R*S*C):
OS: Sr = M, Sc = N, Tt = K.  WS: Sr = K, Sc = N, Tt = M.  IS: Sr = K, Sc = M, Tt = N.
"""

from __future__ import annotations

from typing import Literal

from hw.workload import Gemm, LayerWorkload

Dataflow = Literal["os", "ws", "is"]
DATAFLOWS: tuple[str, ...] = ("os", "ws", "is")


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _check_array(rows: int, cols: int) -> None:
    if rows < 1 or cols < 1:
        raise ValueError(f"array must be at least 1x1, got {rows}x{cols}")


def operand_dims(gemm: Gemm, dataflow: Dataflow) -> tuple[int, int, int]:
    """(Sr, Sc, Tt) of a GEMM under a dataflow (module docstring)."""
    if dataflow == "os":
        return gemm.m, gemm.n, gemm.k
    if dataflow == "ws":
        return gemm.k, gemm.n, gemm.m
    if dataflow == "is":
        return gemm.k, gemm.m, gemm.n
    raise ValueError(f"unknown dataflow {dataflow!r} (allowed: {', '.join(DATAFLOWS)})")


def folds(sr: int, sc: int, rows: int, cols: int) -> int:
    """F = ceil(Sr/rows) * ceil(Sc/cols)."""
    _check_array(rows, cols)
    return _cdiv(sr, rows) * _cdiv(sc, cols)


def gemm_cycles(gemm: Gemm, *, rows: int, cols: int, dataflow: Dataflow = "os", version: int = 3) -> int:
    """Compute cycles of one GEMM.

    v3: OS = F*(Tt + rows + cols - 2) - 1; WS, IS = F*(Tt + 2*rows + cols - 2) - 1.
    v2 (SATA_Sim's fork), OS only: the v3 value minus (cols - c_last),
    c_last = Sc - (ceil(Sc/cols) - 1)*cols.
    """
    sr, sc, tt = operand_dims(gemm, dataflow)
    f = folds(sr, sc, rows, cols)
    if dataflow == "os":
        cycles = f * (tt + rows + cols - 2) - 1
    else:
        cycles = f * (tt + 2 * rows + cols - 2) - 1
    if version == 3:
        return cycles
    if version == 2:
        if dataflow != "os":
            raise ValueError("SCALE-Sim v2 closed form is known for the OS dataflow only")
        c_last = sc - (_cdiv(sc, cols) - 1) * cols
        return cycles - (cols - c_last)
    raise ValueError(f"unknown SCALE-Sim version {version!r} (allowed: 2, 3)")


def conv_gemm(ih: int, iw: int, r: int, s: int, c: int, k: int, stride: int | tuple[int, int] = 1) -> Gemm:
    """The forward GEMM of an unpadded conv as SCALE-Sim sees it (it has no padding: pass padded
    sizes), Ho = (IH - R) // stride + 1."""
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ho, wo = (ih - r) // sh + 1, (iw - s) // sw + 1
    return Gemm(ho * wo, k, r * s * c)


def ws_filter_load_span(gemm: Gemm, *, rows: int, cols: int) -> int:
    """SCALE-Sim v2's WS filter-load span, F*(Tt + 2*rows + cols - 2) - (Tt + rows + cols - 2) - 1
    (0-4 cycles off the simulator): the cycles to cycle the weights through once."""
    sr, sc, tt = operand_dims(gemm, "ws")
    f = folds(sr, sc, rows, cols)
    return f * (tt + 2 * rows + cols - 2) - (tt + rows + cols - 2) - 1


def sata_layer_cycles(layer: LayerWorkload, timesteps: int, *, rows: int = 16, cols: int = 8) -> int:
    """SATA_Sim's per-layer inference cycles: steps * OS_v2 + WS filter-load span (weights loaded
    once, spikes streamed for every step; sparsity does not shorten cycles).

    Quirks of SATA_Sim's runs kept on purpose (docs/hw.md): OS uses Ho = (H - R) // S + 1 on the padded
    size (SATA_Sim's CSVs are unpadded, so the padding is 0 there); the WS span of a strided layer
    uses Ho = ceil(H / S).
    """
    h = layer.ih + 2 * layer.padding[0]
    w = layer.iw + 2 * layer.padding[1]
    os_gemm = conv_gemm(h, w, layer.r, layer.s, layer.c, layer.k, layer.stride)
    if layer.stride != (1, 1):
        ws_gemm = Gemm(_cdiv(h, layer.stride[0]) * _cdiv(w, layer.stride[1]), layer.k, layer.window)
    else:
        ws_gemm = os_gemm
    steps = layer.steps(timesteps)
    return (steps * gemm_cycles(os_gemm, rows=rows, cols=cols, dataflow="os", version=2)
            + ws_filter_load_span(ws_gemm, rows=rows, cols=cols))


def sata_inference_cycles(layers: list[LayerWorkload], timesteps: int, *, rows: int = 16,
                          cols: int = 8) -> dict[str, object]:
    """Total SATA_Sim inference cycles of a workload (sum of :func:`sata_layer_cycles`), with the
    per-layer values: ``{"cycles": int, "layers": [{"name", "cycles"}, ...]}``.

    Reproduces SATA_Sim's ResNet19 baseline (T=4: 20,276,593) and, within 4 cycles, its ResNet34
    STT run (T=6: 20,096,167; this closed form gives 20,096,171)."""
    per_layer = [{"name": layer.name, "cycles": sata_layer_cycles(layer, timesteps, rows=rows, cols=cols)}
                 for layer in layers]
    return {"cycles": sum(int(entry["cycles"]) for entry in per_layer), "layers": per_layer}

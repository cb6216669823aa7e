"""Layer workloads: the shapes the accelerator model works on, independent of torch.

A :class:`LayerWorkload` is one convolution (or linear layer, a 1x1 conv on a 1x1 map) as the
accelerator sees it. A TT layer is four workloads tagged with their ``branch`` (``tt_first`` 1x1
C->r1, ``tt_h`` kh x 1 r1->r2, ``tt_w`` 1 x kw r2->r3, ``tt_last`` 1x1 r3->K) and a common ``group``
(the dense layer they replace), so schedules can run PTT's two middle cores concurrently and HTT's
reduced steps can skip them (the TT-SNN paper, "The three modes").
A TT Conv1d is three workloads (``tt_first``, ``tt_w`` 1 x k, ``tt_last``: one spatial axis, the
width); a TT-matrix Linear is one GEMM per contraction step (``tt_first``, ``tt_mid``..., ``tt_last``,
kind ``linear``; ``tt_mid`` runs every step, no neuron follows it).

Per layer and timestep it derives the three BPTT GEMMs (docs/hw.md, "What is modelled":
Cycles) as ``(M, N, K)`` = (output rows, output columns, reduction length) of ``A[M,K] @ B[K,N]``:

- FP (forward):        M = Ho*Wo (ofmap pixels), N = K (filters),  K = R*S*C (window);
- BP (input gradient): M = IH*IW (ifmap pixels), N = C (channels), K = R*S*K (transposed window);
- WG (weight gradient): M = R*S*C (weight rows), N = K (filters),  K = Ho*Wo (ofmap pixels).

Their MAC counts are SATA's counts: FP and WG C*R*S*K*E^2, BP C*R*S*K*H^2 (per timestep).
"""

from __future__ import annotations

import csv
import math
import operator
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

Kind = Literal["conv", "linear"]
Branch = Literal["dense", "tt_first", "tt_h", "tt_w", "tt_mid", "tt_last"]
ActiveSteps = Literal["all", "first_half"]
Phase = Literal["fp", "bp", "wg"]

BRANCHES: tuple[str, ...] = ("dense", "tt_first", "tt_h", "tt_w", "tt_mid", "tt_last")
MIDDLE_BRANCHES: tuple[str, ...] = ("tt_h", "tt_w")
PHASES: tuple[str, ...] = ("fp", "bp", "wg")
CSV_COLUMNS: tuple[str, ...] = (
    "name", "ifmap_h", "ifmap_w", "filter_h", "filter_w", "channels", "num_filter", "stride",
)


@dataclass(frozen=True)
class Gemm:
    """One GEMM ``A[m, k] @ B[k, n]``: ``m * n`` outputs, each a length-``k`` reduction."""

    m: int
    n: int
    k: int

    @property
    def macs(self) -> int:
        return self.m * self.n * self.k


@dataclass(frozen=True)
class LayerWorkload:
    """One conv/linear layer (or TT core) as the accelerator sees it.

    ``ih, iw`` input map, ``r, s`` kernel, ``c`` input channels, ``k`` filters. ``spike_input`` says
    whether the forward operands are binary spikes (accumulates, ACs) or real values (MACs): only a
    TT layer's first core sees spikes; cores 2-4 take real values (docs/hw.md, Energy).
    ``active_steps``: ``"first_half"`` runs only for t < ceil(T/2) (HTT's middle cores).
    ``group`` names the dense layer a TT core belongs to ("" for dense layers).
    """

    name: str
    ih: int
    iw: int
    r: int
    s: int
    c: int
    k: int
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    kind: Kind = "conv"
    branch: Branch = "dense"
    spike_input: bool = True
    active_steps: ActiveSteps = "all"
    group: str = ""

    def __post_init__(self) -> None:
        # accept numpy/torch integers and int stride/padding; store plain ints and pairs
        for key in ("ih", "iw", "r", "s", "c", "k"):
            value = getattr(self, key)
            if not isinstance(value, bool) and hasattr(value, "__index__"):
                object.__setattr__(self, key, operator.index(value))
        for key in ("stride", "padding"):
            value = getattr(self, key)
            pair = (value, value) if hasattr(value, "__index__") else tuple(value)
            object.__setattr__(self, key, tuple(operator.index(v) for v in pair))
        dims = {"ih": self.ih, "iw": self.iw, "r": self.r, "s": self.s, "c": self.c, "k": self.k}
        bad = [f"{key}={val!r}" for key, val in dims.items()
               if isinstance(val, bool) or not isinstance(val, int) or val < 1]
        bad += ["stride/padding must be pairs"] if len(self.stride) != 2 or len(self.padding) != 2 else []
        bad += [f"stride={self.stride}"] if min(self.stride) < 1 else []
        bad += [f"padding={self.padding}"] if min(self.padding) < 0 else []
        if self.branch not in BRANCHES:
            bad.append(f"branch={self.branch!r} (allowed: {', '.join(BRANCHES)})")
        if self.active_steps not in ("all", "first_half"):
            bad.append(f"active_steps={self.active_steps!r} (allowed: all, first_half)")
        if not bad and (self.ih + 2 * self.padding[0] < self.r or self.iw + 2 * self.padding[1] < self.s):
            bad.append("kernel larger than the padded input")
        if bad:
            raise ValueError(f"layer {self.name!r}: invalid " + ", ".join(bad))

    # --- shapes -------------------------------------------------------------------------------
    @property
    def ho(self) -> int:
        """Output height, Ho = (IH + 2p - R) // stride + 1."""
        return (self.ih + 2 * self.padding[0] - self.r) // self.stride[0] + 1

    @property
    def wo(self) -> int:
        """Output width, Wo = (IW + 2p - S) // stride + 1."""
        return (self.iw + 2 * self.padding[1] - self.s) // self.stride[1] + 1

    @property
    def out_pixels(self) -> int:
        """SATA's E^2: Ho * Wo."""
        return self.ho * self.wo

    @property
    def in_pixels(self) -> int:
        """SATA's H^2: IH * IW (unpadded input)."""
        return self.ih * self.iw

    @property
    def window(self) -> int:
        """R * S * C: one output's reduction length."""
        return self.r * self.s * self.c

    @property
    def weights(self) -> int:
        """K * C * R * S."""
        return self.k * self.window

    @property
    def macs_per_step(self) -> int:
        """Forward MACs per timestep, C*R*S*K*E^2."""
        return self.weights * self.out_pixels

    @property
    def has_neuron(self) -> bool:
        """Whether a LIF neuron follows (dense layers and a TT layer's last core only)."""
        return self.branch in ("dense", "tt_last")

    def steps(self, timesteps: int) -> int:
        """Timesteps this layer runs: T, or ceil(T/2) for HTT's middle cores."""
        if timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {timesteps}")
        return timesteps if self.active_steps == "all" else math.ceil(timesteps / 2)

    def gemm(self, phase: Phase) -> Gemm:
        """The per-timestep GEMM of one training phase (see the module docstring)."""
        if phase == "fp":
            return Gemm(self.out_pixels, self.k, self.window)
        if phase == "bp":
            return Gemm(self.in_pixels, self.c, self.r * self.s * self.k)
        if phase == "wg":
            return Gemm(self.window, self.k, self.out_pixels)
        raise ValueError(f"unknown phase {phase!r} (allowed: {', '.join(PHASES)})")

    def element_ops(self) -> int:
        """LIF (forward) or PGU (backward) ops per timestep: K*E^2 when a neuron follows, else 0."""
        return self.k * self.out_pixels if self.has_neuron else 0


def from_csv(path: str | Path, *, first_layer_spikes: bool = False, group_tt: bool = True) -> list[LayerWorkload]:
    """Read a SATA_Sim topology CSV (``name,ifmap_h,ifmap_w,filter_h,filter_w,channels,num_filter,
    stride``; SCALE-Sim's own ``Layer name, IFMAP Height, ..., Strides,`` header works too) into
    workloads, sizes as given (SATA_Sim gave unpadded sizes).

    With ``group_tt``, four consecutive rows named ``<X>a, <X>b, <X>c, <X>d`` become the TT cores
    ``tt_first, tt_h, tt_w, tt_last`` of group ``<X>`` (SATA_Sim's naming). Rows named ``FC...``
    are linear layers. The first row's input is analog unless ``first_layer_spikes``.
    """
    path = Path(path)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh, skipinitialspace=True)
        header = [_column(h) for h in (reader.fieldnames or []) if h and h.strip()]
        missing = [col for col in CSV_COLUMNS if col not in header]
        if missing:
            raise ValueError(f"{path}: missing CSV columns {', '.join(missing)}")
        rows = [{_column(key): (val or "").strip() for key, val in row.items() if key and key.strip()}
                for row in reader if any((v or "").strip() for v in row.values() if isinstance(v, str))]
    layers: list[LayerWorkload] = []
    for i, row in enumerate(rows):
        try:
            dims = [int(row[col]) for col in CSV_COLUMNS[1:]]
        except ValueError as exc:
            raise ValueError(f"{path}: row {i + 2}: {exc}") from None
        ih, iw, r, s, c, k, st = dims
        name = row["name"]
        kind: Kind = "linear" if name.upper().startswith("FC") else "conv"
        layers.append(LayerWorkload(name, ih, iw, r, s, c, k, stride=(st, st), kind=kind,
                                    spike_input=first_layer_spikes or i > 0))
    return tag_tt_groups(layers) if group_tt else layers


#: SCALE-Sim's own topology header names -> SATA_Sim's.
_SCALESIM_HEADER = {
    "layer name": "name", "ifmap height": "ifmap_h", "ifmap width": "ifmap_w",
    "filter height": "filter_h", "filter width": "filter_w", "channels": "channels",
    "num filter": "num_filter", "strides": "stride",
}


def _column(header: str) -> str:
    key = header.strip()
    return _SCALESIM_HEADER.get(key.lower(), key)


_TT_SUFFIX = re.compile(r"^(.*?)([abcd])$")


def tag_tt_groups(layers: list[LayerWorkload]) -> list[LayerWorkload]:
    """Tag runs of four layers named ``<X>a..<X>d`` as one TT layer's cores (group ``<X>``).

    Cores 2-4 take real values (the first core's output), so they lose ``spike_input``.
    """
    out = list(layers)
    i = 0
    while i + 4 <= len(out):
        matches = [_TT_SUFFIX.match(layer.name) for layer in out[i:i + 4]]
        if all(matches) and [m.group(2) for m in matches] == list("abcd") \
                and len({m.group(1) for m in matches}) == 1:
            group = matches[0].group(1)
            for j, branch in enumerate(("tt_first", "tt_h", "tt_w", "tt_last")):
                layer = out[i + j]
                out[i + j] = replace(layer, branch=branch, group=group,
                                     spike_input=layer.spike_input and j == 0)
            i += 4
        else:
            i += 1
    return out


def tt_cores(layer: LayerWorkload, ranks: tuple[int, int, int]) -> list[LayerWorkload]:
    """Split a dense conv into its four TT cores as the exact strided chain runs them
    (the TT-SNN paper: 1x1 C->r1, kh x 1 r1->r2 stride (sh,1) padding (ph,0), 1 x kw r2->r3
    stride (1,sw) padding (0,pw), 1x1 r3->K)."""
    r1, r2, r3 = ranks
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    g = layer.name
    first = replace(layer, name=f"{g}.tt_first", r=1, s=1, k=r1, stride=(1, 1), padding=(0, 0),
                    branch="tt_first", group=g)
    h = LayerWorkload(f"{g}.tt_h", layer.ih, layer.iw, layer.r, 1, r1, r2, stride=(sh, 1),
                      padding=(ph, 0), branch="tt_h", spike_input=False, group=g)
    w = LayerWorkload(f"{g}.tt_w", h.ho, h.wo, 1, layer.s, r2, r3, stride=(1, sw), padding=(0, pw),
                      branch="tt_w", spike_input=False, group=g)
    last = LayerWorkload(f"{g}.tt_last", w.ho, w.wo, 1, 1, r3, layer.k, branch="tt_last",
                         spike_input=False, group=g)
    return [first, h, w, last]


def tt_conv1d_cores(layer: LayerWorkload, ranks: tuple[int, int]) -> list[LayerWorkload]:
    """Split a dense Conv1d (a 1 x k conv on a 1 x L map) into its three TT cores: 1x1 C->r1,
    1 x k r1->r2 with the layer's stride and padding, 1x1 r2->K."""
    r1, r2 = ranks
    g = layer.name
    first = replace(layer, name=f"{g}.tt_first", r=1, s=1, k=r1, stride=(1, 1), padding=(0, 0),
                    branch="tt_first", group=g)
    w = LayerWorkload(f"{g}.tt_w", layer.ih, layer.iw, 1, layer.s, r1, r2, stride=layer.stride,
                      padding=layer.padding, branch="tt_w", spike_input=False, group=g)
    last = LayerWorkload(f"{g}.tt_last", w.ho, w.wo, 1, 1, r2, layer.k, branch="tt_last",
                         spike_input=False, group=g)
    return [first, w, last]


def tt_matrix_steps(name: str, in_factors: tuple[int, ...], out_factors: tuple[int, ...],
                    ranks: tuple[int, ...], spike_input: bool = True) -> list[LayerWorkload]:
    """A TT-matrix Linear's contraction chain as GEMMs: step k maps (r_{k-1} n_k) -> (m_k r_k) for
    each of the M_{<k} N_{>k} positions (a 1x1 conv with C = r_{k-1} n_k, K = m_k r_k on an
    M_{<k} x N_{>k} map). Its MACs sum to the layer's `macs_per_item`."""
    bonds, d = (1, *ranks, 1), len(in_factors)
    steps, before, rest = [], 1, math.prod(in_factors)
    for k, (m, n) in enumerate(zip(out_factors, in_factors)):
        rest //= n
        branch: Branch = "tt_first" if k == 0 else ("tt_last" if k == d - 1 else "tt_mid")
        steps.append(LayerWorkload(f"{name}.tt_step{k + 1}", before, rest, 1, 1, bonds[k] * n, m * bonds[k + 1],
                                   kind="linear", branch=branch, spike_input=spike_input and k == 0, group=name))
        before *= m
    if d == 1:  # one core is the dense matrix itself
        steps = [replace(steps[0], branch="dense", group="", name=name)]
    return steps


def dense_equivalent(layers: list[LayerWorkload]) -> list[LayerWorkload]:
    """Merge each TT group back into the dense layer it replaces; dense layers pass through.
    Conv2d: C from the first core, K from the last, R from ``tt_h``, S from ``tt_w``, input size of
    the first core. Conv1d (no ``tt_h``): R = 1. TT-matrix (kind linear): in = the first step's
    C x map width, out = the last step's K x map height.
    Used to build the dense baseline of a TT workload (e.g. dense ResNet34 from SATA_Sim's STT CSV)."""
    out: list[LayerWorkload] = []
    cores: dict[str, dict[str, LayerWorkload]] = {}
    sizes: dict[str, int] = {}
    for layer in layers:
        if layer.branch != "dense":
            sizes[layer.group] = sizes.get(layer.group, 0) + 1
    for layer in layers:
        if layer.branch == "dense":
            out.append(layer)
            continue
        parts = cores.setdefault(layer.group, {})
        parts[layer.name if layer.branch == "tt_mid" else layer.branch] = layer
        if len(parts) < sizes[layer.group] or not {"tt_first", "tt_last"} <= set(parts):
            continue
        f, last = parts["tt_first"], parts["tt_last"]
        if f.kind == "linear":
            out.append(LayerWorkload(layer.group, 1, 1, 1, 1, f.c * f.iw, last.k * last.ih, kind="linear",
                                     spike_input=f.spike_input))
        elif "tt_h" in parts and "tt_w" in parts:
            h, w = parts["tt_h"], parts["tt_w"]
            out.append(LayerWorkload(layer.group, f.ih, f.iw, h.r, w.s, f.c, last.k,
                                     stride=(h.stride[0], w.stride[1]),
                                     padding=(h.padding[0], w.padding[1]), spike_input=f.spike_input))
        elif "tt_w" in parts and len(parts) == 3:
            w = parts["tt_w"]
            out.append(LayerWorkload(layer.group, f.ih, f.iw, 1, w.s, f.c, last.k, stride=w.stride,
                                     padding=w.padding, spike_input=f.spike_input))
        else:
            raise ValueError(f"TT group {layer.group!r} has cores {sorted(parts)}: not a Conv2d, Conv1d or TT-matrix")
        parts["done"] = layer
    incomplete = [g for g, parts in cores.items() if "done" not in parts]
    if incomplete:
        raise ValueError(f"incomplete TT groups (need tt_first, tt_h, tt_w, tt_last): {incomplete}")
    return out


def ptt_view(layers: list[LayerWorkload]) -> list[LayerWorkload]:
    """The PTT form of a TT workload: both middle cores read the first core's output A_t and produce
    the block's output, so ``tt_w`` takes ``tt_h``'s input size and both take the combined stride
    (the TT-SNN paper: Y_t = G4 * ((G2 * A_t + G3 * A_t) / 2)). Stride-1 layers keep their shapes' costs."""
    h_of = {layer.group: layer for layer in layers if layer.branch == "tt_h"}
    w_of = {layer.group: layer for layer in layers if layer.branch == "tt_w"}
    out: list[LayerWorkload] = []
    for layer in layers:
        if layer.branch in MIDDLE_BRANCHES and layer.group in h_of and layer.group in w_of:
            h, w = h_of[layer.group], w_of[layer.group]
            stride = (h.stride[0], w.stride[1])
            layer = replace(layer, ih=h.ih, iw=h.iw, stride=stride)
        out.append(layer)
    return out


def htt_view(layers: list[LayerWorkload]) -> list[LayerWorkload]:
    """The HTT form: PTT for t < ceil(T/2), then first and last cores only (middle cores skipped)."""
    return [replace(layer, active_steps="first_half") if layer.branch in MIDDLE_BRANCHES else layer
            for layer in ptt_view(layers)]


def workload_names() -> list[str]:
    """Names of the shipped workload CSVs (``hw/workloads/*.csv``): SATA_Sim's TT-SNN runs."""
    return sorted(p.stem for p in (Path(__file__).parent / "workloads").glob("*.csv"))


def workload_path(name: str) -> Path:
    """Path of a shipped workload CSV by name (e.g. ``sata_res34_stt_T6``)."""
    path = Path(__file__).parent / "workloads" / f"{name}.csv"
    if not path.is_file():
        raise ValueError(f"unknown workload {name!r} (shipped: {', '.join(workload_names())})")
    return path

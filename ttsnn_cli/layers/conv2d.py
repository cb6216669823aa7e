"""The TT convolution: a drop-in replacement for one nn.Conv2d, as four trainable cores.

The cores are ordinary nn.Conv2d modules (`core1` .. `core4` = G1 .. G4 of the TT-SNN paper), so optimisers,
FLOP counters, exporters and hooks see plain convolutions:
  core1: 1x1, Cin -> r1            (the only core that sees the layer's input, spikes in an SNN)
  core2: kh x 1, r1 -> r2          (vertical)
  core3: 1 x kw, r2 -> r3          (horizontal)
  core4: 1x1, r3 -> Cout (+ bias)
Modes (the TT-SNN paper), with A = core1(x):
  stt: core4(core3(core2(A)))                  the exact TT chain
  ptt: core4((core2(A) + core3(A)) / 2)        the two middle cores read A in parallel (r1 = r2 = r3)
  htt: ptt for t < ceil(T/2), core4(A) after   (T is the layer's `timesteps`)
Stride and dilation split across the middle cores: in STT core2 takes (s_h, 1) / (d_h, 1) and core3
(1, s_w) / (1, d_w), which is exact. In PTT both branches must land on the output grid, so each takes
the full stride, and each reads A shifted to the kernel's centre row / column (`tt.centre_tap`).
Every forward path is chosen once, at construction. One runtime switch changes how (not what) the
layer computes: `kernel_path = "rebuilt"` multiplies the cores into the dense kernel on every call,
differentiably, and runs one convolution of it (STT and PTT). On a GPU, where the thin core convs
run far below the dense conv's efficiency and every kernel launch costs host time, that can be the
faster way to train the same cores; `train.kernel_plan` measures it per layer.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ttsnn_cli.layers.hooks import has_hooks
from ttsnn_cli.maths import tt
from ttsnn_cli.spiking.state import TimeAware

Mode = Literal["stt", "ptt", "htt"]
MODES: tuple[str, ...] = ("stt", "ptt", "htt")
Pads = tuple[int, int, int, int]  # (left, right, top, bottom) as F.pad takes them


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_padding(conv: nn.Conv2d) -> Pads:
    """A conv's padding as explicit (left, right, top, bottom), resolving 'same' and 'valid'."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        pads = []
        for size, dil in ((conv.kernel_size[1], conv.dilation[1]), (conv.kernel_size[0], conv.dilation[0])):
            total = dil * (size - 1)
            pads += [total // 2, total - total // 2]
        return (pads[0], pads[1], pads[2], pads[3])
    ph, pw = conv.padding
    return (pw, pw, ph, ph)


class TTConv2d(TimeAware, nn.Module):
    """Conv2d as four TT cores; see the module docstring for the modes and their equations.

    Input [N, Cin, H, W] (one timestep, or T steps folded time-major into N, see `state.time_folded`);
    output [N, Cout, Ho, Wo] with Ho, Wo exactly those of the dense conv it replaces.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        ranks: tuple[int, int, int],
        mode: Mode = "stt",
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | Pads = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        timesteps: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown TT mode {mode!r}; choose one of {', '.join(MODES)}")
        r1, r2, r3 = (int(r) for r in ranks)
        if min(r1, r2, r3) < 1:
            raise ValueError(f"TT ranks must be at least 1, got {ranks}")
        if mode != "stt" and not r1 == r2 == r3:
            raise ValueError(f"{mode.upper()} needs equal ranks r1 = r2 = r3, got {ranks}")
        if mode == "htt" and (timesteps is None or timesteps < 1):
            raise ValueError("HTT needs the number of timesteps T (its second half takes the reduced path)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        if isinstance(padding, int) or len(padding) == 2:
            ph, pw = _pair(padding)
            padding = (pw, pw, ph, ph)
        self.padding: Pads = tuple(int(p) for p in padding)  # type: ignore[assignment]
        self.padding_mode = padding_mode
        self.mode: Mode = mode
        self.ranks = (r1, r2, r3)
        self.timesteps = timesteps
        kh, kw = self.kernel_size
        (sh, sw), (dh, dw) = self.stride, self.dilation

        self.core1 = nn.Conv2d(in_channels, r1, 1, bias=False)
        self.core4 = nn.Conv2d(r3, out_channels, 1, bias=bias)
        left, right, top, bottom = self.padding
        # Non-zero padding modes are applied once to A (1x1 convs commute with any spatial padding);
        # what remains for each branch is then a crop, or zero padding.
        self._mode_pad: Pads | None = None if padding_mode == "zeros" else self.padding
        base = (0, 0, 0, 0) if self._mode_pad else self.padding
        bl, br, bt, bb = base
        if mode == "stt":
            self.core2, self._pad2 = self._branch(r1, r2, (kh, 1), (sh, 1), (dh, 1), (0, 0, bt, bb))
            self.core3, self._pad3 = self._branch(r2, r3, (1, kw), (1, sw), (1, dw), (bl, br, 0, 0))
            self._pad_reduced: Pads = (0, 0, 0, 0)
        else:
            ac, bc = tt.centre_tap(kh), tt.centre_tap(kw)
            crop_w = (bl - dw * bc, br - dw * (kw - 1 - bc))
            crop_h = (bt - dh * ac, bb - dh * (kh - 1 - ac))
            self.core2, self._pad2 = self._branch(r1, r2, (kh, 1), (sh, sw), (dh, 1), (*crop_w, bt, bb))
            self.core3, self._pad3 = self._branch(r2, r3, (1, kw), (sh, sw), (1, dw), (bl, br, *crop_h))
            self._pad_reduced = (*crop_w, *crop_h)

    @staticmethod
    def _branch(
        cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], pads: Pads
    ) -> tuple[nn.Conv2d, Pads | None]:
        """A middle core, with symmetric non-negative padding folded into the conv when possible."""
        left, right, top, bottom = pads
        if left == right >= 0 and top == bottom >= 0:
            return nn.Conv2d(cin, cout, kernel, stride, (top, left), dilation, bias=False), None
        return nn.Conv2d(cin, cout, kernel, stride, 0, dilation, bias=False), pads

    # ----------------------------------------------------------------------------------- building
    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        ranks: tuple[int, int, int],
        mode: Mode = "stt",
        timesteps: int | None = None,
        svd: str = "qr_svd",
    ) -> TTConv2d:
        """Decompose a dense conv (TT-SVD, float64) and load the cores (float32) into a new layer.

        STT cores are the TT-SVD cores; PTT/HTT cores are the least-squares cross fit started from
        them (`tt.fit_cross_cores`). The caller caps `ranks` to `tt.max_tt_ranks` beforehand.
        """
        if conv.groups != 1:
            raise ValueError("grouped or depthwise convolutions cannot be split into TT cores")
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            ranks,
            mode,
            conv.stride,
            conv_padding(conv),
            conv.dilation,
            conv.bias is not None,
            conv.padding_mode,
            timesteps,
        ).to(device=conv.weight.device)
        cores = tt.tt_svd(conv.weight, layer.ranks, svd=svd)
        if mode != "stt":
            cores = tt.fit_cross_cores(conv.weight, cores)
        layer.load_cores(cores)
        if conv.bias is not None:
            layer.core4.bias.data.copy_(conv.bias.detach())
        return layer.to(dtype=conv.weight.dtype)

    def load_cores(self, cores: tt.TTCores) -> None:
        """Copy cores into the conv weights (the reference code's fatal bug was never doing this)."""
        with torch.no_grad():
            self.core1.weight.copy_(cores.first[:, :, None, None])
            self.core2.weight.copy_(cores.vertical.permute(1, 2, 0)[:, :, :, None])
            self.core3.weight.copy_(cores.horizontal.permute(1, 2, 0)[:, :, None, :])
            self.core4.weight.copy_(cores.last[:, :, None, None])

    def cores(self) -> tt.TTCores:
        """The current cores in the layout of `tt.TTCores` (float64 copies, detached)."""
        w2 = self.core2.weight.detach().to(torch.float64)[:, :, :, 0]  # (r2, r1, kh)
        w3 = self.core3.weight.detach().to(torch.float64)[:, :, 0, :]  # (r3, r2, kw)
        return tt.TTCores(
            first=self.core1.weight.detach().to(torch.float64)[:, :, 0, 0].cpu(),
            vertical=w2.permute(2, 0, 1).cpu(),
            horizontal=w3.permute(2, 0, 1).cpu(),
            last=self.core4.weight.detach().to(torch.float64)[:, :, 0, 0].cpu(),
        )

    def effective_kernel(self) -> torch.Tensor:
        """The dense (Cout, Cin, kh, kw) kernel of the full path (STT chain, or PTT/HTT cross), float64."""
        cores = self.cores()
        return tt.stt_kernel(cores) if self.mode == "stt" else tt.cross_kernel(cores, self.kernel_size)

    def reduced_kernel(self) -> torch.Tensor:
        """HTT's reduced-step (Cout, Cin) matrix G4 G1, float64."""
        return tt.reduced_kernel(self.cores())

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----------------------------------------------------------------------------------- forward
    recompute: bool = False
    """Runtime switch (not persisted): save only the input for backward and recompute the cores.

    A dense conv saves its input; a TT layer would also save A (r1 channels) and core4's input (r3
    channels), which at the paper's ranks can cancel the memory saved on parameters. Per-step HTT
    counts its calls, so a recomputation would count twice: it is never recomputed.
    Set for a block with `engine.memory.recomputing_tt(model)`."""

    kernel_path: str = "factored"
    """Runtime switch (not persisted): "factored" runs the four cores; "rebuilt" runs one convolution
    of `dense_kernel()`, rebuilt from the cores on every call so gradients still reach the cores (the
    same function up to float summation order; HTT's reduced steps run one 1x1 conv of G4 G1). Set
    per layer by `train.kernel_plan`."""

    def rebuilds(self) -> bool:
        """True when this call runs the rebuilt kernels (`kernel_path`)."""
        return self.kernel_path == "rebuilt"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rebuilds():
            return self._rebuilt(x)
        per_step_htt = self.mode == "htt" and self.folded_timesteps is None
        if self.recompute and torch.is_grad_enabled() and not per_step_htt:
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.core4(self.core4_input(x))

    def dense_kernel(self, channels_last: bool = False) -> torch.Tensor:
        """The (Cout, Cin, kh, kw) kernel the cores compute (the STT chain, or the cross of PTT and of
        HTT's early steps), differentiable, in the cores' dtype and device: `effective_kernel` is its
        detached float64 twin. Built as G4 (M G1), M the middle cores as one (r3, kh*kw, r1) tensor:
        three small matrix products and no other work on kernel-sized tensors (why: on a GPU each
        op is a launch, and this runs every step). `channels_last`: the kernel in that memory format,
        which the products give as they are (a channels-last convolution would reorder it otherwise)."""
        g1 = self.core1.weight.flatten(1)  # (r1, Cin)
        g4 = self.core4.weight.flatten(1)  # (Cout, r3)
        middle = self._middle_core()  # (r3, kh*kw, r1)
        rank3, taps, rank1 = middle.shape
        outer = g4 @ (middle.reshape(rank3 * taps, rank1) @ g1).view(rank3, taps * g1.shape[1])
        kernel = outer.view(g4.shape[0], *self.kernel_size, g1.shape[1]).permute(0, 3, 1, 2)
        return kernel if channels_last else kernel.contiguous()

    def _middle_core(self) -> torch.Tensor:
        """core2 and core3 as one (r3, kh*kw, r1) tensor: their chain (STT), or the cross of the two
        branches at the kernel's centre row and column, halved (PTT, HTT), as one product with a
        constant placement matrix (`tt.cross_placement`)."""
        kh, kw = self.kernel_size
        if self.mode == "stt":
            g2 = self.core2.weight.flatten(1)  # (r2, r1*kh)
            g3 = self.core3.weight.flatten(2)  # (r3, r2, kw)
            chain = g3.transpose(1, 2).reshape(-1, g2.shape[0]) @ g2  # (r3*kw, r1*kh)
            rank3, rank1 = g3.shape[0], self.core2.weight.shape[1]
            return chain.view(rank3, kw, rank1, kh).permute(0, 3, 1, 2).reshape(rank3, kh * kw, rank1)
        # (r3, kh+kw, r1): core2's column taps, then core3's row taps
        branches = torch.cat([self.core2.weight.flatten(2), self.core3.weight.flatten(2)], dim=2).transpose(1, 2)
        placement = tt.cross_placement(kh, kw, branches.dtype, branches.device)  # (kh*kw, kh+kw)
        return torch.matmul(placement, branches)

    def _rebuilt(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "htt":
            return self.first_half(x, self._rebuilt_full, self._rebuilt_reduced, self.timesteps)
        return self._rebuilt_full(x)

    def _rebuilt_reduced(self, x: torch.Tensor) -> torch.Tensor:
        """HTT's reduced steps as one 1x1 conv of G4 G1: the cropped, strided input of `_reduced`
        (the 1x1 first core commutes with padding, cropping and striding)."""
        if self._mode_pad is not None:
            x = F.pad(x, self._mode_pad, mode=self.padding_mode)
        matrix = self.core4.weight.flatten(1) @ self.core1.weight.flatten(1)  # flatten: a view also backward
        return F.conv2d(self._reduced(x), matrix[:, :, None, None], self.core4.bias)

    def _rebuilt_full(self, x: torch.Tensor) -> torch.Tensor:
        """One convolution of the rebuilt kernel over the padded input: what the cores compute (1x1
        cores commute with any padding, so the whole padding moves in front)."""
        left, right, top, bottom = self.padding
        if self.padding_mode != "zeros":
            x, padding = F.pad(x, self.padding, mode=self.padding_mode), (0, 0)
        elif left == right and top == bottom:
            padding = (top, left)
        else:
            x, padding = F.pad(x, self.padding), (0, 0)
        channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
        kernel = self.dense_kernel(channels_last)  # else the conv reorders its input
        return F.conv2d(x, kernel, self.core4.bias, self.stride, padding, self.dilation)

    def core4_input(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the last core: its r3-channel input (a caller fusing core4 with what
        follows, `lowrank_bn.conv1x1_bn`, runs this and then core4 itself)."""
        a = self._first(x)
        if self.mode == "stt":
            return self._run(self.core3, self._pad3, self._run(self.core2, self._pad2, a))
        if self.mode == "ptt":
            return self._parallel(a)
        return self._half(a)

    def core4_input_unscaled(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """`core4_input(x)` as (m, s) with m * s equal to it bitwise: PTT's halving of the branch
        sum is left to a caller that folds it into what follows (`lowrank_bn.conv1x1_bn` scales a
        few small matrices instead of every activation)."""
        if self.mode == "ptt":
            return self._branch_sum(self._first(x)), 0.5
        return self.core4_input(x), 1.0

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        a = self.core1(x)
        return a if self._mode_pad is None else F.pad(a, self._mode_pad, mode=self.padding_mode)

    @staticmethod
    def _run(conv: nn.Conv2d, pads: Pads | None, x: torch.Tensor) -> torch.Tensor:
        return conv(x if pads is None else F.pad(x, pads))

    def _parallel(self, a: torch.Tensor) -> torch.Tensor:
        return self._branch_sum(a) / 2

    def _branch_sum(self, a: torch.Tensor) -> torch.Tensor:
        """core2's output plus core3's, added into core2's fresh output (a conv's backward needs its
        input, not its output): the same sum without a third r-channel buffer to write, which pays
        in the memory-bound first stages. Out of place when a hook may hold core2's output."""
        branch2 = self._run(self.core2, self._pad2, a)
        branch3 = self._run(self.core3, self._pad3, a)
        if not self.sum_in_place or has_hooks(self.core2):
            return branch2 + branch3
        return branch2.add_(branch3)

    sum_in_place: bool = True
    """Runtime switch (not persisted): PTT's branch sum goes into core2's output buffer; off, into a
    new one (the reference `benchmarks/bench_training.py --levers` times it against)."""

    def _reduced(self, a: torch.Tensor) -> torch.Tensor:
        sh, sw = self.stride
        return F.pad(a, self._pad_reduced)[..., ::sh, ::sw]

    def _half(self, a: torch.Tensor) -> torch.Tensor:
        """HTT: the parallel path for the first ceil(T/2) steps, the reduced path after."""
        return self.first_half(a, self._parallel, self._reduced, self.timesteps)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, ranks={self.ranks}, "
            f"mode={self.mode}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
            + (f", timesteps={self.timesteps}" if self.mode == "htt" else "")
        )

    def config(self) -> dict:
        """Everything needed to rebuild this layer empty before loading its state_dict (bundles)."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": list(self.kernel_size),
            "ranks": list(self.ranks),
            "mode": self.mode,
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "bias": self.core4.bias is not None,
            "padding_mode": self.padding_mode,
            "timesteps": self.timesteps,
        }

    @classmethod
    def from_config(cls, config: dict) -> TTConv2d:
        return cls(
            config["in_channels"],
            config["out_channels"],
            tuple(config["kernel_size"]),
            tuple(config["ranks"]),
            config["mode"],
            tuple(config["stride"]),
            tuple(config["padding"]),
            tuple(config["dilation"]),
            config["bias"],
            config.get("padding_mode", "zeros"),
            config.get("timesteps"),
        )

"""The TT Conv1d: a drop-in replacement for one nn.Conv1d, as three trainable cores.

The cores are ordinary nn.Conv1d modules, so optimisers, FLOP counters and exporters see plain
convolutions (tt.py, "Conv1d"):
  core1: 1,  Cin -> r1           (the only core that sees the layer's input, spikes in an SNN)
  core2: k,  r1 -> r2            (carries the stride, padding and dilation)
  core3: 1,  r2 -> Cout (+ bias)
Modes, with A = core1(x):
  stt: core3(core2(A))                    the exact TT chain
  htt: stt for t < ceil(T/2), then core3(A) read at the positions the kernel's centre tap reads
       (the reduced 1 -> 1 path of TTConv2d's HTT; needs r1 = r2, same timestep logic)
  ptt: refused. PTT runs two spatial cores side by side; a Conv1d has one spatial axis.
1x1 convs commute with any spatial padding, so a non-zero padding mode (reflect, replicate,
circular) is applied once to A, and asymmetric padding ('same' with an even dilated kernel) is an
F.pad before core2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ttsnn_cli.maths import tt
from ttsnn_cli.spiking.state import TimeAware

MODES_1D: tuple[str, ...] = ("stt", "htt")
PTT_REFUSAL = "PTT needs two spatial axes and a Conv1d has one"


def conv1d_padding(conv: nn.Conv1d) -> tuple[int, int]:
    """A Conv1d's padding as explicit (left, right), resolving 'same' and 'valid'."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0)
        total = conv.dilation[0] * (conv.kernel_size[0] - 1)
        return (total // 2, total - total // 2)
    return (int(conv.padding[0]), int(conv.padding[0]))


class TTConv1d(TimeAware, nn.Module):
    """Conv1d as three TT cores. Input [N, Cin, L] (one step, or T steps folded time-major into N);
    output [N, Cout, Lo] with Lo exactly that of the dense conv it replaces."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        ranks: tuple[int, int],
        mode: str = "stt",
        stride: int = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        timesteps: int | None = None,
    ) -> None:
        super().__init__()
        if mode == "ptt":
            raise ValueError(PTT_REFUSAL)
        if mode not in MODES_1D:
            raise ValueError(f"unknown TT mode {mode!r} for a Conv1d; choose one of {', '.join(MODES_1D)}")
        r1, r2 = (int(r) for r in ranks)
        if min(r1, r2) < 1:
            raise ValueError(f"TT ranks must be at least 1, got {ranks}")
        if mode == "htt" and r1 != r2:
            raise ValueError(f"HTT needs equal ranks r1 = r2 (its reduced path is core3 after core1), got {ranks}")
        if mode == "htt" and (timesteps is None or timesteps < 1):
            raise ValueError("HTT needs the number of timesteps T (its second half takes the reduced path)")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.dilation = int(kernel_size), int(stride), int(dilation)
        pads = (padding, padding) if isinstance(padding, int) else tuple(int(p) for p in padding)
        self.padding: tuple[int, int] = (int(pads[0]), int(pads[1]))
        self.padding_mode, self.mode, self.timesteps = padding_mode, mode, timesteps
        self.ranks = (r1, r2)
        left, right = self.padding
        self._mode_pad = None if padding_mode == "zeros" else self.padding
        symmetric = left == right and self._mode_pad is None
        self._pad2 = None if symmetric or self._mode_pad else self.padding
        self.core1 = nn.Conv1d(in_channels, r1, 1, bias=False)
        self.core2 = nn.Conv1d(r1, r2, self.kernel_size, self.stride, left if symmetric else 0, self.dilation, bias=False)
        self.core3 = nn.Conv1d(r2, out_channels, 1, bias=bias)
        base_left, base_right = (0, 0) if self._mode_pad else self.padding
        centre = tt.centre_tap(self.kernel_size)
        self._pad_reduced = (base_left - self.dilation * centre,
                             base_right - self.dilation * (self.kernel_size - 1 - centre))

    @classmethod
    def from_conv(cls, conv: nn.Conv1d, ranks: tuple[int, int], mode: str = "stt", timesteps: int | None = None,
                  svd: str = "qr_svd") -> TTConv1d:
        """TT-SVD of `conv`'s kernel (float64), cores stored in the conv's dtype; bias goes to core3."""
        if conv.groups != 1:
            raise ValueError(f"grouped Conv1d (groups={conv.groups}) cannot be split into TT cores")
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], ranks, mode, conv.stride[0],
                    conv1d_padding(conv), conv.dilation[0], conv.bias is not None, conv.padding_mode, timesteps)
        layer.load_cores(tt.tt_svd_conv1d(conv.weight, layer.ranks, svd))
        if conv.bias is not None:
            layer.core3.bias.data.copy_(conv.bias.detach())
        return layer.to(device=conv.weight.device, dtype=conv.weight.dtype)

    def load_cores(self, cores: tt.TTCores1d) -> None:
        with torch.no_grad():
            self.core1.weight.copy_(cores.first[:, :, None])
            self.core2.weight.copy_(cores.middle.permute(1, 2, 0))
            self.core3.weight.copy_(cores.last[:, :, None])

    def cores(self) -> tt.TTCores1d:
        """The current cores in the layout of `tt.TTCores1d` (float64 copies, detached, on CPU)."""
        w = lambda conv: conv.weight.detach().to(torch.float64).cpu()  # noqa: E731
        return tt.TTCores1d(first=w(self.core1)[:, :, 0], middle=w(self.core2).permute(2, 0, 1),
                            last=w(self.core3)[:, :, 0])

    def effective_kernel(self) -> torch.Tensor:
        """The dense (Cout, Cin, k) kernel of the full path (the TT chain), float64."""
        return tt.conv1d_kernel(self.cores())

    def reduced_kernel(self) -> torch.Tensor:
        """HTT's reduced-step (Cout, Cin) matrix G3 G1, float64."""
        cores = self.cores()
        return cores.last @ cores.first

    def param_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.core1(x)
        if self._mode_pad is not None:
            a = F.pad(a, self._mode_pad, mode=self.padding_mode)
        if self.mode == "stt":
            return self.core3(self._chain(a))
        return self.core3(self._half(a))

    def _chain(self, a: torch.Tensor) -> torch.Tensor:
        return self.core2(a if self._pad2 is None else F.pad(a, self._pad2))

    def _reduced(self, a: torch.Tensor) -> torch.Tensor:
        return F.pad(a, self._pad_reduced)[..., :: self.stride]

    def _half(self, a: torch.Tensor) -> torch.Tensor:
        """HTT: the chain for the first ceil(T/2) steps, the reduced path after (as TTConv2d)."""
        return self.first_half(a, self._chain, self._reduced, self.timesteps)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, ranks={self.ranks}, "
                f"mode={self.mode}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}"
                + (f", timesteps={self.timesteps}" if self.mode == "htt" else ""))

    def config(self) -> dict:
        """Everything needed to rebuild this layer empty before loading its state_dict (bundles)."""
        return {
            "in_channels": self.in_channels, "out_channels": self.out_channels,
            "kernel_size": self.kernel_size, "ranks": list(self.ranks), "mode": self.mode,
            "stride": self.stride, "padding": list(self.padding), "dilation": self.dilation,
            "bias": self.core3.bias is not None, "padding_mode": self.padding_mode, "timesteps": self.timesteps,
        }

    @classmethod
    def from_config(cls, config: dict) -> TTConv1d:
        return cls(config["in_channels"], config["out_channels"], int(config["kernel_size"]), tuple(config["ranks"]),
                   config["mode"], int(config["stride"]), tuple(config["padding"]), int(config["dilation"]),
                   bool(config["bias"]), config.get("padding_mode", "zeros"), config.get("timesteps"))

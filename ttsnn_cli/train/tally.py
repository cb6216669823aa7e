"""An epoch's running figures (loss, correct answers, whether the output spiked, every batch's loss)
kept on the training device and read on the host only when they are shown.

Why: on CUDA a host read of a tensor (`float(loss)`, `bool(...)`) waits for every kernel queued
before it. Reading the figures after every step kept the host from queuing the next step while the
GPU still worked on this one, so a step took the GPU's time plus the host's. Read at the epoch's
first and last batches and at most every `READ_EVERY_S` seconds in between, the host runs ahead.
On the CPU a read costs nothing; the figures are the same either way.

A non-finite loss is found at the next read (`read` reports the first such batch), where it was
found at once before: the steps between may have trained on it, which changes nothing that is kept,
since a diverged run raises before anything of its epoch is written.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

READ_EVERY_S = 0.5


@dataclass(frozen=True)
class Figures:
    """What the host knows after a read: sums over the batches so far."""

    loss_sum: float  # sum of loss * samples
    correct: float
    spiked: bool
    diverged_at: int | None  # the first batch (0-based) whose loss was not finite
    diverged_loss: float


class EpochTally:
    """Accumulates on `device`; `read` is the only host read (one, whatever the number of batches)."""

    def __init__(self, device: torch.device, batches: int) -> None:
        self._dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
        self._losses = torch.zeros(max(batches, 1), dtype=self._dtype, device=device)
        self._sums = torch.zeros(3, dtype=self._dtype, device=device)  # loss * samples, correct, spiked
        self.batches = 0
        self.seen = 0
        self._last_read = -math.inf

    def add(self, loss: torch.Tensor, out: torch.Tensor, y: torch.Tensor) -> None:
        """One batch: its (scalar) loss, the model's output [T, B, classes] and the labels."""
        if self.batches == self._losses.numel():  # more batches than announced: grow (rare)
            self._losses = torch.cat([self._losses, torch.zeros_like(self._losses)])
        value = loss.detach().to(self._dtype).reshape(())  # a one-element loss of any shape
        self._losses[self.batches] = value
        out = out.detach()
        self._sums[0].add_(value * len(y))
        self._sums[1].add_((out.mean(0).argmax(-1) == y).sum())
        self._sums[2].copy_(torch.maximum(self._sums[2], out.ne(0).any()))
        self.batches += 1
        self.seen += len(y)

    def due(self, last: bool) -> bool:
        """Whether to read now: the epoch's first or last batch, or `READ_EVERY_S` since the last read."""
        return last or self.batches == 1 or time.perf_counter() - self._last_read >= READ_EVERY_S

    def read(self) -> Figures:
        self._last_read = time.perf_counter()
        if not self.batches:
            return Figures(0.0, 0.0, False, None, 0.0)
        losses = self._losses[: self.batches]
        bad = ~torch.isfinite(losses)
        first_bad = torch.where(bad.any(), bad.to(torch.uint8).argmax(), -1).to(self._dtype)
        bad_loss = losses[first_bad.clamp_min(0).long()]
        loss_sum, correct, spiked, at, value = torch.stack([*self._sums, first_bad, bad_loss]).tolist()
        return Figures(loss_sum, correct, bool(spiked), None if at < 0 else int(at), value)

    def losses(self) -> list[float]:
        """Every batch's loss so far (one read)."""
        return self._losses[: self.batches].tolist()

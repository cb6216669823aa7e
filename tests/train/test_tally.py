"""`train.tally`: an epoch's figures summed on the device equal the host's sums, and a non-finite loss
is reported with its batch."""

from __future__ import annotations

import math

import torch

from ttsnn_cli.train.tally import EpochTally


def test_the_device_sums_are_the_host_sums() -> None:
    generator = torch.Generator().manual_seed(0)
    tally = EpochTally(torch.device("cpu"), batches=2)  # announced fewer than come: it grows
    loss_sum = correct = 0.0
    spiked, losses = False, []
    for batch in range(5):
        out = (torch.rand(3, 4, 10, generator=generator) > 0.8).float() * (batch > 1)
        y = torch.randint(0, 10, (4,), generator=generator)
        loss = torch.rand((), generator=generator) * 3
        tally.add(loss.reshape(1), out, y)  # a one-element loss of any shape
        losses.append(float(loss))
        loss_sum += float(loss) * 4
        correct += float((out.mean(0).argmax(-1) == y).sum())
        spiked = spiked or bool(out.ne(0).any())
    figures = tally.read()
    assert math.isclose(figures.loss_sum, loss_sum, rel_tol=1e-12) and figures.correct == correct
    assert figures.spiked == spiked and figures.diverged_at is None
    assert tally.seen == 20 and tally.losses() == losses


def test_the_first_non_finite_loss_is_named_and_an_empty_epoch_reads_zeros() -> None:
    assert EpochTally(torch.device("cpu"), batches=3).read().diverged_at is None
    tally = EpochTally(torch.device("cpu"), batches=4)
    out, y = torch.zeros(2, 3, 5), torch.zeros(3, dtype=torch.long)
    for loss in (1.0, 2.0, float("inf"), float("nan")):
        tally.add(torch.tensor(loss), out, y)
    figures = tally.read()
    assert figures.diverged_at == 2 and figures.diverged_loss == float("inf") and not figures.spiked

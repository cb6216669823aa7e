"""Batches for the training engine: made on the training device from splits kept there whole, or
read sample by sample through a DataLoader.

A DataLoader with no workers calls the dataset once per sample on the CPU (indexing, normalising,
augmenting, then a collate and one host-to-device copy per batch): on an H200 that took about 40 % of
an epoch of MS-ResNet18 on CIFAR-format data. A split that can describe itself as whole tensors
(`data.ResidentSplit`: a CIFAR reader's bytes with their normalisation table and augmentation, a
`TensorDataset`, a `Subset` of either) is instead moved to the device once, as it is stored (CIFAR:
uint8), and every batch is made there: gathered by the epoch's order, decoded through the table,
cropped and flipped by index (on the CPU the frames are decoded once, and each batch is made a few
samples at a time so that no operation is split over threads: `ResidentData.batch`).

The batches are the DataLoader's, bit for bit, on any device: the same samples in the same order (the
engine's `_epoch_order`, its shard per process, the last batch short), each decoded to the very float
the dataset computes (a table lookup, not arithmetic redone on the device), and augmented with the
same random numbers: drawn on the CPU from the global torch RNG in the order the dataset's per-sample
draws take them (`_crop_flip_draws`), and one 64-bit draw per pass as a DataLoader takes for its
workers' base seed. So switching between the two ways, or resuming a run with the other one, changes
no result, and the RNG state a resume file records means the same for both.

Where: `auto` (the default) uses it whenever a split can be described and fits (on CUDA: split
bytes at most a quarter of the device's free memory; on the CPU always: its frames take what the
per-sample path's take); `off` (`TrainConfig.data_on_device`), or `TTSNN_DATA_ON_DEVICE=off` (or `0`)
in the environment, always reads through a DataLoader.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Protocol

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ttsnn_cli.data import ResidentSplit, resident_split
from ttsnn_cli.errors import BadInputError

#: the values of `TrainConfig.data_on_device`
CHOICES = ("auto", "off")
#: environment switch: `off` (or 0, false, no) reads every split through a DataLoader whatever the option says
ENV = "TTSNN_DATA_ON_DEVICE"
#: torch's grain size (at::internal::GRAIN_SIZE): an operation on fewer values runs on the calling thread
SERIAL_VALUES = 32768
#: a resident split may take at most this share of the device's free memory (the model's activations need the rest)
DEVICE_SHARE = 0.25


class Batches(Protocol):
    """One pass over a list of sample indices, as (frames, labels) batches on the device."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


def check_data_on_device(choice: str) -> None:
    if choice not in CHOICES:
        raise BadInputError(f"--data-on-device must be one of {', '.join(CHOICES)}, got {choice!r}")


def resident_wanted(choice: str) -> bool:
    """Whether the option and the environment allow a resident split at all."""
    if os.environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no"):
        return False
    return choice == "auto"


def fits(nbytes: int, device: torch.device) -> bool:
    """Whether `nbytes` may stay on `device`: on CUDA at most `DEVICE_SHARE` of its free memory; on the
    CPU always (the split's tensors are the dataset's own, already in memory, and the frames decoded
    from them take what the dataset's per-sample path makes of them)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return nbytes <= DEVICE_SHARE * free
    return False


class ResidentData:
    """A split kept on `device`, as stored, with what makes its batches there: its table decodes the
    stored bytes, and its augmentation (`ResidentSplit.crop_flip`, set only where the dataset augments
    every item it returns: a training split) is applied to every batch. `decode_once` (default: on the
    CPU) decodes every frame when the split arrives instead of batch by batch."""

    def __init__(self, split: ResidentSplit, device: torch.device, decode_once: bool | None = None) -> None:
        self.device = device
        self.frames = split.frames.to(device)
        self.labels = split.labels.to(device)
        self.table = split.table.to(device) if split.table is not None else None
        self.padding = split.crop_flip
        if self.table is not None:
            channels = self.frames.shape[1]
            # index of channel c's first entry in the flattened table, broadcast over [B, C, H, W]
            shape = (1, channels) + (1,) * (self.frames.dim() - 2)
            self._offsets = (torch.arange(channels, device=device, dtype=torch.int32) * self.table.shape[1]).view(shape)
            if device.type == "cpu" if decode_once is None else decode_once:
                # on the CPU a batch's row copy costs a tenth of looking every value up, and the frames take
                # the memory the dataset's own per-sample path takes: decode them all once
                self.frames = torch.cat([self._decode(part) for part in self.frames.split(4096)])
                self.table = None

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, indices: list[int], batch_size: int) -> ResidentBatches:
        return ResidentBatches(self, indices, batch_size)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames and labels of the samples `index` (on the device), decoded and augmented.

        On the CPU the batch is made a few samples at a time, each operation under torch's grain size
        (`SERIAL_VALUES`), so that none is split over threads: split, each waits for every thread, and
        where other processes hold the cores (a shared machine, CI) a preempted thread makes it wait a
        time slice (measured on 2 busy cores, a CIFAR epoch's batches of 64 made whole took 11-19x as
        long as the DataLoader's per-sample operations, all under the grain; made in parts, 0.6x;
        `benchmarks/bench_input.py`)."""
        draws = to_device(_crop_flip_draws(len(index), self.padding), self.device) if self.padding is not None else None
        step = len(index)
        if self.device.type == "cpu":
            per_sample = self.frames[0].numel() if len(self.frames) else 1
            if self.padding is not None:  # the padded frame is the largest value the crop makes
                channels, height, width = self.frames.shape[1:]
                per_sample = channels * (height + 2 * self.padding) * (width + 2 * self.padding)
            step = max(1, SERIAL_VALUES // max(per_sample, 1))
        if step >= len(index):
            return self._frames(index, draws), self.labels.index_select(0, index)
        parts = [self._frames(index[i : i + step], draws[:, i : i + step] if draws is not None else None)
                 for i in range(0, len(index), step)]
        return torch.cat(parts), self.labels.index_select(0, index)

    def _frames(self, index: torch.Tensor, draws: torch.Tensor | None) -> torch.Tensor:
        frames = self.frames.index_select(0, index)
        if self.table is not None:
            frames = self._decode(frames)
        if draws is not None:
            frames = self._crop_flip(frames, self.padding, draws)
        return frames

    def _decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Frames of stored bytes: `table[c, byte]` per channel, exactly the dataset's values."""
        index = codes.to(torch.int32) + self._offsets
        return self.table.view(-1).index_select(0, index.view(-1)).view(codes.shape)

    def _crop_flip(self, frames: torch.Tensor, padding: int, draws: torch.Tensor) -> torch.Tensor:
        """`cifar.random_crop_flip` of every frame, with that function's random numbers (`draws`, of
        `_crop_flip_draws`): the padded batch's rows, then columns, gathered (mirrored columns where
        the sample flips)."""
        count, channels, height, width = frames.shape
        top, left, flip = draws.unbind(0)
        padded = torch.nn.functional.pad(frames, (padding, padding, padding, padding))
        rows = top.view(-1, 1, 1, 1) + torch.arange(height, device=self.device).view(1, 1, -1, 1)
        picked = padded.gather(2, rows.expand(count, channels, height, padded.shape[3]))
        across = torch.arange(width, device=self.device)
        cols = left.view(-1, 1) + torch.where(flip.view(-1, 1).bool(), width - 1 - across, across)
        return picked.gather(3, cols.view(count, 1, 1, width).expand(count, channels, height, width))


def to_device(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor (a batch from a DataLoader, random draws) on `device` without stopping the host:
    on CUDA a copy from pageable memory first waits for every queued kernel, a copy from pinned
    memory does not (torch's pinned-memory cache keeps the buffer until the copy has run). A tensor
    already on a device goes as `.to` takes it."""
    if device.type != "cuda" or values.device.type != "cpu":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def _crop_flip_draws(count: int, padding: int) -> torch.Tensor:
    """[3, count] int64: top, left and flip (0/1) of `count` samples, exactly as `count` calls of
    `cifar.random_crop_flip` draw them from the global torch RNG, leaving the RNG where they leave it.

    Per sample that function takes three 32-bit words of the CPU generator: two through
    `randint(0, 2p + 1)` and one through `rand()`. One `randint` over 3 x count values and, from the
    same starting state, one `rand` over as many read the same words, so columns 0 and 1 of the first
    and column 2 of the second are the per-sample values (`tests/train/test_batches.py` checks this
    against the per-sample calls)."""
    state = torch.get_rng_state()
    integers = torch.randint(0, 2 * padding + 1, (count, 3))
    torch.set_rng_state(state)
    uniforms = torch.rand(count, 3)
    return torch.stack([integers[:, 0], integers[:, 1], (uniforms[:, 2] < 0.5).long()])


def _loader_seed_draw() -> None:
    """Take the one 64-bit draw a DataLoader takes from the global torch RNG when a pass starts (its
    workers' base seed), so every later random number is the one the DataLoader path would see."""
    torch.empty((), dtype=torch.int64).random_()


class ResidentBatches:
    """One pass over `indices` of a resident split, batch by batch (the last one short)."""

    def __init__(self, data: ResidentData, indices: list[int], batch_size: int) -> None:
        self.data = data
        self.indices = indices
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        _loader_seed_draw()
        order = torch.as_tensor(self.indices, dtype=torch.long).to(self.data.device)
        for start in range(0, len(order), self.batch_size):
            yield self.data.batch(order[start : start + self.batch_size])


def resident_data(dataset: Dataset, device: torch.device, choice: str = "auto") -> ResidentData | None:
    """`dataset` kept on `device` (`ResidentData`) when the choice, the dataset and the device's memory
    allow it; None when its batches must come through a DataLoader."""
    if not resident_wanted(choice):
        return None
    split = resident_split(dataset)
    if split is None or len(split.labels) != len(dataset) or not fits(split.nbytes, device):
        return None
    return ResidentData(split, device)


def loader_batches(dataset: Dataset, indices: list[int], batch_size: int) -> DataLoader:
    """The per-sample path: `indices` of `dataset` through a DataLoader in that order."""
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=0)


def make_batches(dataset: Dataset, resident: ResidentData | None, indices: list[int], batch_size: int) -> Batches:
    """One pass over `indices`: made on the device from `resident` when there is one, else read
    through a DataLoader. The batches are the same either way (module docstring)."""
    if resident is not None:
        return resident.batches(indices, batch_size)
    return loader_batches(dataset, indices, batch_size)

"""Per-epoch training logs a user can plot: `--log-dir DIR` writes a CSV and a TensorBoard event file.

Both files hold the whole history and are rewritten atomically after every epoch (as `OUT.metrics.jsonl`
is), so an interrupted run leaves complete files and `--resume` continues them without duplicates:
  DIR/metrics.csv                 one row per epoch: METRICS' columns
  DIR/events.out.tfevents.ttsnn   TensorBoard scalars (tags in TAGS), step = epoch

The event file is written here, not with `torch.utils.tensorboard` (which needs the `tensorboard`
package and appends to a file it keeps open, against the output rules): an event file is a TFRecord
stream of `Event` protocol buffers (wall_time, step, summary of tag/simple_value pairs), each record
framed by its length and masked CRC-32C checksums. `tensorboard --logdir DIR` reads it; the package is
needed only to view the logs (the `tensorboard` extra).
"""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ttsnn_cli.errors import BadInputError
from ttsnn_cli.storage.outputs import atomic_write_bytes, atomic_write_text, check_output_folder, check_output_path

#: the columns of metrics.csv (the keys of every `OUT.metrics.jsonl` line)
METRICS = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "lr", "seconds", "samples_per_s")
#: TensorBoard tag of each metric
TAGS = {
    "train_loss": "loss/train",
    "train_accuracy": "accuracy/train",
    "test_accuracy": "accuracy/test",
    "lr": "lr",
    "samples_per_s": "samples_per_s",
    "seconds": "epoch_seconds",
}
CSV_NAME = "metrics.csv"
EVENTS_NAME = "events.out.tfevents.ttsnn"


class EpochLogs:
    """The `--log-dir` files of one run: checked before any work, rewritten after every epoch."""

    def __init__(self, folder: str | Path, force: bool = False, inputs: Iterable[str | Path | None] = ()) -> None:
        self.folder = Path(folder).expanduser()
        inputs = list(inputs)
        if self.folder.is_dir():
            for name in (CSV_NAME, EVENTS_NAME):
                check_output_path(self.folder / name, inputs, force)
        else:
            check_output_folder(self.folder)  # absent: its parent must let us create it (at the first epoch)
        self.csv_path = self.folder / CSV_NAME
        self.events_path = self.folder / EVENTS_NAME

    def write(self, history: Sequence[dict[str, Any]]) -> None:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise BadInputError(f"--log-dir {self.folder}: cannot create it ({error.strerror})") from None
        atomic_write_text(self.csv_path, csv_text(history))
        atomic_write_bytes(self.events_path, event_file(history))


def csv_text(history: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRICS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow({key: record.get(key) for key in METRICS})
    return buffer.getvalue()


# ---------------------------------------------------------------------------- TensorBoard event files
def event_file(history: Sequence[dict[str, Any]]) -> bytes:
    """The event file for `history`: a version record, then one record of scalars per epoch."""
    first_time = next((float(r["wall_time"]) for r in history if "wall_time" in r), 0.0)
    records = [_record(_event(first_time, 0, file_version="brain.Event:2"))]
    for record in history:
        values = [(tag, float(record[key])) for key, tag in TAGS.items() if isinstance(record.get(key), (int, float))]
        wall = float(record.get("wall_time", first_time))
        records.append(_record(_event(wall, int(record["epoch"]), values=values)))
    return b"".join(records)


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int, file_version: str | None = None,
           values: Sequence[tuple[str, float]] = ()) -> bytes:
    """An `Event` message: wall_time (1, double), step (2, int64), file_version (3) or summary (5)."""
    message = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        message += _field_bytes(3, file_version.encode())
    if values:
        summary = b"".join(  # Summary.value (1): Value{tag (1), simple_value (2, float)}
            _field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
            for tag, value in values)
        message += _field_bytes(5, summary)
    return message


def _record(data: bytes) -> bytes:
    """TFRecord framing: length (uint64), its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", _masked_crc(length)) + data + struct.pack("<I", _masked_crc(data))


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1  # CRC-32C (Castagnoli), reflected
        table.append(crc)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_event_file(data: bytes) -> list[tuple[int, dict[str, float]]]:
    """(step, {tag: value}) of every scalar record in an event file, checksums verified: for tests and
    for anyone checking a log without TensorBoard. A damaged file is bad input."""
    out: list[tuple[int, dict[str, float]]] = []
    position = 0
    while position < len(data):
        try:
            header = data[position:position + 8]
            (length,) = struct.unpack("<Q", header)
            (header_crc,) = struct.unpack("<I", data[position + 8:position + 12])
            body = data[position + 12:position + 12 + length]
            (body_crc,) = struct.unpack("<I", data[position + 12 + length:position + 16 + length])
        except struct.error:
            raise BadInputError("event file truncated") from None
        if header_crc != _masked_crc(header) or body_crc != _masked_crc(body) or len(body) != length:
            raise BadInputError("event file checksum mismatch")
        position += 16 + length
        fields = _parse_all(body)
        if 5 in fields:
            values = {}
            for value in _parse_all(fields[5][-1]).get(1, []):
                parsed = _parse_all(value)
                values[parsed[1][-1].decode()] = struct.unpack("<f", parsed[2][-1])[0]
            out.append((int(fields.get(2, [0])[-1]), values))
    return out


def _parse_all(message: bytes) -> dict[int, list[Any]]:
    fields: dict[int, list[Any]] = {}
    position = 0

    def varint() -> int:
        nonlocal position
        shift = result = 0
        while True:
            byte = message[position]
            position += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    while position < len(message):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            value: Any = varint()
        elif wire == 1:
            value = message[position:position + 8]
            position += 8
        elif wire == 2:
            size = varint()
            value = message[position:position + size]
            position += size
        elif wire == 5:
            value = message[position:position + 4]
            position += 4
        else:
            raise BadInputError(f"event file: unsupported wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields

"""AEDAT event files as jAER and iniVation's DV software write them: versions 2.0 and 3.1.

Both start with a text header of lines beginning with `#` (`#!AER-DAT2.0` / `#!AER-DAT3.1` first).

- 2.0 (CIFAR10-DVS): after the header, 8 bytes per event, big-endian: uint32 address, uint32 timestamp
  (microseconds). For the DVS128 sensor the address holds polarity in bit 0, x in bits 1..7, y in
  bits 8..14; bit 15 marks an external (non-pixel) event, which is dropped.
- 3.1 (DVS128 Gesture): the header ends with the line `#!END-HEADER`; then packets, each a 28-byte
  little-endian header (int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset,
  int32 eventTSOverflow, int32 eventCapacity, int32 eventNumber, int32 eventValid) followed by
  eventCapacity x eventSize bytes of events. Polarity events (type 1) are 8 bytes: uint32 data (bit 0
  valid, bit 1 polarity, bits 2..16 y, bits 17..31 x) and int32 timestamp; the full timestamp is
  eventTSOverflow << 31 | timestamp (microseconds). Packets of other types are skipped; invalid
  (bit 0 clear) events are dropped.

Every length is checked against the bytes present before anything is sliced, so a malformed file is
one BadInputError.
"""

from __future__ import annotations

import struct

import numpy as np

from ttsnn_cli.errors import BadInputError

MAX_HEADER_BYTES = 1 << 20
POLARITY_EVENT = 1
_PACKET = struct.Struct("<hhiiiiii")

Events = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # x, y, p, t (int64)


def _header_end(content: bytes, where: str) -> int:
    """Offset of the first byte after the `#` header lines."""
    pos = 0
    while pos < len(content) and content[pos : pos + 1] == b"#":
        if pos > MAX_HEADER_BYTES:
            raise BadInputError(f"{where}: AEDAT header longer than {MAX_HEADER_BYTES} bytes")
        end = content.find(b"\n", pos)
        if end < 0:
            raise BadInputError(f"{where}: AEDAT header line without an end")
        line = content[pos:end]
        pos = end + 1
        if line.startswith(b"#!END-HEADER"):
            break
    return pos


def version(content: bytes, where: str) -> str:
    """'2' or '3' from the first header line; BadInputError for anything else."""
    first = content[:32]
    for tag, value in ((b"#!AER-DAT2", "2"), (b"#!AER-DAT3", "3")):
        if first.startswith(tag):
            return value
    raise BadInputError(f"{where}: not an AEDAT file (it must start with #!AER-DAT2.0 or #!AER-DAT3.1)")


def decode_aedat2(content: bytes, where: str) -> Events:
    """DVS128 events of an AEDAT 2.0 file (big-endian address and timestamp per event)."""
    if version(content, where) != "2":
        raise BadInputError(f"{where}: expected an AEDAT 2.0 file, found another version")
    start = _header_end(content, where)
    body = len(content) - start
    if body % 8:
        raise BadInputError(f"{where}: {body} bytes after the header is not a whole number of 8-byte events")
    raw = np.frombuffer(content, dtype=">u4", offset=start).reshape(-1, 2)
    address, t = raw[:, 0].astype(np.int64), raw[:, 1].astype(np.int64)
    keep = (address & 0x8000) == 0
    address, t = address[keep], t[keep]
    return (address >> 1) & 0x7F, (address >> 8) & 0x7F, address & 1, t


def decode_aedat31(content: bytes, where: str) -> Events:
    """Polarity events of an AEDAT 3.1 file."""
    if version(content, where) != "3":
        raise BadInputError(f"{where}: expected an AEDAT 3.1 file, found another version")
    pos = _header_end(content, where)
    parts: list[tuple[np.ndarray, np.ndarray, int]] = []
    while pos < len(content):
        if len(content) - pos < _PACKET.size:
            raise BadInputError(f"{where}: packet header cut short at byte {pos}")
        kind, _, size, ts_offset, overflow, capacity, number, _ = _PACKET.unpack_from(content, pos)
        pos += _PACKET.size
        if size < 1 or capacity < 0 or not 0 <= number <= capacity:
            raise BadInputError(f"{where}: packet at byte {pos - _PACKET.size} has eventSize {size}, "
                                f"eventCapacity {capacity}, eventNumber {number}")
        length = size * capacity
        if length > len(content) - pos:
            raise BadInputError(f"{where}: packet at byte {pos - _PACKET.size} promises {length} bytes of events, "
                                f"{len(content) - pos} remain")
        if kind == POLARITY_EVENT:
            if size != 8 or ts_offset != 4:
                raise BadInputError(f"{where}: polarity events must be 8 bytes with the timestamp at 4, "
                                    f"got size {size}, offset {ts_offset}")
            if overflow < 0:
                raise BadInputError(f"{where}: negative eventTSOverflow {overflow}")
            events = np.frombuffer(content, dtype="<u4", count=2 * number, offset=pos).reshape(-1, 2)
            parts.append((events[:, 0], events[:, 1], overflow))
        pos += length
    if not parts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty
    data = np.concatenate([d for d, _, _ in parts]).astype(np.int64)
    stamp = np.concatenate([(s.view("<i4").astype(np.int64) & 0x7FFFFFFF) | (np.int64(o) << 31) for _, s, o in parts])
    keep = (data & 1) == 1
    data, stamp = data[keep], stamp[keep]
    return (data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, (data >> 1) & 1, stamp

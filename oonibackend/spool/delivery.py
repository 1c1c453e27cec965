"""The batch the API delivers to the fastpath feeder: many measurements in one request.

Why: at 1,000 measurements/s one HTTP request per measurement cost the fastpath's main
process most of its ~420 µs per measurement (py-spy, 2026-12-06: the event loop's socket and
HTTP work dominated) and the API's forwarder as much again. One request carries a batch now,
and the feeder stores it with one group-committed append.

The body is a sequence of intake-queue records (oonibackend/spool/records.py framing):

    u32 length | u32 crc32 | u8 uid_len | uid (ASCII) | body

exactly the bytes the fastpath appends to its queue segment, so the feeder checks each crc
and writes the records as they came: nothing is encoded twice. `POST <feeder>/batch`,
`Content-Type: application/x-ooni-batch`; 200 means every record is durable, anything else
means none may be assumed delivered (the API retries them all; the queue drops uids it holds
already).
"""

from __future__ import annotations

from typing import NamedTuple

from oonibackend import ids
from oonibackend.spool import records

PATH = "batch"
CONTENT_TYPE = "application/x-ooni-batch"


class Item(NamedTuple):
    """One measurement of a batch, with its record as it is stored."""

    uid: str
    body: bytes
    record: bytes


def encode(uid: str, body: bytes) -> bytes:
    """One measurement's record (the intake queue's segment record, framed)."""
    u = uid.encode("ascii")
    if not 0 < len(u) < 256:
        raise ValueError("uid length must be 1..255")
    return records.frame(b"".join((bytes((len(u),)), u, body)))


def split_payload(payload: bytes) -> tuple[str, int] | None:
    """(uid, offset of the body in `payload`) of a record's payload, or None."""
    if len(payload) < 2:
        return None
    ulen = payload[0]
    if ulen == 0 or 1 + ulen > len(payload):
        return None
    try:
        return payload[1:1 + ulen].decode("ascii"), 1 + ulen
    except UnicodeDecodeError:
        return None


def decode(data: bytes, max_body: int) -> list[Item]:
    """The measurements of a batch; ValueError when it is not one whole, valid batch (a
    torn or corrupt record, a malformed uid, a body over `max_body` bytes)."""
    out: list[Item] = []
    pos = 0
    view = memoryview(data)
    head = records.HEAD
    while pos < len(data):
        if pos + head.size > len(data):
            raise ValueError("truncated record head")
        length, crc = head.unpack_from(data, pos)
        end = pos + head.size + length
        if end > len(data):
            raise ValueError("truncated record")
        payload = bytes(view[pos + head.size:end])
        if records.crc(payload) != crc:
            raise ValueError("bad record checksum")
        split = split_payload(payload)
        if split is None or not ids.is_valid_uid(split[0]):
            raise ValueError("invalid measurement uid")
        if length - split[1] > max_body:
            raise ValueError("measurement body too large")
        out.append(Item(split[0], payload[split[1]:], bytes(view[pos:end])))
        pos = end
    return out

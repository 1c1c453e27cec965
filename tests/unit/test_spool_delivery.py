"""The batch format between the API's forwarder and the fastpath feeder: what is encoded
decodes to the same measurements and the very bytes the intake queue stores; anything torn,
corrupt or malformed is refused whole."""

from __future__ import annotations

import pytest

from oonibackend.spool import delivery
from workers.intake import segment


def uid(i: int) -> str:
    return f"20240101120000.{i:06d}_IT_webconnectivity_{i:016x}"


def test_round_trip_keeps_the_queue_records():
    items = [(uid(i), b'{"n": %d}' % i * (i + 1)) for i in range(20)] + [(uid(99), b"")]
    data = b"".join(delivery.encode(u, b) for u, b in items)
    out = delivery.decode(data, 1000)
    assert [(i.uid, i.body) for i in out] == items
    assert [i.record for i in out] == [segment.encode(u, b) for u, b in items]
    assert delivery.decode(b"", 1000) == []


@pytest.mark.parametrize("damage", ["truncated", "crc", "uid", "large", "head"])
def test_damaged_batches_are_refused(damage):
    good = delivery.encode(uid(1), b"x" * 50)
    data = good + delivery.encode(uid(2), b"y" * 50)
    if damage == "truncated":
        data = data[:-1]
    elif damage == "crc":
        data = data[:-1] + b"z"
    elif damage == "uid":
        data = good + delivery.encode("../../etc/passwd", b"{}")
    elif damage == "large":
        data = good + delivery.encode(uid(2), b"y" * 51)
    else:
        data = good + b"\x01\x00"
    with pytest.raises(ValueError):
        delivery.decode(data, 50)

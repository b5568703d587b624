"""Feedback packets (type 5, feature ``bond-v2``): what one end received on each path.

A receiver tells the sender, per sender path, the highest per-path sequence number it has seen,
how many datagrams and bytes arrived on that path so far, the raw one-way delay of the datagram
with the highest number, and its own clock when it wrote the entry. From two reports the sender
learns the path's delivery rate, its loss, its one-way delay trend and which of its datagrams
are acknowledged (liveness, re-injection). Counters wrap at 2^32; differences are taken modulo.

Payload: ``count(1)`` then ``count`` entries of ``path id(1) | highest seq(4) | datagrams(4) |
bytes(4) | one-way delay µs(4) | receiver time µs(4)``, all big-endian.
"""

import struct
from typing import NamedTuple

FEEDBACK_COUNT = struct.Struct(">B")
FEEDBACK_ENTRY = struct.Struct(">BIIIII")
MAX_FEEDBACK_ENTRIES = 16
COUNTER_MASK = 0xFFFF_FFFF


class FeedbackEntry(NamedTuple):
    path_id: int
    highest_seq: int  # per-path sequence number (24 bits used)
    datagrams: int  # datagrams received on the path so far, modulo 2^32
    received_bytes: int  # bytes received on the path so far, modulo 2^32
    owd_us: int  # raw one-way delay of the highest-numbered datagram (clock offset included)
    receiver_us: int  # the receiver's clock when it wrote the entry


def pack_feedback(entries: list[FeedbackEntry]) -> bytes:
    """The payload for up to 16 entries (raises ``ValueError`` beyond: our own bug)."""
    if len(entries) > MAX_FEEDBACK_ENTRIES:
        raise ValueError(f"at most {MAX_FEEDBACK_ENTRIES} feedback entries, got {len(entries)}")
    parts = [FEEDBACK_COUNT.pack(len(entries))]
    for e in entries:
        parts.append(
            FEEDBACK_ENTRY.pack(
                e.path_id,
                e.highest_seq,
                e.datagrams & COUNTER_MASK,
                e.received_bytes & COUNTER_MASK,
                e.owd_us & COUNTER_MASK,
                e.receiver_us & COUNTER_MASK,
            )
        )
    return b"".join(parts)


def unpack_feedback(payload: bytes) -> list[FeedbackEntry] | None:
    """The entries of a feedback payload, or None when its length does not match its count."""
    if not payload:
        return None
    count = payload[0]
    if count > MAX_FEEDBACK_ENTRIES or len(payload) != 1 + count * FEEDBACK_ENTRY.size:
        return None
    return [
        FeedbackEntry(*FEEDBACK_ENTRY.unpack_from(payload, 1 + i * FEEDBACK_ENTRY.size))
        for i in range(count)
    ]

"""Anti-replay window over the 32-bit data-plane sequence number (RFC 6479 style).

The zero state has seen nothing and accepts any first sequence number. After that a number is
accepted when it is newer than the newest seen, or at most ``WINDOW_SIZE`` behind it and not seen
before. Sequence numbers wrap at 2^32: "newer" is serial-number arithmetic (RFC 1982), so a jump
forward of less than 2^31 is newer, anything else is behind. Internally the counter is extended to
an unbounded integer so the bitmap logic never sees the wrap. Not thread-safe: one per receiving
session. ``accept`` is called only after the datagram authenticated (else forged numbers could
advance it); ``fresh`` changes nothing and may be asked before, to spare the crypto of a number
``accept`` would refuse anyway.
"""

SEQ_MODULUS = 1 << 32
HALF_SEQ_SPACE = 1 << 31
BLOCK_BITS = 64
# A power of two: the block index is masked, not divided. 256 blocks: 16 320 packets of
# reordering tolerated, so a packet re-injected after a path died is still accepted while the
# survivor drains a backlog of a second behind new data (2 KiB of ints per window).
RING_BLOCKS = 256
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS
_BLOCK_MASK = RING_BLOCKS - 1
_BIT_MASK = BLOCK_BITS - 1
_LOG2_BLOCK_BITS = 6


class ReplayWindow:
    __slots__ = ("_empty", "_last", "_last_seq", "_ring")

    def __init__(self) -> None:
        self._ring = [0] * RING_BLOCKS
        self._empty = True
        self._last = 0  # extended counter of the newest accepted number (may go negative)
        self._last_seq = 0  # the same number as it was on the wire

    def accept(self, seq: int) -> bool:
        """Record ``seq`` and say whether it is fresh (True) or a replay / too old (False)."""
        if self._empty:
            self._empty = False
            self._last = counter = seq
            self._last_seq = seq
        else:
            ahead = (seq - self._last_seq) % SEQ_MODULUS
            if ahead < HALF_SEQ_SPACE:
                last = self._last
                counter = last + ahead
                if ahead:
                    if counter >> _LOG2_BLOCK_BITS == last >> _LOG2_BLOCK_BITS:
                        self._last = counter  # the same block: nothing to clear, no call
                        self._last_seq = seq
                    else:
                        self._advance(counter, seq)
            else:
                counter = self._last + ahead - SEQ_MODULUS
                if counter + WINDOW_SIZE < self._last:
                    return False
        index = (counter >> _LOG2_BLOCK_BITS) & _BLOCK_MASK
        bit = 1 << (counter & _BIT_MASK)
        word = self._ring[index]
        if word & bit:
            return False
        self._ring[index] = word | bit
        return True

    def fresh(self, seq: int) -> bool:
        """Whether ``accept(seq)`` would take ``seq`` now; records nothing."""
        if self._empty:
            return True
        ahead = (seq - self._last_seq) % SEQ_MODULUS
        if ahead:
            if ahead < HALF_SEQ_SPACE:
                return True
            counter = self._last + ahead - SEQ_MODULUS
            if counter + WINDOW_SIZE < self._last:
                return False
        else:
            counter = self._last
        index = (counter >> _LOG2_BLOCK_BITS) & _BLOCK_MASK
        return not self._ring[index] & (1 << (counter & _BIT_MASK))

    def _advance(self, counter: int, seq: int) -> None:
        current = self._last >> _LOG2_BLOCK_BITS
        blocks = min((counter >> _LOG2_BLOCK_BITS) - current, RING_BLOCKS)
        # The blocks past the old newest number now stand for new numbers: clear them.
        for step in range(1, blocks + 1):
            self._ring[(current + step) & _BLOCK_MASK] = 0
        self._last = counter
        self._last_seq = seq

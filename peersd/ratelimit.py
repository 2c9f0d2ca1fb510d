"""Per-sender rate limits: a token bucket each, so a runaway session cannot flood others."""

from __future__ import annotations

import time

from .errors import Code, PeersError


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self, n: int = 1) -> bool:
        """Take ``n`` tokens, all or none."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


class SenderLimits:
    """``rate`` messages per second per sender, in bursts of up to ``burst``; 0 is no limit."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, sender: str, n: int = 1) -> None:
        """Count ``n`` messages from ``sender``, or refuse them all with ``rate_limited``."""
        if self.rate <= 0:
            return
        bucket = self.buckets.get(sender)
        if bucket is None:
            bucket = self.buckets[sender] = TokenBucket(self.rate, self.burst)
        if not bucket.take(n):
            raise PeersError(
                Code.RATE_LIMITED,
                f"sending too fast: the limit is {self.rate:g} messages/s "
                f"(bursts of {self.burst}); try again shortly",
            )

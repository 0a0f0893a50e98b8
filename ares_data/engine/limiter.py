"""Client-side rate limiter: requests/min and tokens/min over a sliding window, plus a global pause.

Requests are spaced `60/rpm` seconds apart on a fixed schedule (lateness does not accumulate, so the
long-run rate reaches the limit), and a hard sliding-window cap makes sure that no window of `window`
seconds ever holds more than `rpm` sends or more than `tpm` tokens. `pause_until` stops every worker until a
moment the provider named (retry-after, or a reset time when its remaining budget hit zero).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

# The hard cap uses a window a little longer than a minute, so a send observed a few milliseconds late at the
# server still never makes any 60 s window hold more than the limit.
WINDOW_S = 60.0
WINDOW_MARGIN_S = 0.25


class _Grant:
    __slots__ = ("t", "tokens")

    def __init__(self, t: float, tokens: float) -> None:
        self.t, self.tokens = t, tokens


class RateLimiter:
    """`await acquire(tokens)` right before each send. Safe for many coroutines on one event loop."""

    def __init__(
        self,
        rpm: float | None = None,
        tpm: float | None = None,
        *,
        window: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rpm is not None and rpm <= 0:
            raise ValueError("rpm must be positive")
        if tpm is not None and tpm <= 0:
            raise ValueError("tpm must be positive")
        self.rpm, self.tpm = rpm, tpm
        self.window = window + (WINDOW_MARGIN_S if window == WINDOW_S else 0.0)
        self.interval = window / rpm if rpm else 0.0
        self.clock = clock
        self._sends: deque[float] = deque()
        self._tokens: deque[_Grant] = deque()
        self._token_sum = 0.0
        self._next_slot = 0.0
        self._resume_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def active(self) -> bool:
        return bool(self.rpm or self.tpm)

    def pause_until(self, when: float) -> None:
        """Hold every future send until `when` (a `clock()` time)."""
        self._resume_at = max(self._resume_at, when)

    def pause_for(self, seconds: float) -> None:
        self.pause_until(self.clock() + max(0.0, seconds))

    def _expire(self, now: float) -> None:
        edge = now - self.window
        while self._sends and self._sends[0] <= edge:
            self._sends.popleft()
        while self._tokens and self._tokens[0].t <= edge:
            self._token_sum -= self._tokens.popleft().tokens

    def _wait_needed(self, now: float, tokens: float) -> float:
        waits = [self._resume_at - now]
        if self.rpm:
            waits.append(self._next_slot - now)
            if len(self._sends) >= self.rpm:
                waits.append(self._sends[0] + self.window - now)
        if self.tpm and self._tokens and self._token_sum + tokens > self.tpm:
            # wait until enough old tokens leave the window (a single huge request goes alone)
            need, acc = self._token_sum + tokens - self.tpm, 0.0
            for g in self._tokens:
                acc += g.tokens
                if acc >= need:
                    waits.append(g.t + self.window - now)
                    break
        return max(waits)

    async def acquire(self, tokens: float = 0.0) -> _Grant:
        """Wait for a send slot; returns a handle for `settle` (to replace the token estimate)."""
        async with self._lock:
            while True:
                now = self.clock()
                self._expire(now)
                wait = self._wait_needed(now, tokens)
                if wait <= 0:
                    break
                # re-check at least every second: `settle` may free tokens, a pause may be extended
                await asyncio.sleep(min(wait, 1.0))
            if self.rpm:
                self._sends.append(now)
                # a slightly late wake-up keeps the schedule; after idle time, restart it from now
                late = now - self._next_slot
                base = self._next_slot if late < self.interval else now
                self._next_slot = base + self.interval
            grant = _Grant(now, float(tokens))
            if self.tpm:
                self._tokens.append(grant)
                self._token_sum += grant.tokens
            return grant

    def settle(self, handle: object, actual_tokens: float) -> None:
        """Replace a send's token estimate by the usage the provider reported."""
        if not self.tpm or not isinstance(handle, _Grant):
            return
        if handle.t > self.clock() - self.window:  # still counted in the window
            self._token_sum += actual_tokens - handle.tokens
        handle.tokens = float(actual_tokens)

"""Rates for the console: puts, reserves, deletes and timeouts per second, server-side.

A trio task samples four counters once a second into a ring of the last ten minutes, so an
overview opened now shows the past minutes at once and every open page shows the same curve.
A sample reads two engine totals and sums two counters over the tubes (one C-level pass per
counter: ~0.3 ms a second at 10,000 tubes). Per-tube rates (puts, reserves, deletes) come from
two snapshots of every tube's counters five seconds apart, taken only while someone looks at
the tubes table (a snapshot at 10,000 tubes takes a few milliseconds).

The sums over tubes drop when an empty tube goes away with its counters; a second whose sum
went down counts as 0 rather than as a negative rate.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from operator import attrgetter

import trio

from beanq.tubes import Engine, Tube

INTERVAL = 1.0  # seconds between samples
KEEP = 600  # samples kept (ten minutes)
TUBE_INTERVAL = 5.0  # seconds between snapshots of the tubes' counters
TUBE_INTEREST = 60.0  # keep taking them this long after the tubes table last asked

_reserves = attrgetter("reserve_count")
_deletes = attrgetter("delete_count")
_tube_counters = attrgetter("total_jobs", "reserve_count", "delete_count")

Snapshot = tuple[float, dict[bytes, tuple[int, int, int]]]


class Rates:
    def __init__(self, engine: Engine, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._clock = clock
        # (time, puts, reserves, deletes, timeouts), oldest first
        self.samples: deque[tuple[float, int, int, int, int]] = deque(maxlen=KEEP + 1)
        self._previous: Snapshot | None = None
        self._last: Snapshot | None = None
        self._interest_until = 0.0

    def sample(self) -> None:
        engine = self._engine
        tubes = engine.tube_order
        now = self._clock()
        self.samples.append(
            (
                now,
                engine.total_jobs,
                sum(map(_reserves, tubes)),
                sum(map(_deletes, tubes)),
                engine.timeouts,
            )
        )
        last = self._last
        if now < self._interest_until and (last is None or now - last[0] >= TUBE_INTERVAL):
            self._snapshot(now)

    def _snapshot(self, now: float) -> None:
        tubes = self._engine.tube_order
        self._previous = self._last
        self._last = (now, {t.name: _tube_counters(t) for t in tubes})

    async def run(self) -> None:
        while True:
            self.sample()
            await trio.sleep(INTERVAL)

    def series(self) -> list[list[float]]:
        """[seconds before now (<= 0), puts/s, reserves/s, deletes/s, timeouts/s] per sample
        interval, oldest first."""
        now = self._clock()
        rows: list[list[float]] = []
        earlier = None
        for sample in self.samples:
            if earlier is not None:
                span = sample[0] - earlier[0]
                if span > 0:
                    rows.append(
                        [round(sample[0] - now, 3)]
                        + [
                            round(max(0, b - a) / span, 3)
                            for a, b in zip(earlier[1:], sample[1:], strict=True)
                        ]
                    )
            earlier = sample
        return rows

    def want_tubes(self) -> None:
        """The tubes table is open: keep snapshots coming (the first one now)."""
        now = self._clock()
        self._interest_until = now + TUBE_INTEREST
        if self._last is None or now - self._last[0] >= TUBE_INTERVAL * 2:
            self._snapshot(now)

    def tube_rates(self, tube: Tube) -> tuple[float, float, float] | None:
        """Puts, reserves and deletes per second over the last snapshot interval (None: not
        known yet)."""
        previous, last = self._previous, self._last
        if previous is None or last is None:
            return None
        before = previous[1].get(tube.name)
        after = last[1].get(tube.name)
        span = last[0] - previous[0]
        if after is None or span <= 0:
            return None
        if before is None:
            before = (0, 0, 0)
        return (
            max(0, after[0] - before[0]) / span,
            max(0, after[1] - before[1]) / span,
            max(0, after[2] - before[2]) / span,
        )

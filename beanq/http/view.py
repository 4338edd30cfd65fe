"""What the HTTP side may see of the server: a read-only view of the engine.

The HTTP handlers run as trio tasks on the loop's own thread, between two batches of the
beanstalk loop, so they read the engine's live objects without locks and without a protocol
round trip. They only read: this class hands out numbers, tubes, jobs and sessions, and every
change to the queue stays with the beanstalk protocol. It is built by ``beanq.server`` from
the pieces the hub owns, so the HTTP package never reaches into connections or the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import TYPE_CHECKING, Protocol

from beanq.binlog import BinlogMetrics
from beanq.dispatch import BinlogStats, HostInfo
from beanq.tubes import STATE_NAMES, Engine, Job, Session, State, Tube

if TYPE_CHECKING:
    from beanq.schedules import Schedule


class BinlogView(Protocol):
    """The binlog's reporting side (``beanq.binlog.Binlog``)."""

    def stats(self) -> BinlogStats: ...

    def metrics(self) -> BinlogMetrics: ...

    def job_file(self, job: Job) -> int: ...


class AuthAudit(Protocol):
    """What ``--auth``'s gates counted (``beanq.auth.Audit``): copies, keyed by labels."""

    def successes(self) -> dict[tuple[str, str], int]: ...

    def failures(self) -> dict[tuple[str, str], int]: ...

    def refusals(self) -> dict[tuple[str, str], int]: ...


class EngineView:
    def __init__(
        self,
        engine: Engine,
        host: HostInfo,
        *,
        max_job_size: int,
        clock: Callable[[], float],
        draining: Callable[[], bool],
        sessions: Callable[[], Iterable[Session]],
        binlog: BinlogView | None = None,
        peer: Callable[[Session], tuple[str, float] | None] = lambda session: None,
        auth: AuthAudit | None = None,
    ) -> None:
        self.engine = engine
        self.host = host
        self.max_job_size = max_job_size
        self.clock = clock
        self._draining = draining
        self._sessions = sessions
        self.binlog = binlog
        self._peer = peer
        self.auth = auth  # None: no --auth, nothing counted

    # --- health ----------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        return self._draining()

    def readiness(self) -> str | None:
        """None when ready (replayed, listening, taking puts), else why not. The HTTP side
        starts only after the binlog has been replayed and the beanstalk socket answers."""
        if self.draining:
            return "draining"
        return None

    # --- server ----------------------------------------------------------------------------

    def binlog_stats(self) -> BinlogStats:
        return self.binlog.stats() if self.binlog is not None else BinlogStats()

    def binlog_metrics(self) -> BinlogMetrics | None:
        return self.binlog.metrics() if self.binlog is not None else None

    def uptime(self) -> int:
        return int(self.clock() - self.engine.started)

    def sessions(self) -> Iterable[Session]:
        return self._sessions()

    def peer(self, session: Session) -> tuple[str, float] | None:
        """The session's peer address and when it last sent something (None: unknown)."""
        return self._peer(session)

    # --- tubes and jobs --------------------------------------------------------------------

    def tubes(self) -> list[Tube]:
        """In ``list-tubes`` order."""
        return self.engine.tube_order

    def tube(self, name: bytes) -> Tube | None:
        return self.engine.find_tube(name)

    def job(self, job_id: int) -> Job | None:
        return self.engine.jobs.get(job_id)

    def oldest_ready_age(self, tube: Tube) -> float:
        """Seconds the tube's oldest ready job has existed (0: none ready)."""
        job = self.engine.oldest_ready(tube)
        return 0.0 if job is None else max(0.0, self.clock() - job.created)

    def pause_time_left(self, tube: Tube) -> int:
        return self.engine.pause_time_left(tube, self.clock())

    def job_time_left(self, job: Job) -> int:
        return self.engine.job_time_left(job, self.clock())

    def job_file(self, job: Job) -> int:
        return self.binlog.job_file(job) if self.binlog is not None else 0

    def job_page(self, tube: Tube, state: State, after: int, limit: int) -> list[Job]:
        """The tube's jobs in ``state`` with ids above ``after``, smallest first, at most
        ``limit``: O(log n + limit) from the tube's id indexes (``beanq-list``)."""
        ids = self.engine.list_ids(tube.name, state, after, limit)
        jobs = self.engine.jobs
        return [jobs[i] for i in ids if i in jobs]

    # --- schedules ---------------------------------------------------------------------------

    def wall(self) -> float:
        """Now as Unix time, on the clock schedules' fire times are in."""
        return self.clock() + self.engine.wall_offset

    def schedules(self) -> list[Schedule]:
        """Every schedule, by name (none: the server never had one)."""
        book = self.engine.schedules
        return sorted(book.by_name.values(), key=attrgetter("name")) if book else []

    def schedule(self, name: bytes) -> Schedule | None:
        book = self.engine.schedules
        return None if book is None else book.by_name.get(name)


def state_name(job: Job) -> str:
    return STATE_NAMES[job.state]

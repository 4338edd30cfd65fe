"""The queue engine: jobs, tubes, sessions, every state transition and every counter.

Theory of operation
-------------------
A job is in exactly one state: ready (in its tube's ready heap, ordered by (priority, id)),
delayed (in its tube's delay heap and the timer heap, ordered by (deadline, id)), reserved (held
by one session, with a TTR deadline in the timer heap) or buried (in its tube's FIFO). The
engine never reads a clock: every call that depends on time takes ``now`` (monotonic seconds),
and ``tick(now)`` fires whatever fell due and returns when it next needs to be called.

Heaps are ``heapq`` lists of tuples whose first two items are numbers, so comparisons run in C.
Removing a job from the middle of a heap (deleting a ready job by id, kicking one delayed job)
is lazy: each job holds the one heap entry that is currently its own (``job.entry``); any other
entry found at the top of a heap is stale and dropped. Heaps are rebuilt when stale entries
outnumber live ones, so memory stays proportional to live jobs.

A session is one client's view: the tube it uses, the tubes it watches, the jobs it holds, and
whether it is blocked in ``reserve``. When a blocked session gets a job, times out, or must be
told DEADLINE_SOON, the engine appends ``(session, notice)`` to ``notices``; the caller delivers
them. Tubes that have both waiting sessions and ready jobs are kept in ``_hot``, so handing out
jobs never scans all tubes.

Every change to a job's durable state (put, reserve, release, bury, kick, delete, touch-free
transitions such as TTR expiry and delay promotion) appends the job to ``changes``, which the
binlog drains; the engine itself never touches a file.

Where beanstalkd 1.12's observable behaviour depends on its data structures (the order of
``list-tubes`` after a tube is freed, which of several waiting connections gets a job), the
engine reproduces that order, because clients and tests can see it.
"""

from __future__ import annotations

import collections
import enum
import heapq
import itertools
from bisect import bisect_left, bisect_right, insort
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from beanq.schedules import Schedule, ScheduleBook

URGENT_THRESHOLD: Final = 1024
# What Engine.ops records (the binlog writes one record for a flush, full records for a move)
OP_FLUSH: Final = 1
OP_MOVE: Final = 2
OP_SCHEDULE: Final = 3  # a schedule's record (its state, a fire, its removal: beanq.schedules)
SAFETY_MARGIN: Final = 1.0  # seconds before a TTR deadline when a waiting worker is warned
DEFAULT_TUBE: Final = b"default"
# Upper bounds (seconds) of the reserve-to-delete histogram's buckets, the last one +Inf.
RESERVE_DELETE_BOUNDS: Final = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    3600.0,
)


class State(enum.IntEnum):
    READY = 0
    RESERVED = 1
    DELAYED = 2
    BURIED = 3
    DELETED = 4


STATE_NAMES: Final = {
    State.READY: "ready",
    State.RESERVED: "reserved",
    State.DELAYED: "delayed",
    State.BURIED: "buried",
    State.DELETED: "invalid",
}


class Notice(enum.Enum):
    """What a blocked ``reserve`` ends with, other than a job."""

    TIMED_OUT = "TIMED_OUT"
    DEADLINE_SOON = "DEADLINE_SOON"


# A heap entry: (key1, key2, item). Ready: (pri, id, job). Timers: (when, id or -n, item).
# Typed as a tuple of any length so that the compiled build (mypyc) keeps each entry the same
# Python object: it unpacks fixed-length tuples into C structs, and then ``item.entry is entry``
# (how a live entry is told from a stale one) would never hold.
Entry = tuple[Any, ...]


class Job:
    """One job. Slotted and flat: a queue may hold millions, and per-object overhead dominates."""

    __slots__ = (
        "body",
        "buries",
        "created",
        "deadline",
        "delay",
        "entry",
        "id",
        "kicks",
        "logged",
        "pri",
        "releases",
        "reserver",
        "reserves",
        "state",
        "timeouts",
        "ttr",
        "tube",
    )

    def __init__(
        self, id: int, pri: int, delay: int, ttr: int, body: bytes, tube: Tube, now: float
    ) -> None:
        self.id = id
        self.pri = pri
        self.delay = delay  # seconds, as last given by put or release
        self.ttr = ttr  # seconds, at least 1
        self.body = body
        self.tube = tube
        self.state = State.READY
        self.created = now
        self.deadline = 0.0  # delayed: when it becomes ready; reserved: when its TTR ends
        self.reserver: Session | None = None
        self.entry: Entry | None = None
        self.reserves = 0
        self.timeouts = 0
        self.releases = 0
        self.buries = 0
        self.kicks = 0
        # Where the binlog holds this job's records, for the binlog alone (0: nowhere). On the
        # job rather than in a table beside it for the same reason as beanstalkd's job->file:
        # every logged change looks it up, and millions of jobs would need millions of entries.
        self.logged = 0

    def __repr__(self) -> str:
        return f"<Job {self.id} {STATE_NAMES[self.state]} pri={self.pri} tube={self.tube.name!r}>"


def restored_job(
    id: int,
    pri: int,
    delay: int,
    ttr: int,
    body: bytes,
    tube: Tube,
    state: State,
    created: float,
    deadline: float,
    reserves: int,
    timeouts: int,
    releases: int,
    buries: int,
    kicks: int,
) -> Job:
    """A job as the binlog recorded it: the binlog builds one per record at replay, and
    ``Job`` takes only what a put gives."""
    job = Job(id, pri, delay, ttr, body, tube, created)
    job.state = state
    job.deadline = deadline
    job.reserves = reserves
    job.timeouts = timeouts
    job.releases = releases
    job.buries = buries
    job.kicks = kicks
    return job


def restored_keyed_job(job: Job, key: bytes) -> KeyedJob:
    """``job`` as a job put with ``beanq-put-unique`` (the binlog read its key back)."""
    keyed = KeyedJob(job.id, job.pri, job.delay, job.ttr, job.body, job.tube, job.created, key)
    keyed.state = job.state
    keyed.deadline = job.deadline
    keyed.reserves = job.reserves
    keyed.timeouts = job.timeouts
    keyed.releases = job.releases
    keyed.buries = job.buries
    keyed.kicks = job.kicks
    keyed.logged = job.logged
    return keyed


class KeyedJob(Job):
    """A job put with ``beanq-put-unique``: its key is held (in its tube) while it lives. A
    subclass, so that the jobs of plain puts do not carry the slot."""

    __slots__ = ("key",)

    def __init__(
        self,
        id: int,
        pri: int,
        delay: int,
        ttr: int,
        body: bytes,
        tube: Tube,
        now: float,
        key: bytes,
    ) -> None:
        super().__init__(id, pri, delay, ttr, body, tube, now)
        self.key = key


_BLOCK: Final = 512


def _live_jobs(heap: list[Entry], out: list[Job]) -> None:
    """Append to ``out`` the jobs whose current entry is in ``heap`` (the rest are stale)."""
    for entry in heap:
        job = entry[2]
        if job.entry is entry:
            out.append(job)


class IdIndex:
    """The ids of one tube's jobs in one state, ascending, for ``beanq-list``: sorted blocks of
    at most ``_BLOCK`` ids and the last id of each, so that a page after any id costs two
    bisections and the ids it returns. Every transition of every job updates one or two of
    them, so the common cases are short paths: ids mostly arrive ascending (puts: an append,
    decided on a native copy of the highest id, ``top``) and leave from the front (reserves
    and deletes in id order: the first block's live part starts at ``head``, one step
    further, found by identity when the caller passes the object it added). Items are the id
    objects that the heap entries and tables already hold, so the index adds no objects."""

    __slots__ = ("blocks", "head", "maxes", "top")

    def __init__(self) -> None:
        self.blocks: list[list[Any]] = []
        self.maxes: list[Any] = []
        self.head = 0  # blocks[0][:head] have left
        self.top = -1  # the highest id held, -1 when empty

    def add(self, i: Any, n: int) -> None:
        """Hold id ``i`` (an object), whose value is ``n``."""
        top = self.top
        if n > top:
            self.top = n
            maxes = self.maxes
            if top >= 0:
                blocks = self.blocks
                block = blocks[-1]
                if len(block) < _BLOCK:
                    block.append(i)
                    maxes[-1] = i
                else:  # (ids arriving in order fill blocks whole: no split, no copy)
                    blocks.append([i])
                    maxes.append(i)
            elif self.head:  # empty, its last item kept by remove: overwritten in place
                self.blocks[0][0] = i
                self.head = 0
                maxes[0] = i
            elif self.blocks:  # (an emptied block is kept)
                self.blocks[0].append(i)
                maxes.append(i)
            else:
                self.blocks.append([i])
                maxes.append(i)
            return
        maxes = self.maxes
        k = bisect_left(maxes, i)
        block = self.blocks[k]
        insort(block, i, self.head if k == 0 else 0)
        if len(block) > _BLOCK:
            self._split(k)

    def _split(self, k: int) -> None:
        block = self.blocks[k]
        if k == 0 and self.head:
            del block[: self.head]
            self.head = 0
            if len(block) <= _BLOCK:
                return
        half = len(block) >> 1
        self.blocks.insert(k + 1, block[half:])
        del block[half:]
        self.maxes.insert(k, block[-1])

    def remove(self, i: Any) -> None:
        block = self.blocks[0]
        head = self.head
        first = block[head]
        if first is i or first == i:
            head += 1
            if head < len(block):
                self.head = head
                return
            maxes = self.maxes
            if len(maxes) > 1:
                self.head = 0
                del self.blocks[0]
                del maxes[0]
            elif head == 1:
                # Now empty, and the one item stays as left: add overwrites it in place. A list
                # emptied and refilled is reallocated both ways, twice per job in a tube that
                # holds one job at a time, the most common tube there is.
                self.head = 1
                self.top = -1
            else:
                self.head = 0
                block.clear()
                maxes.pop()
                self.top = -1
            return
        maxes = self.maxes
        k = bisect_left(maxes, i)
        block = self.blocks[k]
        lo = head if k == 0 else 0
        del block[bisect_left(block, i, lo)]
        if len(block) == lo:
            if k == 0:
                self.head = 0
            if len(self.blocks) == 1:
                block.clear()
            else:
                del self.blocks[k]
            del maxes[k]
            if k == len(maxes):
                self.top = maxes[-1] if maxes else -1
        elif i == maxes[k]:
            maxes[k] = block[-1]
            if k == len(maxes) - 1:
                self.top = block[-1]

    def after(self, after: int, limit: int) -> list[int]:
        """Up to ``limit`` ids above ``after``, ascending."""
        out: list[int] = []
        blocks = self.blocks
        k = bisect_right(self.maxes, after)
        if k < len(self.maxes):
            block = blocks[k]
            j = bisect_right(block, after, self.head if k == 0 else 0)
            out.extend(block[j : j + limit])
            k += 1
            while len(out) < limit and k < len(self.maxes):
                out.extend(blocks[k][: limit - len(out)])
                k += 1
        return out

    def ids(self) -> list[int]:
        """Every id held, ascending (for tests)."""
        out: list[int] = []
        for k, block in enumerate(self.blocks):
            out.extend(block[self.head :] if k == 0 else block)
        return out

    def build(self, ids: list[Any]) -> None:
        """Hold ``ids`` (ascending) at once: a replay's jobs."""
        if self.maxes:
            for i in ids:
                self.add(i, i)
            return
        self.blocks = []
        self.head = 0
        for start in range(0, len(ids), _BLOCK):
            block = ids[start : start + _BLOCK]
            self.blocks.append(block)
            self.maxes.append(block[-1])
        if ids:
            self.top = ids[-1]

    def clear(self) -> None:
        self.blocks = []
        self.maxes = []
        self.head = 0
        self.top = -1


class WaitList:
    """The sessions blocked in ``reserve`` on one tube.

    Reproduces beanstalkd's ``Ms``: removal moves the last item into the hole, and ``take``
    walks a cursor, so which of several waiting clients gets a job matches the reference.
    Positions are indexed, so removal is O(1) where beanstalkd scans."""

    __slots__ = ("_items", "_last", "_pos")

    def __init__(self) -> None:
        self._items: list[Session] = []
        self._pos: dict[Session, int] = {}
        self._last = 0

    def __len__(self) -> int:
        return len(self._items)

    def append(self, s: Session) -> None:
        self._pos[s] = len(self._items)
        self._items.append(s)

    def remove(self, s: Session) -> None:
        i = self._pos.pop(s)
        last = self._items.pop()
        if last is not s:
            self._items[i] = last
            self._pos[last] = i

    def take(self) -> Session:
        self._last %= len(self._items)
        s = self._items[self._last]
        self.remove(s)
        self._last += 1
        return s


class Tube:
    __slots__ = (
        "buried",
        "buried_ids",
        "bury_count",
        "delayed",
        "delayed_count",
        "delayed_ids",
        "delete_count",
        "entry",
        "kick_count",
        "name",
        "pause_count",
        "pause_seconds",
        "paused_until",
        "pos",
        "ready",
        "ready_by_id",
        "ready_count",
        "ready_ids",
        "refs",
        "release_count",
        "reserve_count",
        "reserved_count",
        "reserved_ids",
        "stale",
        "timeout_count",
        "total_jobs",
        "urgent_count",
        "using",
        "waiting",
        "watching",
    )

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.ready: list[Entry] = []  # heap of (pri, id, job)
        self.delayed: list[Entry] = []  # heap of (deadline, id, job)
        self.buried: OrderedDict[int, Job] = OrderedDict()
        self.stale = 0  # stale entries in ready + delayed
        self.pos = 0  # index in Engine.tube_order
        self.ready_count = 0
        self.delayed_count = 0
        self.urgent_count = 0
        self.reserved_count = 0
        self.total_jobs = 0
        self.delete_count = 0
        # counters beyond stats-tube, for metrics (puts are total_jobs)
        self.reserve_count = 0
        self.release_count = 0
        self.bury_count = 0
        self.kick_count = 0
        self.timeout_count = 0
        # (id, ready entry) of its ready jobs, a heap with lazy deletion, kept only while the
        # engine is ``observing`` (see Engine.oldest_ready)
        self.ready_by_id: list[Entry] = []
        self.pause_count = 0
        self.pause_seconds = 0
        self.paused_until: float | None = None
        self.entry: Entry | None = None  # the unpause timer
        self.waiting = WaitList()
        self.using = 0
        self.watching = 0
        self.refs = 0  # sessions using or watching it, plus jobs in it
        # the ids of its jobs in each state, ascending (beanq-list)
        self.ready_ids = IdIndex()
        self.delayed_ids = IdIndex()
        self.buried_ids = IdIndex()
        self.reserved_ids = IdIndex()

    def __repr__(self) -> str:
        return f"<Tube {self.name!r}>"


class Session:
    """One client connection's state in the engine."""

    __slots__ = (
        "deadlines",
        "entry",
        "id",
        "is_producer",
        "is_worker",
        "reserved",
        "timeout_at",
        "use",
        "waiting",
        "watch",
    )

    def __init__(self, id: int, tube: Tube) -> None:
        self.id = id
        self.use = tube
        self.watch: list[Tube] = [tube]
        self.reserved: dict[int, Job] = {}
        # TTR entries of the held jobs, a heap with lazy deletion, for DEADLINE_SOON checks
        # that cost O(log n) rather than a scan of every held job
        self.deadlines: list[Entry] = []  # (deadline, id, job)
        self.waiting = False
        self.timeout_at: float | None = None  # when a blocked reserve-with-timeout gives up
        self.entry: Entry | None = None  # the session's wake-up timer while waiting
        self.is_producer = False
        self.is_worker = False

    def __repr__(self) -> str:
        return f"<Session {self.id}>"


class Engine:
    """All queues of one server. Single-threaded, deterministic, no I/O."""

    def __init__(self, now: float = 0.0) -> None:
        self.started = now
        self.next_id = 1
        self.jobs: dict[int, Job] = {}
        self.tubes: dict[bytes, Tube] = {}
        self.tube_order: list[Tube] = []  # list-tubes order, as beanstalkd keeps it
        self.timers: list[Entry] = []
        self._timer_seq = itertools.count(-1, -1)  # tie-breakers below every job id
        self._hot: dict[Tube, None] = {}  # tubes with waiting sessions and ready jobs
        self.notices: list[tuple[Session, Job | Notice]] = []
        self.changes: list[Job] = []
        # Changes the binlog records otherwise than by a record per job in ``changes``:
        # (how many of ``changes`` came before, OP_FLUSH or OP_MOVE, the jobs concerned; or
        # OP_SCHEDULE and a record's payload)
        self.ops: list[tuple[int, int, list[Any]]] = []
        self.unique: dict[tuple[bytes, bytes], KeyedJob] = {}  # (tube, key) -> live job
        self._session_ids = itertools.count(1)
        # counters reported by `stats`
        self.ready_count = 0
        self.urgent_count = 0
        self.reserved_count = 0
        self.delayed_count = 0
        self.buried_count = 0
        self.total_jobs = 0
        self.body_bytes = 0  # of the jobs held (what a burst weighs, beside their count)
        # the most jobs and body bytes held since the last take_peak()
        self._peak_jobs = 0
        self._peak_body_bytes = 0
        self.timeouts = 0
        self.waiting_count = 0
        self.connections = 0
        self.total_connections = 0
        self.producers = 0
        self.workers = 0
        self.commands: dict[str, int] = collections.defaultdict(int)  # cmd-* counters
        # Metrics beyond stats (--http): while observing, each tube indexes its ready jobs by
        # id and deletes of reserved jobs feed the reserve-to-delete histogram. Off, the only
        # cost is a flag test.
        self.observing = False
        self.reserve_delete_counts = [0] * (len(RESERVE_DELETE_BOUNDS) + 1)
        self.reserve_delete_sum = 0.0
        # When each job reserved while observing was reserved: an entry per held job, not a
        # slot on every job (which took each job from 192 to 208 bytes)
        self.reserve_times: dict[Job, float] = {}
        self.default_tube = self._tube(DEFAULT_TUBE)
        self.default_tube.refs += 1  # the default tube is never freed
        # Periodic schedules (beanq.schedules), made with the first one; their fire times are
        # wall-clock: wall = now + wall_offset (set by the server)
        self.schedules: ScheduleBook | None = None
        self.wall_offset = 0.0
        # Whether a schedule may put a job of this many bytes now (the hub's answer to a put:
        # draining, the job cap, binlog room promised); None: always
        self.room: Callable[[int], bool] | None = None

    # --- tubes -----------------------------------------------------------------------------

    def _tube(self, name: bytes) -> Tube:
        tube = self.tubes.get(name)
        if tube is None:
            tube = self.tubes[name] = Tube(name)
            tube.pos = len(self.tube_order)
            self.tube_order.append(tube)
        return tube

    def _unref(self, tube: Tube) -> None:
        tube.refs -= 1
        if tube.refs == 0:
            del self.tubes[tube.name]
            last = self.tube_order.pop()
            if last is not tube:
                self.tube_order[tube.pos] = last
                last.pos = tube.pos
            self._hot.pop(tube, None)
            # Stale heap entries and a pause timer point back at the tube through their jobs
            # or themselves: break those cycles, since the server runs without the collector.
            tube.ready.clear()
            tube.delayed.clear()
            tube.ready_by_id.clear()
            tube.stale = 0
            tube.entry = None

    def find_tube(self, name: bytes) -> Tube | None:
        return self.tubes.get(name)

    # --- sessions --------------------------------------------------------------------------

    def connect(self) -> Session:
        s = Session(next(self._session_ids), self.default_tube)
        self.default_tube.refs += 2
        self.default_tube.using += 1
        self.default_tube.watching += 1
        self.connections += 1
        self.total_connections += 1
        return s

    def disconnect(self, s: Session, now: float) -> None:
        """The connection closed: stop waiting, and put its reserved jobs back at once."""
        self.connections -= 1
        if s.is_producer:
            self.producers -= 1
        if s.is_worker:
            self.workers -= 1
        self._stop_waiting(s)
        for job in list(s.reserved.values()):
            self._unreserve(s, job)
            self._make_ready(job)
            self.changes.append(job)
        # beanstalkd empties the watch list by removing its first item again and again, each
        # time moving the last into the hole; tubes freed here leave list-tubes in that order.
        watch = s.watch
        while watch:
            tube = watch[0]
            last = watch.pop()
            if last is not tube:
                watch[0] = last
            tube.watching -= 1
            self._unref(tube)
        s.use.using -= 1
        self._unref(s.use)
        self._process_queue(now)

    def use(self, s: Session, name: bytes) -> None:
        tube = self._tube(name)
        tube.refs += 1
        tube.using += 1
        old = s.use
        s.use = tube
        old.using -= 1
        self._unref(old)

    def watch(self, s: Session, name: bytes) -> int:
        tube = self._tube(name)
        if tube not in s.watch:
            s.watch.append(tube)
            tube.refs += 1
            tube.watching += 1
        return len(s.watch)

    def ignore(self, s: Session, name: bytes) -> int | None:
        """Returns the new watch count, or None if this is the last watched tube."""
        tube = self.tubes.get(name)
        if tube is None or tube not in s.watch:
            return len(s.watch)
        if len(s.watch) < 2:
            return None
        watch = s.watch
        i = watch.index(tube)
        last = watch.pop()
        if last is not tube:
            watch[i] = last
        tube.watching -= 1
        self._unref(tube)
        return len(watch)

    def mark_producer(self, s: Session) -> None:
        if not s.is_producer:
            s.is_producer = True
            self.producers += 1

    def mark_worker(self, s: Session) -> None:
        if not s.is_worker:
            s.is_worker = True
            self.workers += 1

    # --- putting jobs in and taking them out ------------------------------------------------

    def put(
        self,
        s: Session,
        pri: int,
        delay: int,
        ttr: int,
        body: bytes,
        now: float,
        job_id: int | None = None,
    ) -> Job:
        """A new job; ``job_id`` is one taken earlier from ``allocate_id``, if any."""
        tube = s.use
        if job_id is None:
            job_id = self.allocate_id()
        job = Job(job_id, pri, delay, max(ttr, 1), body, tube, now)
        self._admit(job, delay, now)
        return job

    def _admit(self, job: Job, delay: int, now: float) -> None:
        """Everything a new job does to the engine (``put`` and ``put_unique``)."""
        tube = job.tube
        self.jobs[job.id] = job
        tube.refs += 1
        tube.total_jobs += 1
        self.total_jobs += 1
        self.body_bytes += len(job.body)
        self._raise_peaks()
        if delay:
            self._make_delayed(job, now + delay)
        else:
            self._make_ready(job)
        self.changes.append(job)
        if self._hot:
            self._process_queue(now)

    def _raise_peaks(self) -> None:
        if len(self.jobs) > self._peak_jobs:
            self._peak_jobs = len(self.jobs)
        if self.body_bytes > self._peak_body_bytes:
            self._peak_body_bytes = self.body_bytes

    def take_peak(self) -> tuple[int, int]:
        """The most jobs, and the most body bytes, held at once since the last call (each at
        its own moment). The server weighs bursts by them: one can come and go between two
        of its looks at ``jobs`` and ``body_bytes``."""
        peak = self._peak_jobs, self._peak_body_bytes
        self._peak_jobs = len(self.jobs)
        self._peak_body_bytes = self.body_bytes
        return peak

    def shrink(self) -> None:
        """Rebuild the job table after a burst has drained: a dict never shrinks by itself,
        and an emptied table of a million jobs still holds ~40 MB."""
        self.jobs = dict(self.jobs)

    def allocate_id(self) -> int:
        """The id of the next job. beanstalkd makes a job as soon as it reads a put line, so a
        put that is then refused (EXPECTED_CRLF, DRAINING, no binlog room) still uses one up."""
        job_id = self.next_id
        self.next_id += 1
        return job_id

    def restore(self, tube_name: bytes, jobs: dict[int, Job], now: float) -> None:
        """Insert jobs read back from the binlog (id -> job), all of tube ``tube_name``; the
        engine takes ``jobs`` over (an empty job table becomes it: no copy).

        Each job comes with its id, priority, delay, TTR, body, counters, ``created`` and, if
        delayed, ``deadline`` (both on ``now``'s clock) already set, and no reserver. Reserved
        jobs come back ready, and so do delayed jobs whose deadline has passed; buried jobs
        join the buried queue in the order given. Tube and server counters other than the
        current-jobs ones start from zero, as after a beanstalkd restart.

        A replay hands over millions of jobs at once: this is one pass that appends heap
        entries, and the heaps are built once at the end (ready jobs usually come in (pri, id)
        order, which already is a heap, and then there is nothing to build)."""
        tube = self._tube(tube_name)
        tube.refs += len(jobs)
        if not jobs:
            return
        ready = tube.ready
        buried = tube.buried
        timed: list[Entry] = []
        ready_ids: list[Any] = []
        buried_ids: list[Any] = []
        ids_in_order = True  # (ready ids ascending: nothing to sort for the index)
        last_ready_id = -1
        in_order = not ready
        last_pri = -1
        last_id = -1
        ready_count = urgent = top_id = size = 0
        # Entries share the table's id objects, and consecutive equal priorities one object:
        # two ints fewer per job (the compiled Job keeps its ints unboxed).
        shared: Iterable[tuple[object, Job]] = jobs.items()
        pri_box: object = last_pri
        for key, job in shared:
            job.tube = tube
            size += len(job.body)
            jid = job.id
            if jid > top_id:
                top_id = jid
            state = job.state
            if state is State.BURIED:
                job.entry = None
                buried[jid] = job
                buried_ids.append(key)
            elif state is State.DELAYED and job.deadline > now:
                timer: Entry = (job.deadline, key, job)
                job.entry = timer
                timed.append(timer)
            else:
                job.state = State.READY
                pri = job.pri
                if pri != last_pri:
                    pri_box = pri
                    in_order = in_order and pri > last_pri
                elif jid < last_id:
                    in_order = False
                # (annotated where it is made: a compiled build would otherwise narrow it to
                # a fixed-length tuple, unbox it, and store two different tuples)
                entry: Entry = (pri_box, key, job)
                job.entry = entry
                ready.append(entry)
                ready_ids.append(key)
                if jid < last_ready_id:
                    ids_in_order = False
                last_ready_id = jid
                ready_count += 1
                if pri < URGENT_THRESHOLD:
                    urgent += 1
                last_pri = pri
                last_id = jid
        if not in_order:
            heapq.heapify(ready)
        if not ids_in_order:
            ready_ids.sort()
        tube.ready_ids.build(ready_ids)
        buried_ids.sort()
        tube.buried_ids.build(buried_ids)
        if timed:
            tube.delayed_ids.build(sorted([e[1] for e in timed]))
            tube.delayed.extend(timed)
            heapq.heapify(tube.delayed)
            self.timers.extend(timed)
            heapq.heapify(self.timers)
        buried_count = len(jobs) - ready_count - len(timed)
        tube.ready_count += ready_count
        tube.urgent_count += urgent
        tube.delayed_count += len(timed)
        self.ready_count += ready_count
        self.urgent_count += urgent
        self.delayed_count += len(timed)
        self.buried_count += buried_count
        self.body_bytes += size
        if self.jobs:
            self.jobs.update(jobs)
        else:
            self.jobs = jobs
        self._raise_peaks()
        self.next_id = max(self.next_id, top_id + 1)
        if self.observing:
            self._index_ready(tube)
        if ready_count and len(tube.waiting) and tube.paused_until is None:
            self._hot[tube] = None
            self._process_queue(now)

    def reserve(self, s: Session, timeout: int | None, now: float) -> Job | Notice | None:
        """A job at once, DEADLINE_SOON, TIMED_OUT (timeout 0), or None: ``s`` now waits."""
        if self._deadline_soon(s, now) and not any(t.ready_count for t in s.watch):
            return Notice.DEADLINE_SOON
        best = self._best_ready(s)
        if best is not None:
            self._take_ready(best)
            self._reserve(s, best, now)
            return best
        if timeout == 0:
            return Notice.TIMED_OUT
        # Nothing is ready in an unpaused watched tube, so no tube becomes hot by our waiting.
        s.waiting = True
        self.waiting_count += 1
        for tube in s.watch:
            tube.waiting.append(s)
        s.timeout_at = None if timeout is None else now + timeout
        self._schedule_session(s)
        return None

    def _best_ready(self, s: Session) -> Job | None:
        """The job a reserve by ``s`` gets now, if any."""
        best: Job | None = None
        for tube in s.watch:
            if tube.ready_count and tube.paused_until is None:
                top = self._ready_top(tube)
                if best is None or (top.pri, top.id) < (best.pri, best.id):
                    best = top
        return best

    def reserve_job(self, s: Session, job_id: int, now: float) -> Job | None:
        job = self.jobs.get(job_id)
        if job is None or job.state == State.RESERVED:
            return None
        self._detach(job)
        self._reserve(s, job, now)
        return job

    def delete(self, s: Session | None, job_id: int, now: float = -1.0) -> bool:
        """``now``, when given, times the job's reserve-to-delete span while ``observing``.
        ``s`` None (the HTTP console): any job but a reserved one."""
        job = self.jobs.get(job_id)
        if job is None:
            return False
        if job.state == State.RESERVED:
            if s is None or job.reserver is not s:
                return False
            if self.observing and now >= 0.0:
                start = self.reserve_times.get(job)
                if start is not None:
                    span = now - start
                    self.reserve_delete_counts[bisect_left(RESERVE_DELETE_BOUNDS, span)] += 1
                    self.reserve_delete_sum += span
            self._unreserve(s, job)
        else:
            self._detach(job)
        tube = job.tube
        tube.delete_count += 1
        job.state = State.DELETED
        del self.jobs[job_id]
        if self.unique and isinstance(job, KeyedJob):
            self._forget_key(job)
        self.body_bytes -= len(job.body)
        self.changes.append(job)
        self._unref(tube)
        return True

    def release(self, s: Session, job_id: int, pri: int, delay: int, now: float) -> bool:
        job = s.reserved.get(job_id)
        if job is None:
            return False
        self._unreserve(s, job)
        job.pri = pri
        job.delay = delay
        job.releases += 1
        job.tube.release_count += 1
        if delay:
            self._make_delayed(job, now + delay)
        else:
            self._make_ready(job)
        self.changes.append(job)
        self._process_queue(now)
        return True

    def bury(self, s: Session, job_id: int, pri: int) -> bool:
        job = s.reserved.get(job_id)
        if job is None:
            return False
        self._unreserve(s, job)
        job.pri = pri
        self._make_buried(job)
        job.buries += 1
        job.tube.bury_count += 1
        self.changes.append(job)
        return True

    def touch(self, s: Session, job_id: int, now: float) -> bool:
        job = s.reserved.get(job_id)
        if job is None:
            return False
        self._set_ttr_timer(job, now + job.ttr)
        return True

    def kick(self, s: Session, bound: int, now: float) -> int:
        """Kick up to ``bound`` jobs of the used tube: buried ones if any, else delayed ones."""
        return self.kick_tube(s.use, bound, now)

    def kick_tube(self, tube: Tube, bound: int, now: float) -> int:
        """``kick`` on ``tube`` (the HTTP console's kick names the tube instead of using it)."""
        kicked = 0
        if tube.buried:
            while kicked < bound and tube.buried:
                self._kick(next(iter(tube.buried.values())))
                kicked += 1
        else:
            while kicked < bound and tube.delayed:
                entry = tube.delayed[0]
                if entry[2].entry is not entry:
                    heapq.heappop(tube.delayed)
                    tube.stale -= 1
                    continue
                self._kick(entry[2])
                kicked += 1
        self._process_queue(now)
        return kicked

    def kick_job(self, job_id: int, now: float) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.state not in (State.BURIED, State.DELAYED):
            return False
        self._kick(job)
        self._process_queue(now)
        return True

    def _kick(self, job: Job) -> None:
        self._detach(job)
        job.kicks += 1
        job.tube.kick_count += 1
        self._make_ready(job)
        self.changes.append(job)

    # --- extensions (beanq-*) --------------------------------------------------------------

    def reserve_more(self, s: Session, jobs: list[Job], n: int, now: float) -> None:
        """Reserve for ``s`` what single reserves would give next, until ``jobs`` holds ``n``
        or nothing is ready (``beanq-reserve-batch``, after its first job)."""
        while len(jobs) < n:
            best = self._best_ready(s)
            if best is None:
                return
            self._take_ready(best)
            self._reserve(s, best, now)
            jobs.append(best)

    def list_ids(self, name: bytes, state: State, after: int, limit: int) -> list[int]:
        """Ids of tube ``name``'s jobs in ``state`` above ``after``, ascending, at most
        ``limit``; changes nothing."""
        tube = self.tubes.get(name)
        if tube is None:
            return []
        if state == State.READY:
            index = tube.ready_ids
        elif state == State.DELAYED:
            index = tube.delayed_ids
        elif state == State.BURIED:
            index = tube.buried_ids
        else:
            index = tube.reserved_ids
        return index.after(after, limit)

    def find_unique(self, s: Session, key: bytes) -> Job | None:
        """The live job put with ``key`` in the tube ``s`` uses, if any."""
        return self.unique.get((s.use.name, key)) if self.unique else None

    def put_unique(
        self,
        s: Session,
        key: bytes,
        pri: int,
        delay: int,
        ttr: int,
        body: bytes,
        now: float,
        job_id: int | None = None,
    ) -> Job:
        """``put``, holding ``key`` in the used tube until the job is deleted (the caller
        checked ``find_unique``)."""
        tube = s.use
        if job_id is None:
            job_id = self.allocate_id()
        job = KeyedJob(job_id, pri, delay, max(ttr, 1), body, tube, now, key)
        self.unique[(tube.name, key)] = job
        self._admit(job, delay, now)
        return job

    def _forget_key(self, job: KeyedJob) -> None:
        k = (job.tube.name, job.key)
        if self.unique.get(k) is job:
            del self.unique[k]

    def restore_keys(self, jobs: list[KeyedJob]) -> None:
        """Hold the keys of replayed jobs put with ``beanq-put-unique`` (those still live)."""
        for job in jobs:
            if self.jobs.get(job.id) is job:
                self.unique[(job.tube.name, job.key)] = job

    def flush(self, name: bytes, states: tuple[State, ...]) -> int:
        """Delete every job of tube ``name`` in ``states`` (ready, delayed, buried; never
        reserved) at once, in O(jobs deleted): the tube's structures are dropped whole rather
        than job by job. The binlog records them all in one record (``ops``)."""
        tube = self.tubes.get(name)
        if tube is None:
            return 0
        gone: list[Job] = []
        if State.READY in states and tube.ready_count:
            _live_jobs(tube.ready, gone)
            tube.stale -= len(tube.ready) - tube.ready_count
            tube.ready = []
            tube.ready_ids.clear()
            tube.ready_by_id = []
            self.ready_count -= tube.ready_count
            self.urgent_count -= tube.urgent_count
            tube.ready_count = tube.urgent_count = 0
            self._hot.pop(tube, None)
        if State.DELAYED in states and tube.delayed_count:
            _live_jobs(tube.delayed, gone)
            tube.stale -= len(tube.delayed) - tube.delayed_count
            tube.delayed = []
            tube.delayed_ids.clear()
            self.delayed_count -= tube.delayed_count
            tube.delayed_count = 0
        if State.BURIED in states and tube.buried:
            gone.extend(tube.buried.values())
            self.buried_count -= len(tube.buried)
            tube.buried = OrderedDict()
            tube.buried_ids.clear()
        if not gone:
            return 0
        jobs = self.jobs
        keyed = bool(self.unique)
        size = 0
        for job in gone:
            job.state = State.DELETED
            job.entry = None
            del jobs[job.id]
            size += len(job.body)
            if keyed and isinstance(job, KeyedJob):
                self._forget_key(job)
        self.body_bytes -= size
        self.ops.append((len(self.changes), OP_FLUSH, gone))
        tube.refs -= len(gone) - 1
        self._unref(tube)
        self._compact_timers()  # (the delayed jobs' timer entries are stale now)
        return len(gone)

    def move(self, src: bytes, dst: bytes, state: State, limit: int, now: float) -> int:
        """Move up to ``limit`` jobs in ``state`` (ready, delayed, buried) from tube ``src`` to
        tube ``dst``, in the order the state hands them out (ready: priority and id; delayed:
        deadline; buried: bury order). Each keeps its id, priority, TTR, delay deadline,
        counters and state; a job whose key is held in ``dst`` stays. Waiting reserves on
        ``dst`` get moved ready jobs as they would a put."""
        tube = self.tubes.get(src)
        if tube is None or src == dst or limit <= 0:
            return 0
        target = self._tube(dst)
        target.refs += 1  # (held while jobs move, so that an empty target is freed after)
        moved: list[Job] = []
        stay: list[Job] = []
        unique = self.unique
        buried: list[Job] = []
        if state == State.BURIED:  # (picked in place: a job that stays keeps its turn)
            for job in tube.buried.values():
                if len(buried) == limit:
                    break
                if not (unique and isinstance(job, KeyedJob) and (dst, job.key) in unique):
                    buried.append(job)
            buried.reverse()
        while len(moved) < limit:
            if state == State.BURIED:
                if not buried:
                    break
                job = buried.pop()
                self._detach(job)
            else:
                taken = self._take_next(tube, state)
                if taken is None:
                    break
                job = taken
                if unique and isinstance(job, KeyedJob) and (dst, job.key) in unique:
                    stay.append(job)
                    continue
            if unique and isinstance(job, KeyedJob):
                self._forget_key(job)
                unique[(dst, job.key)] = job
            job.tube = target
            moved.append(job)
            self._place_again(job, state)
        for job in stay:  # (back where they were, in the same order)
            self._place_again(job, state)
        if moved:
            self.ops.append((len(self.changes), OP_MOVE, moved))
            target.refs += len(moved)
            tube.refs -= len(moved) - 1
            self._unref(tube)
        self._unref(target)
        self._process_queue(now)
        return len(moved)

    def _take_next(self, tube: Tube, state: State) -> Job | None:
        """Take the next ready or delayed job a move takes out of ``tube`` (its counters
        drop)."""
        if state == State.READY:
            if not tube.ready_count:
                return None
            top = self._ready_top(tube)
            self._take_ready(top)
            return top
        job = self.peek_delayed_in(tube)
        if job is not None:
            self._detach(job)
        return job

    def _place_again(self, job: Job, state: State) -> None:
        """Put a job taken by ``_take_next`` into its tube (maybe another one) in ``state``."""
        if state == State.READY:
            self._make_ready(job)
        elif state == State.DELAYED:
            self._make_delayed(job, job.deadline)
        else:
            self._make_buried(job)

    def peek_delayed_in(self, tube: Tube) -> Job | None:
        while tube.delayed:
            entry = tube.delayed[0]
            job: Job = entry[2]
            if job.entry is entry:
                return job
            heapq.heappop(tube.delayed)
            tube.stale -= 1
        return None

    # --- looking -------------------------------------------------------------------------

    def peek(self, job_id: int) -> Job | None:
        return self.jobs.get(job_id)

    def peek_ready(self, s: Session) -> Job | None:
        return self._ready_top(s.use) if s.use.ready_count else None

    def peek_delayed(self, s: Session) -> Job | None:
        return self.peek_delayed_in(s.use)

    def peek_buried(self, s: Session) -> Job | None:
        buried = s.use.buried
        return next(iter(buried.values())) if buried else None

    def pause_tube(self, name: bytes, delay: int, now: float) -> bool:
        tube = self.tubes.get(name)
        if tube is None:
            return False
        tube.pause_count += 1
        tube.pause_seconds = delay
        # beanstalkd pauses for at least a nanosecond, so that a pause of 0 un-pauses on the
        # next tick; here the un-pause of a zero pause happens at once, with the same effect.
        if delay == 0:
            self._unpause(tube)
            self._process_queue(now)
            return True
        tube.paused_until = now + delay
        self._hot.pop(tube, None)
        entry: Entry = (now + delay, next(self._timer_seq), tube)
        tube.entry = entry
        self._push_timer(entry)
        return True

    def _unpause(self, tube: Tube) -> None:
        tube.paused_until = None
        tube.entry = None
        if len(tube.waiting) and tube.ready_count:
            self._hot[tube] = None

    # --- time ------------------------------------------------------------------------------

    def tick(self, now: float) -> float | None:
        """Fire every timer due at ``now``; return when the next one is due (None: none)."""
        timers = self.timers
        fired = False
        while timers:
            entry = timers[0]
            when, _, item = entry
            if item.entry is not entry:
                heapq.heappop(timers)
                continue
            if when > now:
                break
            heapq.heappop(timers)
            fired = True
            if isinstance(item, Job):
                if item.state == State.DELAYED:
                    self._promote(item)
                else:
                    self._expire(item, now)
            elif isinstance(item, Session):
                self._wake(item, now)
            elif isinstance(item, Tube):
                self._unpause(item)
            else:
                self._fire_schedule(item, now)
        if fired:
            self._process_queue(now)
            self._compact_timers()
        return timers[0][0] if timers else None

    def _promote(self, job: Job) -> None:
        assert job.entry is not None
        job.tube.delayed_ids.remove(job.entry[1])
        job.entry = None
        job.tube.stale += 1
        job.tube.delayed_count -= 1
        self.delayed_count -= 1
        self._make_ready(job)
        self.changes.append(job)

    def _expire(self, job: Job, now: float) -> None:
        """A reserved job's TTR ran out: back to ready, and count a timeout."""
        s = job.reserver
        assert s is not None
        self._unreserve(s, job)
        job.timeouts += 1
        job.tube.timeout_count += 1
        self.timeouts += 1
        self._make_ready(job)
        self.changes.append(job)
        if s.waiting:
            self._schedule_session(s)

    def _wake(self, s: Session, now: float) -> None:
        s.entry = None
        if not s.waiting:  # pragma: no cover - stale timers are dropped before this
            return
        if self._deadline_soon(s, now):
            self._stop_waiting(s)
            self.notices.append((s, Notice.DEADLINE_SOON))
        elif s.timeout_at is not None and s.timeout_at <= now:
            self._stop_waiting(s)
            self.notices.append((s, Notice.TIMED_OUT))
        else:
            self._schedule_session(s)

    def _deadline_soon(self, s: Session, now: float) -> bool:
        soonest = self._soonest_deadline(s)
        return soonest is not None and now >= soonest - SAFETY_MARGIN

    @staticmethod
    def _soonest_deadline(s: Session) -> float | None:
        if not s.reserved:
            s.deadlines.clear()
            return None
        heap = s.deadlines
        if len(heap) > 2 * len(s.reserved) + 16:
            heap[:] = [e for e in heap if e[2].entry is e and e[2].reserver is s]
            heapq.heapify(heap)
        while True:
            entry = heap[0]
            job = entry[2]
            if job.entry is entry and job.reserver is s:
                deadline: float = entry[0]
                return deadline
            heapq.heappop(heap)

    def _schedule_session(self, s: Session) -> None:
        """(Re)arm a waiting session's wake-up: its timeout or DEADLINE_SOON, whichever first."""
        when = s.timeout_at
        soonest = self._soonest_deadline(s)
        if soonest is not None:
            soon = soonest - SAFETY_MARGIN
            when = soon if when is None else min(when, soon)
        if when is None:
            s.entry = None
            return
        entry: Entry = (when, next(self._timer_seq), s)
        s.entry = entry
        self._push_timer(entry)

    def cancel_wait(self, s: Session) -> bool:
        """The client half-closed while blocked: end the reserve with TIMED_OUT."""
        if not s.waiting:
            return False
        self._stop_waiting(s)
        return True

    def _stop_waiting(self, s: Session, taken_from: WaitList | None = None) -> None:
        """``s`` no longer waits; ``taken_from`` is a wait list it was already taken from."""
        if not s.waiting:
            return
        s.waiting = False
        s.timeout_at = None
        s.entry = None
        self.waiting_count -= 1
        for tube in s.watch:
            if tube.waiting is not taken_from:
                tube.waiting.remove(s)

    def _push_timer(self, entry: Entry) -> None:
        heapq.heappush(self.timers, entry)
        self._compact_timers()

    def _compact_timers(self) -> None:
        """Drop stale timer entries once they outnumber live ones. Checked whenever a timer is
        added: a stale entry keeps its deleted job (and body) alive until then, and a drain of
        a million reserved-then-deleted jobs would otherwise hold them all until their TTRs."""
        timers = self.timers
        if len(timers) > 64 and len(timers) > 2 * (
            self.delayed_count
            + self.reserved_count
            + self.waiting_count
            + len(self.tubes)
            + (len(self.schedules) if self.schedules is not None else 0)
        ):
            timers[:] = [e for e in timers if e[2].entry is e]  # (in place: tick holds it)
            heapq.heapify(timers)

    # --- schedules (the rules are beanq.schedules'; puts, timers and records are here) ---------

    def schedule_book(self) -> ScheduleBook:
        """The schedules, made at first use: a server without any never imports the module
        (nor zoneinfo and the cron library)."""
        book = self.schedules
        if book is None:
            from beanq.schedules import ScheduleBook

            book = self.schedules = ScheduleBook()
        return book

    def put_scheduled(
        self, tube_name: bytes, pri: int, delay: int, ttr: int, body: bytes, now: float
    ) -> Job:
        """A put by a schedule: no session, the tube by name."""
        job = Job(self.allocate_id(), pri, delay, max(ttr, 1), body, self._tube(tube_name), now)
        self._admit(job, delay, now)
        return job

    def arm_schedule(self, sched: Schedule, when: float) -> None:
        entry: Entry = (when, next(self._timer_seq), sched)
        sched.entry = entry
        self._push_timer(entry)

    def log_schedule(self, payload: bytes, at: int = -1) -> None:
        """A schedule changed: the binlog records ``payload`` after the first ``at`` of
        ``changes`` (-1: all so far), or with the schedule records logged just before it, in
        one frame: a schedule's record may go ahead of job changes, never behind them (ten
        thousand fires a second are then two writes, not twenty thousand)."""
        ops = self.ops
        if ops and ops[-1][1] == OP_SCHEDULE:
            ops[-1][2].append(payload)
        else:
            ops.append((len(self.changes) if at < 0 else at, OP_SCHEDULE, [payload]))

    def _fire_schedule(self, sched: Schedule, now: float) -> None:
        book = self.schedules
        assert book is not None
        book.fire(self, sched, now)

    # --- state transitions -------------------------------------------------------------------

    def _ready_top(self, tube: Tube) -> Job:
        heap = tube.ready
        while True:
            entry = heap[0]
            job: Job = entry[2]
            if job.entry is entry:
                return job
            heapq.heappop(heap)
            tube.stale -= 1

    def _make_ready(self, job: Job) -> None:
        tube = job.tube
        job.state = State.READY
        job.reserver = None
        entry: Entry = (job.pri, job.id, job)
        job.entry = entry
        heapq.heappush(tube.ready, entry)
        tube.ready_ids.add(entry[1], job.id)
        tube.ready_count += 1
        self.ready_count += 1
        if self.observing:
            by_id = tube.ready_by_id
            item: Entry = (job.id, entry)
            heapq.heappush(by_id, item)
            if len(by_id) > 2 * tube.ready_count + 64:
                self._index_ready(tube)
        if job.pri < URGENT_THRESHOLD:
            tube.urgent_count += 1
            self.urgent_count += 1
        if len(tube.waiting) and tube.paused_until is None:
            self._hot[tube] = None

    def _take_ready(self, job: Job) -> None:
        """Remove a ready job from its heap: a pop when it is on top, else lazily."""
        tube = job.tube
        heap = tube.ready
        entry = job.entry
        assert entry is not None
        tube.ready_ids.remove(entry[1])
        if heap[0] is entry:
            heapq.heappop(heap)
        else:
            tube.stale += 1
            self._maybe_rebuild(tube)
        job.entry = None
        tube.ready_count -= 1
        self.ready_count -= 1
        if job.pri < URGENT_THRESHOLD:
            tube.urgent_count -= 1
            self.urgent_count -= 1

    def _make_delayed(self, job: Job, deadline: float) -> None:
        job.state = State.DELAYED
        job.reserver = None
        job.deadline = deadline
        entry: Entry = (deadline, job.id, job)
        job.entry = entry
        heapq.heappush(job.tube.delayed, entry)
        job.tube.delayed_ids.add(entry[1], job.id)
        job.tube.delayed_count += 1
        self.delayed_count += 1
        self._push_timer(entry)

    def _make_buried(self, job: Job) -> None:
        job.state = State.BURIED
        job.reserver = None
        job.entry = None
        key: Any = job.id
        job.tube.buried[key] = job
        job.tube.buried_ids.add(key, job.id)
        self.buried_count += 1

    def _detach(self, job: Job) -> None:
        """Take a ready, delayed or buried job out of its tube's structures."""
        state = job.state
        if state == State.READY:
            self._take_ready(job)
        elif state == State.DELAYED:
            assert job.entry is not None
            job.tube.delayed_ids.remove(job.entry[1])
            job.entry = None
            job.tube.stale += 1
            job.tube.delayed_count -= 1
            self.delayed_count -= 1
            self._maybe_rebuild(job.tube)
        elif state == State.BURIED:
            key: Any = job.id
            del job.tube.buried[key]
            job.tube.buried_ids.remove(key)
            self.buried_count -= 1
        else:  # pragma: no cover - callers never detach reserved or deleted jobs
            raise AssertionError(job)

    def _maybe_rebuild(self, tube: Tube) -> None:
        if tube.stale > 32 and tube.stale * 2 > len(tube.ready) + len(tube.delayed):
            tube.ready = [e for e in tube.ready if e[2].entry is e]
            heapq.heapify(tube.ready)
            tube.delayed = [e for e in tube.delayed if e[2].entry is e]
            heapq.heapify(tube.delayed)
            tube.stale = 0

    def _reserve(self, s: Session, job: Job, now: float) -> None:
        job.state = State.RESERVED
        job.reserver = s
        job.reserves += 1
        if self.observing:
            self.reserve_times[job] = now
        self._set_ttr_timer(job, now + job.ttr)
        entry = job.entry
        assert entry is not None
        key = entry[1]  # (the id object of the TTR entry: one box for all three)
        s.reserved[key] = job
        job.tube.reserved_ids.add(key, job.id)
        job.tube.reserved_count += 1
        job.tube.reserve_count += 1
        self.reserved_count += 1
        self.changes.append(job)

    def _set_ttr_timer(self, job: Job, deadline: float) -> None:
        job.deadline = deadline
        entry: Entry = (deadline, job.id, job)
        job.entry = entry
        assert job.reserver is not None
        heapq.heappush(job.reserver.deadlines, entry)
        self._push_timer(entry)

    def _unreserve(self, s: Session, job: Job) -> None:
        entry = job.entry  # (its TTR entry: the index finds its id object by identity)
        key: Any = job.id if entry is None else entry[1]
        del s.reserved[key]
        job.tube.reserved_ids.remove(key)
        job.entry = None
        job.reserver = None
        job.tube.reserved_count -= 1
        self.reserved_count -= 1
        if self.observing:
            self.reserve_times.pop(job, None)

    def _process_queue(self, now: float) -> None:
        """Hand ready jobs to waiting sessions, best (priority, id) first, across hot tubes."""
        hot = self._hot
        while hot:
            best: Job | None = None
            for tube in list(hot):
                if not (tube.ready_count and len(tube.waiting)) or tube.paused_until is not None:
                    del hot[tube]
                    continue
                top = self._ready_top(tube)
                if best is None or (top.pri, top.id) < (best.pri, best.id):
                    best = top
            if best is None:
                return
            taken_from = best.tube.waiting
            s = taken_from.take()
            self._stop_waiting(s, taken_from)
            self._take_ready(best)
            self._reserve(s, best, now)
            self.notices.append((s, best))

    # --- metrics (--http) ---------------------------------------------------------------------

    def observe(self) -> None:
        """Start keeping what metrics need beyond stats: each tube's ready jobs by id, and the
        reserve-to-delete histogram. The server turns it on with --http, after replay."""
        self.observing = True
        for tube in self.tube_order:
            self._index_ready(tube)

    @staticmethod
    def _index_ready(tube: Tube) -> None:
        """(Re)build the tube's by-id heap from its live ready entries: O(ready), done at
        start and when stale items outnumber live ones (so amortized O(1) per change)."""
        by_id: list[Entry] = [(e[1], e) for e in tube.ready if e[2].entry is e]
        heapq.heapify(by_id)
        tube.ready_by_id = by_id

    @staticmethod
    def oldest_ready(tube: Tube) -> Job | None:
        """The tube's ready job put first (None: none ready; only while ``observing``).

        Ids grow with put time (``allocate_id``; replay keeps ids and creation times), so the
        oldest ready job is the one with the smallest id. The ready heap is ordered by
        (priority, id), so its top is not it; a second heap keyed by id holds an item per
        time a job became ready, and an item whose entry is no longer its job's current one
        is stale and popped here. Amortized O(log n): each item is pushed and popped once."""
        by_id = tube.ready_by_id
        while by_id:
            entry: Entry = by_id[0][1]
            job: Job = entry[2]
            if job.entry is entry:
                return job
            heapq.heappop(by_id)
        return None

    # --- stats ---------------------------------------------------------------------------------

    def job_time_left(self, job: Job, now: float) -> int:
        if job.state in (State.RESERVED, State.DELAYED):
            # beanstalkd reads its clock again for every reply, so a job reserved for 10 s
            # already shows 9 in the same batch; the epsilon reproduces that truncation.
            return int(job.deadline - now - 1e-6)
        return 0

    def pause_time_left(self, tube: Tube, now: float) -> int:
        if tube.paused_until is None:
            return 0
        return max(0, int(tube.paused_until - now))

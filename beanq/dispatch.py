"""From commands to replies: one client connection's conversation with the engine.

``Connection`` is sans-IO, like the codec it wraps: the server hands it received bytes and the
current time, and takes back the bytes to send. Commands are answered strictly in order; a
``reserve`` that has to wait holds back the commands pipelined behind it, as beanstalkd does,
until its job, TIMED_OUT or DEADLINE_SOON arrives. ``Hub`` owns the engine and every
connection; after each batch of input or timer work it delivers the engine's notices to the
connections they concern and lists the connections that have output.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import NamedTuple

from beanq import protocol as p
from beanq.config import DEFAULT_MAX_JOB_SIZE
from beanq.tubes import STATE_NAMES, Engine, Job, Notice, Session, State

log = logging.getLogger("beanq")


class HostInfo(NamedTuple):
    """Facts about the process for ``stats``, gathered by the server (which owns the OS)."""

    version: str
    pid: int
    hostname: str
    os: str
    platform: str
    instance_id: str  # 16 hex digits, new on every start
    rusage: Callable[[], tuple[float, float]]  # user and system CPU seconds


class BinlogStats(NamedTuple):
    oldest_index: int = 0
    current_index: int = 0
    records_migrated: int = 0
    records_written: int = 0
    max_size: int = 10485760


NO_BINLOG = BinlogStats()


_NOTICE_REPLY = {Notice.TIMED_OUT: p.TIMED_OUT, Notice.DEADLINE_SOON: p.DEADLINE_SOON}
_STATES: dict[str, tuple[State, ...]] = {
    "ready": (State.READY,),
    "delayed": (State.DELAYED,),
    "buried": (State.BURIED,),
    "reserved": (State.RESERVED,),
    "all": (State.READY, State.DELAYED, State.BURIED),
}


class Hub:
    """The engine plus everything needed to answer every connection."""

    def __init__(
        self,
        engine: Engine,
        host: HostInfo,
        *,
        max_job_size: int = DEFAULT_MAX_JOB_SIZE,
        binlog_stats: Callable[[], BinlogStats] = lambda: NO_BINLOG,
        job_file: Callable[[Job], int] = lambda job: 0,
        can_put: Callable[[int], bool] = lambda size: True,
    ) -> None:
        self.engine = engine
        self.host = host
        self.max_job_size = max_job_size
        self.binlog_stats = binlog_stats
        self.job_file = job_file
        self.can_put = can_put  # False when the binlog has no room for the job: OUT_OF_MEMORY
        self.draining = False
        self.quote_yaml = True  # stats strings quoted as beanstalkd 1.13 does; --yaml 1.12: bare
        # A connection stops answering once this many reply bytes wait to be sent; the rest of
        # its commands wait until the server says the socket has drained (slow readers).
        self.output_limit = 1 << 20
        self.max_jobs: int | None = None  # optional cap on jobs held: OUT_OF_MEMORY beyond it
        self.connections: dict[Session, Connection] = {}
        self.dirty: list[Connection] = []  # connections with output since the last take_dirty
        engine.room = self._room  # (asked by a schedule before each of its puts)

    def _room(self, size: int) -> bool:
        """A schedule's put is refused when a client's would be (draining, the job cap, no
        binlog room); can_put then promises the binlog room, as for a put."""
        return (
            not self.draining
            and (self.max_jobs is None or len(self.engine.jobs) < self.max_jobs)
            and self.can_put(size)
        )

    def open(self) -> Connection:
        conn = Connection(self)
        self.connections[conn.session] = conn
        return conn

    def tick(self, now: float) -> float | None:
        """Fire due timers, deliver what they caused; return the next timer's due time."""
        when = self.engine.tick(now)
        self.deliver(now)
        return when

    def deliver(self, now: float) -> None:
        """Hand each notice to its connection; a woken connection then answers the commands
        it held back, which may wake others in turn."""
        notices = self.engine.notices
        while notices:
            batch = notices[:]
            notices.clear()
            for session, notice in batch:
                conn = self.connections.get(session)
                if conn is not None:
                    conn.wake(notice, now)

    def take_dirty(self) -> list[Connection]:
        dirty = self.dirty
        self.dirty = []
        return dirty

    # --- stats bodies ----------------------------------------------------------------------

    def stats_body(self, now: float) -> bytes:
        e = self.engine
        c = e.commands.get
        utime, stime = self.host.rusage()
        b = self.binlog_stats()
        return p.yaml_dict(
            [
                ("current-jobs-urgent", e.urgent_count),
                ("current-jobs-ready", e.ready_count),
                ("current-jobs-reserved", e.reserved_count),
                ("current-jobs-delayed", e.delayed_count),
                ("current-jobs-buried", e.buried_count),
                *[(f"cmd-{name}", c(name, 0)) for name in _COUNTED_COMMANDS],
                ("job-timeouts", e.timeouts),
                ("total-jobs", e.total_jobs),
                ("max-job-size", self.max_job_size),
                ("current-tubes", len(e.tubes)),
                ("current-connections", e.connections),
                ("current-producers", e.producers),
                ("current-workers", e.workers),
                ("current-waiting", e.waiting_count),
                ("total-connections", e.total_connections),
                ("pid", self.host.pid),
                ("version", self.host.version),
                ("rusage-utime", _seconds(utime)),
                ("rusage-stime", _seconds(stime)),
                ("uptime", int(now - e.started)),
                ("binlog-oldest-index", b.oldest_index),
                ("binlog-current-index", b.current_index),
                ("binlog-records-migrated", b.records_migrated),
                ("binlog-records-written", b.records_written),
                ("binlog-max-size", b.max_size),
                ("draining", self.draining),
                ("id", p.Bare(self.host.instance_id)),
                ("hostname", self.host.hostname),
                ("os", self.host.os),
                ("platform", self.host.platform),
            ],
            self.quote_yaml,
        )

    def stats_tube_body(self, name: bytes, now: float) -> bytes | None:
        e = self.engine
        t = e.find_tube(name)
        if t is None:
            return None
        return p.yaml_dict(
            [
                ("name", name.decode()),
                ("current-jobs-urgent", t.urgent_count),
                ("current-jobs-ready", t.ready_count),
                ("current-jobs-reserved", t.reserved_count),
                ("current-jobs-delayed", t.delayed_count),
                ("current-jobs-buried", len(t.buried)),
                ("total-jobs", t.total_jobs),
                ("current-using", t.using),
                ("current-watching", t.watching),
                ("current-waiting", len(t.waiting)),
                ("cmd-delete", t.delete_count),
                ("cmd-pause-tube", t.pause_count),
                ("pause", t.pause_seconds if t.paused_until is not None else 0),
                ("pause-time-left", e.pause_time_left(t, now)),
            ],
            self.quote_yaml,
        )

    def stats_job_body(self, job: Job, now: float) -> bytes:
        return p.yaml_dict(
            [
                ("id", job.id),
                ("tube", job.tube.name.decode()),
                ("state", p.Bare(STATE_NAMES[job.state])),
                ("pri", job.pri),
                ("age", int(now - job.created)),
                ("delay", job.delay),
                ("ttr", job.ttr),
                ("time-left", self.engine.job_time_left(job, now)),
                ("file", self.job_file(job)),
                ("reserves", job.reserves),
                ("timeouts", job.timeouts),
                ("releases", job.releases),
                ("buries", job.buries),
                ("kicks", job.kicks),
            ],
            self.quote_yaml,
        )


_COUNTED_COMMANDS = (
    "put",
    "peek",
    "peek-ready",
    "peek-delayed",
    "peek-buried",
    "reserve",
    "reserve-with-timeout",
    "delete",
    "release",
    "use",
    "watch",
    "ignore",
    "bury",
    "kick",
    "touch",
    "stats",
    "stats-job",
    "stats-tube",
    "list-tubes",
    "list-tube-used",
    "list-tubes-watched",
    "pause-tube",
)
COUNTED_COMMANDS = _COUNTED_COMMANDS  # the cmd-* counters of stats, in order (for metrics)


def _seconds(value: float) -> p.Bare:
    micros = round(value * 1_000_000)
    return p.Bare(f"{micros // 1_000_000}.{micros % 1_000_000:06d}")


class Connection:
    """One client's conversation: bytes in, replies out, in order."""

    __slots__ = (
        "_batch",
        "_pending",
        "_put_id",
        "_put_started",
        "blocked",
        "closing",
        "eof",
        "guard",
        "handlers",
        "hub",
        "out",
        "reader",
        "session",
        "unsent",
    )

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.reader = p.CommandReader(hub.max_job_size)
        self.session = hub.engine.connect()
        self._pending: collections.deque[p.Event] = collections.deque()
        self.out: list[bytes] = []
        self.blocked = False  # in a reserve that waits
        self.closing = False  # quit was received: close once the output is sent
        self.eof = False  # the client shut down its sending side
        self.unsent = 0  # reply bytes produced since the server last sent everything
        self._put_started = False  # a PutStarted was handled; its put is still to come
        self._put_id: int | None = None  # the id beanstalkd would have given that put
        self._batch = 0  # the waiting reserve is a beanq-reserve-batch of this many
        # What answers each command: _HANDLERS, or on a listener with auth the same table
        # behind beanq.auth's gate, whose per-connection state is ``guard``.
        self.handlers = _HANDLERS
        self.guard: object = None

    @property
    def held(self) -> int:
        """Commands received but not yet answered (behind a waiting reserve)."""
        return len(self._pending)

    def receive(self, data: bytes, now: float, first: int = 0) -> None:
        """Answer the commands in ``data``: all of them, or (``first`` > 0) only that many
        (if they have replies to send), the rest once the server has sent those (``drained``),
        so that a pipelining client can work on the first replies while the others are being
        answered."""
        events = self.reader.feed(data)
        if self.blocked or self._pending or self.closing or self.throttled:
            self._pending.extend(events)
            return
        handlers = self.handlers
        limit = self.hub.output_limit
        for i, event in enumerate(events):
            try:
                handlers[type(event)](self, event, now)
            except Exception:
                self._internal_error(event)
            if self.blocked or self.closing or self.unsent > limit or (i + 1 == first and self.out):
                self._pending.extend(events[i + 1 :])
                return

    @property
    def throttled(self) -> bool:
        """Too many replies wait to be sent: answer nothing more until ``drained``."""
        return self.unsent > self.hub.output_limit

    def drained(self, now: float) -> None:
        """The server sent every reply so far: answer the commands that were held back."""
        self.unsent = 0
        if self._pending and not self.blocked:
            self._run_pending(now)

    def receive_eof(self, now: float) -> None:
        """The client half-closed: a waiting reserve ends with TIMED_OUT (as in beanstalkd),
        the commands behind it are still answered, and then the connection closes."""
        self.eof = True
        self.peer_hung_up(now)

    def peer_hung_up(self, now: float) -> None:
        """The client hung up while its input is not being read: end a waiting reserve."""
        if self.blocked and self.hub.engine.cancel_wait(self.session):
            self.wake(Notice.TIMED_OUT, now)

    @property
    def finished(self) -> bool:
        """Nothing more will come from this connection: close it once ``out`` is sent."""
        return self.closing or (self.eof and not self.blocked and not self._pending)

    def wake(self, notice: Job | Notice, now: float) -> None:
        self.blocked = False
        batch, self._batch = self._batch, 0
        if isinstance(notice, Job):
            if batch:
                jobs = [notice]
                self.hub.engine.reserve_more(self.session, jobs, batch, now)
                self._reply_batch(jobs)
            else:
                self._reply_job(b"RESERVED", notice)
        else:
            self._reply(_NOTICE_REPLY[notice])
        self._run_pending(now)

    def _run_pending(self, now: float) -> None:
        pending = self._pending
        limit = self.hub.output_limit
        while pending and not self.blocked and not self.closing and self.unsent <= limit:
            self._handle(pending.popleft(), now)
        if self.blocked and self.eof and self.hub.engine.cancel_wait(self.session):
            self.wake(Notice.TIMED_OUT, now)

    def close(self, now: float) -> None:
        """The socket is gone: release the session's reserved jobs at once."""
        hub = self.hub
        if hub.connections.pop(self.session, None) is not None:
            hub.engine.disconnect(self.session, now)
            hub.deliver(now)

    def _reply(self, data: bytes) -> None:
        if not self.out:
            self.hub.dirty.append(self)
        self.out.append(data)
        self.unsent += len(data)

    def _reply_job(self, word: bytes, job: Job) -> None:
        body = job.body
        if len(body) < p.BIG_BODY:
            self._reply(b"%s %d %d\r\n%b\r\n" % (word, job.id, len(body), body))
        else:  # three parts: the server sends the body as it is (EpollLoop._send_now)
            self._reply(b"%s %d %d\r\n" % (word, job.id, len(body)))
            self._reply(body)
            self._reply(b"\r\n")

    def _reply_found(self, job: Job | None) -> None:
        if job is None:
            self._reply(p.NOT_FOUND)
        else:
            self._reply_job(b"FOUND", job)

    def _count(self, name: str) -> None:
        self.hub.engine.commands[name] += 1

    # --- commands --------------------------------------------------------------------------

    def _handle(self, event: p.Event, now: float) -> None:
        try:
            self.handlers[type(event)](self, event, now)
        except Exception:
            self._internal_error(event)

    def _internal_error(self, event: p.Event) -> None:
        """A bug must cost one reply, not the server: log it and keep the connection."""
        log.exception("internal error handling %r", event)
        self._reply(p.INTERNAL_ERROR)

    def _put_start(self, event: p.PutStarted, now: float) -> None:
        self._count("put")
        self._put_started = True
        if not event.too_big:
            self.hub.engine.mark_producer(self.session)
            self._put_id = self.hub.engine.allocate_id()

    def _take_put_id(self) -> int:
        """The put's id: taken when its line arrived, if a PutStarted said so, else now."""
        if self._put_started:
            self._put_started = False
            job_id, self._put_id = self._put_id, None
            assert job_id is not None
            return job_id
        self._count("put")
        self.hub.engine.mark_producer(self.session)
        return self.hub.engine.allocate_id()

    def _put(self, cmd: p.Put, now: float) -> None:
        hub = self.hub
        if self._put_started or not self.session.is_producer:
            job_id = self._take_put_id()
        else:  # the common case, inlined: a producer's put whose body came with its line
            hub.engine.commands["put"] += 1
            job_id = hub.engine.allocate_id()
        if hub.draining:
            self._reply(p.DRAINING)
            return
        if (hub.max_jobs is not None and len(hub.engine.jobs) >= hub.max_jobs) or not hub.can_put(
            len(cmd.body)
        ):
            self._reply(p.OUT_OF_MEMORY)
            return
        job = hub.engine.put(self.session, cmd.pri, cmd.delay, cmd.ttr, cmd.body, now, job_id)
        self._reply(b"INSERTED %d\r\n" % job.id)

    def _reserve(self, cmd: p.Reserve, now: float) -> None:
        engine = self.hub.engine
        self._count("reserve" if cmd.timeout is None else "reserve-with-timeout")
        engine.mark_worker(self.session)
        result = engine.reserve(self.session, cmd.timeout, now)
        if result is None:
            self.blocked = True
        elif isinstance(result, Job):
            self._reply_job(b"RESERVED", result)
        else:
            self._reply(_NOTICE_REPLY[result])

    def _job_command(self, cmd: p.JobCommand, now: float) -> None:
        name = cmd.name
        engine = self.hub.engine
        if name == "delete":
            self._count(name)
            self._reply(p.DELETED if engine.delete(self.session, cmd.id, now) else p.NOT_FOUND)
        elif name == "touch":
            self._count(name)
            self._reply(p.TOUCHED if engine.touch(self.session, cmd.id, now) else p.NOT_FOUND)
        elif name == "peek":
            self._count(name)
            self._reply_found(engine.peek(cmd.id))
        elif name == "reserve-job":
            self._count(name)
            job = engine.reserve_job(self.session, cmd.id, now)
            if job is None:
                self._reply(p.NOT_FOUND)
            else:
                engine.mark_worker(self.session)
                self._reply_job(b"RESERVED", job)
        elif name == "kick-job":
            self._count(name)
            self._reply(p.KICKED if engine.kick_job(cmd.id, now) else p.NOT_FOUND)
        else:  # stats-job
            self._count(name)
            job = engine.peek(cmd.id)
            self._reply(
                p.NOT_FOUND if job is None else p.ok_reply(self.hub.stats_job_body(job, now))
            )

    def _release(self, cmd: p.Release, now: float) -> None:
        self._count("release")
        ok = self.hub.engine.release(self.session, cmd.id, cmd.pri, cmd.delay, now)
        self._reply(p.RELEASED if ok else p.NOT_FOUND)

    def _bury(self, cmd: p.Bury, now: float) -> None:
        self._count("bury")
        self._reply(
            p.BURIED if self.hub.engine.bury(self.session, cmd.id, cmd.pri) else p.NOT_FOUND
        )

    def _kick(self, cmd: p.Kick, now: float) -> None:
        self._count("kick")
        self._reply(b"KICKED %d\r\n" % self.hub.engine.kick(self.session, cmd.bound, now))

    def _tube_command(self, cmd: p.TubeCommand, now: float) -> None:
        name = cmd.name
        self._count(name)
        engine = self.hub.engine
        if name == "use":
            engine.use(self.session, cmd.tube)
            self._reply(b"USING %b\r\n" % cmd.tube)
        elif name == "watch":
            self._reply(b"WATCHING %d\r\n" % engine.watch(self.session, cmd.tube))
        elif name == "ignore":
            count = engine.ignore(self.session, cmd.tube)
            self._reply(p.NOT_IGNORED if count is None else b"WATCHING %d\r\n" % count)
        else:  # stats-tube
            body = self.hub.stats_tube_body(cmd.tube, now)
            self._reply(p.NOT_FOUND if body is None else p.ok_reply(body))

    def _pause_tube(self, cmd: p.PauseTube, now: float) -> None:
        self._count("pause-tube")
        ok = self.hub.engine.pause_tube(cmd.tube, cmd.delay, now)
        self._reply(p.PAUSED if ok else p.NOT_FOUND)

    def _simple(self, cmd: p.Simple, now: float) -> None:
        name = cmd.name
        if name == "quit":
            self.closing = True
            return
        self._count(name)
        engine = self.hub.engine
        s = self.session
        if name == "list-tube-used":
            self._reply(b"USING %b\r\n" % s.use.name)
            return
        if name == "stats":
            self._reply(p.ok_reply(self.hub.stats_body(now)))
            return
        if name == "list-tubes":
            self._reply(p.ok_reply(p.yaml_list([t.name for t in engine.tube_order])))
            return
        if name == "list-tubes-watched":
            self._reply(p.ok_reply(p.yaml_list([t.name for t in s.watch])))
            return
        if name == "peek-ready":
            job = engine.peek_ready(s)
        elif name == "peek-delayed":
            job = engine.peek_delayed(s)
        else:
            job = engine.peek_buried(s)
        self._reply_found(job)

    # --- extensions (beanq-*) --------------------------------------------------------------

    def _put_unique(self, cmd: p.PutUnique, now: float) -> None:
        hub = self.hub
        job_id = self._take_put_id()  # (ids are used up as by put)
        if hub.draining:
            self._reply(p.DRAINING)
            return
        engine = hub.engine
        held = engine.find_unique(self.session, cmd.key)
        if held is not None:
            self._reply(b"EXISTS %d\r\n" % held.id)
            return
        if (hub.max_jobs is not None and len(engine.jobs) >= hub.max_jobs) or not hub.can_put(
            len(cmd.body) + len(cmd.key)
        ):
            self._reply(p.OUT_OF_MEMORY)
            return
        job = engine.put_unique(
            self.session, cmd.key, cmd.pri, cmd.delay, cmd.ttr, cmd.body, now, job_id
        )
        self._reply(b"INSERTED %d\r\n" % job.id)

    def _reserve_batch(self, cmd: p.ReserveBatch, now: float) -> None:
        engine = self.hub.engine
        engine.mark_worker(self.session)
        result = engine.reserve(self.session, cmd.timeout, now)
        if result is None:
            self.blocked = True
            self._batch = cmd.n
        elif isinstance(result, Job):
            jobs = [result]
            engine.reserve_more(self.session, jobs, cmd.n, now)
            self._reply_batch(jobs)
        else:
            self._reply(_NOTICE_REPLY[result])

    def _reply_batch(self, jobs: list[Job]) -> None:
        self._reply(b"RESERVED_BATCH %d\r\n" % len(jobs))
        for job in jobs:
            self._reply_job(b"RESERVED", job)

    def _flush(self, cmd: p.Flush, now: float) -> None:
        count = self.hub.engine.flush(cmd.tube, _STATES[cmd.state])
        self._reply(b"FLUSHED %d\r\n" % count)

    def _list_jobs(self, cmd: p.ListJobs, now: float) -> None:
        ids = self.hub.engine.list_ids(cmd.tube, _STATES[cmd.state][0], cmd.after, cmd.limit)
        self._reply(p.ok_reply(p.yaml_list([b"%d" % i for i in ids])))

    def _move(self, cmd: p.Move, now: float) -> None:
        engine = self.hub.engine
        count = engine.move(cmd.src, cmd.dst, _STATES[cmd.state][0], cmd.limit, now)
        self._reply(b"MOVED %d\r\n" % count)

    def _capabilities(self, cmd: p.Capabilities, now: float) -> None:
        self._reply(p.ok_reply(p.yaml_list(p.CAPABILITIES)))

    def _auth(self, cmd: p.Auth, now: float) -> None:
        """Without a gate (a listener with auth=none), as beanstalkd answers any unknown
        command: a client that sends its token anyway carries on."""
        self._reply(p.UNKNOWN_COMMAND)

    def _schedule_add(self, cmd: p.ScheduleAdd, now: float) -> None:
        from beanq import schedules

        engine = self.hub.engine
        try:
            sched = schedules.parse(cmd.name, cmd.body, now + engine.wall_offset)
        except schedules.ScheduleError as exc:
            self._reply(schedules.error_reply(str(exc)))
            return
        replaced = engine.schedule_book().add(engine, sched, now)
        self._reply(b"REPLACED\r\n" if replaced else b"ADDED\r\n")

    def _schedule_command(self, cmd: p.ScheduleCommand, now: float) -> None:
        engine = self.hub.engine
        book = engine.schedules
        if book is None or cmd.name not in book.by_name:
            self._reply(p.NOT_FOUND)
        elif cmd.word == "show":
            from beanq import schedules

            self._reply(p.ok_reply(schedules.show(engine, [book.by_name[cmd.name]], one=True)))
        elif cmd.word == "rm":
            book.remove(engine, cmd.name)
            self._reply(p.DELETED)
        elif cmd.word == "pause":
            book.pause(engine, cmd.name)
            self._reply(b"PAUSED\r\n")
        else:
            book.resume(engine, cmd.name, now)
            self._reply(b"RESUMED\r\n")

    def _schedule_list(self, cmd: p.ScheduleList, now: float) -> None:
        engine = self.hub.engine
        if engine.schedules is None:
            self._reply(p.ok_reply(b"[]"))
            return
        from beanq import schedules

        self._reply(p.ok_reply(schedules.show(engine, list(engine.schedules.by_name.values()))))

    def _invalid(self, event: p.Invalid, now: float) -> None:
        if event.counted == "put" and self._put_started:
            self._put_started = False  # counted by PutStarted already
            self._put_id = None
        elif event.producer:  # a put with a body: beanstalkd had made the job, using an id
            self._take_put_id()
        elif event.counted is not None:
            self._count(event.counted)
        self._reply(event.reply)


_HANDLERS: dict[type, Callable[[Connection, p.Event, float], None]] = {
    p.Put: Connection._put,  # type: ignore[dict-item]
    p.PutStarted: Connection._put_start,  # type: ignore[dict-item]
    p.Reserve: Connection._reserve,  # type: ignore[dict-item]
    p.JobCommand: Connection._job_command,  # type: ignore[dict-item]
    p.Release: Connection._release,  # type: ignore[dict-item]
    p.Bury: Connection._bury,  # type: ignore[dict-item]
    p.Kick: Connection._kick,  # type: ignore[dict-item]
    p.TubeCommand: Connection._tube_command,  # type: ignore[dict-item]
    p.PauseTube: Connection._pause_tube,  # type: ignore[dict-item]
    p.Simple: Connection._simple,  # type: ignore[dict-item]
    p.Invalid: Connection._invalid,  # type: ignore[dict-item]
    p.PutUnique: Connection._put_unique,  # type: ignore[dict-item]
    p.ReserveBatch: Connection._reserve_batch,  # type: ignore[dict-item]
    p.Flush: Connection._flush,  # type: ignore[dict-item]
    p.ListJobs: Connection._list_jobs,  # type: ignore[dict-item]
    p.Move: Connection._move,  # type: ignore[dict-item]
    p.Capabilities: Connection._capabilities,  # type: ignore[dict-item]
    p.Auth: Connection._auth,  # type: ignore[dict-item]
    p.ScheduleAdd: Connection._schedule_add,  # type: ignore[dict-item]
    p.ScheduleCommand: Connection._schedule_command,  # type: ignore[dict-item]
    p.ScheduleList: Connection._schedule_list,  # type: ignore[dict-item]
}
HANDLERS = _HANDLERS  # for beanq.auth, which puts its gate in front of each

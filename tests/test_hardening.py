"""Hardening: hostile input, slow clients, many clients and exhausted resources never take beanq
down, never hurt the other clients, and never lose a job.

The pure half (codec, dispatcher and engine, no sockets) is fuzzed with hypothesis here and with
atheris in ``fuzz/fuzz_codec.py``, which imports ``check_codec``, ``HubDriver`` and ``Op`` from
this module, so both fuzzers check the same properties. The process half spawns real servers on
127.0.0.1 and measures them from outside (/proc).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from beanq import protocol as p
from beanq.dispatch import Connection, HostInfo, Hub
from beanq.tubes import URGENT_THRESHOLD, Engine, State
from tests import soak
from tests.interpreted import PRELUDE
from tests.servers import (
    ServerProcess,
    free_port,
    spawn_beanq,
    wait_until_accepting,
    wait_until_settled,
)
from tests.soak import Client, cpu_seconds, rss_kib, stats_problems

MiB = 1024  # rss_kib() counts KiB

ERROR_REPLIES = frozenset([p.BAD_FORMAT, p.UNKNOWN_COMMAND, p.EXPECTED_CRLF, p.JOB_TOO_BIG])
# Every reply beanstalkd 1.12 sends, except INTERNAL_ERROR.
REPLY_WORDS = frozenset(
    [
        *("INSERTED", "BURIED", "EXPECTED_CRLF", "JOB_TOO_BIG", "DRAINING", "USING"),
        *("RESERVED", "DEADLINE_SOON", "TIMED_OUT", "DELETED", "NOT_FOUND", "RELEASED"),
        *("TOUCHED", "WATCHING", "NOT_IGNORED", "FOUND", "KICKED", "OK", "PAUSED"),
        *("BAD_FORMAT", "UNKNOWN_COMMAND", "OUT_OF_MEMORY"),
    ]
)

# Pieces of the protocol, valid and not, that random streams are built from (also the atheris
# dictionary). Job ids are small, so that commands hit the jobs the stream made.
TOKENS: tuple[bytes, ...] = (
    b"put 0 0 1 3\r\nabc\r\n",
    b"put 1024 0 1 0\r\n\r\n",
    b"put 0 2 1 1\r\nx\r\n",
    b"put 5 0 100 2\r\nhi\r\n",
    b"put 0 0 1 4\r\n",
    b"put 0 0 1 20\r\n" + b"y" * 20 + b"\r\n",
    b"put 0 0 1 3\r\nabcd\r\n",
    b"put 0 0 1 3 x\r\n",
    b"put ",
    b"0 ",
    b"3\r\n",
    b"4294967295",
    b"4294967296",
    b"18446744073709551616",
    b"reserve\r\n",
    b"reserve-with-timeout 0\r\n",
    b"reserve-with-timeout 2\r\n",
    b"put 0 0 10 1\r\nj\r\nreserve-with-timeout 0\r\n",
    # $R and $I stand for the job this connection reserved last and the job put last; the
    # drivers substitute them, so that job commands often name a job that exists.
    *(
        b"%s %s%s\r\n" % (name, job, args)
        for job in (b"1", b"2", b"$R", b"$R", b"$I")
        for name, args in (
            (b"reserve-job", b""),
            (b"delete", b""),
            (b"release", b" 0 0"),
            (b"release", b" 2000 1"),
            (b"bury", b" 7"),
            (b"kick-job", b""),
            (b"touch", b""),
            (b"peek", b""),
            (b"stats-job", b""),
        )
    ),
    b"kick 10\r\n",
    b"peek-ready\r\n",
    b"peek-delayed\r\n",
    b"peek-buried\r\n",
    b"use t\r\n",
    b"use default\r\n",
    b"watch t\r\n",
    b"watch default\r\n",
    b"ignore default\r\n",
    b"ignore t\r\n",
    b"stats\r\n",
    b"stats-tube t\r\n",
    b"stats-tube default\r\n",
    b"list-tubes\r\n",
    b"list-tube-used\r\n",
    b"list-tubes-watched\r\n",
    b"pause-tube t 1\r\n",
    b"pause-tube default 0\r\n",
    b"pause-tube default 3\r\n",
    b"quit\r\n",
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\x00",
    b"-",
    b"x" * 230,
)


# --- the pure harness (hypothesis here, atheris in fuzz/fuzz_codec.py) ---------------------------


def check_codec(data: bytes, cuts: Sequence[int], max_job_size: int) -> list[p.Event]:
    """Feed ``data`` to a ``CommandReader`` in the pieces ``cuts`` makes, and check that:
    nothing raises; the commands and errors are those of feeding it whole (only the
    ``PutStarted`` markers depend on the split); every error is one of beanstalkd's; and the
    reader never buffers more than one line or one body."""
    whole = [e for e in p.CommandReader(max_job_size).feed(data) if type(e) is not p.PutStarted]
    reader = p.CommandReader(max_job_size)
    bound = max(p.MAX_LINE, max_job_size + 2)
    split: list[p.Event] = []
    start = 0
    for cut in [*sorted(c for c in cuts if 0 <= c <= len(data)), len(data)]:
        split += reader.feed(data[start:cut])
        start = cut
        assert reader.buffered <= bound, (reader.buffered, bound)
    assert [e for e in split if type(e) is not p.PutStarted] == whole
    for event in whole:
        if isinstance(event, p.Invalid):
            assert event.reply in ERROR_REPLIES, event
        elif isinstance(event, p.Put):
            assert len(event.body) <= max_job_size
    return whole


class Op(NamedTuple):
    """One step for ``HubDriver``: ``feed`` bytes to, half-close (``eof``) or drop (``close``)
    connection ``conn``, or ``advance`` the clock by ``seconds``."""

    kind: str
    conn: int = 0
    data: bytes = b""
    seconds: float = 0.0


HOST = HostInfo("test", 1, "host", "os", "arch", "0" * 16, lambda: (0.0, 0.0))


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class HubDriver:
    """Drives a ``Hub`` the way the epoll loop does, on a fake clock, and checks everything:
    every reply parses and is one of beanstalkd's, no command ends in INTERNAL_ERROR or a
    logged exception, the jobs held are exactly those acknowledged and not deleted, and the
    engine's counters and structures agree (``engine_problems``)."""

    def __init__(self, max_job_size: int = 16, conns: int = 3, burst: int = 0) -> None:
        self.now = 1000.0
        self.burst = burst  # answer this many commands of a read first, as the loop may
        self.hub = Hub(Engine(self.now), HOST, max_job_size=max_job_size)
        self.conns: list[Connection] = [self.hub.open() for _ in range(conns)]
        self.readers = {conn: p.ReplyReader() for conn in self.conns}
        self.serial = {conn: n for n, conn in enumerate(self.conns)}
        self.transcript: dict[int, bytes] = {}  # connection serial -> every reply byte
        self.inserted = 0
        self.deleted = 0
        self.last_inserted = 1
        self.last_reserved: dict[Connection, int] = {}
        self.errors = _Errors()

    @contextlib.contextmanager
    def watching_logs(self) -> Iterator[None]:
        log = logging.getLogger("beanq")
        log.addHandler(self.errors)
        try:
            yield
        finally:
            log.removeHandler(self.errors)

    def run(self, ops: Sequence[Op]) -> None:
        with self.watching_logs():
            for op in ops:
                self.step(op)
                self.check()

    def step(self, op: Op) -> None:
        i = op.conn % len(self.conns)
        conn = self.conns[i]
        if op.kind == "feed":
            if not conn.eof:
                conn.receive(self._substitute(op.data, conn), self.now, self.burst)
        elif op.kind == "eof":
            conn.receive_eof(self.now)
        elif op.kind == "close":
            conn.close(self.now)
            self._replace(i)
        else:
            self.now += op.seconds
            self.hub.tick(self.now)
        self._flush()

    def _substitute(self, data: bytes, conn: Connection) -> bytes:
        if b"$" not in data:
            return data
        reserved = self.last_reserved.get(conn, 1)
        return data.replace(b"$R", b"%d" % reserved).replace(b"$I", b"%d" % self.last_inserted)

    def _replace(self, i: int) -> None:
        del self.readers[self.conns[i]]
        self.conns[i] = self.hub.open()
        self.readers[self.conns[i]] = p.ReplyReader()
        self.serial[self.conns[i]] = len(self.serial)

    def _flush(self) -> None:
        """What ``EpollLoop._flush_dirty`` does, then closing finished connections."""
        hub = self.hub
        while True:
            hub.deliver(self.now)
            for conn in hub.take_dirty():
                data = b"".join(conn.out)
                conn.out.clear()
                n = self.serial[conn]
                self.transcript[n] = self.transcript.get(n, b"") + data
                if self.burst:
                    conn.drained(self.now)  # (as the loop says once all is sent)
                if conn in self.readers:
                    self._replies(conn, self.readers[conn].feed(data))
            finished = [i for i, c in enumerate(self.conns) if c.finished and not c.out]
            for i in finished:
                self.conns[i].close(self.now)
                self._replace(i)
            if not finished and not hub.dirty:
                return

    def _replies(self, conn: Connection, replies: list[p.Reply]) -> None:
        for reply in replies:
            assert reply.word in REPLY_WORDS, reply
            if reply.word == "INSERTED":
                self.inserted += 1
                self.last_inserted = int(reply.args[0])
            elif reply.word == "RESERVED":
                self.last_reserved[conn] = int(reply.args[0])
            elif reply.word == "DELETED":
                self.deleted += 1

    def check(self) -> None:
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]
        engine = self.hub.engine
        assert engine.total_jobs == self.inserted
        assert len(engine.jobs) == self.inserted - self.deleted
        problems = engine_problems(self.hub)
        assert not problems, problems
        for conn in self.conns:
            assert conn.blocked == conn.session.waiting, conn.session


def engine_problems(hub: Hub) -> list[str]:
    """Every way the engine's counters and structures disagree with its jobs and sessions."""
    e = hub.engine
    problems: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    jobs = list(e.jobs.values())
    sessions = list(hub.connections)
    timers = {id(entry) for entry in e.timers}
    by_state = collections.Counter(job.state for job in jobs)
    expect(e.ready_count == by_state[State.READY], "ready_count")
    expect(e.reserved_count == by_state[State.RESERVED], "reserved_count")
    expect(e.delayed_count == by_state[State.DELAYED], "delayed_count")
    expect(e.buried_count == by_state[State.BURIED], "buried_count")
    urgent = sum(1 for j in jobs if j.state == State.READY and j.pri < URGENT_THRESHOLD)
    expect(e.urgent_count == urgent, "urgent_count")
    expect(e.connections == len(sessions), "connections")
    expect(e.waiting_count == sum(s.waiting for s in sessions), "waiting_count")
    expect(e.producers == sum(s.is_producer for s in sessions), "producers")
    expect(e.workers == sum(s.is_worker for s in sessions), "workers")
    expect(len(e.tube_order) == len(e.tubes), "tube_order length")
    for pos, tube in enumerate(e.tube_order):
        expect(tube.pos == pos and e.tubes.get(tube.name) is tube, f"tube_order {tube}")
    for tube in e.tubes.values():
        mine = [j for j in jobs if j.tube is tube]
        count = collections.Counter(j.state for j in mine)
        expect(tube.ready_count == count[State.READY], f"{tube} ready_count")
        expect(tube.delayed_count == count[State.DELAYED], f"{tube} delayed_count")
        expect(tube.reserved_count == count[State.RESERVED], f"{tube} reserved_count")
        expect(len(tube.buried) == count[State.BURIED], f"{tube} buried")
        urgent = sum(1 for j in mine if j.state == State.READY and j.pri < URGENT_THRESHOLD)
        expect(tube.urgent_count == urgent, f"{tube} urgent_count")
        using = sum(s.use is tube for s in sessions)
        watching = sum(tube in s.watch for s in sessions)
        expect(tube.using == using, f"{tube} using")
        expect(tube.watching == watching, f"{tube} watching")
        default = 1 if tube is e.default_tube else 0
        expect(tube.refs == using + watching + len(mine) + default, f"{tube} refs")
        waiting = sum(s.waiting and tube in s.watch for s in sessions)
        expect(len(tube.waiting) == waiting, f"{tube} waiting list")
        if tube.paused_until is not None:
            expect(id(tube.entry) in timers, f"{tube} pause has no timer")
    for job in jobs:
        tube = job.tube
        expect(e.tubes.get(tube.name) is tube, f"{job} in a freed tube")
        if job.state == State.READY:
            expect(any(entry is job.entry for entry in tube.ready), f"{job} not in ready heap")
        elif job.state == State.DELAYED:
            expect(any(entry is job.entry for entry in tube.delayed), f"{job} not in delay heap")
            expect(id(job.entry) in timers, f"{job} has no timer")
        elif job.state == State.RESERVED:
            s = job.reserver
            expect(s in hub.connections, f"{job} reserved by a closed session")
            expect(s is not None and s.reserved.get(job.id) is job, f"{job} reserver")
            expect(id(job.entry) in timers, f"{job} has no TTR timer")
        elif job.state == State.BURIED:
            expect(tube.buried.get(job.id) is job, f"{job} not in buried list")
        else:
            problems.append(f"{job} is deleted but still held")
    for s in sessions:
        for job_id, job in s.reserved.items():
            expect(e.jobs.get(job_id) is job and job.reserver is s, f"{s} holds {job}")
        if s.waiting:
            # Nobody waits while a job is ready for them: that would be a missed wake-up.
            for tube in s.watch:
                expect(
                    not tube.ready_count or tube.paused_until is not None,
                    f"{s} waits while {tube} has a ready job",
                )
            if s.timeout_at is not None:
                expect(id(s.entry) in timers, f"{s} waits with a timeout but no timer")
    return problems


# --- hypothesis: the codec and the dispatcher ----------------------------------------------------

streams = st.lists(st.one_of(st.binary(max_size=64), st.sampled_from(TOKENS)), max_size=30).map(
    b"".join
)
# Whole commands, puts weighted up so that there are jobs for the job commands to act on.
COMMANDS = tuple(t for t in TOKENS if t.endswith(b"\r\n") and p.CommandReader(16).feed(t))
COMMANDS += tuple(t for t in COMMANDS if t.startswith(b"put ")) * 4
commands = st.lists(st.sampled_from(COMMANDS), min_size=1, max_size=6).map(b"".join)
chunks = st.one_of(
    commands,
    commands,
    st.binary(max_size=40),
    st.lists(st.sampled_from(TOKENS), min_size=1, max_size=6).map(b"".join),
)
ops = st.lists(
    st.one_of(
        st.builds(Op, st.just("feed"), st.integers(0, 2), chunks),
        st.builds(Op, st.just("feed"), st.integers(0, 2), chunks),
        st.builds(
            Op,
            st.just("advance"),
            seconds=st.sampled_from([0.0, 0.25, 1.0, 1.5, 2.0, 5.0, 61.0, 5000.0]),
        ),
        st.builds(Op, st.just("eof"), st.integers(0, 2)),
        st.builds(Op, st.just("close"), st.integers(0, 2)),
    ),
    max_size=40,
)


@settings(max_examples=500, deadline=None)
@given(
    data=streams,
    cuts=st.lists(st.integers(0, 2000), max_size=12),
    max_job_size=st.sampled_from([0, 3, 16, 300, 65535]),
)
@example(data=b"put 0 0 1 3\r\nabc\r\nstats\r\n", cuts=list(range(30)), max_job_size=3)
@example(data=b"x" * 223 + b"\r\nquit\r\n", cuts=[223, 224], max_job_size=1)
@example(data=b"y" * 500 + b"\r" + b"\nlist-tubes\r\n", cuts=[501], max_job_size=1)
def test_codec_any_bytes_any_split(data: bytes, cuts: list[int], max_job_size: int) -> None:
    check_codec(data, cuts, max_job_size)


def test_codec_dribbled_one_byte_at_a_time() -> None:
    """A slowloris client's bytes, one per read, parse exactly as the same bytes at once."""
    stream = (
        b"use t\r\nput 0 0 1 3\r\nabc\r\nput 0 0 1 20\r\n"
        + b"y" * 20
        + b"\r\npeek 1\r\n"
        + b"x" * 300
        + b"\r\nput 0 0 1 2\r\nabcd\r\nquit\r\n"
    )
    events = check_codec(stream, range(len(stream)), 16)
    assert events == [
        p.TubeCommand("use", b"t"),
        p.Put(0, 0, 1, b"abc"),
        p.Invalid(p.JOB_TOO_BIG, "put"),
        p.JobCommand("peek", 1),
        p.Invalid(p.BAD_FORMAT),
        p.Invalid(p.EXPECTED_CRLF, "put", producer=True),
        p.Invalid(p.UNKNOWN_COMMAND),  # "cd" after the 2-byte body that did not end in CRLF
        p.Simple("quit"),
    ]
    noise = b"".join(TOKENS) * 2
    check_codec(noise, range(len(noise)), 16)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, max_job_size=st.sampled_from([16, 65535]))
def test_dispatcher_survives_any_input(ops: list[Op], max_job_size: int) -> None:
    HubDriver(max_job_size).run(ops)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops, burst=st.integers(1, 3))
def test_an_early_first_burst_answers_exactly_what_one_pass_does(ops: list[Op], burst: int) -> None:
    """The loop answers the first commands of a lone pipelining client's read at once
    (``FIRST_BURST``) and the rest once those replies are sent: every byte must be as if all
    were answered at once, whatever the input (blocking reserves, quit, bad commands,
    half-closes). (With other clients about, their waiting reserves may take jobs between two
    of its commands, as beanstalkd's one command at a time allows: ids may then go in another
    order.)"""
    whole = HubDriver(65535, conns=1)
    whole.run(ops)
    bursts = HubDriver(65535, conns=1, burst=burst)
    bursts.run(ops)
    assert bursts.transcript == whole.transcript


def test_a_lone_pipelining_client_gets_every_reply_in_order() -> None:
    """The epoll loop itself, with the early first burst: a lone client pipelines puts whose
    bodies straddle reads, and deletes; every reply comes, in order."""
    from beanq.server import EpollLoop, host_info

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    loop = EpollLoop(listener, Hub(Engine(time.monotonic()), host_info()))
    client = socket.create_connection(listener.getsockname())
    client.settimeout(0.01)
    try:
        while not loop.clients:
            loop.step(loop.epoll.poll(1.0))
        put = b"put 0 0 60 1000\r\n" + b"x" * 1000 + b"\r\n"
        n = 150
        want = b"".join(b"INSERTED %d\r\n" % i for i in range(1, 3 * n + 1))
        want += b"DELETED\r\n" * 3 * n
        sends = [put * n] * 3 + [b"".join(b"delete %d\r\n" % i for i in range(1, 3 * n + 1))]
        got = b""
        deadline = time.monotonic() + 10
        while len(got) < len(want) and time.monotonic() < deadline:
            if sends:
                client.sendall(sends.pop(0))
            loop.step(loop.epoll.poll(0.001))
            with contextlib.suppress(TimeoutError):
                got += client.recv(1 << 20)
        assert got == want
    finally:
        client.close()
        loop.close()
        listener.close()


def test_dispatcher_bug_costs_one_reply() -> None:
    """A bug in one command: INTERNAL_ERROR for it, a logged traceback, and nothing else."""

    def broken(job: object) -> int:
        raise RuntimeError("injected bug")

    hub = Hub(Engine(0.0), HOST, job_file=broken)  # (stats-job asks it for the binlog file)
    conn = hub.open()
    errors = _Errors()
    logging.getLogger("beanq").addHandler(errors)
    try:
        conn.receive(b"put 0 0 1 1\r\nx\r\nstats-job 1\r\npeek 1\r\n", 0.0)
    finally:
        logging.getLogger("beanq").removeHandler(errors)
    replies = p.ReplyReader().feed(b"".join(conn.out))
    assert [r.word for r in replies] == ["INSERTED", "INTERNAL_ERROR", "FOUND"]
    assert len(errors.records) == 1 and errors.records[0].exc_info is not None


# --- real servers: helpers -----------------------------------------------------------------------


# Bugs are planted by replacing methods, which compiled (mypyc) code does not look up: a process
# that gets them runs the sources (see tests/interpreted.py).


@contextlib.contextmanager
def spawn_patched(code: str, *args: str) -> Iterator[tuple[str, int, ServerProcess]]:
    """A beanq process that runs ``code`` (to plant a bug, or lower a limit) before ``main``."""
    port = free_port()
    main = "import sys\nfrom beanq.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    script = f"{PRELUDE}\n{code}\n{main}"
    argv = [sys.executable, "-c", script, "-l", "127.0.0.1", "-p", str(port), *args]
    with tempfile.TemporaryDirectory(prefix="beanq-hardening-") as tmp:
        proc = ServerProcess(argv, Path(tmp) / "server.log")
        try:
            wait_until_accepting("127.0.0.1", port, 15, proc)
            yield "127.0.0.1", port, proc
        finally:
            _kill(proc)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait(5)


def cpu_share(pid: int, seconds: float) -> float:
    """The fraction of one CPU the process used over the next ``seconds``."""
    before, start = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - start)


def round_trip(client: Client) -> float:
    start = time.monotonic()
    assert client.ask(b"list-tube-used\r\n").word == "USING"
    return time.monotonic() - start


class Conversation(NamedTuple):
    replies: list[p.Reply]
    clean: bool  # the server closed with a FIN after everything it sent (no reset)


def converse(host: str, port: int, pieces: Sequence[bytes], timeout: float = 10.0) -> Conversation:
    """Send ``pieces`` one ``send`` each (reading meanwhile, so that neither side blocks),
    half-close, and read until the server closes. Fails the test if that takes ``timeout``."""
    deadline = time.monotonic() + timeout
    reader = p.ReplyReader()
    replies: list[p.Reply] = []
    clean = True
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        pending = collections.deque(piece for piece in pieces if piece)
        current = b""
        sending = True
        with selectors.DefaultSelector() as sel:
            sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while True:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no end of conversation after {timeout}s: {replies[-5:]}"
                for _key, mask in sel.select(min(remaining, 0.5)):
                    if mask & selectors.EVENT_WRITE and sending:
                        if not current and pending:
                            current = pending.popleft()
                        try:
                            current = current[sock.send(current) :]
                        except BlockingIOError:
                            pass
                        except OSError:  # the server quit on us
                            sending, clean = False, False
                            sel.modify(sock, selectors.EVENT_READ)
                            continue
                        if not current and not pending:
                            try:
                                sock.shutdown(socket.SHUT_WR)
                            except OSError:  # reset already
                                clean = False
                            sending = False
                            sel.modify(sock, selectors.EVENT_READ)
                        elif not current:
                            time.sleep(0.001)  # let the server read this piece on its own
                    if mask & selectors.EVENT_READ:
                        try:
                            data = sock.recv(1 << 16)
                        except BlockingIOError:
                            continue
                        except ConnectionResetError:
                            return Conversation(replies, False)
                        if not data:
                            return Conversation(replies, clean)
                        replies += reader.feed(data)


# --- real servers: fuzzed connections -------------------------------------------------------------


class FuzzTarget(NamedTuple):
    host: str
    port: int
    proc: ServerProcess
    probe: Client
    bystander: Client
    bystander_job: int
    expected: dict[str, int]  # total-jobs, jobs held, the last id put, as the clients saw them


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[FuzzTarget]:
    """One server for all fuzzed conversations, with a bystander that holds a reserved job in
    its own tube and must be untouched by everything the fuzzed connections do."""
    with spawn_beanq("-z", "300") as (host, port, proc):
        probe = Client(host, port)
        bystander = Client(host, port)
        tube = b"bystander-%d" % os.getpid()
        assert bystander.ask(b"use %s\r\n" % tube).word == "USING"
        assert bystander.ask(b"watch %s\r\n" % tube).word == "WATCHING"
        assert bystander.ask(b"ignore default\r\n").word == "WATCHING"
        job = int(bystander.ask(b"put 0 0 3600 5\r\nmine!\r\n").args[0])
        assert bystander.ask(b"reserve-with-timeout 0\r\n").args[0] == str(job)
        try:
            yield FuzzTarget(
                host,
                port,
                proc,
                probe,
                bystander,
                job,
                {"total-jobs": 1, "held": 1, "last-id": job},
            )
        finally:
            probe.close()
            bystander.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(pieces=st.lists(chunks, max_size=8))
@example(pieces=[b"reserve\r\n" + b"stats\r\n" * 5])
@example(pieces=[b"put 0 0 1 301\r\n", b"z" * 303, b"peek 1\r\n"])
@example(pieces=[b"use t\r\nput 0 0 1 3\r\nab", b"c\r\nquit\r\n", b"list-tubes\r\n"])
def test_server_survives_fuzzed_connections(fuzz_target: FuzzTarget, pieces: list[bytes]) -> None:
    """Arbitrary bytes, split arbitrarily, on a real connection: every reply is one of
    beanstalkd's, the server then answers a probe, its stats add up, every job the fuzzed
    connection was told about is counted, and the bystander's job and session are intact."""
    t = fuzz_target
    last = b"%d" % t.expected["last-id"]
    talk = converse(t.host, t.port, [s.replace(b"$R", last).replace(b"$I", last) for s in pieces])
    for reply in talk.replies:
        assert reply.word in REPLY_WORDS, reply
    inserted = sum(r.word == "INSERTED" for r in talk.replies)
    deleted = sum(r.word == "DELETED" for r in talk.replies)
    assert round_trip(t.probe) < 2.0
    stats = t.probe.stats()
    held = sum(int(stats[key]) for key in soak.JOB_COUNTS[1:])
    if talk.clean:  # every reply arrived: the books must balance exactly
        assert stats["total-jobs"] == t.expected["total-jobs"] + inserted
        assert held == t.expected["held"] + inserted - deleted
    else:  # a reset may have eaten replies: the server did at least what we saw
        assert int(stats["total-jobs"]) >= t.expected["total-jobs"] + inserted
    t.expected["total-jobs"] = int(stats["total-jobs"])
    for reply in talk.replies:
        if reply.word == "INSERTED":
            t.expected["last-id"] = int(reply.args[0])
    t.expected["held"] = held
    assert stats["current-connections"] == 2  # the probe and the bystander
    assert stats["current-waiting"] == 0
    assert stats["current-jobs-reserved"] == 1  # the bystander's
    assert not stats_problems(t.probe)
    assert t.bystander.stats(b"stats-job %d\r\n" % t.bystander_job)["state"] == "reserved"
    assert t.proc.poll() is None


def test_fuzz_target_bystander_finishes(fuzz_target: FuzzTarget) -> None:
    """After all the fuzzing, the bystander's connection still works and its job is its own."""
    t = fuzz_target
    tube = f"bystander-{os.getpid()}"
    assert t.bystander.ask(b"list-tube-used\r\n") == p.Reply("USING", (tube,))
    assert t.bystander.ask(b"delete %d\r\n" % t.bystander_job) == p.Reply("DELETED")
    assert "Traceback" not in t.proc.output()


# --- real servers: bugs ---------------------------------------------------------------------------

PLANT_COMMAND_BUG = """
from beanq import tubes
def kick_job(self, job_id, now):
    raise RuntimeError("planted bug in kick-job")
tubes.Engine.kick_job = kick_job
"""

PLANT_CODEC_BUG = """
from beanq import protocol
parse_line = protocol.CommandReader._parse_line
def _parse_line(self, line):
    if line == b"boom":
        raise RuntimeError("planted bug in the codec")
    return parse_line(self, line)
protocol.CommandReader._parse_line = _parse_line
"""


def test_command_bug_is_logged_answered_and_survived() -> None:
    with (
        spawn_patched(PLANT_COMMAND_BUG) as (host, port, proc),
        Client(host, port) as victim,
        Client(host, port) as other,
    ):
        assert victim.ask(b"put 0 0 1 1\r\nx\r\n").word == "INSERTED"
        assert victim.ask(b"kick-job 1\r\n") == p.Reply("INTERNAL_ERROR")
        assert victim.ask(b"peek 1\r\n").word == "FOUND"  # the same connection carries on
        assert round_trip(other) < 2.0
        time.sleep(0.2)
        log = proc.output()
        assert "Traceback" in log and "planted bug in kick-job" in log
        assert proc.poll() is None


def test_codec_bug_costs_one_connection_at_most() -> None:
    with spawn_patched(PLANT_CODEC_BUG) as (host, port, proc), Client(host, port) as other:
        with Client(host, port) as victim:
            victim.send(b"boom\r\n")
            with contextlib.suppress(OSError, EOFError):
                victim.reply()
        time.sleep(0.3)
        assert proc.poll() is None, proc.describe()
        assert round_trip(other) < 2.0
        assert "planted bug in the codec" in proc.output()


# --- real servers: slow readers, hung-up clients, slowloris ---------------------------------------

BIG = 65535


def _big_job(client: Client) -> int:
    reply = client.ask(b"put 0 0 60 %d\r\n%b\r\n" % (BIG, b"b" * BIG))
    assert reply.word == "INSERTED"
    return int(reply.args[0])


def _slow_socket(host: str, port: int) -> socket.socket:
    """A connection with a small receive buffer, so that unread replies back up into the
    server soon. (Not below 16 KiB: with a window under the loopback MSS, TCP itself crawls.)"""
    sock = socket.create_connection((host, port), timeout=5)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    return sock


def _kernel_send_buffer_max() -> int:
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as f:
            return int(f.read().split()[2])
    except (OSError, ValueError, IndexError):
        return 4 << 20


def test_slow_reader_is_paused_then_served_in_full() -> None:
    """Pipelined peeks of a 64 KiB job from a client that does not read, more than the
    kernel's socket buffers hold: the server keeps the rest (over its 1 MiB cap), stops
    reading that client (a second of further commands costs it no memory), serves everyone
    else meanwhile, and later delivers every reply intact and in order."""
    first = _kernel_send_buffer_max() // BIG + 48  # 3 MiB of replies more than the kernel holds
    with spawn_beanq("-V") as (host, port, proc), Client(host, port) as other:
        wait_until_settled(proc)
        job = _big_job(other)
        time.sleep(0.3)
        start = rss_kib(proc.pid)
        with _slow_socket(host, port) as slow:
            slow.sendall(b"peek %d\r\n" % job * first)
            time.sleep(0.5)
            paused = rss_kib(proc.pid)
            assert paused - start < 16 * MiB, f"server RSS grew {(paused - start) / MiB:.0f} MiB"
            sent = first
            slow.settimeout(0.05)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and sent < first + 512:
                with contextlib.suppress(TimeoutError):
                    slow.sendall(b"peek %d\r\n" % job * 8)  # more, piling up unread
                    sent += 8
                assert round_trip(other) < 0.5
            grown = rss_kib(proc.pid) - paused
            assert grown < 2 * MiB, f"a paused client's commands cost {grown / MiB:.1f} MiB"
            reader = p.ReplyReader()
            found = 0
            slow.settimeout(10)
            while found < sent:
                data = slow.recv(1 << 20)
                assert data, "server closed the slow reader"
                for reply in reader.feed(data):
                    assert reply == p.Reply("FOUND", (str(job), str(BIG)), b"b" * BIG)
                    found += 1
            slow.sendall(b"list-tube-used\r\n")
            assert reader.feed(slow.recv(100)) == [p.Reply("USING", ("default",))]
        assert proc.poll() is None


def test_slow_reader_burst_is_capped() -> None:
    """4096 pipelined peeks of a 64 KiB job in one send, never read: the server's memory
    must stay near its 1 MiB per-connection output cap, and other clients must not wait."""
    with spawn_beanq("-V") as (host, port, proc), Client(host, port) as other:
        wait_until_settled(proc)
        job = _big_job(other)
        time.sleep(0.3)
        start = rss_kib(proc.pid)
        with _slow_socket(host, port) as slow:
            slow.sendall(b"peek %d\r\n" % job * 4096)
            slowest = max(round_trip(other) for _ in range(10))
            time.sleep(0.5)
            grown = rss_kib(proc.pid, "VmHWM") - start
        assert grown < 64 * MiB, f"server RSS grew {grown / MiB:.0f} MiB"
        assert slowest < 0.5, f"another client waited {slowest:.2f}s"


@pytest.mark.parametrize("case", ["slow-reader-half-closes", "held-commands-then-close"])
def test_paused_client_hanging_up_costs_nothing(case: str) -> None:
    with spawn_beanq("-V") as (host, port, proc), Client(host, port) as other:
        wait_until_settled(proc)
        sock = _slow_socket(host, port)
        if case == "slow-reader-half-closes":
            job = _big_job(other)
            sock.sendall(b"peek %d\r\n" % job * 200)  # 13 MiB of replies, never read
            time.sleep(0.3)
            sock.shutdown(socket.SHUT_WR)
        else:
            sock.sendall(b"reserve\r\n" + b"list-tube-used\r\n" * 2000)
            time.sleep(0.3)
            sock.close()
        time.sleep(0.2)
        busy = cpu_share(proc.pid, 1.0)
        stats = other.stats()
        sock.close()
        assert busy < 0.1, f"the server used {busy:.0%} of a CPU while idle"
        if case == "held-commands-then-close":
            assert stats["current-connections"] == 1, stats["current-connections"]
            assert stats["current-waiting"] == 0


def test_slowloris_holds_nothing_others_need() -> None:
    """Fifty connections dribble commands (a put among them) a byte at a time. Meanwhile
    another client's round trips stay fast, its jobs flow, and the dribblers' commands are
    answered exactly as if sent at once."""
    command = b"use slow\r\nput 0 0 60 5\r\nhello\r\nlist-tube-used\r\n"
    with spawn_beanq("-V") as (host, port, proc), Client(host, port) as worker:
        wait_until_settled(proc)
        dribblers = [socket.create_connection((host, port), timeout=5) for _ in range(50)]
        try:
            time.sleep(0.2)
            start_rss = rss_kib(proc.pid)
            slowest = 0.0
            for i, byte in enumerate(command):
                for sock in dribblers:
                    sock.send(bytes([byte]))
                if i % 4 == 0:  # a full job cycle for the worker, every few bytes
                    slowest = max(slowest, round_trip(worker))
                    assert worker.ask(b"put 0 0 10 2\r\nok\r\n").word == "INSERTED"
                    reply = worker.ask(b"reserve-with-timeout 0\r\n")
                    assert reply.word == "RESERVED" and reply.body == b"ok"
                    assert worker.ask(b"delete %s\r\n" % reply.args[0].encode()).word == "DELETED"
                time.sleep(0.02)
            assert slowest < 0.5, f"a round trip took {slowest:.2f}s"
            assert rss_kib(proc.pid) - start_rss < 8 * MiB
            for sock in dribblers:
                sock.settimeout(5)
                reader = p.ReplyReader()
                replies: list[p.Reply] = []
                while len(replies) < 3:
                    data = sock.recv(4096)
                    assert data
                    replies += reader.feed(data)
                assert [r.word for r in replies] == ["USING", "INSERTED", "USING"]
            stats = worker.stats(b"stats-tube slow\r\n")
            assert stats["current-jobs-ready"] == 50
        finally:
            for sock in dribblers:
                sock.close()
        assert proc.poll() is None


# --- real servers: descriptors and many connections -----------------------------------------------


def test_descriptor_exhaustion_does_not_spin() -> None:
    """At the descriptor limit, connections wait in the backlog; beanq retries after a
    pause rather than in a busy loop, and its existing connections keep working."""
    code = "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))\n"
    with spawn_patched(code) as (host, port, proc), Client(host, port) as first:
        time.sleep(0.5)  # start-up done: trio holds the descriptors it needs
        extra = []
        try:
            for _ in range(60):
                extra.append(socket.create_connection((host, port), timeout=5))
            time.sleep(0.3)
            busy = cpu_share(proc.pid, 1.0)
            assert busy < 0.15, f"the server used {busy:.0%} of a CPU while out of descriptors"
            assert round_trip(first) < 0.5
            assert first.ask(b"put 0 0 1 1\r\nx\r\n").word == "INSERTED"
        finally:
            for sock in extra:
                sock.close()
        time.sleep(0.5)
        with Client(host, port) as late:
            assert late.ask(b"peek 1\r\n").word == "FOUND"
        assert proc.output().count("pausing accepts") < 10


@contextlib.contextmanager
def _own_fd_limit(need: int) -> Iterator[tuple[int, int]]:
    """This process holds one end of every connection: raise its soft descriptor limit to the
    hard one for the duration (skip if even the hard limit is too low)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield resource.getrlimit(resource.RLIMIT_NOFILE)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.slow
def test_ten_thousand_idle_connections_and_load() -> None:
    """10,000 idle connections plus producers and workers: beanq raises its own descriptor
    limit (it starts with a soft limit of 1024 here), accepts them all, serves a sample of
    them and the load, and counts them right as they come and go."""
    n = 10_000
    idle: list[socket.socket] = []
    with contextlib.ExitStack() as stack:
        soft, hard = stack.enter_context(_own_fd_limit(n + 500))
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the server inherits this
        try:
            host, port, proc = stack.enter_context(spawn_beanq("-V"))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        stack.callback(lambda: [sock.close() for sock in idle])
        with open(f"/proc/{proc.pid}/limits") as f:
            limits = f.read()
        raised = [line for line in limits.splitlines() if line.startswith("Max open files")]
        assert raised and raised[0].split()[3] == str(hard), limits
        start = time.monotonic()
        for _ in range(n):
            idle.append(socket.create_connection((host, port), timeout=10))
        connect_time = time.monotonic() - start
        producer = stack.enter_context(Client(host, port))
        worker = stack.enter_context(Client(host, port))
        for batch in range(20):
            producer.send(b"put 0 0 60 3\r\nabc\r\n" * 50)
            assert all(producer.reply().word == "INSERTED" for _ in range(50))
            for k in range(50):
                reply = worker.ask(b"reserve-with-timeout 5\r\n")
                assert reply.word == "RESERVED", reply
                assert worker.ask(b"delete %s\r\n" % reply.args[0].encode()).word == "DELETED"
                sock = idle[(batch * 50 + k) * 7 % n]
                sock.sendall(b"list-tube-used\r\n")
                assert sock.recv(100) == b"USING default\r\n"
        stats = producer.stats()
        assert stats["current-connections"] == n + 2
        assert stats["total-jobs"] == 1000 and stats["current-jobs-ready"] == 0
        for sock in idle[: n // 2]:
            sock.close()
        del idle[: n // 2]
        deadline = time.monotonic() + 10
        while producer.stats()["current-connections"] != n - n // 2 + 2:
            assert time.monotonic() < deadline, "closed connections are still counted"
            time.sleep(0.05)
        log = proc.log_path.read_text()
        assert f"descriptor limit {hard}" in log
        assert "Traceback" not in log
        assert connect_time < 20, f"10,000 connects took {connect_time:.1f}s"


# --- memory ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "size"), [(200_000, 100), (2_000, 60_000)])
def test_memory_returns_after_a_burst(n: int, size: int) -> None:
    """Many small jobs, or a few thousand big ones (as many bytes), then deleting them all:
    RSS must fall most of the way back to where it started."""
    batch = min(n, 5_000)
    put = b"put 0 0 60 %d\r\n" % size + b"m" * size + b"\r\n"
    with spawn_beanq("-V") as (host, port, proc), Client(host, port) as c:
        wait_until_settled(proc)
        time.sleep(0.3)
        start = rss_kib(proc.pid)
        for _ in range(n // batch):
            c.send(put * batch)
            for _ in range(batch):
                assert c.reply().word == "INSERTED"
        peak = rss_kib(proc.pid)
        for first in range(1, n + 1, batch):
            c.send(b"".join(b"delete %d\r\n" % i for i in range(first, first + batch)))
            for _ in range(batch):
                assert c.reply() == p.Reply("DELETED")
        time.sleep(1.5)  # give any idle-time clean-up its chance
        end = rss_kib(proc.pid)
    # beanstalkd keeps all of 1M small jobs (287 MB after draining them), and gives big
    # bodies back (each is one malloc); beanq gives most back, and what remains varies with
    # allocator fragmentation (measured: 10-30% of the growth)
    allowed = max(16 * MiB, (peak - start) * 35 // 100)
    assert end - start <= allowed, (
        f"RSS start {start // MiB} MiB, after {n} puts {peak // MiB} MiB,"
        f" after deleting them {end // MiB} MiB"
    )


# --- the soak, short ------------------------------------------------------------------------------


def test_short_soak() -> None:
    """Eight seconds of ``python -m tests.soak``: producers, workers, garbage, slow readers
    (in bursts of 64 peeks; see test_slow_reader_burst_is_capped for the long bursts) and
    churn at once, then the audit: every acknowledged job accounted for, stats consistent,
    RSS bounded, latency bounded."""
    report = soak.run(8.0, slow_burst=64, rss_limit_mib=160.0, max_latency=2.0)
    assert report.ok, report.summary()
    assert report.inserted > 1000 and report.deleted == report.inserted, report.summary()
    assert report.bad_sessions > 10 and report.slow_sessions > 2, report.summary()

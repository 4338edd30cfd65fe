"""Differential tests: the same byte-level transcripts against beanstalkd 1.12 and against beanq.

Each scenario in ``transcripts.SCENARIOS`` runs against a fresh reference beanstalkd and a fresh
beanq, side by side: every step goes to both servers at (nearly) the same moment and replies are
collected from both at once, so sleeps and timeouts are paid once. The replies are then compared
byte by byte, after this normalisation:

* Job ids are *not* normalised: both servers start fresh, so ids must match exactly.
* ``OK <n>`` replies whose body is a YAML mapping (``stats``, ``stats-tube``, ``stats-job``) are
  compared key by key: the keys and their order must match exactly, and so must every value
  except
  - in ``stats``: ``pid``, ``uptime``, ``rusage-utime``, ``rusage-stime``, ``id``,
    ``version`` and ``binlog-*`` (not compared);
  - ``age``, ``time-left`` and ``pause-time-left``, which may differ by one second;
  so the ``<n>`` of those replies is not compared either. Every other reply, including
  ``list-tubes`` bodies, must match exactly.
* "Connection closed" and "no reply within the timeout" are part of the transcript too.

Known deliberate differences of beanq are kept out of the scenarios; ``test_deviation`` and
``test_deviation_yaml_quoting`` check what each of the two servers does instead:

1. beanq quotes string values in YAML the way beanstalkd 1.13 does: ``name: "foo"`` in
   ``stats-tube``, ``tube: "foo"`` in ``stats-job``, and ``hostname``, ``os``, ``platform`` in
   ``stats``. Every scenario runs twice: with beanq's default these values must be
   beanstalkd's in double quotes, and with ``--yaml 1.12`` exactly beanstalkd's (and a
   ``stats-tube`` or ``stats-job`` reply whose values all match must match byte for byte).
2. beanq rejects a command whose name is followed by junk: ``quitxyz`` is ``UNKNOWN_COMMAND``
   (1.12 quits) and ``pause-tubefoo 0`` is ``UNKNOWN_COMMAND`` (1.12 pauses tube ``foo``).
   Where 1.12 already answers ``BAD_FORMAT`` (``statsx``, ``reservex``) both agree, and that
   is compared in the ``junk-after-command-name`` scenario.
3. A command line of exactly 225 bytes (223 + CRLF): beanstalkd replies ``BAD_FORMAT`` and then
   swallows the next command; beanq replies ``BAD_FORMAT`` and then answers the next command.
4. Numeric arguments are strict (decimal digits only, no sign, nothing after them, within the
   u32/u64 range). 1.12 parses ``reserve-with-timeout`` and ``kick`` with strtol/strtoul and
   accepts ``reserve-with-timeout -1`` (waits forever), ``5abc`` (5), ``x``, an empty
   argument, ``+0``, ``0 2`` or ``4294967296`` (all 0: TIMED_OUT at once), and ``kick 5abc``
   (5), ``kick +5`` (5), ``kick 1 2`` (1), ``kick -1`` (wraps to 4294967295) or
   ``kick 4294967296`` (truncated to 0); beanq answers ``BAD_FORMAT`` to all of them.
5. A bare CR inside a command line: beanstalkd only looks at the first CR in its buffer, so it
   waits for more input (and later discards the line as too long); beanq finds the CRLF and
   answers the line.

One beanstalkd 1.12 bug shapes the TTR scenarios: when its event loop happens to read the clock
at exactly a reservation's deadline (same microsecond), it neither releases the job nor keeps
the timer, so the job stays reserved until its holder sends another command (about one run in
four on an idle server). The scenarios therefore prod the holder (``transcripts.wake``) before
looking, and ``test_beanq_expires_reservation_while_idle`` checks beanq on its own.

Set ``BEANQ_DIFF_CANDIDATE=beanstalkd`` to run the candidate side on a second beanstalkd instead
of beanq: every scenario must then pass, which validates the harness and its normalisation.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

from tests.servers import ServerProcess, ServerStartError, spawn_beanq, spawn_beanstalkd
from tests.transcripts import (
    SCENARIOS,
    Close,
    HalfClose,
    Open,
    Read,
    Scenario,
    Send,
    Sleep,
    Step,
    c,
    put,
    tx,
)

reference = pytest.mark.reference

CANDIDATE_ENV = "BEANQ_DIFF_CANDIDATE"
FINAL_CONN = "final"
# Shutdown is not under test here: a server that ignores SIGTERM for this long gets SIGKILL.
STOP_GRACE = 1.0
DRAIN_WINDOW = 0.05

# --------------------------------------------------------------------------------------------
# Reading replies


@dataclass(frozen=True)
class Marker:
    """Something other than a complete reply: the server closed, or said nothing in time."""

    kind: str  # "closed" or "no reply"
    partial: bytes = b""  # bytes of an incomplete reply, if any

    def __str__(self) -> str:
        extra = f" (incomplete: {self.partial!r})" if self.partial else ""
        return f"<{self.kind}{extra}>"


CLOSED = Marker("closed")
NO_REPLY = Marker("no reply")

Reply = bytes | Marker

_COUNTED = re.compile(rb"(?:RESERVED|FOUND) [0-9]+ ([0-9]+)|OK ([0-9]+)")


class FramedReader:
    """Splits a byte stream of beanstalk replies into whole replies.

    A reply is a CRLF-terminated line; after ``RESERVED <id> <n>``, ``FOUND <id> <n>`` and
    ``OK <n>`` it also includes the ``n`` bytes of the body and the CRLF after them.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False

    def feed(self, data: bytes) -> None:
        if data:
            self.buffer += data
        else:
            self.eof = True

    def pop(self) -> bytes | None:
        end = self.buffer.find(b"\r\n")
        if end < 0:
            return None
        size = end + 2
        match = _COUNTED.fullmatch(bytes(self.buffer[:end]))
        if match:
            size += int(match.group(1) or match.group(2)) + 2
            if len(self.buffer) < size:
                return None
        reply = bytes(self.buffer[:size])
        del self.buffer[:size]
        return reply


class Connection:
    """One client connection to one server."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=5.0)
        self.sock.setblocking(False)
        self.reader = FramedReader()
        self.closed_locally = False

    def send(self, data: bytes) -> None:
        # A failed send (the server has closed) is not recorded: the next Read shows the close.
        with contextlib.suppress(OSError):
            self.sock.setblocking(True)
            self.sock.settimeout(5.0)
            self.sock.sendall(data)
        self.sock.setblocking(False)

    def receive(self) -> None:
        """Take whatever the socket has now (non-blocking)."""
        while not self.reader.eof:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # reset by peer counts as closed
                data = b""
            self.reader.feed(data)

    def close(self) -> None:
        if not self.closed_locally:
            self.closed_locally = True
            self.sock.close()


def read_replies(conns: Sequence[Connection], count: int, timeout: float) -> list[list[Reply]]:
    """Read up to ``count`` replies from each connection, all at once, within ``timeout``.

    For each connection: stops at ``count`` replies; appends ``CLOSED`` if the server closed
    first, or ``NO_REPLY`` (with any incomplete bytes) if the timeout passed first.
    """
    deadline = time.monotonic() + timeout
    results: list[list[Reply]] = [[] for _ in conns]
    done = [False] * len(conns)
    with selectors.DefaultSelector() as selector:
        for index, conn in enumerate(conns):
            if conn.closed_locally:
                results[index].append(Marker("closed locally"))
                done[index] = True
            else:
                selector.register(conn.sock, selectors.EVENT_READ, index)
        while True:
            for index, conn in enumerate(conns):
                if done[index]:
                    continue
                conn.receive()
                while len(results[index]) < count and (reply := conn.reader.pop()) is not None:
                    results[index].append(reply)
                if len(results[index]) >= count:
                    done[index] = True
                elif conn.reader.eof:
                    results[index].append(Marker("closed", bytes(conn.reader.buffer)))
                    done[index] = True
                if done[index]:
                    selector.unregister(conn.sock)
            remaining = deadline - time.monotonic()
            if all(done):
                return results
            if remaining <= 0:
                for index, conn in enumerate(conns):
                    if not done[index]:
                        results[index].append(Marker("no reply", bytes(conn.reader.buffer)))
                return results
            selector.select(remaining)


# --------------------------------------------------------------------------------------------
# Running transcripts


@dataclass
class Event:
    """The replies collected by one Read step on one server."""

    step: int
    conn: str
    sent: bytes  # what was sent on this connection since its previous Read, for messages
    replies: list[Reply]


@dataclass
class Session:
    """One server under test and the client connections open to it."""

    name: str
    host: str
    port: int
    proc: ServerProcess
    conns: dict[str, Connection] = field(default_factory=dict)

    def conn(self, name: str) -> Connection:
        if name not in self.conns:
            self.conns[name] = Connection(self.host, self.port)
        return self.conns[name]

    def close_all(self) -> None:
        for conn in self.conns.values():
            conn.close()


def run_steps(sessions: Sequence[Session], steps: Sequence[Step]) -> list[list[Event]]:
    """Run ``steps`` against every session in lockstep; returns each session's events."""
    logs: list[list[Event]] = [[] for _ in sessions]
    unread: dict[str, bytearray] = {}
    for index, step in enumerate(steps):
        match step:
            case Open(conn):
                for session in sessions:
                    session.conn(conn)
            case Send(conn, data):
                unread.setdefault(conn, bytearray()).extend(data)
                for session in sessions:
                    session.conn(conn).send(data)
            case Read(conn, count, timeout):
                sent = bytes(unread.pop(conn, b""))
                results = read_replies([s.conn(conn) for s in sessions], count, timeout)
                for log, replies in zip(logs, results, strict=True):
                    log.append(Event(index, conn, sent, replies))
            case Sleep(seconds):
                time.sleep(seconds)
            case Close(conn, settle):
                for session in sessions:
                    session.conn(conn).close()
                time.sleep(settle)
            case HalfClose(conn):
                for session in sessions:
                    with contextlib.suppress(OSError):
                        session.conn(conn).sock.shutdown(socket.SHUT_WR)
    return logs


def drain(sessions: Sequence[Session], logs: list[list[Event]], step: int) -> None:
    """Record replies nobody read (e.g. an extra reply) on every open connection."""
    time.sleep(DRAIN_WINDOW)
    names = sorted({name for s in sessions for name in s.conns})
    for name in names:
        found: list[list[Reply]] = []
        for session in sessions:
            conn = session.conns.get(name)
            replies: list[Reply] = []
            if conn is not None and not conn.closed_locally:
                conn.receive()
                while (reply := conn.reader.pop()) is not None:
                    replies.append(reply)
                if conn.reader.buffer:
                    replies.append(Marker("unread", bytes(conn.reader.buffer)))
            found.append(replies)
        if any(found):
            for log, replies in zip(logs, found, strict=True):
                log.append(Event(step, name, b"<nothing: left unread at the end>", replies))


def run_scenario(sessions: Sequence[Session], scenario: Scenario) -> list[list[Event]]:
    try:
        logs = run_steps(sessions, scenario.steps)
        drain(sessions, logs, len(scenario.steps))
        if scenario.final_stats:
            final = [
                *c("stats", FINAL_CONN),
                *c("list-tubes", FINAL_CONN),
            ]
            for log, more in zip(logs, run_steps(sessions, final), strict=True):
                for event in more:
                    event.step += len(scenario.steps)
                log.extend(more)
        return logs
    finally:
        for session in sessions:
            session.close_all()


# --------------------------------------------------------------------------------------------
# Normalisation and comparison

STATS_VOLATILE = frozenset(
    {
        "pid",
        "uptime",
        "rusage-utime",
        "rusage-stime",
        "id",
        "version",
        "binlog-oldest-index",
        "binlog-current-index",
        "binlog-records-migrated",
        "binlog-records-written",
        "binlog-max-size",
    }
)
PLUS_MINUS_ONE = frozenset({"age", "time-left", "pause-time-left"})
QUOTED_BY_BEANQ = frozenset({"name", "tube", "hostname", "os", "platform"})


def yaml_mapping(reply: bytes) -> list[tuple[str, str]] | None:
    """The key/value pairs of an ``OK <n>`` reply whose body is a flat YAML mapping."""
    head, _, rest = reply.partition(b"\r\n")
    if not head.startswith(b"OK ") or not rest.startswith(b"---\n"):
        return None
    body = rest[4:-2]  # drop "---\n" and the CRLF after the body
    if not body.endswith(b"\n"):
        return None
    pairs: list[tuple[str, str]] = []
    for line in body[:-1].split(b"\n"):
        key, sep, value = line.partition(b": ")
        if not sep or key.startswith(b"- "):
            return None
        pairs.append((key.decode("latin-1"), value.decode("latin-1")))
    return pairs


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _values_match(kind: str, key: str, ref: str, cand: str, quoted: bool) -> bool:
    if kind == "stats" and key in STATS_VOLATILE:
        return True
    if key in QUOTED_BY_BEANQ and quoted:
        if not (cand.startswith('"') and cand.endswith('"')):
            return False
        cand = _unquote(cand)
    if key in PLUS_MINUS_ONE and ref.lstrip("-").isdigit() and cand.lstrip("-").isdigit():
        return abs(int(ref) - int(cand)) <= 1
    return ref == cand


def mapping_differences(ref: bytes, cand: bytes, quoted: bool = True) -> list[str] | None:
    """Differences between two YAML ``OK`` replies, or None if they are not both mappings.
    ``quoted``: the candidate double-quotes the values of QUOTED_BY_BEANQ (beanq's default,
    as beanstalkd 1.13); else it must write them bare, as 1.12 does (``--yaml 1.12``)."""
    ref_pairs, cand_pairs = yaml_mapping(ref), yaml_mapping(cand)
    if ref_pairs is None or cand_pairs is None:
        return None
    ref_keys = [key for key, _ in ref_pairs]
    cand_keys = [key for key, _ in cand_pairs]
    if ref_keys != cand_keys:
        return [f"keys differ: beanstalkd {ref_keys} vs {cand_keys}"]
    kind = {"current-jobs-urgent": "stats", "name": "stats-tube", "id": "stats-job"}.get(
        ref_keys[0], "?"
    )
    differences = [
        f"{key}: {ref_value!r} vs {cand_value!r}"
        for (key, ref_value), (_, cand_value) in zip(ref_pairs, cand_pairs, strict=True)
        if not _values_match(kind, key, ref_value, cand_value, quoted)
    ]
    if not quoted and kind != "stats" and ref_pairs == cand_pairs and ref != cand:
        differences.append(f"same values, different bytes: {ref!r} vs {cand!r}")
    return differences


def replies_match(ref: Reply, cand: Reply, quoted: bool = True) -> bool:
    if isinstance(ref, bytes) and isinstance(cand, bytes):
        differences = mapping_differences(ref, cand, quoted)
        if differences is not None:
            return not differences
    return ref == cand


@dataclass
class Mismatch:
    step: int
    conn: str
    sent: bytes
    reference: list[Reply]
    candidate: list[Reply]
    quoted: bool = True

    def render(self, candidate_name: str) -> str:
        lines = [f"step {self.step} on connection {self.conn!r}, after sending {self.sent!r}:"]
        lines.append(f"  beanstalkd: {_render_replies(self.reference)}")
        lines.append(f"  {candidate_name + ':':11} {_render_replies(self.candidate)}")
        for ref, cand in zip(self.reference, self.candidate, strict=False):
            if isinstance(ref, bytes) and isinstance(cand, bytes):
                for difference in mapping_differences(ref, cand, self.quoted) or []:
                    lines.append(f"    {difference}")
        return "\n".join(lines)


def _show(reply: Reply | Has) -> str:
    return repr(reply) if isinstance(reply, bytes) else str(reply)


def _render_replies(replies: Sequence[Reply]) -> str:
    return " ".join(map(_show, replies)) or "<none>"


def compare_logs(
    reference: list[Event], candidate: list[Event], quoted: bool = True
) -> list[Mismatch]:
    mismatches: list[Mismatch] = []
    ref_by_key = {(e.step, e.conn): e for e in reference}
    cand_by_key = {(e.step, e.conn): e for e in candidate}
    for key in sorted(ref_by_key.keys() | cand_by_key.keys()):
        ref_event, cand_event = ref_by_key.get(key), cand_by_key.get(key)
        ref_replies = ref_event.replies if ref_event else []
        cand_replies = cand_event.replies if cand_event else []
        same = len(ref_replies) == len(cand_replies) and all(
            replies_match(r, c, quoted) for r, c in zip(ref_replies, cand_replies, strict=True)
        )
        if not same:
            sent = ref_event.sent if ref_event else cand_event.sent if cand_event else b""
            mismatches.append(Mismatch(key[0], key[1], sent, ref_replies, cand_replies, quoted))
    return mismatches


def render_log(log: list[Event]) -> str:
    lines: list[str] = []
    for event in log:
        lines.append(f"  [{event.step}] {event.conn} -> {event.sent!r}")
        lines.append(f"  [{event.step}] {event.conn} <- {_render_replies(event.replies)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Servers


def candidate_name() -> str:
    return "beanstalkd#2" if os.environ.get(CANDIDATE_ENV) == "beanstalkd" else "beanq"


@contextlib.contextmanager
def reference_session(*args: str) -> Iterator[Session]:
    with spawn_beanstalkd(*args, stop_timeout=STOP_GRACE) as (host, port, proc):
        yield Session("beanstalkd", host, port, proc)


@contextlib.contextmanager
def candidate_session(*args: str) -> Iterator[Session]:
    """The server under test; fails the test (never skips it) if it does not start."""
    name = candidate_name()
    spawn = spawn_beanq if name == "beanq" else spawn_beanstalkd
    with contextlib.ExitStack() as stack:
        try:
            host, port, proc = stack.enter_context(spawn(*args, stop_timeout=STOP_GRACE))
        except ServerStartError as exc:
            pytest.fail(
                f"{name} did not start, so it cannot be compared with beanstalkd:\n{exc}",
                pytrace=False,
            )
        yield Session(name, host, port, proc)


def _assert_alive(session: Session) -> None:
    if session.proc.poll() is not None:
        pytest.fail(f"{session.name} died during the scenario:\n{session.proc.describe()}")


# --------------------------------------------------------------------------------------------
# The differential scenarios


@reference
@pytest.mark.parametrize("yaml", ["1.13", "1.12"], ids=["yaml-1.13", "yaml-1.12"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=str)
def test_scenario(scenario: Scenario, yaml: str) -> None:
    """Default (1.13 quoting): every value as beanstalkd's, the QUOTED_BY_BEANQ ones in double
    quotes. ``--yaml 1.12``: every value exactly as beanstalkd 1.12's."""
    cand_args = scenario.args
    if candidate_name() == "beanq":
        cand_args = (*cand_args, "--yaml", yaml)
    elif yaml == "1.13":
        pytest.skip("the candidate is beanstalkd, which does not quote")
    quoted = yaml == "1.13"
    with reference_session(*scenario.args) as ref, candidate_session(*cand_args) as cand:
        try:
            ref_log, cand_log = run_scenario([ref, cand], scenario)
        except OSError as exc:  # e.g. a server stopped accepting connections
            pytest.fail(
                f"scenario {scenario.name!r} could not run ({exc!r}):\n"
                f"{ref.proc.describe()}\n\n{cand.proc.describe()}",
                pytrace=False,
            )
        _assert_alive(ref)
        _assert_alive(cand)
        mismatches = compare_logs(ref_log, cand_log, quoted)
        if mismatches:
            report = "\n".join(m.render(cand.name) for m in mismatches)
            pytest.fail(
                f"{cand.name} differs from beanstalkd in scenario {scenario.name!r}:\n"
                f"{report}\n\nbeanstalkd transcript:\n{render_log(ref_log)}\n\n"
                f"{cand.name} output:\n{cand.proc.output(3000)}",
                pytrace=False,
            )


# --------------------------------------------------------------------------------------------
# Deliberate differences: what each server does, checked separately


@dataclass(frozen=True)
class Has:
    """Expected reply: a YAML ``OK`` reply containing this exact line."""

    line: str

    def __str__(self) -> str:
        return f"<OK reply with line {self.line!r}>"


Expected = bytes | Marker | Has


@dataclass(frozen=True)
class Deviation:
    name: str
    steps: tuple[Step, ...]
    beanstalkd: tuple[Expected, ...]  # all replies, in order, flattened over the Read steps
    beanq: tuple[Expected, ...]

    def __str__(self) -> str:
        return self.name


def deviation(
    name: str, steps: Sequence[Step], beanstalkd: Sequence[Expected], beanq: Sequence[Expected]
) -> Deviation:
    return Deviation(name, tuple(steps), tuple(beanstalkd), tuple(beanq))


def _one_buried_job() -> list[Step]:
    return [*put(b"j"), *c("reserve"), *c("bury 1 0")]


_BURIED = [b"INSERTED 1\r\n", b"RESERVED 1 1\r\nj\r\n", b"BURIED\r\n"]
LINE_225 = b"x" * 223  # plus CRLF: one byte more than beanstalkd's 224-byte line buffer

DEVIATIONS = [
    # (2) junk right after a command name
    deviation(
        "quitxyz",
        [*c("quitxyz"), *c("list-tube-used")],
        [CLOSED, CLOSED],
        [b"UNKNOWN_COMMAND\r\n", b"USING default\r\n"],
    ),
    deviation(
        "pause-tubefoo",
        [*c("use foo"), *c("pause-tubefoo 0"), *c("stats-tube foo")],
        [b"USING foo\r\n", b"PAUSED\r\n", Has("cmd-pause-tube: 1")],
        [b"USING foo\r\n", b"UNKNOWN_COMMAND\r\n", Has("cmd-pause-tube: 0")],
    ),
    # (3) a 225-byte line: beanstalkd swallows the next command
    deviation(
        "line-225-bytes-then-command",
        tx(LINE_225 + b"\r\nlist-tube-used\r\nlist-tubes-watched\r\n", n=2),
        [b"BAD_FORMAT\r\n", b"OK 14\r\n---\n- default\n\r\n"],
        [b"BAD_FORMAT\r\n", b"USING default\r\n"],
    ),
    # (5) a bare CR inside a line: beanstalkd stops looking for the line's end at the first
    # CR and waits for more input; beanq finds the CRLF and answers the line
    deviation(
        "bare-cr-inside-a-line",
        c("sta\rts", timeout=0.3),
        [NO_REPLY],
        [b"UNKNOWN_COMMAND\r\n"],
    ),
    # (4) strict numbers
    deviation(
        "reserve-with-timeout--1",
        c("reserve-with-timeout -1", timeout=0.3),
        [NO_REPLY],  # 1.12: a negative timeout waits forever, like reserve
        [b"BAD_FORMAT\r\n"],
    ),
    deviation(
        "reserve-with-timeout-5abc",
        [*put(b"job"), *c("reserve-with-timeout 5abc")],
        [b"INSERTED 1\r\n", b"RESERVED 1 3\r\njob\r\n"],
        [b"INSERTED 1\r\n", b"BAD_FORMAT\r\n"],
    ),
    *[
        deviation(
            f"reserve-with-timeout-{arg.strip() or 'empty'}",
            c(f"reserve-with-timeout {arg}"),
            [b"TIMED_OUT\r\n"],  # 1.12 reads these as 0
            [b"BAD_FORMAT\r\n"],
        )
        for arg in ("", "x", "+0", "0 2", "4294967296")
    ],
    *[
        deviation(
            f"kick-{arg}",
            [*_one_buried_job(), *c(f"kick {arg}")],
            [*_BURIED, f"KICKED {kicked}\r\n".encode()],
            [*_BURIED, b"BAD_FORMAT\r\n"],
        )
        # 1.12 uses strtoul: "-1" wraps to a huge count, 4294967296 truncates to 0
        for arg, kicked in (("5abc", 1), ("-1", 1), ("+5", 1), ("1 2", 1), ("4294967296", 0))
    ],
]


def _run_single(session: Session, steps: Sequence[Step]) -> list[Reply]:
    try:
        log = run_steps([session], steps)[0]
    finally:
        session.close_all()
    return [reply for event in log for reply in event.replies]


def _matches_expected(actual: Reply, expected: Expected) -> bool:
    if isinstance(expected, Has):
        line = b"\n" + expected.line.encode() + b"\n"
        return isinstance(actual, bytes) and actual.startswith(b"OK ") and line in actual
    return actual == expected


SERVER_KINDS = ["beanstalkd", "beanq"]


@contextlib.contextmanager
def single_session(kind: str, *args: str) -> Iterator[Session]:
    if kind == "beanstalkd":
        with reference_session(*args) as session:
            yield session
    else:
        with candidate_session(*args) as session:
            yield session


@reference
@pytest.mark.parametrize("kind", SERVER_KINDS)
@pytest.mark.parametrize("deviation", DEVIATIONS, ids=str)
def test_deviation(deviation: Deviation, kind: str) -> None:
    if kind == "beanq" and candidate_name() != "beanq":
        pytest.skip("the candidate is beanstalkd, which does not have beanq's deviations")
    expected = deviation.beanstalkd if kind == "beanstalkd" else deviation.beanq
    with single_session(kind) as session:
        actual = _run_single(session, deviation.steps)
    assert len(actual) == len(expected) and all(
        _matches_expected(a, e) for a, e in zip(actual, expected, strict=True)
    ), f"{kind}: expected {' '.join(map(_show, expected))}, got {_render_replies(actual)}"


QUOTED_FIELDS: list[tuple[str, Callable[[], list[Step]], bytes]] = [
    ("stats-tube", lambda: c("stats-tube default"), b"name"),
    ("stats-job", lambda: [*put(b"x"), *c("stats-job 1")], b"tube"),
    ("stats-hostname", lambda: c("stats"), b"hostname"),
    ("stats-os", lambda: c("stats"), b"os"),
    ("stats-platform", lambda: c("stats"), b"platform"),
]


@reference
@pytest.mark.parametrize("kind", [*SERVER_KINDS, "beanq --yaml 1.12"])
@pytest.mark.parametrize(("what", "steps", "key"), QUOTED_FIELDS, ids=[q[0] for q in QUOTED_FIELDS])
def test_deviation_yaml_quoting(
    what: str, steps: Callable[[], list[Step]], key: bytes, kind: str
) -> None:
    """(1) beanq quotes these string values (like beanstalkd 1.13); 1.12 does not, and
    neither does beanq with ``--yaml 1.12``."""
    if kind.startswith("beanq") and candidate_name() != "beanq":
        pytest.skip("the candidate is beanstalkd, which does not quote")
    server, *args = kind.split()
    with single_session(server, *args) as session:
        replies = _run_single(session, steps())
    last = replies[-1]
    assert isinstance(last, bytes) and last.startswith(b"OK "), last
    values = [line.partition(b": ")[2] for line in last.split(b"\n") if line.startswith(key + b":")]
    assert len(values) == 1, f"{what}: expected one {key!r} line in {last!r}"
    (value,) = values
    quoted = len(value) >= 2 and value.startswith(b'"') and value.endswith(b'"')
    assert quoted == (kind == "beanq"), f"{kind} {what}: {key.decode()}: {value!r}"


# --------------------------------------------------------------------------------------------
# beanq only: behaviour beanstalkd 1.12 does not show reliably enough to compare against


@reference
def test_beanq_expires_reservation_while_idle() -> None:
    """An expired reservation is released on time, with no other event to prompt the server.

    beanstalkd 1.12 loses the timer of a connection when its event loop samples the clock at
    exactly the deadline (see ``transcripts.wake``), so the TTR scenarios prod the reservation
    holder before looking; this test holds beanq to the intended behaviour, with and without a
    waiting worker.
    """
    if candidate_name() != "beanq":
        pytest.skip("beanstalkd does not do this reliably")
    steps = [
        *put(b"job", ttr=1),
        *c("reserve"),
        Send("b", b"reserve\r\n"),
        Read("b", timeout=1.5),  # the waiting worker gets the job after 1 s
        Sleep(0.2),
        *c("stats-job 1"),  # a's reservation expired, b's is current
        *c("delete 1", "b"),
        *put(b"two", ttr=1),
        *c("reserve"),
        Sleep(1.3),
        *c("stats-job 2"),  # expired with nobody waiting: ready again
    ]
    with candidate_session() as session:
        replies = _run_single(session, steps)
    reserved = b"RESERVED 1 3\r\njob\r\n"
    assert replies[:3] == [b"INSERTED 1\r\n", reserved, reserved], replies
    for line in ("state: reserved", "reserves: 2", "timeouts: 1"):
        assert _matches_expected(replies[3], Has(line)), replies[3]
    assert replies[4:6] == [b"DELETED\r\n", b"INSERTED 2\r\n"], replies
    assert replies[6] == b"RESERVED 2 3\r\ntwo\r\n", replies
    for line in ("state: ready", "timeouts: 1"):
        assert _matches_expected(replies[7], Has(line)), replies[7]


# --------------------------------------------------------------------------------------------
# The harness itself


def test_framed_reader_splits_counted_bodies() -> None:
    reader = FramedReader()
    stream = b"INSERTED 1\r\nRESERVED 1 4\r\na\r\nb\r\nOK 3\r\n---\r\nTIMED_OUT\r\n"
    for byte in stream:  # one byte at a time: framing must not depend on chunking
        reader.feed(bytes([byte]))
    assert reader.pop() == b"INSERTED 1\r\n"
    assert reader.pop() == b"RESERVED 1 4\r\na\r\nb\r\n"
    assert reader.pop() == b"OK 3\r\n---\r\n"
    assert reader.pop() == b"TIMED_OUT\r\n"
    assert reader.pop() is None


def test_normalisation() -> None:
    ref = b"OK 30\r\n---\nname: foo\nage: 3\npause: 0\n\r\n"
    assert replies_match(ref, b'OK 32\r\n---\nname: "foo"\nage: 4\npause: 0\n\r\n')
    assert not replies_match(ref, b"OK 30\r\n---\nname: foo\nage: 5\npause: 0\n\r\n")
    assert not replies_match(ref, b"OK 30\r\n---\nname: foo\npause: 0\nage: 3\n\r\n")
    assert not replies_match(ref, b"OK 30\r\n---\nname: bar\nage: 3\npause: 0\n\r\n")
    stats = b"OK 40\r\n---\ncurrent-jobs-urgent: 0\npid: 1\nid: abc\n\r\n"
    assert replies_match(stats, b"OK 41\r\n---\ncurrent-jobs-urgent: 0\npid: 22\nid: x\n\r\n")
    assert not replies_match(stats, b"OK 40\r\n---\ncurrent-jobs-urgent: 1\npid: 1\nid: abc\n\r\n")
    job = b"OK 20\r\n---\nid: 1\ntube: default\n\r\n"
    assert not replies_match(job, b"OK 20\r\n---\nid: 2\ntube: default\n\r\n")
    tubes = b"OK 14\r\n---\n- default\n\r\n"
    assert not replies_match(tubes, b'OK 16\r\n---\n- "default"\n\r\n')
    assert not replies_match(b"INSERTED 1\r\n", b"INSERTED 2\r\n")
    assert not replies_match(CLOSED, NO_REPLY)

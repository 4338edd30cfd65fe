"""The beanstalk wire protocol, sans I/O.

Theory of operation
-------------------
The protocol is line-oriented: a command is one line of at most 224 bytes ending in CRLF;
``put`` is followed by a body of exactly the announced size plus CRLF. Replies are lines, and
``RESERVED``/``FOUND``/``OK`` replies are followed by a counted body.

``CommandReader`` is the server's half. Bytes go in with ``feed``; ``events`` returns every
command that is complete so far, in order. It is a small state machine with four states, as
beanstalkd has: waiting for a command line, reading a body by count (never by scanning), throwing
a body away (``JOB_TOO_BIG``), and throwing an over-long line away up to its CRLF. Bad input
becomes an ``Invalid`` event carrying beanstalkd's exact error reply, so the connection stays
usable and the reply keeps its place among pipelined replies.

``ReplyReader`` and the ``encode_*`` functions are the client's half; the bundled client and the
tests use them. Nothing here touches sockets, clocks or the queue engine.

Grammar decisions (see README, "Differences from beanstalkd"): beanstalkd 1.12 matches command
names by prefix, so ``quitxyz`` quits; beanq requires the name to end at a space or the end of
the line, and numbers are strictly decimal digits within their range, with nothing after them.
Where beanstalkd answers BAD_FORMAT for a command name with junk after it (``reservex``,
``statsx``), beanq answers the same.
"""

from __future__ import annotations

import re
from typing import ClassVar, Final, NamedTuple

from beanq.config import DEFAULT_MAX_JOB_SIZE

MAX_LINE: Final = 224  # a command line including its CRLF, as beanstalkd's LINE_BUF_SIZE
# Bodies this big are copied once on the way in (into the job) and not at all on the way out
# (the server sends them as they are, beside their reply lines)
BIG_BODY: Final = 16 << 10
MAX_TUBE_NAME: Final = 200
U32_MAX: Final = (1 << 32) - 1
U64_MAX: Final = (1 << 64) - 1
INT_MAX: Final = (1 << 31) - 1

CRLF: Final = b"\r\n"
NAME_CHARS: Final = frozenset(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-+/;.$_()"
)

# Error and status replies, byte for byte as beanstalkd sends them.
BAD_FORMAT: Final = b"BAD_FORMAT\r\n"
UNKNOWN_COMMAND: Final = b"UNKNOWN_COMMAND\r\n"
EXPECTED_CRLF: Final = b"EXPECTED_CRLF\r\n"
JOB_TOO_BIG: Final = b"JOB_TOO_BIG\r\n"
OUT_OF_MEMORY: Final = b"OUT_OF_MEMORY\r\n"
INTERNAL_ERROR: Final = b"INTERNAL_ERROR\r\n"
DRAINING: Final = b"DRAINING\r\n"
NOT_FOUND: Final = b"NOT_FOUND\r\n"
DEADLINE_SOON: Final = b"DEADLINE_SOON\r\n"
TIMED_OUT: Final = b"TIMED_OUT\r\n"
DELETED: Final = b"DELETED\r\n"
RELEASED: Final = b"RELEASED\r\n"
BURIED: Final = b"BURIED\r\n"
KICKED: Final = b"KICKED\r\n"
TOUCHED: Final = b"TOUCHED\r\n"
PAUSED: Final = b"PAUSED\r\n"
NOT_IGNORED: Final = b"NOT_IGNORED\r\n"
UNAUTHORIZED: Final = b"UNAUTHORIZED\r\n"  # beanq-auth, and commands outside a token's rights
AUTH_OK: Final = b"OK\r\n"  # beanq-auth accepted the token


# --- commands (server: parsed from the wire; client: encoded onto it) --------------------------
# Commands are plain slotted classes: one is built per command on the hot path, where a frozen
# attrs class costs 2.7x as much to construct, and importing attrs would add ~35 ms to the
# server's start-up, which clients that spawn a server expect to be quick. Treat them as
# immutable.


class _Record:
    # The field names, for equality, hashing and repr. Not read from ``__slots__``: a compiled
    # build (mypyc) has no ``__slots__`` at run time.
    _fields: ClassVar[tuple[str, ...]] = ()
    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, k) == getattr(other, k) for k in self._fields
        )

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, k) for k in self._fields))

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._fields)
        return f"{type(self).__name__}({fields})"


class Put(_Record):
    _fields = ("body", "delay", "pri", "ttr")
    __slots__ = _fields

    def __init__(self, pri: int, delay: int, ttr: int, body: bytes) -> None:
        self.pri = pri
        self.delay = delay
        self.ttr = ttr
        self.body = body


class PutUnique(Put):
    """``beanq-put-unique``: a put that is refused (EXISTS) while a job put with the same key
    in the used tube lives."""

    _fields = ("body", "delay", "key", "pri", "ttr")  # type: ignore[assignment]
    __slots__ = ("key",)

    def __init__(self, key: bytes, pri: int, delay: int, ttr: int, body: bytes) -> None:
        super().__init__(pri, delay, ttr, body)
        self.key = key


class Reserve(_Record):
    _fields = ("timeout",)
    __slots__ = _fields

    def __init__(self, timeout: int | None) -> None:
        self.timeout = timeout  # None: block forever (plain ``reserve``)


class JobCommand(_Record):
    """A command whose only argument is a job id; ``name`` says which."""

    _fields = ("id", "name")
    __slots__ = _fields

    def __init__(self, name: str, id: int) -> None:
        self.name = name  # peek, delete, touch, kick-job, stats-job, reserve-job
        self.id = id


class Release(_Record):
    _fields = ("delay", "id", "pri")
    __slots__ = _fields

    def __init__(self, id: int, pri: int, delay: int) -> None:
        self.id = id
        self.pri = pri
        self.delay = delay


class Bury(_Record):
    _fields = ("id", "pri")
    __slots__ = _fields

    def __init__(self, id: int, pri: int) -> None:
        self.id = id
        self.pri = pri


class Kick(_Record):
    _fields = ("bound",)
    __slots__ = _fields

    def __init__(self, bound: int) -> None:
        self.bound = bound


class TubeCommand(_Record):
    """A command whose only argument is a tube name: use, watch, ignore, stats-tube."""

    _fields = ("name", "tube")
    __slots__ = _fields

    def __init__(self, name: str, tube: bytes) -> None:
        self.name = name
        self.tube = tube


class PauseTube(_Record):
    _fields = ("delay", "tube")
    __slots__ = _fields

    def __init__(self, tube: bytes, delay: int) -> None:
        self.tube = tube
        self.delay = delay


class Simple(_Record):
    """A command without arguments: peek-ready, peek-delayed, peek-buried, stats, list-tubes,
    list-tube-used, list-tubes-watched, quit."""

    _fields = ("name",)
    __slots__ = _fields

    def __init__(self, name: str) -> None:
        self.name = name


class Flush(_Record):
    """``beanq-flush``: ``states`` is "ready", "delayed", "buried" or "all"."""

    _fields = ("state", "tube")
    __slots__ = _fields

    def __init__(self, tube: bytes, state: str) -> None:
        self.tube = tube
        self.state = state


class ListJobs(_Record):
    """``beanq-list``: a page of ids in one state of one tube."""

    _fields = ("after", "limit", "state", "tube")
    __slots__ = _fields

    def __init__(self, tube: bytes, state: str, after: int, limit: int) -> None:
        self.tube = tube
        self.state = state
        self.after = after
        self.limit = limit


class Move(_Record):
    """``beanq-move``."""

    _fields = ("limit", "src", "state", "dst")
    __slots__ = _fields

    def __init__(self, src: bytes, dst: bytes, state: str, limit: int) -> None:
        self.src = src
        self.dst = dst
        self.state = state
        self.limit = limit


class ReserveBatch(_Record):
    """``beanq-reserve-batch``."""

    _fields = ("n", "timeout")
    __slots__ = _fields

    def __init__(self, n: int, timeout: int) -> None:
        self.n = n
        self.timeout = timeout


class Capabilities(_Record):
    """``beanq-capabilities``."""

    __slots__ = ()


class Auth(_Record):
    """``beanq-auth <token>``: on a listener with auth, proves the connection's rights; on
    one without, an unknown command, as for beanstalkd (see beanq.auth)."""

    _fields = ("token",)
    __slots__ = _fields

    def __init__(self, token: bytes) -> None:
        self.token = token


class ScheduleAdd(Put):
    """``beanq-schedule-add``: its body (read as a put's) is the JSON definition."""

    _fields = ("body", "name")  # type: ignore[assignment]
    __slots__ = ("name",)

    def __init__(self, name: bytes, body: bytes) -> None:
        super().__init__(0, 0, 0, body)
        self.name = name


class ScheduleCommand(_Record):
    """``beanq-schedule-rm``, ``-pause``, ``-resume`` and ``-show``: ``word`` is rm, pause,
    resume or show."""

    _fields = ("word", "name")
    __slots__ = _fields

    def __init__(self, word: str, name: bytes) -> None:
        self.word = word
        self.name = name


class ScheduleList(_Record):
    """``beanq-schedule-list``."""

    __slots__ = ()


class PutStarted(_Record):
    """A put line was read and its body has not all arrived. beanstalkd counts the put and
    makes the job (using up an id) at this point, so the dispatcher does the same; a put whose
    body comes in the same read needs no such event."""

    _fields = ("too_big",)
    __slots__ = _fields

    def __init__(self, too_big: bool) -> None:
        self.too_big = too_big


class Invalid(_Record):
    """Input that gets an error reply instead of a command.

    ``counted`` names the command whose ``cmd-*`` counter beanstalkd bumps before it rejects
    the input (a too-big ``put`` still counts as a put), and ``producer`` says whether the
    connection became a producer before the rejection."""

    _fields = ("counted", "producer", "reply")
    __slots__ = _fields

    def __init__(self, reply: bytes, counted: str | None = None, producer: bool = False) -> None:
        self.reply = reply
        self.counted = counted
        self.producer = producer


Command = (
    Put
    | Reserve
    | JobCommand
    | Release
    | Bury
    | Kick
    | TubeCommand
    | PauseTube
    | Simple
    | Flush
    | ListJobs
    | Move
    | ReserveBatch
    | Capabilities
    | Auth
    | ScheduleCommand
    | ScheduleList
)
Event = Command | PutStarted | Invalid

_JOB_COMMANDS: Final = frozenset(
    [b"peek", b"delete", b"touch", b"kick-job", b"stats-job", b"reserve-job"]
)
_TUBE_COMMANDS: Final = frozenset([b"use", b"watch", b"ignore", b"stats-tube"])
_SIMPLE: Final = {
    name: Simple(name.decode())
    for name in (
        b"peek-ready",
        b"peek-delayed",
        b"peek-buried",
        b"stats",
        b"list-tubes",
        b"list-tube-used",
        b"list-tubes-watched",
        b"quit",
    )
}
_RESERVE: Final = Reserve(None)
_CAPABILITIES: Final = Capabilities()
_SCHEDULE_LIST: Final = ScheduleList()
# The extensions: names namespaced so that no stock client sends one by accident.
CAPABILITIES: Final = [b"flush", b"list", b"move", b"reserve-batch", b"put-unique", b"schedules"]
SCHEDULE_WORDS: Final = {
    b"beanq-schedule-rm": "rm",
    b"beanq-schedule-pause": "pause",
    b"beanq-schedule-resume": "resume",
    b"beanq-schedule-show": "show",
}
FLUSH_STATES: Final = frozenset(["ready", "delayed", "buried", "all"])
LIST_STATES: Final = frozenset(["ready", "delayed", "buried", "reserved"])
MOVE_STATES: Final = frozenset(["ready", "delayed", "buried"])
MAX_LIST: Final = 1000  # ids in a page of beanq-list
MAX_BATCH: Final = 1000  # jobs in a beanq-reserve-batch
MAX_KEY: Final = 150  # bytes in a beanq-put-unique key (the line stays within MAX_LINE)
_EXTENSIONS: Final = frozenset(
    [
        b"beanq-flush",
        b"beanq-list",
        b"beanq-move",
        b"beanq-reserve-batch",
        b"beanq-put-unique",
        b"beanq-capabilities",
        b"beanq-schedule-add",
        b"beanq-schedule-rm",
        b"beanq-schedule-pause",
        b"beanq-schedule-resume",
        b"beanq-schedule-show",
        b"beanq-schedule-list",
    ]
)
# Names that beanstalkd 1.12 matches by prefix and then rejects for trailing junk; beanq gives
# the same BAD_FORMAT for them. Order matters only in that all of them lead to BAD_FORMAT.
_BAD_FORMAT_PREFIXES: Final = (
    b"peek-ready",
    b"peek-delayed",
    b"peek-buried",
    b"reserve",
    b"stats",
    b"list-tubes-watched",
    b"list-tube-used",
    b"list-tubes",
)

# One regex per argument shape. Like beanstalkd's read_u32/read_u64, runs of spaces may separate
# arguments; unlike strtol, no sign, no whitespace other than spaces, nothing after the last one.
_DIGITS = rb" +(\d+)"
_PUT_ARGS: Final = re.compile(_DIGITS * 4 + rb"(.*)", re.S)
_ONE_NUMBER: Final = re.compile(_DIGITS + rb"\Z")
_TWO_NUMBERS: Final = re.compile(_DIGITS * 2 + rb"\Z")
_THREE_NUMBERS: Final = re.compile(_DIGITS * 3 + rb"\Z")
_PAUSE_ARGS: Final = re.compile(rb" +([A-Za-z0-9\-+/;.$_()]+)" + _DIGITS + rb"\Z")


def valid_tube_name(name: bytes) -> bool:
    """beanstalkd's is_valid_tube: 1..200 name characters, not starting with a hyphen."""
    return (
        0 < len(name) <= MAX_TUBE_NAME
        and name[0] != 0x2D
        and (name.isalnum() or NAME_CHARS.issuperset(name))
    )


def _numbers(pattern: re.Pattern[bytes], rest: bytes) -> tuple[int, ...] | None:
    m = pattern.match(rest)
    if m is None:
        return None
    return tuple(int(g) for g in m.groups())


class _Need:
    """Reader states. Plain ints would do; names make the state machine readable."""

    LINE: Final = 0
    BODY: Final = 1
    DISCARD_BODY: Final = 2
    DISCARD_LINE: Final = 3


def _plain_number(arg: bytes) -> int:
    """``arg`` as a number if it is nothing but ASCII digits (at most 20), else -1."""
    if 0 < len(arg) <= 20 and arg.isdigit():
        return int(arg)
    return -1


_NOT_PLAIN: Final = (-1, 0, 0, 0)


def _put_numbers(data: bytes, i: int, end: int) -> tuple[int, int, int, int]:
    """The four numbers of ``data[i:end]`` when they are a plain put's arguments ("pri delay
    ttr size": single spaces, ASCII digits, each within 32 bits), else (-1, 0, 0, 0): the
    long way then decides. One pass over the bytes, no intermediate objects (compiled, the
    result is a C struct): this runs for every put a server reads."""
    pri = delay = ttr = 0
    field = 0  # how many numbers are complete
    n = 0
    digits = 0
    while i < end:
        ch = data[i]
        if 48 <= ch <= 57:
            n = n * 10 + ch - 48
            if n > U32_MAX:
                return _NOT_PLAIN
            digits += 1
        elif ch == 32 and digits and field < 3:
            if field == 0:
                pri = n
            elif field == 1:
                delay = n
            else:
                ttr = n
            field += 1
            n = 0
            digits = 0
        else:
            return _NOT_PLAIN
        i += 1
    if field != 3 or not digits:
        return _NOT_PLAIN
    return pri, delay, ttr, n


class CommandReader:
    """Turns the bytes a client sends into command events (the server's half of the codec)."""

    __slots__ = (
        "_announced",
        "_body_size",
        "_buf",
        "_discard",
        "_have",
        "_max_job_size",
        "_pending_put",
        "_pieces",
        "_quiet",
        "_state",
    )

    def __init__(self, max_job_size: int = DEFAULT_MAX_JOB_SIZE) -> None:
        self._max_job_size = max_job_size
        self._buf = bytearray()
        self._state: int = _Need.LINE
        self._pending_put: Put | None = None
        self._discard = 0  # DISCARD_BODY: bytes still to throw away
        self._body_size = 0  # BODY: size announced by the pending put
        self._announced = False  # PutStarted was emitted for the pending put
        self._quiet = False  # the body being read is a schedule's definition, not a put
        # BODY of a big put whose line came with nothing buffered: the pieces received so far
        # (from the body's first byte on), joined once when the body is whole
        self._pieces: list[bytes | memoryview] = []
        self._have = 0

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events (a partial line or body)."""
        return len(self._buf) + self._have

    def feed(self, data: bytes) -> list[Event]:
        """Add received bytes; return every event they complete, in order."""
        events: list[Event] = []
        if self._pieces:
            self._pieces.append(data)
            self._have += len(data)
            if self._have >= self._body_size + 2:
                self._finish_big_body(events)
            return events
        if self._buf or self._state != _Need.LINE:
            self._buf += data
        else:
            # Nothing buffered (the usual case): take what is whole straight from ``data``.
            pos = self._scan(data, events)
            if pos == len(data):
                return events
            self._buf += memoryview(data)[pos:]
        self._drain(events)
        return events

    def _scan(self, data: bytes, events: list[Event]) -> int:
        """Parse whole commands from the start of ``data``: well-formed puts whose body is all
        there, and other complete lines; a well-formed put of a big body still on its way
        takes the rest of ``data`` as the body's first piece. Stop at anything else (a partial
        command, a put to check the long way) and return where: the buffered path takes it
        from there."""
        pos = 0
        end = len(data)
        limit = self._max_job_size
        while pos < end:
            eol = data.find(b"\r\n", pos, pos + MAX_LINE)
            if eol < 0:
                return pos
            if data.startswith(b"put ", pos):
                pri, delay, ttr, size = _put_numbers(data, pos + 4, eol)
                if pri < 0 or size > limit:
                    return pos
                start = eol + 2
                stop = start + size
                if stop + 2 > end and size >= BIG_BODY:
                    self._start_big_body(data, start, pri, delay, ttr, size, events)
                    return end
                if stop + 2 > end or data[stop : stop + 2] != b"\r\n":
                    return pos
                events.append(Put(pri, delay, ttr, data[start:stop]))
                pos = stop + 2
                continue
            event = self._line_event(data[pos:eol])
            pos = eol + 2
            if event is None:  # beanq-put-unique: its body is read the buffered way
                return pos
            events.append(event)
        return pos

    def _start_big_body(
        self,
        data: bytes,
        start: int,
        pri: int,
        delay: int,
        ttr: int,
        size: int,
        events: list[Event],
    ) -> None:
        """A well-formed put whose big body starts at ``data[start:]`` and has not all
        arrived: keep the body's pieces as received instead of copying them into the buffer
        (then a body is copied once, into the job)."""
        self._start_put(pri, delay, ttr, size, b"")  # (numbers and size already checked)
        self._pieces.append(memoryview(data)[start:])
        self._have = len(data) - start
        self._announced = True
        events.append(PutStarted(too_big=False))

    def _finish_big_body(self, events: list[Event]) -> None:
        """The pieces hold the whole body and its CRLF: the put, then what followed."""
        pieces = self._pieces
        left = self._body_size
        body = rest = b""
        for i, piece in enumerate(pieces):
            if len(piece) > left:
                view = memoryview(piece)
                body = b"".join([*pieces[:i], view[:left]])
                rest = b"".join([view[left:], *pieces[i + 1 :]])
                break
            left -= len(piece)
        self._pieces = []
        self._have = 0
        self._end_put(body if rest.startswith(b"\r\n") else None, events)
        if len(rest) > 2:
            events += self.feed(rest[2:])

    def _end_put(self, body: bytes | None, events: list[Event]) -> None:
        """The pending put's body and the two bytes after it are in: the put with ``body``, or
        EXPECTED_CRLF (``body`` None: those bytes were not CRLF); then lines again."""
        put = self._pending_put
        assert put is not None
        if body is None:
            quiet = self._quiet
            events.append(Invalid(EXPECTED_CRLF, None if quiet else "put", producer=not quiet))
        else:
            put.body = body
            events.append(put)
        self._pending_put = None
        self._announced = self._quiet = False
        self._state = _Need.LINE

    def _drain(self, events: list[Event]) -> None:
        """Parse what the buffer holds, through every state, appending to ``events``."""
        buf = self._buf
        pos = 0
        end = len(buf)
        while pos < end:
            state = self._state
            if state == _Need.LINE:
                eol = buf.find(b"\r\n", pos, pos + MAX_LINE)
                if eol < 0:
                    if end - pos < MAX_LINE:
                        break  # an incomplete line: wait for more
                    # No CRLF within 224 bytes: the line is too long. Throw it away up to its
                    # CRLF, then answer BAD_FORMAT.
                    self._state = _Need.DISCARD_LINE
                    continue
                line = bytes(buf[pos:eol])
                # Most lines are well-formed puts: split them without the general parser.
                event = self._fast_put(line) if line[:4] == b"put " else self._line_event(line)
                pos = eol + 2
                if event is not None:
                    events.append(event)
            elif state == _Need.BODY:
                size = self._body_size
                if end - pos < size + 2:
                    break
                if buf[pos + size : pos + size + 2] == b"\r\n":
                    with memoryview(buf) as view:  # (one copy of a big body, not two)
                        self._end_put(bytes(view[pos : pos + size]), events)
                else:
                    self._end_put(None, events)
                pos += size + 2
            elif state == _Need.DISCARD_BODY:
                take = min(self._discard, end - pos)
                pos += take
                self._discard -= take
                if self._discard == 0:
                    events.append(Invalid(JOB_TOO_BIG, None if self._quiet else "put"))
                    self._announced = self._quiet = False
                    self._state = _Need.LINE
            else:  # DISCARD_LINE
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    # Keep a trailing CR: it may pair with an LF in the next read, which
                    # beanstalkd 1.12 misses (it then swallows the next command).
                    pos = end - 1 if buf[end - 1] == 0x0D else end
                    break
                pos = eol + 2
                events.append(Invalid(BAD_FORMAT))
                self._state = _Need.LINE
        del buf[:pos]
        if not self._announced and self._state in (_Need.BODY, _Need.DISCARD_BODY):
            self._announced = True
            if not self._quiet:  # (a schedule's definition is not a put: no id, no count)
                events.append(PutStarted(too_big=self._state == _Need.DISCARD_BODY))

    def _line_event(self, line: bytes) -> Event | None:
        """``_parse_line``, with a shortcut for what workers send most: ``delete N`` and
        ``reserve-with-timeout N`` with one space and plain digits (same result, a third of
        the cost)."""
        if line.startswith(b"delete "):
            n = _plain_number(line[7:])
            if 0 <= n <= U64_MAX:
                return JobCommand("delete", n)
        elif line.startswith(b"reserve-with-timeout "):
            n = _plain_number(line[21:])
            if 0 <= n <= INT_MAX:
                return Reserve(n)
        return self._parse_line(line)

    def _parse_line(self, line: bytes) -> Event | None:
        """Parse one command line (without CRLF). Returns None when a body must follow."""
        if b"\0" in line:
            return Invalid(BAD_FORMAT)  # beanstalkd's "possible maliciousness" check
        word, space, rest = line.partition(b" ")
        if not space:
            simple = _SIMPLE.get(word)
            if simple is not None:
                return simple
            if word == b"reserve":
                return _RESERVE
            if word == b"pause-tube":
                return Invalid(BAD_FORMAT)
            if word == b"beanq-capabilities":
                return _CAPABILITIES
            if word == b"beanq-schedule-list":
                return _SCHEDULE_LIST
            if word in _EXTENSIONS:
                return Invalid(BAD_FORMAT)
            if word.startswith(_BAD_FORMAT_PREFIXES):
                return Invalid(BAD_FORMAT)
            return Invalid(UNKNOWN_COMMAND)
        rest = b" " + rest
        if word == b"put":
            return self._parse_put(rest)
        if word in _JOB_COMMANDS:
            nums = _numbers(_ONE_NUMBER, rest)
            if nums is None or nums[0] > U64_MAX:
                return Invalid(BAD_FORMAT)
            return JobCommand(word.decode(), nums[0])
        if word == b"reserve-with-timeout":
            nums = _numbers(_ONE_NUMBER, rest)
            if nums is None or nums[0] > INT_MAX:
                return Invalid(BAD_FORMAT)
            return Reserve(nums[0])
        if word in _TUBE_COMMANDS:
            name = rest[1:]
            if not valid_tube_name(name):
                return Invalid(BAD_FORMAT)
            return TubeCommand(word.decode(), name)
        if word == b"release":
            nums = _numbers(_THREE_NUMBERS, rest)
            if nums is None or nums[0] > U64_MAX or nums[1] > U32_MAX or nums[2] > U32_MAX:
                return Invalid(BAD_FORMAT)
            return Release(*nums)
        if word == b"bury":
            nums = _numbers(_TWO_NUMBERS, rest)
            if nums is None or nums[0] > U64_MAX or nums[1] > U32_MAX:
                return Invalid(BAD_FORMAT)
            return Bury(*nums)
        if word == b"kick":
            nums = _numbers(_ONE_NUMBER, rest)
            if nums is None or nums[0] > U32_MAX:
                return Invalid(BAD_FORMAT)
            return Kick(nums[0])
        if word == b"pause-tube":
            m = _PAUSE_ARGS.match(rest)
            if m is None or int(m[2]) > U32_MAX:
                return Invalid(BAD_FORMAT)
            name = m[1]
            if len(name) > MAX_TUBE_NAME or name[0] == 0x2D:
                return Invalid(BAD_FORMAT, "pause-tube")
            return PauseTube(name, int(m[2]))
        if word == b"quit":
            return _SIMPLE[b"quit"]  # "quit " and "quit now" leave too, as in beanstalkd
        if word == b"beanq-auth":
            return Auth(rest[1:]) if rest[1:] and b" " not in rest[1:] else Invalid(BAD_FORMAT)
        if word in _EXTENSIONS:
            return self._parse_extension(word, rest[1:].split(b" "))
        if word in _SIMPLE or word.startswith(_BAD_FORMAT_PREFIXES):
            return Invalid(BAD_FORMAT)  # e.g. "stats x", "reserve 5"
        return Invalid(UNKNOWN_COMMAND)

    def _parse_extension(self, word: bytes, args: list[bytes]) -> Event | None:
        """The beanq-* commands: arguments separated by single spaces, names and numbers as
        in the standard commands."""
        n = len(args)
        if word == b"beanq-put-unique" and n == 5:
            key = args[0]
            pri = _plain_number(args[1])
            delay = _plain_number(args[2])
            ttr = _plain_number(args[3])
            size = _plain_number(args[4])
            if (
                not (0 < len(key) <= MAX_KEY and NAME_CHARS.issuperset(key))
                or min(pri, delay, ttr, size) < 0
            ):
                return Invalid(BAD_FORMAT)
            event = self._start_put(pri, delay, ttr, size, b"")
            if event is None and self._state == _Need.BODY:
                self._pending_put = PutUnique(key, pri, delay, ttr, b"")
            return event
        if word == b"beanq-schedule-add" and n == 2:
            size = _plain_number(args[1])
            if not valid_tube_name(args[0]) or len(args[0]) > MAX_KEY or size < 0:
                return Invalid(BAD_FORMAT)
            event = self._start_put(0, 0, 0, size, b"")
            if event is None:
                self._quiet = True
                if self._state == _Need.BODY:
                    self._pending_put = ScheduleAdd(args[0], b"")
            return event
        if word in SCHEDULE_WORDS and n == 1:
            if not valid_tube_name(args[0]) or len(args[0]) > MAX_KEY:
                return Invalid(BAD_FORMAT)
            return ScheduleCommand(SCHEDULE_WORDS[word], args[0])
        if word == b"beanq-reserve-batch" and n == 2:
            count, timeout = _plain_number(args[0]), _plain_number(args[1])
            if not (1 <= count <= MAX_BATCH and 0 <= timeout <= INT_MAX):
                return Invalid(BAD_FORMAT)
            return ReserveBatch(count, timeout)
        if word == b"beanq-flush" and n == 2:
            state = args[1].decode("latin-1")
            if not valid_tube_name(args[0]) or state not in FLUSH_STATES:
                return Invalid(BAD_FORMAT)
            return Flush(args[0], state)
        if word == b"beanq-list" and n == 4:
            state = args[1].decode("latin-1")
            after, limit = _plain_number(args[2]), _plain_number(args[3])
            if (
                not valid_tube_name(args[0])
                or state not in LIST_STATES
                or not 0 <= after <= U64_MAX
                or not 1 <= limit <= MAX_LIST
            ):
                return Invalid(BAD_FORMAT)
            return ListJobs(args[0], state, after, limit)
        if word == b"beanq-move" and n == 4:
            state = args[2].decode("latin-1")
            limit = _plain_number(args[3])
            if (
                not valid_tube_name(args[0])
                or not valid_tube_name(args[1])
                or state not in MOVE_STATES
                or not 0 <= limit <= U32_MAX
            ):
                return Invalid(BAD_FORMAT)
            return Move(args[0], args[1], state, limit)
        return Invalid(BAD_FORMAT)

    def _fast_put(self, line: bytes) -> Event | None:
        """``put`` with single spaces and four plain numbers; anything else goes the long way."""
        pri, delay, ttr, size = _put_numbers(line, 4, len(line))
        if pri < 0:
            return self._parse_line(line)
        return self._start_put(pri, delay, ttr, size, b"")

    def _parse_put(self, rest: bytes) -> Event | None:
        m = _PUT_ARGS.match(rest)
        if m is None:
            return Invalid(BAD_FORMAT)
        return self._start_put(int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5])

    def _start_put(self, pri: int, delay: int, ttr: int, size: int, junk: bytes) -> Event | None:
        if pri > U32_MAX or delay > U32_MAX or ttr > U32_MAX or size > U32_MAX:
            return Invalid(BAD_FORMAT)
        if size > self._max_job_size:
            # beanstalkd checks the size before the trailing junk, and reads the body away.
            self._state = _Need.DISCARD_BODY
            self._discard = size + 2
            return None
        if junk:
            return Invalid(BAD_FORMAT, "put")
        self._pending_put = Put(pri, delay, ttr, b"")
        self._body_size = size
        self._state = _Need.BODY
        return None


# --- replies (the client's half) ----------------------------------------------------------------


class Reply(NamedTuple):
    """One server reply: its first word, the words after it, and the body if it has one."""

    word: str
    args: tuple[str, ...] = ()
    body: bytes | None = None


class ProtocolError(Exception):
    """The peer sent something that is not a beanstalk reply."""


_BODY_REPLIES: Final = frozenset(["RESERVED", "FOUND", "OK"])
MAX_REPLY_LINE: Final = 1024


class ReplyReader:
    """Turns the bytes a server sends into ``Reply`` values (the client's half of the codec).

    Replies that carry a body say so in their first word, so the reader needs no knowledge of
    the commands that were sent; a client that pipelines matches replies to its requests in
    order."""

    __slots__ = ("_buf", "_head")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._head: tuple[str, tuple[str, ...], int] | None = None

    def feed(self, data: bytes | bytearray) -> list[Reply]:
        buf = self._buf
        buf += data
        replies: list[Reply] = []
        pos = 0
        while True:
            if self._head is None:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if len(buf) - pos > MAX_REPLY_LINE:
                        raise ProtocolError("reply line too long")
                    break
                try:
                    words = bytes(buf[pos:eol]).decode("ascii").split(" ")
                except UnicodeDecodeError as exc:
                    raise ProtocolError(f"non-ASCII reply line {bytes(buf[pos:eol])!r}") from exc
                pos = eol + 2
                word, args = words[0], tuple(words[1:])
                if word not in _BODY_REPLIES or not args:  # a bare OK: beanq-auth's
                    replies.append(Reply(word, args))
                    continue
                try:
                    size = int(args[-1])
                except (IndexError, ValueError) as exc:
                    raise ProtocolError(f"bad {word} reply: {words!r}") from exc
                self._head = (word, args, size)
            word, args, size = self._head
            if len(buf) - pos < size + 2:
                break
            if buf[pos + size : pos + size + 2] != b"\r\n":
                raise ProtocolError(f"{word} body not followed by CRLF")
            replies.append(Reply(word, args, bytes(buf[pos : pos + size])))
            pos += size + 2
            self._head = None
        del buf[:pos]
        return replies


def _check_tube(tube: str | bytes) -> bytes:
    name = tube.encode("ascii") if isinstance(tube, str) else tube
    if not valid_tube_name(name):
        raise ValueError(f"invalid tube name {tube!r}")
    return name


def _check_u32(value: int, what: str) -> int:
    if not 0 <= value <= U32_MAX:
        raise ValueError(f"{what} must be between 0 and {U32_MAX}, got {value}")
    return value


def encode_put(body: bytes, pri: int, delay: int, ttr: int) -> bytes:
    _check_u32(pri, "priority")
    _check_u32(delay, "delay")
    _check_u32(ttr, "ttr")
    return b"put %d %d %d %d\r\n%b\r\n" % (pri, delay, ttr, len(body), body)


def encode_reserve(timeout: int | None = None) -> bytes:
    if timeout is None:
        return b"reserve\r\n"
    if not 0 <= timeout <= INT_MAX:
        raise ValueError(f"timeout must be between 0 and {INT_MAX}")
    return b"reserve-with-timeout %d\r\n" % timeout


def encode_job_command(name: str, job_id: int) -> bytes:
    """peek, delete, touch, kick-job, stats-job, reserve-job."""
    if name.encode() not in _JOB_COMMANDS:
        raise ValueError(f"{name!r} is not a job command")
    if not 0 <= job_id <= U64_MAX:
        raise ValueError("job id out of range")
    return b"%s %d\r\n" % (name.encode(), job_id)


def encode_release(job_id: int, pri: int, delay: int) -> bytes:
    return b"release %d %d %d\r\n" % (
        job_id,
        _check_u32(pri, "priority"),
        _check_u32(delay, "delay"),
    )


def encode_bury(job_id: int, pri: int) -> bytes:
    return b"bury %d %d\r\n" % (job_id, _check_u32(pri, "priority"))


def encode_kick(bound: int) -> bytes:
    return b"kick %d\r\n" % _check_u32(bound, "bound")


def encode_tube_command(name: str, tube: str | bytes) -> bytes:
    """use, watch, ignore, stats-tube."""
    if name.encode() not in _TUBE_COMMANDS:
        raise ValueError(f"{name!r} is not a tube command")
    return b"%s %s\r\n" % (name.encode(), _check_tube(tube))


def encode_pause_tube(tube: str | bytes, delay: int) -> bytes:
    return b"pause-tube %s %d\r\n" % (_check_tube(tube), _check_u32(delay, "delay"))


def encode_simple(name: str) -> bytes:
    """peek-ready, peek-delayed, peek-buried, stats, list-tubes, list-tube-used,
    list-tubes-watched, quit."""
    if name.encode() not in _SIMPLE:
        raise ValueError(f"{name!r} is not a command without arguments")
    return name.encode() + CRLF


def encode_put_unique(key: str | bytes, body: bytes, pri: int, delay: int, ttr: int) -> bytes:
    k = key.encode("ascii") if isinstance(key, str) else key
    if not (0 < len(k) <= MAX_KEY and NAME_CHARS.issuperset(k)):
        raise ValueError(f"invalid unique key {key!r}")
    _check_u32(pri, "priority")
    _check_u32(delay, "delay")
    _check_u32(ttr, "ttr")
    return b"beanq-put-unique %b %d %d %d %d\r\n%b\r\n" % (k, pri, delay, ttr, len(body), body)


def encode_flush(tube: str | bytes, state: str) -> bytes:
    if state not in FLUSH_STATES:
        raise ValueError(f"cannot flush state {state!r}")
    return b"beanq-flush %b %b\r\n" % (_check_tube(tube), state.encode())


def encode_list(tube: str | bytes, state: str, after: int, limit: int) -> bytes:
    if state not in LIST_STATES:
        raise ValueError(f"cannot list state {state!r}")
    if not 0 <= after <= U64_MAX:
        raise ValueError("after-id out of range")
    if not 1 <= limit <= MAX_LIST:
        raise ValueError(f"limit must be between 1 and {MAX_LIST}")
    return b"beanq-list %b %b %d %d\r\n" % (_check_tube(tube), state.encode(), after, limit)


def encode_move(src: str | bytes, dst: str | bytes, state: str, limit: int) -> bytes:
    if state not in MOVE_STATES:
        raise ValueError(f"cannot move state {state!r}")
    return b"beanq-move %b %b %b %d\r\n" % (
        _check_tube(src),
        _check_tube(dst),
        state.encode(),
        _check_u32(limit, "limit"),
    )


def encode_reserve_batch(n: int, timeout: int) -> bytes:
    if not 1 <= n <= MAX_BATCH:
        raise ValueError(f"batch size must be between 1 and {MAX_BATCH}")
    if not 0 <= timeout <= INT_MAX:
        raise ValueError(f"timeout must be between 0 and {INT_MAX}")
    return b"beanq-reserve-batch %d %d\r\n" % (n, timeout)


ENCODED_CAPABILITIES: Final = b"beanq-capabilities\r\n"
ENCODED_SCHEDULE_LIST: Final = b"beanq-schedule-list\r\n"


def _check_schedule_name(name: str | bytes) -> bytes:
    checked = _check_tube(name)
    if len(checked) > MAX_KEY:
        raise ValueError(f"a schedule name has at most {MAX_KEY} characters")
    return checked


def encode_schedule_add(name: str | bytes, definition: bytes) -> bytes:
    """``definition``: the schedule as JSON (see README, Schedules)."""
    return b"beanq-schedule-add %b %d\r\n%b\r\n" % (
        _check_schedule_name(name),
        len(definition),
        definition,
    )


def encode_schedule_command(word: str, name: str | bytes) -> bytes:
    """``word``: rm, pause, resume or show."""
    if word not in ("rm", "pause", "resume", "show"):
        raise ValueError(f"no schedule command {word!r}")
    return b"beanq-schedule-%b %b\r\n" % (word.encode(), _check_schedule_name(name))


def encode_auth(token: str | bytes) -> bytes:
    raw = token.encode() if isinstance(token, str) else token
    if not raw or any(c <= 0x20 or c == 0x7F for c in raw):
        raise ValueError("a token is printable ASCII without spaces")
    return b"beanq-auth %b\r\n" % raw


# --- YAML bodies of stats and list replies ------------------------------------------------------


class Bare:
    """A string value written into YAML without quotes (beanstalkd's ``id`` and rusage)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def yaml_dict(items: list[tuple[str, object]], quote: bool = True) -> bytes:
    """A stats body. Strings are double-quoted (as beanstalkd 1.13 does) so that YAML parsers
    read names such as ``1e3`` or ``true`` as strings; numbers and booleans stay bare. With
    ``quote`` false, strings are bare too, as beanstalkd 1.12 writes them (``--yaml 1.12``):
    clients that split lines on ``": "`` without a YAML parser want that."""
    parts = ["---\n"]
    for key, value in items:
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, Bare):
            text = value.text
        elif isinstance(value, str) and quote:
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = str(value)
        parts.append(f"{key}: {text}\n")
    return "".join(parts).encode()


def yaml_list(names: list[bytes]) -> bytes:
    """A tube list body, unquoted like beanstalkd's (tube names cannot need quoting in a
    YAML sequence: their character set has no ': ' or '#')."""
    return b"---\n" + b"".join([b"- " + name + b"\n" for name in names])


def ok_reply(body: bytes) -> bytes:
    return b"OK %d\r\n%b\r\n" % (len(body), body)


def parse_yaml_dict(body: bytes) -> dict[str, int | bool | str]:
    """Parse a stats body into a dict: ints as int, booleans as bool, the rest as str.

    Understands both beanstalkd 1.12's bare strings and 1.13's (and beanq's) quoted ones."""
    result: dict[str, int | bool | str] = {}
    for raw in body.decode().splitlines():
        if raw == "---" or not raw:
            continue
        key, sep, value = raw.partition(": ")
        if not sep:
            raise ProtocolError(f"not a YAML mapping line: {raw!r}")
        result[key] = _scalar(value)
    return result


def _scalar(value: str) -> int | bool | str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if value in ("true", "false"):
        return value == "true"
    if value.isdigit() or (value[:1] == "-" and value[1:].isdigit()):
        return int(value)
    return value


def parse_yaml_list(body: bytes) -> list[str]:
    return [line[2:] for line in body.decode().splitlines() if line.startswith("- ")]

"""Every command as a request value: the bytes to send and how to read the reply.

This is the sans-IO half of the client, shared by the blocking and the trio client, which only
move bytes. Encoding is ``beanq.protocol``'s; this module adds what a reply means for each
command (``BURIED`` is success for ``bury`` and an error for ``put``).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from typing import Any, Final, Generic, NamedTuple, TypeVar

import attrs

from beanq import protocol
from beanq.protocol import Reply
from beanq_client import stats as _stats
from beanq_client.errors import ERRORS, UnexpectedReplyError, error_from_reply

R = TypeVar("R")


@attrs.frozen
class Request(Generic[R]):
    """``wait`` is how long the server may legitimately hold the reply back: 0 for ordinary
    commands, the timeout of ``reserve-with-timeout``, None for a plain ``reserve``."""

    data: bytes
    parse: Callable[[Reply], R]
    wait: float | None = 0.0

    @property
    def holds_jobs(self) -> bool:
        """A reply that can hand this connection a reservation (``reserve``, ``reserve-job``);
        losing track of one would leave a job reserved by nobody until its TTR runs out."""
        return self.data.startswith((b"reserve", b"beanq-reserve-batch"))

    @property
    def batch(self) -> bool:
        """The reply is RESERVED_BATCH k followed by k RESERVED replies."""
        return self.data.startswith(b"beanq-reserve-batch")


def _expect(reply: Reply, word: str, nargs: int) -> tuple[str, ...]:
    if reply.word != word:
        raise error_from_reply(reply, word)
    if len(reply.args) != nargs:
        raise UnexpectedReplyError(reply, f"{word} with {nargs} arguments")
    return reply.args


def _number(reply: Reply, text: str) -> int:
    if not text.isdigit():
        raise UnexpectedReplyError(reply, "a number")
    return int(text)


def _unit(word: str) -> Callable[[Reply], None]:
    def parse(reply: Reply) -> None:
        _expect(reply, word, 0)

    return parse


def _counted(word: str) -> Callable[[Reply], int]:
    def parse(reply: Reply) -> int:
        (count,) = _expect(reply, word, 1)
        return _number(reply, count)

    return parse


def _job(word: str) -> Callable[[Reply], tuple[int, bytes]]:
    def parse(reply: Reply) -> tuple[int, bytes]:
        id_text, _size = _expect(reply, word, 2)
        assert reply.body is not None  # ReplyReader frames RESERVED/FOUND bodies
        return _number(reply, id_text), reply.body

    return parse


def _ok(reply: Reply) -> bytes:
    _expect(reply, "OK", 1)
    assert reply.body is not None
    return reply.body


def _using(reply: Reply) -> str:
    (name,) = _expect(reply, "USING", 1)
    return name


_DELETED: Final = _unit("DELETED")
_RELEASED: Final = _unit("RELEASED")
_BURIED: Final = _unit("BURIED")
_TOUCHED: Final = _unit("TOUCHED")
_PAUSED: Final = _unit("PAUSED")
_KICKED_JOB: Final = _unit("KICKED")
_INSERTED: Final = _counted("INSERTED")
_FLUSHED: Final = _counted("FLUSHED")
_MOVED: Final = _counted("MOVED")
_RESERVED_BATCH: Final = _counted("RESERVED_BATCH")
_WATCHING: Final = _counted("WATCHING")
_KICKED: Final = _counted("KICKED")
_RESERVED: Final = _job("RESERVED")
_FOUND: Final = _job("FOUND")


def parse_reserved(reply: Reply) -> tuple[int, bytes]:
    """One job of a RESERVED_BATCH."""
    return _RESERVED(reply)


def put(body: bytes, priority: int, delay: int, ttr: int) -> Request[int]:
    return Request(protocol.encode_put(body, priority, delay, ttr), _INSERTED)


def reserve(timeout: float | None) -> Request[tuple[int, bytes]]:
    """A fractional timeout is rounded up: the protocol counts whole seconds, and waiting a
    little longer is safer than polling with zero."""
    if timeout is None:
        return Request(protocol.encode_reserve(None), _RESERVED, wait=None)
    if timeout < 0:
        raise ValueError("timeout must not be negative")
    seconds = math.ceil(timeout)
    return Request(protocol.encode_reserve(seconds), _RESERVED, wait=float(seconds))


def reserve_job(job_id: int) -> Request[tuple[int, bytes]]:
    return Request(protocol.encode_job_command("reserve-job", job_id), _RESERVED)


def delete(job_id: int) -> Request[None]:
    return Request(protocol.encode_job_command("delete", job_id), _DELETED)


def release(job_id: int, priority: int, delay: int) -> Request[None]:
    return Request(protocol.encode_release(job_id, priority, delay), _RELEASED)


def bury(job_id: int, priority: int) -> Request[None]:
    return Request(protocol.encode_bury(job_id, priority), _BURIED)


def touch(job_id: int) -> Request[None]:
    return Request(protocol.encode_job_command("touch", job_id), _TOUCHED)


def use(tube: str) -> Request[str]:
    return Request(protocol.encode_tube_command("use", tube), _using)


def watch(tube: str) -> Request[int]:
    return Request(protocol.encode_tube_command("watch", tube), _WATCHING)


def ignore(tube: str) -> Request[int]:
    return Request(protocol.encode_tube_command("ignore", tube), _WATCHING)


def peek(job_id: int) -> Request[tuple[int, bytes]]:
    return Request(protocol.encode_job_command("peek", job_id), _FOUND)


def peek_state(state: str) -> Request[tuple[int, bytes]]:
    """``state``: ready, delayed or buried."""
    return Request(protocol.encode_simple(f"peek-{state}"), _FOUND)


def kick(bound: int) -> Request[int]:
    return Request(protocol.encode_kick(bound), _KICKED)


def kick_job(job_id: int) -> Request[None]:
    return Request(protocol.encode_job_command("kick-job", job_id), _KICKED_JOB)


def stats() -> Request[_stats.ServerStats]:
    return Request(protocol.encode_simple("stats"), lambda r: _stats.parse_server_stats(_ok(r)))


def stats_tube(tube: str) -> Request[_stats.TubeStats]:
    return Request(
        protocol.encode_tube_command("stats-tube", tube),
        lambda r: _stats.parse_tube_stats(_ok(r)),
    )


def stats_job(job_id: int) -> Request[_stats.JobStats]:
    return Request(
        protocol.encode_job_command("stats-job", job_id),
        lambda r: _stats.parse_job_stats(_ok(r)),
    )


def list_tubes() -> Request[list[str]]:
    return Request(protocol.encode_simple("list-tubes"), lambda r: _stats.parse_list(_ok(r)))


def list_tubes_watched() -> Request[list[str]]:
    return Request(
        protocol.encode_simple("list-tubes-watched"), lambda r: _stats.parse_list(_ok(r))
    )


def list_tube_used() -> Request[str]:
    return Request(protocol.encode_simple("list-tube-used"), _using)


def pause_tube(tube: str, delay: int) -> Request[None]:
    return Request(protocol.encode_pause_tube(tube, delay), _PAUSED)


# --- beanq's extensions (beanq-*; beanstalkd answers UNKNOWN_COMMAND) --------------------------


class Unique(NamedTuple):
    """What ``beanq-put-unique`` did: ``inserted`` False means a live job already held the
    key in the tube (its id is ``id``), and nothing was put."""

    id: int
    inserted: bool


def _unique(reply: Reply) -> Unique:
    if reply.word == "EXISTS":
        (id_text,) = _expect(reply, "EXISTS", 1)
        return Unique(_number(reply, id_text), False)
    return Unique(_INSERTED(reply), True)


def task_body(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """The JSON task payload a worker routes to ``@worker.task(name)`` (``encode_task``)."""
    return json.dumps(
        {"task": name, "args": list(args), "kwargs": kwargs},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")


def put_task(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    unique_key: str | None,
    priority: int,
    delay: int,
    ttr: int,
) -> Request[int]:
    """A task put; with ``unique_key``, a ``beanq-put-unique`` whose result is the id of the
    job put or of the live job already holding the key."""
    body = task_body(name, args, kwargs)
    if unique_key is None:
        return put(body, priority, delay, ttr)
    return Request(
        protocol.encode_put_unique(unique_key, body, priority, delay, ttr),
        lambda reply: _unique(reply).id,
    )


def put_unique(key: str, body: bytes, priority: int, delay: int, ttr: int) -> Request[Unique]:
    return Request(protocol.encode_put_unique(key, body, priority, delay, ttr), _unique)


def flush(tube: str, state: str) -> Request[int]:
    """``state``: ready, delayed, buried or all."""
    return Request(protocol.encode_flush(tube, state), _FLUSHED)


def list_page(tube: str, state: str, after: int, limit: int) -> Request[list[int]]:
    """Ids above ``after`` in ``state`` (ready, delayed, buried, reserved), ascending."""

    def parse(reply: Reply) -> list[int]:
        return [int(x) for x in _stats.parse_list(_ok(reply))]

    return Request(protocol.encode_list(tube, state, after, limit), parse)


def move(source: str, target: str, state: str, limit: int) -> Request[int]:
    return Request(protocol.encode_move(source, target, state, limit), _MOVED)


def reserve_batch(n: int, timeout: float | None) -> Request[int]:
    """The batch's size; its jobs are the replies after this one (``Request.batch``).
    ``timeout`` None waits as long as the protocol allows (about 68 years)."""
    if timeout is None:
        seconds = protocol.INT_MAX
        wait: float | None = None
    else:
        if timeout < 0:
            raise ValueError("timeout must not be negative")
        seconds = math.ceil(timeout)
        wait = float(seconds)
    return Request(protocol.encode_reserve_batch(n, seconds), _RESERVED_BATCH, wait=wait)


def capabilities() -> Request[list[str]]:
    return Request(
        protocol.ENCODED_CAPABILITIES,
        lambda r: _stats.parse_list(_ok(r)) if r.word == "OK" else _unsupported(r),
    )


def _unsupported(reply: Reply) -> list[str]:
    """beanstalkd (or an older beanq) has no extensions: it does not know the command."""
    if reply.word == "UNKNOWN_COMMAND":
        return []
    raise error_from_reply(reply, "OK")


# --- schedules (beanq-schedule-*) ------------------------------------------------------------


def schedule_definition(
    tube: str,
    body: bytes,
    *,
    cron: str | None = None,
    tz: str | None = None,
    every: float | None = None,
    start: float | None = None,
    priority: int | None = None,
    ttr: int | None = None,
    delay: int | None = None,
    overlap: str | None = None,
    catchup: str | None = None,
    grace: float | None = None,
) -> bytes:
    """The JSON a ``beanq-schedule-add`` carries; what is None is left to the server's
    defaults (UTC, priority 1024, TTR 60, no delay, overlap skip, catchup one, grace 3600)."""
    if (cron is None) == (every is None):
        raise ValueError("give one of cron and every")
    d: dict[str, Any] = {"tube": tube}
    try:
        d["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        d["body_b64"] = base64.b64encode(body).decode()
    optional = {
        "cron": cron,
        "tz": tz,
        "every": every,
        "start": start,
        "pri": priority,
        "ttr": ttr,
        "delay": delay,
        "overlap": overlap,
        "catchup": catchup,
        "grace": grace,
    }
    d.update({k: v for k, v in optional.items() if v is not None})
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _added(reply: Reply) -> bool:
    if reply.word not in ("ADDED", "REPLACED"):
        raise error_from_reply(reply, "ADDED")
    return reply.word == "REPLACED"


def schedule_add(name: str, definition: bytes) -> Request[bool]:
    """True if a schedule of that name was replaced."""
    return Request(protocol.encode_schedule_add(name, definition), _added)


_SCHEDULE_REPLIES: Final = {"rm": "DELETED", "pause": "PAUSED", "resume": "RESUMED"}


def schedule_command(word: str, name: str) -> Request[None]:
    """rm, pause or resume; NotFoundError if there is no such schedule."""
    return Request(protocol.encode_schedule_command(word, name), _unit(_SCHEDULE_REPLIES[word]))


def schedule_show(name: str) -> Request[dict[str, Any]]:
    return Request(
        protocol.encode_schedule_command("show", name), lambda r: dict(json.loads(_ok(r)))
    )


def schedule_list() -> Request[list[dict[str, Any]]]:
    return Request(protocol.ENCODED_SCHEDULE_LIST, lambda r: list(json.loads(_ok(r))))


def raw(data: bytes) -> Request[Reply]:
    """Bytes sent as they are; the reply comes back unparsed, but an error reply still raises
    its typed exception. For server extensions and for tests of malformed input."""

    def parse(reply: Reply) -> Reply:
        if reply.word in _ERROR_WORDS:
            raise error_from_reply(reply, "a success reply")
        return reply

    return Request(data, parse)


_ERROR_WORDS: Final = frozenset(ERRORS) - {"BURIED"}  # BURIED is success for bury


@attrs.define
class TubeState:
    """The tubes a connection uses and watches, as last confirmed by the server; replayed on a
    new connection after a reconnect."""

    using: str = "default"
    watching: list[str] = attrs.Factory(lambda: ["default"])

    @classmethod
    def starting_at(cls, tube: str | None) -> TubeState:
        if tube is None or tube == "default":
            return cls()
        return cls(using=tube, watching=[tube])

    def watched(self, tube: str) -> None:
        if tube not in self.watching:
            self.watching.append(tube)

    def ignored(self, tube: str) -> None:
        if tube in self.watching:
            self.watching.remove(tube)

    def opening(self, token: str | None) -> list[Request[Any]]:
        """What a new connection sends first: the token if any, then ``restore``."""
        return ([auth(token)] if token else []) + self.restore()

    def restore(self) -> list[Request[Any]]:
        """Commands that bring a fresh connection (using and watching ``default``) here."""
        requests: list[Request[Any]] = []
        if self.using != "default":
            requests.append(use(self.using))
        for tube in self.watching:
            if tube != "default":
                requests.append(watch(tube))
        if "default" not in self.watching:
            requests.append(ignore("default"))
        return requests


def auth(token: str) -> Request[bool]:
    """``beanq-auth``: True once the token is accepted; False from a server without auth
    (beanstalkd, or a beanq listener with auth=none, answer UNKNOWN_COMMAND); a refused token
    raises ``UnauthorizedError``."""

    def parse(reply: Reply) -> bool:
        if reply.word == "UNKNOWN_COMMAND":
            return False
        _expect(reply, "OK", 0)
        return True

    return Request(protocol.encode_auth(token), parse)

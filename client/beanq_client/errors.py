"""Every failure the client reports, in one table.

An error reply from the server becomes a ``CommandError`` subclass chosen by ``ERRORS``; a
connection that breaks becomes ``BeanstalkConnectionError`` (a ``ConnectionError``), whose
``sent`` flag tells whether the command may have reached the server. That flag is what lets a
pool move a ``put`` to another server only when doing so cannot insert the job twice.
"""

from __future__ import annotations

from typing import Final

from beanq.protocol import Reply


class BeanstalkError(Exception):
    """Base of everything this package raises on purpose."""


class CommandError(BeanstalkError):
    """The server answered a command with an error reply; ``reply`` is its first word."""

    reply: str = ""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.reply)


class NotFoundError(CommandError):
    reply = "NOT_FOUND"


class TimedOutError(CommandError):
    reply = "TIMED_OUT"


class DeadlineSoonError(CommandError):
    """A job this connection holds is within a second of its TTR: touch, delete or release it."""

    reply = "DEADLINE_SOON"


class BuriedError(CommandError):
    """The server buried the job instead of inserting or releasing it (it could not grow a
    priority queue). ``id`` is set for ``put``, which still created the job, and None for
    ``release``."""

    reply = "BURIED"

    def __init__(self, id: int | None = None) -> None:
        super().__init__("BURIED" if id is None else f"BURIED {id}")
        self.id = id


class JobTooBigError(CommandError):
    reply = "JOB_TOO_BIG"


class DrainingError(CommandError):
    reply = "DRAINING"


class ExpectedCrlfError(CommandError):
    reply = "EXPECTED_CRLF"


class BadFormatError(CommandError):
    reply = "BAD_FORMAT"


class UnknownCommandError(CommandError):
    reply = "UNKNOWN_COMMAND"


class OutOfMemoryError(CommandError):
    reply = "OUT_OF_MEMORY"


class InternalError(CommandError):
    reply = "INTERNAL_ERROR"


class NotIgnoredError(CommandError):
    """``ignore`` would have left the connection watching no tube."""

    reply = "NOT_IGNORED"


class UnauthorizedError(CommandError):
    """beanq with --auth: the token was refused, or the command is outside its rights."""

    reply = "UNAUTHORIZED"


class BadScheduleError(CommandError):
    """The server refused a schedule's definition (a bad cron expression or time zone, a
    missing tube...): the message says why."""

    reply = "BAD_SCHEDULE"


ERRORS: Final[dict[str, type[CommandError]]] = {
    cls.reply: cls
    for cls in (
        NotFoundError,
        TimedOutError,
        DeadlineSoonError,
        BuriedError,
        JobTooBigError,
        DrainingError,
        ExpectedCrlfError,
        BadFormatError,
        UnknownCommandError,
        OutOfMemoryError,
        InternalError,
        NotIgnoredError,
        UnauthorizedError,
        BadScheduleError,
    )
}


class UnexpectedReplyError(BeanstalkError):
    """A well-formed reply that does not answer the command sent (a server bug, or a client
    and server that disagree about the protocol)."""

    def __init__(self, reply: Reply, expected: str) -> None:
        super().__init__(f"expected {expected}, got {reply.word} {' '.join(reply.args)}".rstrip())
        self.reply = reply


class DecodeError(BeanstalkError):
    """A job's body could not be decoded with the client's encoding or serializer.

    The job stays reserved by this connection: ``job_id`` lets the caller bury or delete it."""

    def __init__(self, job_id: int, body: bytes, cause: Exception) -> None:
        super().__init__(f"job {job_id}: cannot decode body: {cause}")
        self.job_id = job_id
        self.body = body


class BeanstalkConnectionError(BeanstalkError, ConnectionError):
    """The connection failed or broke.

    ``sent`` is False when the command certainly never reached the server (the connection
    could not be made, or was found closed before writing), so repeating it elsewhere is safe;
    it is True when the command may have been executed and only its reply was lost. The client
    never repeats such a command by itself."""

    def __init__(self, message: str, *, sent: bool, address: str = "") -> None:
        super().__init__(f"{address}: {message}" if address else message)
        self.sent = sent
        self.address = address


class NoServerAvailableError(BeanstalkConnectionError):
    """Every server of a pool is down or resting after a failure."""


class PipelineError(BeanstalkError):
    """Some commands of a pipeline failed; ``results`` holds each command's result or error,
    in order, so the caller knows exactly which jobs were inserted."""

    def __init__(self, results: list[int | CommandError]) -> None:
        failed = sum(isinstance(r, CommandError) for r in results)
        super().__init__(f"{failed} of {len(results)} pipelined commands failed")
        self.results = results


def error_from_reply(reply: Reply, expected: str) -> BeanstalkError:
    """The exception for a reply that is not the expected success word."""
    cls = ERRORS.get(reply.word)
    if cls is None:
        return UnexpectedReplyError(reply, expected)
    if cls is BuriedError:
        if reply.args and reply.args[0].isdigit():
            return BuriedError(int(reply.args[0]))
        return BuriedError(None)
    if cls is BadScheduleError:
        return BadScheduleError(" ".join(reply.args) or None)
    return cls()

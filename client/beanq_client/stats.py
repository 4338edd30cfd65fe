"""Stats bodies as typed dicts, without a YAML library.

The server's YAML is flat ``key: value`` lines, but beanstalkd 1.12 writes string values bare
(``name: 007``, ``id: 1234567890123456``) while beanq and beanstalkd 1.13 quote them. Guessing a
type from the text would turn the tube ``007`` into the int 7, so each field's type comes from
the declared dict below; only fields a newer server adds are guessed.
"""

from __future__ import annotations

import re
from typing import Any, Final, TypedDict, cast, get_type_hints

from beanq_client.errors import BeanstalkError

JobStats = TypedDict(
    "JobStats",
    {
        "id": int,
        "tube": str,
        "state": str,
        "pri": int,
        "age": int,
        "delay": int,
        "ttr": int,
        "time-left": int,
        "file": int,
        "reserves": int,
        "timeouts": int,
        "releases": int,
        "buries": int,
        "kicks": int,
    },
)

TubeStats = TypedDict(
    "TubeStats",
    {
        "name": str,
        "current-jobs-urgent": int,
        "current-jobs-ready": int,
        "current-jobs-reserved": int,
        "current-jobs-delayed": int,
        "current-jobs-buried": int,
        "total-jobs": int,
        "current-using": int,
        "current-watching": int,
        "current-waiting": int,
        "cmd-delete": int,
        "cmd-pause-tube": int,
        "pause": int,
        "pause-time-left": int,
    },
)

ServerStats = TypedDict(
    "ServerStats",
    {
        "current-jobs-urgent": int,
        "current-jobs-ready": int,
        "current-jobs-reserved": int,
        "current-jobs-delayed": int,
        "current-jobs-buried": int,
        "cmd-put": int,
        "cmd-peek": int,
        "cmd-peek-ready": int,
        "cmd-peek-delayed": int,
        "cmd-peek-buried": int,
        "cmd-reserve": int,
        "cmd-reserve-with-timeout": int,
        "cmd-delete": int,
        "cmd-release": int,
        "cmd-use": int,
        "cmd-watch": int,
        "cmd-ignore": int,
        "cmd-bury": int,
        "cmd-kick": int,
        "cmd-touch": int,
        "cmd-stats": int,
        "cmd-stats-job": int,
        "cmd-stats-tube": int,
        "cmd-list-tubes": int,
        "cmd-list-tube-used": int,
        "cmd-list-tubes-watched": int,
        "cmd-pause-tube": int,
        "job-timeouts": int,
        "total-jobs": int,
        "max-job-size": int,
        "current-tubes": int,
        "current-connections": int,
        "current-producers": int,
        "current-workers": int,
        "current-waiting": int,
        "total-connections": int,
        "pid": int,
        "version": str,
        "rusage-utime": float,
        "rusage-stime": float,
        "uptime": int,
        "binlog-oldest-index": int,
        "binlog-current-index": int,
        "binlog-records-migrated": int,
        "binlog-records-written": int,
        "binlog-max-size": int,
        "draining": bool,
        "id": str,
        "hostname": str,
        "os": str,
        "platform": str,
    },
)

_FIELD_TYPES: Final[dict[str, dict[str, type]]] = {
    "job": get_type_hints(JobStats),
    "tube": get_type_hints(TubeStats),
    "server": get_type_hints(ServerStats),
}
_INT: Final = re.compile(r"-?\d+\Z")
_FLOAT: Final = re.compile(r"-?\d+\.\d*\Z")


class StatsFormatError(BeanstalkError):
    """A stats body that is not the flat YAML mapping every beanstalkd sends."""


def _unquote(value: str) -> tuple[str, bool]:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\"), True
    return value, False


def _guess(value: str, quoted: bool) -> int | float | bool | str:
    if quoted:
        return value
    if _INT.match(value):
        return int(value)
    if _FLOAT.match(value):
        return float(value)
    if value in ("true", "false"):
        return value == "true"
    return value


def _convert(key: str, value: str, quoted: bool, kind: type | None) -> int | float | bool | str:
    if kind is None:
        return _guess(value, quoted)
    if kind is str:
        return value
    try:
        if kind is bool:
            if value not in ("true", "false"):
                raise ValueError(value)
            return value == "true"
        if kind is int:
            if not _INT.match(value):
                raise ValueError(value)
            return int(value)
        return float(value)
    except ValueError:
        raise StatsFormatError(f"stats field {key!r}: {value!r} is not {kind.__name__}") from None


def parse_stats(body: bytes, kind: str) -> dict[str, Any]:
    """Parse a ``stats``/``stats-tube``/``stats-job`` body (``kind``: server, tube or job)."""
    types = _FIELD_TYPES[kind]
    result: dict[str, Any] = {}
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StatsFormatError(f"stats body is not UTF-8: {exc}") from None
    for line in text.splitlines():
        if not line or line == "---":
            continue
        key, sep, raw = line.partition(": ")
        if not sep:
            if line.endswith(":"):  # an empty value, e.g. "os: " trimmed by a proxy
                key, raw = line[:-1], ""
            else:
                raise StatsFormatError(f"not a YAML mapping line: {line!r}")
        value, quoted = _unquote(raw)
        result[key] = _convert(key, value, quoted, types.get(key))
    return result


def parse_job_stats(body: bytes) -> JobStats:
    return cast(JobStats, parse_stats(body, "job"))


def parse_tube_stats(body: bytes) -> TubeStats:
    return cast(TubeStats, parse_stats(body, "tube"))


def parse_server_stats(body: bytes) -> ServerStats:
    return cast(ServerStats, parse_stats(body, "server"))


def parse_list(body: bytes) -> list[str]:
    """A ``list-tubes``/``list-tubes-watched`` body. Tube names cannot contain characters that
    YAML would need to quote in a sequence, but a quoted one is unquoted anyway."""
    names = []
    for line in body.decode("utf-8").splitlines():
        if line.startswith("- "):
            names.append(_unquote(line[2:])[0])
        elif line and line != "---":
            raise StatsFormatError(f"not a YAML list line: {line!r}")
    return names

"""Tube and schedule names in request paths.

A tube's name may hold ``/`` (beanstalkd allows it; schedule names take the same characters),
and Starlette routes on the decoded path, so ``/tubes/a%2Fjobs`` (the tube ``a/jobs``) would
route as the jobs of tube ``a``. The name is therefore read from the raw path, where the
console's ``encodeURIComponent`` left the slash encoded, and a route's literal tail must be
literal there too.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.requests import Request

_TUBES = b"/tubes/"
_SCHEDULES = b"/schedules/"


def tube_name(request: Request, tail: str = "") -> bytes | None:
    """The tube named by ``request``'s path, whose route ends with ``/tail`` (none: the tube
    itself). None when the raw path does not end so: the tail came from the tube's name."""
    return _name(request, _TUBES, tail)


def schedule_name(request: Request, tail: str = "") -> bytes | None:
    """The schedule named by ``request``'s path, as ``tube_name`` reads a tube's."""
    return _name(request, _SCHEDULES, tail)


def _name(request: Request, collection: bytes, tail: str) -> bytes | None:
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):  # (an ASGI server need not give it: the decoded path)
        name: str = request.path_params["name"]
        return name.encode()
    raw = raw.split(b"?", 1)[0]
    rest = raw[raw.find(collection) + len(collection) :]
    if tail:
        end = b"/" + tail.encode()
        if not rest.endswith(end):
            return None
        rest = rest[: -len(end)]
    return unquote_to_bytes(rest)

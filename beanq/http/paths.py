"""Tube names in request paths.

A tube's name may hold ``/`` (beanstalkd allows it), and Starlette routes on the decoded path,
so ``/tubes/a%2Fjobs`` (the tube ``a/jobs``) would route as the jobs of tube ``a``. The name is
therefore read from the raw path, where the console's ``encodeURIComponent`` left the slash
encoded, and a route's literal tail must be literal there too.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from starlette.requests import Request

_TUBES = b"/tubes/"


def tube_name(request: Request, tail: str = "") -> bytes | None:
    """The tube named by ``request``'s path, whose route ends with ``/tail`` (none: the tube
    itself). None when the raw path does not end so: the tail came from the tube's name."""
    raw = request.scope.get("raw_path")
    if not isinstance(raw, bytes):  # (an ASGI server need not give it: the decoded path)
        name: str = request.path_params["name"]
        return name.encode()
    raw = raw.split(b"?", 1)[0]
    rest = raw[raw.find(_TUBES) + len(_TUBES) :]
    if tail:
        end = b"/" + tail.encode()
        if not rest.endswith(end):
            return None
        rest = rest[: -len(end)]
    return unquote_to_bytes(rest)

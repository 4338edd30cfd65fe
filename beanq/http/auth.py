"""Who may look and who may act: the token, the console's login sessions, CSRF.

With a token file, a request is let in by ``Authorization: Bearer <token>`` (scripts) or by
the session cookie the login form sets (people). The cookie is a random session id, HttpOnly
and SameSite=Strict, that maps to a server-side record holding the session's CSRF token; the
console reads that token from ``/api/v1/session`` (same-origin only: no CORS) and sends it in
``X-CSRF-Token`` with every action, which must also come with an ``Origin`` (or ``Referer``)
naming this host. A bearer request carries its credential explicitly, so it needs no CSRF
token. Without a token file everything but the actions is open, and actions are refused.
Tokens are compared with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from typing import NamedTuple
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "beanq_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 1000  # the oldest login is forgotten beyond this


class Access(NamedTuple):
    """How a request got in: ``open`` (no token file), ``bearer`` or ``cookie``."""

    via: str
    session: str | None = None  # the cookie's session id
    csrf: str | None = None


class Gate:
    def __init__(self, token: str | None) -> None:
        self.token = token
        self._bearer = None if token is None else f"Bearer {token}".encode()
        # session id -> (CSRF token, expiry on time.monotonic())
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    @property
    def open(self) -> bool:
        return self.token is None

    def access(self, request: Request) -> Access | None:
        """How the request is let in, or None when it is not."""
        if self._bearer is None:
            return Access("open")
        given = request.headers.get("authorization")
        if given is not None:
            ok = hmac.compare_digest(given.encode(), self._bearer)
            return Access("bearer") if ok else None
        session = request.cookies.get(COOKIE)
        if session is None:
            return None
        record = self._sessions.get(session)
        if record is None:
            return None
        if record[1] < time.monotonic():
            del self._sessions[session]
            return None
        return Access("cookie", session, record[0])

    def check_token(self, given: str) -> bool:
        if self.token is None:
            return False
        return hmac.compare_digest(given.strip().encode(), self.token.encode())

    def login(self) -> str:
        """A new session: its id (the cookie's value)."""
        session = secrets.token_urlsafe(32)
        self._sessions[session] = (secrets.token_urlsafe(32), time.monotonic() + SESSION_SECONDS)
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def logout(self, session: str) -> None:
        self._sessions.pop(session, None)

    def may_act(self, request: Request, access: Access) -> str | None:
        """None when ``access`` may change the queue with this request, else why not."""
        if access.via == "open":
            return "the console is read-only without --http-token-file"
        if access.via == "bearer":
            return None
        return csrf_problem(request, access.csrf)


def same_origin(request: Request) -> bool:
    """The request says it comes from a page of this host (``Origin``, else ``Referer``)."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return False
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    host = request.headers.get("host")
    if host is None:
        return False
    return origin in (f"http://{host}", f"https://{host}")


def csrf_problem(request: Request, expected: str | None) -> str | None:
    if not same_origin(request):
        return "the request's Origin is not this host"
    given = request.headers.get(CSRF_HEADER, "")
    if expected is None or not hmac.compare_digest(given.encode(), expected.encode()):
        return "a valid X-CSRF-Token header is required"
    return None

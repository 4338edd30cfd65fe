"""The HTTP application: health checks, ``/metrics``, the JSON API under ``/api/v1/`` and
the web console at ``/``.

Every endpoint is a coroutine, so that it runs on the loop's thread between two batches of
the beanstalk loop and reads the engine while nothing changes it (Starlette would run a plain
function on a worker thread, beside the loop). GET endpoints only read; the console's actions
(``beanq.http.actions``) change the queue through ``beanq.operations``. See docs/http.md.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any, ClassVar

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beanq.http import actions, console, schedules
from beanq.http.answers import PAGE_DEFAULT, PAGE_MAX, PAGING, error, number, page
from beanq.http.auth import Access, Gate
from beanq.http.metrics import EngineCollector, registry
from beanq.http.paths import tube_name
from beanq.http.rates import KEEP as RATES_KEEP
from beanq.http.rates import Rates
from beanq.http.view import EngineView, state_name
from beanq.operations import Operations
from beanq.tubes import URGENT_THRESHOLD, Job, Session, State, Tube

API = "/api/v1"
PREVIEW_MAX = 1024  # bytes of each body a page of jobs may show (?preview=N)
_STATES = {
    "ready": State.READY,
    "reserved": State.RESERVED,
    "delayed": State.DELAYED,
    "buried": State.BURIED,
}

Endpoint = Callable[[Request], Awaitable[Response]]


class Settings:
    """What the command line says about the HTTP side."""

    def __init__(
        self, *, token: str | None = None, show_bodies: bool = False, max_tubes: int = 500
    ) -> None:
        self.token = token  # None: no token file; the API is open, read-only, bodies hidden
        self.show_bodies = show_bodies
        self.max_tubes = max_tubes


def build(
    view: EngineView,
    settings: Settings,
    operations: Operations | None = None,
    rates: Rates | None = None,
) -> ASGIApp:
    metrics_registry = registry(view, settings.max_tubes)
    collector = EngineCollector(view, settings.max_tubes)
    bodies = settings.show_bodies or settings.token is not None
    gate = Gate(settings.token)
    if rates is None:
        rates = Rates(view.engine, view.clock)

    def guarded(endpoint: Endpoint) -> Endpoint:
        """With a token file, the endpoint needs the bearer token or a login session."""

        async def check(request: Request) -> Response:
            access = gate.access(request)
            if access is None:
                denied = error(401, "unauthorized", "a valid bearer token is required")
                denied.headers["WWW-Authenticate"] = 'Bearer realm="beanq"'
                return denied
            request.state.access = access
            response = await endpoint(request)
            response.headers["Cache-Control"] = "no-store"
            return response

        return check

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        reason = view.readiness()
        if reason is None:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": reason}, status_code=503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    async def session(request: Request) -> Response:
        access: Access = request.state.access
        return JSONResponse(
            {
                "auth": "none" if gate.open else "token",
                "via": access.via,
                "actions": operations is not None and access.via != "open",
                "bodies": bodies,
                "csrf": access.csrf,
            }
        )

    async def server(request: Request) -> Response:
        values: dict[str, Any] = dict(collector.server_values())
        values["draining"] = view.draining
        values["version"] = view.host.version
        values["id"] = view.host.instance_id
        values["hostname"] = view.host.hostname
        values["os"] = view.host.os
        values["platform"] = view.host.platform
        return JSONResponse(values)

    async def rate_series(request: Request) -> Response:
        seconds = number(request.query_params.get("seconds", str(RATES_KEEP)))
        if seconds is None or not 1 <= seconds <= RATES_KEEP:
            return error(400, "bad_request", f"seconds must be from 1 to {RATES_KEEP}")
        points = [p for p in rates.series() if p[0] >= -seconds]
        return JSONResponse({"interval": 1, "points": points})

    async def tubes(request: Request) -> Response:
        query = request.query_params
        if not any(k in query for k in PAGING):
            return JSONResponse({"tubes": [_tube_json(view, t) for t in view.tubes()]})
        rates.want_tubes()
        sort = query.get("sort", "")
        key = view.oldest_ready_age if sort == "oldest" else _TUBE_SORT.get(sort)
        if sort and key is None and sort not in _RATE_SORT:
            return error(400, "bad_request", f"sort must be one of {', '.join(_SORTS)}")
        paged = page(query)
        if isinstance(paged, Response):
            return paged
        descending, offset, limit = paged
        found = view.tubes()
        total = len(found)
        text = query.get("q", "").encode()
        if text:
            found = [t for t in found if text in t.name]
        if sort in _RATE_SORT:
            index = _RATE_SORT[sort]
            unknown = (-1.0, -1.0, -1.0)
            found = sorted(found, key=lambda t: (rates.tube_rates(t) or unknown)[index])
        elif key is not None:
            found = sorted(found, key=key)
        if descending:
            found.reverse()
        rows = []
        for t in found[offset : offset + limit]:
            row = _tube_json(view, t)
            known = rates.tube_rates(t)
            for name, value in zip(_RATE_SORT, known or (None, None, None), strict=True):
                row[name] = None if value is None else round(value, 2)
            rows.append(row)
        return JSONResponse(
            {"tubes": rows, "total": total, "matched": len(found), "offset": offset}
        )

    async def tube(request: Request) -> Response:
        found = _find_tube(view, tube_name(request))
        if isinstance(found, Response):
            return found
        return JSONResponse(_tube_json(view, found))

    async def tube_jobs(request: Request) -> Response:
        name = tube_name(request, "jobs")
        if name is None:  # a tube named "…/jobs" itself
            return await tube(request)
        found = _find_tube(view, name)
        if isinstance(found, Response):
            return found
        query = request.query_params
        state_text = query.get("state", "ready")
        state = _STATES.get(state_text)
        if state is None:
            return error(400, "bad_request", f"state must be one of {', '.join(_STATES)}")
        after = number(query.get("after", "0"))
        limit = number(query.get("limit", str(PAGE_DEFAULT)))
        preview = number(query.get("preview", "0"))
        if after is None:
            return error(400, "bad_request", "after must be a job id (0 or more)")
        if limit is None or not 1 <= limit <= PAGE_MAX:
            return error(400, "bad_request", f"limit must be from 1 to {PAGE_MAX}")
        if preview is None or preview > PREVIEW_MAX:
            return error(400, "bad_request", f"preview must be from 0 to {PREVIEW_MAX}")
        page = view.job_page(found, state, after, limit + 1)
        more = len(page) > limit
        page = page[:limit]
        rows = []
        for j in page:
            row = _job_json(view, j, with_body=False)
            if bodies and preview:
                row["preview_base64"] = base64.b64encode(j.body[:preview]).decode()
            rows.append(row)
        return JSONResponse(
            {
                "tube": found.name.decode(errors="replace"),
                "state": state_text,
                "jobs": rows,
                "next_after": page[-1].id if more else None,
            }
        )

    async def job(request: Request) -> Response:
        job_id = number(request.path_params["job_id"])
        if job_id is None:
            return error(400, "bad_request", "a job id is a number")
        found = view.job(job_id)
        if found is None:
            return error(404, "not_found", f"no job {job_id}")
        return JSONResponse(_job_json(view, found, with_body=bodies))

    async def connections(request: Request) -> Response:
        query = request.query_params
        offset = number(query.get("offset", "0"))
        limit = number(query["limit"]) if "limit" in query else None
        if offset is None or ("limit" in query and (limit is None or limit < 1)):
            return error(400, "bad_request", "offset and limit must be numbers")
        now = view.clock()
        every = sorted(view.sessions(), key=_session_id)
        page = every[offset:] if limit is None else every[offset : offset + limit]
        rows = []
        for s in page:
            peer = view.peer(s)
            rows.append(
                {
                    "id": s.id,
                    "address": None if peer is None else peer[0],
                    "idle": None if peer is None else round(max(0.0, now - peer[1]), 1),
                    "use": s.use.name.decode(errors="replace"),
                    "watch": [t.name.decode(errors="replace") for t in s.watch],
                    "reserved": sorted(s.reserved),
                    "waiting": s.waiting,
                    "producer": s.is_producer,
                    "worker": s.is_worker,
                }
            )
        return JSONResponse({"connections": rows, "total": len(every), "offset": offset})

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route(f"{API}/session", guarded(session)),
        Route(f"{API}/stats", guarded(server)),
        Route(f"{API}/rates", guarded(rate_series)),
        Route(f"{API}/tubes", guarded(tubes)),
        Route(f"{API}/tubes/{{name:path}}/jobs", guarded(tube_jobs)),
        Route(f"{API}/tubes/{{name:path}}", guarded(tube)),
        Route(f"{API}/jobs/{{job_id}}", guarded(job)),
        Route(f"{API}/connections", guarded(connections)),
        *actions.routes(API, gate, operations, guarded),
        *schedules.routes(API, view, bodies, guarded),
        *console.routes(gate),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not_found", f"no such endpoint: {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method_not_allowed", f"{request.method} is not allowed here")

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
    return SecurityHeaders(app)


class SecurityHeaders:
    """Headers on every answer that keep the console's pages and data in their own origin: no
    framing (clickjacking), scripts and styles only from the package, no type sniffing."""

    HEADERS: ClassVar[list[tuple[bytes, bytes]]] = [
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
            b"form-action 'self'; base-uri 'none'; object-src 'none'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"same-origin"),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _tube_paused(tube: Tube) -> bool:
    return tube.paused_until is not None


def _tube_buried(tube: Tube) -> int:
    return len(tube.buried)


def _tube_waiting(tube: Tube) -> int:
    return len(tube.waiting)


_TUBE_SORT: dict[str, Callable[[Tube], Any]] = {
    "name": attrgetter("name"),
    "ready": attrgetter("ready_count"),
    "urgent": attrgetter("urgent_count"),
    "reserved": attrgetter("reserved_count"),
    "delayed": attrgetter("delayed_count"),
    "buried": _tube_buried,
    "waiting": _tube_waiting,
    "total": attrgetter("total_jobs"),
    "paused": _tube_paused,
}
# the per-tube rates, in Rates.tube_rates's order
_RATE_SORT = {"puts-per-second": 0, "reserves-per-second": 1, "deletes-per-second": 2}
_SORTS = [*_TUBE_SORT, "oldest", *_RATE_SORT]


def _session_id(session: Session) -> int:
    return session.id


def _find_tube(view: EngineView, name: bytes | None) -> Tube | Response:
    found = None if name is None else view.tube(name)
    if found is None:
        shown = (name or b"").decode(errors="replace")
        return error(404, "not_found", f"no tube {shown}")
    return found


def _tube_json(view: EngineView, tube: Tube) -> dict[str, Any]:
    paused = tube.paused_until is not None
    return {
        "name": tube.name.decode(errors="replace"),
        "current-jobs-urgent": tube.urgent_count,
        "current-jobs-ready": tube.ready_count,
        "current-jobs-reserved": tube.reserved_count,
        "current-jobs-delayed": tube.delayed_count,
        "current-jobs-buried": len(tube.buried),
        "total-jobs": tube.total_jobs,
        "current-using": tube.using,
        "current-watching": tube.watching,
        "current-waiting": len(tube.waiting),
        "cmd-delete": tube.delete_count,
        "cmd-pause-tube": tube.pause_count,
        "pause": tube.pause_seconds if paused else 0,
        "pause-time-left": view.pause_time_left(tube),
        "reserves": tube.reserve_count,
        "releases": tube.release_count,
        "buries": tube.bury_count,
        "kicks": tube.kick_count,
        "timeouts": tube.timeout_count,
        "oldest-ready-age": round(view.oldest_ready_age(tube), 3),
    }


def _job_json(view: EngineView, job: Job, *, with_body: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": job.id,
        "tube": job.tube.name.decode(errors="replace"),
        "state": state_name(job),
        "pri": job.pri,
        "urgent": job.pri < URGENT_THRESHOLD,
        "age": int(view.clock() - job.created),
        "delay": job.delay,
        "ttr": job.ttr,
        "time-left": view.job_time_left(job),
        "file": view.job_file(job),
        "reserves": job.reserves,
        "timeouts": job.timeouts,
        "releases": job.releases,
        "buries": job.buries,
        "kicks": job.kicks,
        "size": len(job.body),
    }
    if with_body:
        try:
            row["body"] = job.body.decode()
        except UnicodeDecodeError:
            row["body_base64"] = base64.b64encode(job.body).decode()
    return row

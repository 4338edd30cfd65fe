"""The HTTP application: health checks, ``/metrics`` and the JSON API under ``/api/v1/``.

Every endpoint is a coroutine, so that it runs on the loop's thread between two batches of
the beanstalk loop and reads the engine while nothing changes it (Starlette would run a plain
function on a worker thread, beside the loop). The API is read-only. See docs/http.md.
"""

from __future__ import annotations

import base64
import heapq
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from beanq.http.metrics import EngineCollector, registry
from beanq.http.view import EngineView, state_name
from beanq.tubes import URGENT_THRESHOLD, Job, State, Tube

API = "/api/v1"
PAGE_DEFAULT = 100
PAGE_MAX = 1000
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


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def build(view: EngineView, settings: Settings) -> Starlette:
    metrics_registry = registry(view, settings.max_tubes)
    collector = EngineCollector(view, settings.max_tubes)
    bodies = settings.show_bodies or settings.token is not None

    def guarded(endpoint: Endpoint) -> Endpoint:
        """With a token file, the endpoint needs ``Authorization: Bearer <token>``."""
        token = settings.token
        if token is None:
            return endpoint
        expected = f"Bearer {token}".encode()

        async def check(request: Request) -> Response:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                response = error(401, "unauthorized", "a valid bearer token is required")
                response.headers["WWW-Authenticate"] = 'Bearer realm="beanq"'
                return response
            return await endpoint(request)

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

    async def server(request: Request) -> Response:
        values: dict[str, Any] = dict(collector.server_values())
        values["draining"] = view.draining
        values["version"] = view.host.version
        values["id"] = view.host.instance_id
        values["hostname"] = view.host.hostname
        values["os"] = view.host.os
        values["platform"] = view.host.platform
        return JSONResponse(values)

    async def tubes(request: Request) -> Response:
        return JSONResponse({"tubes": [_tube_json(view, t) for t in view.tubes()]})

    async def tube(request: Request) -> Response:
        found = _find_tube(view, request)
        if isinstance(found, Response):
            return found
        return JSONResponse(_tube_json(view, found))

    async def tube_jobs(request: Request) -> Response:
        found = _find_tube(view, request)
        if isinstance(found, Response):
            return found
        query = request.query_params
        state_text = query.get("state", "ready")
        state = _STATES.get(state_text)
        if state is None:
            return error(400, "bad_request", f"state must be one of {', '.join(_STATES)}")
        after = _number(query.get("after", "0"))
        limit = _number(query.get("limit", str(PAGE_DEFAULT)))
        if after is None:
            return error(400, "bad_request", "after must be a job id (0 or more)")
        if limit is None or not 1 <= limit <= PAGE_MAX:
            return error(400, "bad_request", f"limit must be from 1 to {PAGE_MAX}")
        page = heapq.nsmallest(
            limit + 1, (j for j in view.jobs_of(found, state) if j.id > after), key=_job_id
        )
        more = len(page) > limit
        page = page[:limit]
        return JSONResponse(
            {
                "tube": found.name.decode(errors="replace"),
                "state": state_text,
                "jobs": [_job_json(view, j, with_body=False) for j in page],
                "next_after": page[-1].id if more else None,
            }
        )

    async def job(request: Request) -> Response:
        job_id = _number(request.path_params["job_id"])
        if job_id is None:
            return error(400, "bad_request", "a job id is a number")
        found = view.job(job_id)
        if found is None:
            return error(404, "not_found", f"no job {job_id}")
        return JSONResponse(_job_json(view, found, with_body=bodies))

    async def connections(request: Request) -> Response:
        rows = [
            {
                "id": s.id,
                "use": s.use.name.decode(errors="replace"),
                "watch": [t.name.decode(errors="replace") for t in s.watch],
                "reserved": sorted(s.reserved),
                "waiting": s.waiting,
                "producer": s.is_producer,
                "worker": s.is_worker,
            }
            for s in sorted(view.sessions(), key=lambda s: s.id)
        ]
        return JSONResponse({"connections": rows})

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route(f"{API}/stats", guarded(server)),
        Route(f"{API}/tubes", guarded(tubes)),
        Route(f"{API}/tubes/{{name}}", guarded(tube)),
        Route(f"{API}/tubes/{{name}}/jobs", guarded(tube_jobs)),
        Route(f"{API}/jobs/{{job_id}}", guarded(job)),
        Route(f"{API}/connections", guarded(connections)),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not_found", f"no such endpoint: {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method_not_allowed", "the API is read-only: GET only")

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) <= 20 else None


def _job_id(job: Job) -> int:
    return job.id


def _find_tube(view: EngineView, request: Request) -> Tube | Response:
    name: str = request.path_params["name"]
    found = view.tube(name.encode())
    if found is None:
        return error(404, "not_found", f"no tube {name}")
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

"""The console's actions: POST endpoints that change the queue through ``Operations``.

Each needs what every API endpoint needs (the token, by bearer header or login session) and,
for a login session, the CSRF checks of ``beanq.http.auth``; without a token file they answer
403. Parameters come as a JSON object in the body. See docs/http.md.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from beanq.http.answers import error
from beanq.http.auth import Access, Gate
from beanq.http.paths import schedule_name, tube_name
from beanq.operations import FLUSH_STATES, MAX_COUNT, MAX_PAUSE, MOVE_STATES, Operations
from beanq.protocol import valid_tube_name

Endpoint = Callable[[Request], Awaitable[Response]]
Action = Callable[[Request, Operations, dict[str, Any]], Awaitable[Response]]
MAX_BODY = 4096  # bytes of parameters an action takes, at most


class BadParameter(Exception):
    pass


def _count(params: dict[str, Any], name: str, default: int | None, top: int) -> int:
    value = params.get(name, default)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise BadParameter(f"{name} must be a whole number from 0 to {top}")
    return value


def _choice(params: dict[str, Any], name: str, choices: dict[str, Any]) -> str:
    value = params.get(name)
    if value not in choices:
        raise BadParameter(f"{name} must be one of {', '.join(choices)}")
    assert isinstance(value, str)
    return value


def _tube(request: Request) -> bytes:
    name = tube_name(request, request.url.path.rsplit("/", 1)[1])
    if name is None:  # e.g. ".../a%2Fkick": an action's name inside the tube's name
        raise BadParameter("the action's name must follow the tube's name")
    return name


def _job_id(request: Request) -> int:
    text: str = request.path_params["job_id"]
    if not text.isdigit() or len(text) > 20:
        raise BadParameter("a job id is a number")
    return int(text)


def _schedule(request: Request) -> bytes:
    name = schedule_name(request, request.url.path.rsplit("/", 1)[1])
    if name is None:  # (as for a tube: the action's name came from the schedule's)
        raise BadParameter("the action's name must follow the schedule's name")
    return name


def _no_schedule(request: Request) -> JSONResponse:
    return error(404, "not_found", f"no schedule {request.path_params['name']}")


async def kick(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    bound = _count(params, "bound", None, MAX_COUNT)
    kicked = await ops.kick(_tube(request), bound)
    if kicked is None:
        return error(404, "not_found", f"no tube {request.path_params['name']}")
    return JSONResponse({"kicked": kicked})


async def pause(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    seconds = _count(params, "seconds", None, MAX_PAUSE)
    if not await ops.pause(_tube(request), seconds):
        return error(404, "not_found", f"no tube {request.path_params['name']}")
    return JSONResponse({"paused": seconds > 0, "seconds": seconds})


async def flush(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    state = _choice(params, "state", FLUSH_STATES)
    return JSONResponse({"flushed": await ops.flush(_tube(request), state)})


async def move(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    state = _choice(params, "state", MOVE_STATES)
    limit = _count(params, "limit", None, MAX_COUNT)
    to = params.get("to")
    if not isinstance(to, str) or not valid_tube_name(to.encode()):
        raise BadParameter("to must be a valid tube name")
    return JSONResponse({"moved": await ops.move(_tube(request), to.encode(), state, limit)})


async def kick_job(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    job_id = _job_id(request)
    if not await ops.kick_job(job_id):
        return error(404, "not_found", f"no buried or delayed job {job_id}")
    return JSONResponse({"kicked": job_id})


async def delete_job(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    job_id = _job_id(request)
    if not await ops.delete(job_id):
        return error(404, "not_found", f"no job {job_id} that is not reserved")
    return JSONResponse({"deleted": job_id})


async def schedule_pause(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    if not await ops.schedule_pause(_schedule(request)):
        return _no_schedule(request)
    return JSONResponse({"paused": True})


async def schedule_resume(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    if not await ops.schedule_resume(_schedule(request)):
        return _no_schedule(request)
    return JSONResponse({"paused": False})


async def schedule_delete(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    name = _schedule(request)
    if not await ops.schedule_remove(name):
        return _no_schedule(request)
    return JSONResponse({"deleted": name.decode(errors="replace")})


async def drain(request: Request, ops: Operations, params: dict[str, Any]) -> Response:
    on = params.get("on")
    if not isinstance(on, bool):
        raise BadParameter("on must be true or false")
    await ops.drain(on)
    return JSONResponse({"draining": on})


def routes(
    api: str, gate: Gate, operations: Operations | None, guarded: Callable[[Endpoint], Endpoint]
) -> list[Route]:
    def action(handler: Action) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            access: Access = request.state.access
            why = gate.may_act(request, access)
            if why is None and operations is None:
                why = "this server takes no actions over HTTP"
            if why is not None:
                return error(403, "forbidden", why)
            assert operations is not None
            body = await request.body()
            if len(body) > MAX_BODY:
                return error(413, "too_large", "the parameters are too large")
            try:
                params = json.loads(body) if body.strip() else {}
            except ValueError:
                return error(400, "bad_request", "the body must be a JSON object")
            if not isinstance(params, dict):
                return error(400, "bad_request", "the body must be a JSON object")
            try:
                return await handler(request, operations, params)
            except BadParameter as exc:
                return error(400, "bad_request", str(exc))

        return guarded(endpoint)

    post = ["POST"]
    return [
        Route(f"{api}/tubes/{{name:path}}/kick", action(kick), methods=post),
        Route(f"{api}/tubes/{{name:path}}/pause", action(pause), methods=post),
        Route(f"{api}/tubes/{{name:path}}/flush", action(flush), methods=post),
        Route(f"{api}/tubes/{{name:path}}/move", action(move), methods=post),
        Route(f"{api}/jobs/{{job_id}}/kick", action(kick_job), methods=post),
        Route(f"{api}/jobs/{{job_id}}/delete", action(delete_job), methods=post),
        Route(f"{api}/schedules/{{name:path}}/pause", action(schedule_pause), methods=post),
        Route(f"{api}/schedules/{{name:path}}/resume", action(schedule_resume), methods=post),
        Route(f"{api}/schedules/{{name:path}}/delete", action(schedule_delete), methods=post),
        Route(f"{api}/drain", action(drain), methods=post),
    ]

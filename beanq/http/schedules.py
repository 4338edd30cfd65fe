"""The schedules in the JSON API: ``GET /api/v1/schedules`` (all, or a page sorted and
filtered on the server, as the tubes are) and ``GET /api/v1/schedules/{name}``.

A schedule is shown as ``beanq-schedule-show`` gives it (its definition and state), with its
body only where job bodies are shown, and what a page needs beside it: the body's size, the
trigger in words, and the seconds to the next fire and since the last one on the server's own
clock (a browser's may be off). The changes (pause, resume, delete) are actions
(``beanq.http.actions``). See docs/http.md.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from beanq.http.answers import PAGING, error, page
from beanq.http.paths import schedule_name
from beanq.http.view import EngineView

if TYPE_CHECKING:
    from beanq.schedules import Schedule

Endpoint = Callable[[Request], Awaitable[Response]]


def _never_first(value: float | None) -> float:
    return -math.inf if value is None else value


def _next_key(s: Schedule) -> float:
    return math.inf if s.next_fire is None else s.next_fire  # (paused: last)


SORTS: dict[str, Callable[[Schedule], Any]] = {
    "name": lambda s: s.name,
    "tube": lambda s: (s.tube, s.name),
    "next": _next_key,
    "last": lambda s: _never_first(s.last_fire),
    "fired": lambda s: s.fired,
    "skipped": lambda s: s.skipped,
    "missed": lambda s: s.missed,
    "paused": lambda s: s.paused,
}


def schedule_json(view: EngineView, sched: Schedule, wall: float, bodies: bool) -> dict[str, Any]:
    row = {"name": "", **sched.to_dict(view.engine)}  # (the name first, for people)
    if not bodies:
        row.pop("body", None)
        row.pop("body_b64", None)
    row["size"] = len(sched.body)
    row["trigger"] = sched.trigger.describe()
    nxt, last = sched.next_fire, sched.last_fire
    row["next_fire_in"] = None if nxt is None else round(nxt - wall, 3)
    row["last_fire_ago"] = None if last is None else round(wall - last, 3)
    return row


def routes(
    api: str, view: EngineView, bodies: bool, guarded: Callable[[Endpoint], Endpoint]
) -> list[Route]:
    async def listing(request: Request) -> Response:
        query = request.query_params
        wall = view.wall()
        found = view.schedules()
        total = len(found)
        if not any(k in query for k in PAGING):
            rows = [schedule_json(view, s, wall, bodies) for s in found]
            return JSONResponse({"schedules": rows, "total": total, "now": wall})
        sort = query.get("sort", "name")
        key = SORTS.get(sort)
        if key is None:
            return error(400, "bad_request", f"sort must be one of {', '.join(SORTS)}")
        paged = page(query)
        if isinstance(paged, Response):
            return paged
        descending, offset, limit = paged
        text = query.get("q", "").encode()
        if text:
            found = [s for s in found if text in s.name or text in s.tube]
        if sort != "name":  # (already by name: sorted() is stable, so ties stay by name)
            found = sorted(found, key=key)
        if descending:
            found.reverse()
        shown = found[offset : offset + limit]
        return JSONResponse(
            {
                "schedules": [schedule_json(view, s, wall, bodies) for s in shown],
                "total": total,
                "matched": len(found),
                "offset": offset,
                "now": wall,
            }
        )

    async def one(request: Request) -> Response:
        name = schedule_name(request)
        found = None if name is None else view.schedule(name)
        if found is None:
            shown = (name or b"").decode(errors="replace")
            return error(404, "not_found", f"no schedule {shown}")
        return JSONResponse(schedule_json(view, found, view.wall(), bodies))

    return [
        Route(f"{api}/schedules", guarded(listing)),
        Route(f"{api}/schedules/{{name:path}}", guarded(one)),
    ]

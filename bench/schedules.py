"""Schedules (issue 17), on beanq alone: what they cost the standard commands.

Put throughput at 50 connections with N schedules firing every second each (interval
triggers spread evenly over the second, overlap allowed, so each fire is a put), against the
same beanq with none, alternated A B over rounds in one run; and whether the fires kept time:
after the run, every schedule's count of fires against the seconds it lived, and the times it
missed (a fire more than 1 s late counts as missed).
"""

from __future__ import annotations

import json
import time
from typing import Any

from bench import report
from bench.loadgen import LoadGen, LoadSpec
from bench.proto import Client
from bench.servers import Server, ServerKind

BATCH = 500  # schedule-add commands pipelined at a time


def _declare(c: Client, n: int, start: float) -> None:
    for first in range(0, n, BATCH):
        commands = []
        for i in range(first, min(n, first + BATCH)):
            d = json.dumps(
                {
                    "tube": "sched",
                    "every": 1,
                    "start": start + i / n,
                    "overlap": "allow",
                    "catchup": "none",
                    "body": "x",
                }
            ).encode()
            commands.append(b"beanq-schedule-add s%d %d\r\n%b\r\n" % (i, len(d), d))
        c.expect_all(commands, b"ADDED")


def put_with_schedules(
    kind: ServerKind, lg: LoadGen, *, schedules: int, duration: float, workers: int
) -> dict[str, Any]:
    out: dict[str, Any] = {"schedules": schedules}
    server = Server(kind)
    try:
        server.start()
        with Client(server.port, timeout=120.0) as c:
            start = float(int(time.time()) + 1)
            if schedules:
                _declare(c, schedules, start)
            spec = LoadSpec(
                kind="put",
                port=server.port,
                conns=50,
                duration=duration,
                workers=workers,
                hard_timeout=duration + 30.0,
            )
            result = lg.run(spec, server.pid)
            out["ops_per_s"] = result.ops_per_s
            if result.errors:
                out["error"] = str(result.errors)
            if schedules:
                looked = time.time()
                _, body = c.call(b"beanq-schedule-list\r\n")
                items = json.loads(body)
                due = sum(
                    max(0, int(looked - (start + i / schedules)) + 1) for i in range(schedules)
                )
                out["fired"] = sum(s["fired"] for s in items)
                out["missed"] = sum(s["missed"] for s in items)
                out["late_max_s"] = max(s["late_max"] for s in items)
                out["due"] = due  # (fires due by the look: the count may be one short each)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    return out


def run(
    kind: ServerKind,
    lg: LoadGen,
    *,
    schedules: int,
    rounds: int,
    duration: float,
    workers: int,
    log: Any,
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "with": []}
    for r in range(rounds):
        for n in (0, schedules):
            res = put_with_schedules(kind, lg, schedules=n, duration=duration, workers=workers)
            runs["with" if n else "none"].append(res)
            log(
                f"schedules r{r} put c50 with {n:,} schedules: {res.get('ops_per_s', 0):,.0f} ops/s"
                + (
                    f", fired {res['fired']:,} of {res['due']:,} due, missed {res['missed']}"
                    if "fired" in res
                    else ""
                )
                + (f" ERROR {res['error']}" if "error" in res else "")
            )
    out: dict[str, Any] = {"schedules": schedules, "put_c50": runs}
    a = report.median(x["ops_per_s"] for x in runs["none"] if "ops_per_s" in x)
    b = report.median(x["ops_per_s"] for x in runs["with"] if "ops_per_s" in x)
    if a and b:
        out["ratio"] = round(b / a, 3)
    return out


def render(res: dict[str, Any]) -> str:
    runs = res.get("put_c50", {})
    a = report.median(x["ops_per_s"] for x in runs.get("none", []) if "ops_per_s" in x)
    b = report.median(x["ops_per_s"] for x in runs.get("with", []) if "ops_per_s" in x)
    fired = sum(x.get("fired", 0) for x in runs.get("with", []))
    due = sum(x.get("due", 0) for x in runs.get("with", []))
    missed = sum(x.get("missed", 0) for x in runs.get("with", []))
    late = max((x.get("late_max_s", 0) for x in runs.get("with", [])), default=0)
    return "\n".join(
        [
            "\nSchedules (beanq alone; target: put c50 within 5 % with 10,000 firing every second)",
            f"  put c50 with no schedule {a or 0:,.0f} ops/s, with {res['schedules']:,}"
            f" firing every second {b or 0:,.0f}: ratio {res.get('ratio')}",
            f"  fires {fired:,} of {due:,} due at the looks, {missed:,} missed (over 1 s late);"
            f" the latest fire {late * 1000:.0f} ms after its time (target 50 ms)",
        ]
    )

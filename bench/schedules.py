"""Schedules (issue 17), on beanq alone: what they cost the standard commands.

Put throughput at 50 connections with N schedules firing every second each (interval
triggers spread evenly over the second, overlap allowed, so each fire is a put), against the
same beanq with none, alternated A B over rounds in one run; and whether the fires kept time:
after the run, every schedule's count of fires against the seconds it lived, the times it
missed (a fire more than 1 s late counts as missed), and the most a fire was late at the
server. A third run per round does the same with ``-b`` (the binlog: each fire's record, and
the snapshot of all schedules after each new segment), for its lateness.
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
    kind: ServerKind,
    lg: LoadGen,
    *,
    schedules: int,
    duration: float,
    workers: int,
    binlog: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {"schedules": schedules, "binlog": binlog}
    server = Server(kind, binlog=binlog)
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
            out.update(result.rates())
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
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "with": [], "with_binlog": []}
    for r in range(rounds):
        for n, binlog in ((0, False), (schedules, False), (schedules, True)):
            res = put_with_schedules(
                kind, lg, schedules=n, duration=duration, workers=workers, binlog=binlog
            )
            runs["with_binlog" if binlog else "with" if n else "none"].append(res)
            log(
                f"schedules r{r} put c50{' -b' if binlog else ''} with {n:,} schedules:"
                f" {res.get('ops_per_s', 0):,.0f} ops/s"
                + (
                    f", fired {res['fired']:,} of {res['due']:,} due, missed {res['missed']},"
                    f" latest {res['late_max_s'] * 1000:.0f} ms"
                    if "fired" in res
                    else ""
                )
                + (f" ERROR {res['error']}" if "error" in res else "")
            )
    out: dict[str, Any] = {"schedules": schedules, "put_c50": runs}
    out.update(report.run_ratios(runs["none"], runs["with"]))
    return out


def render(res: dict[str, Any]) -> str:
    runs = res.get("put_c50", {})
    a = report.median(x["ops_per_s"] for x in runs.get("none", []) if "ops_per_s" in x)
    b = report.median(x["ops_per_s"] for x in runs.get("with", []) if "ops_per_s" in x)
    fired = sum(x.get("fired", 0) for x in runs.get("with", []))
    due = sum(x.get("due", 0) for x in runs.get("with", []))
    missed = sum(x.get("missed", 0) for x in runs.get("with", []))
    late = max((x.get("late_max_s", 0) for x in runs.get("with", [])), default=0)
    logged = runs.get("with_binlog", [])
    late_b = max((x.get("late_max_s", 0) for x in logged), default=0)
    missed_b = sum(x.get("missed", 0) for x in logged)
    rate_b = report.median(x["ops_per_s"] for x in logged if "ops_per_s" in x)
    lines = [
        "\nSchedules (beanq alone; target: put c50 within 5 % with 10,000 firing every second)",
        f"  put c50 with no schedule {a or 0:,.0f} ops/s, with {res['schedules']:,}"
        f" firing every second {b or 0:,.0f}: ratio {res.get('ratio')}"
        f" (per server CPU second {res.get('ratio_per_cpu_s')})",
        f"  fires {fired:,} of {due:,} due at the looks, {missed:,} missed (over 1 s late);"
        f" the latest fire {late * 1000:.0f} ms after its time (target 50 ms)",
    ]
    if logged:
        lines.append(
            f"  with -b: put c50 {rate_b or 0:,.0f} ops/s, {missed_b:,} missed, the latest fire"
            f" {late_b * 1000:.0f} ms after its time (target 50 ms)"
        )
    return "\n".join(lines)

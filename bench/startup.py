"""Start-up: time from exec to the first answered command, empty and with a big binlog.

This is what a restart costs an operator: a supervisor restarting a crashed daemon, or a
deploy. "Answered" means a full ``stats`` reply, so a server that listens early but replays
its binlog before serving is charged for the replay.
"""

from __future__ import annotations

import time
from typing import Any

from bench.loadgen import LoadGen, LoadSpec
from bench.proto import Client
from bench.servers import Server, ServerKind


def empty(kind: ServerKind, binlog: bool = False) -> float:
    """Exec to first answer with nothing to replay (with ``binlog``, an empty ``-b`` dir)."""
    server = Server(kind, binlog=binlog)
    try:
        server.start()
        return server.startup_s
    finally:
        server.stop()


def with_binlog(kind: ServerKind, lg: LoadGen, jobs: int) -> dict[str, Any]:
    """Fill ``jobs`` jobs with ``-b``, stop the server, time the restart that replays them."""
    out: dict[str, Any] = {"server": kind.name, "jobs_wanted": jobs}
    server = Server(kind, binlog=True)
    try:
        server.start()
        t = time.monotonic()
        spec = LoadSpec(
            kind="put",
            port=server.port,
            conns=10,
            depth=32,
            tube="startup",
            duration=None,
            count=jobs,
            hard_timeout=150.0,
        )
        fill = lg.run(spec, server.pid)
        out["fill_s"] = round(time.monotonic() - t, 2)
        if fill.errors:
            out["error"] = f"fill errors: {fill.errors}"
        out["binlog_bytes"] = server.binlog_bytes()
        out["startup_s"] = round(server.restart(ready_timeout=150.0), 4)
        with Client(server.port) as c:
            out["jobs_after_restart"] = int(c.stats("startup").get("current-jobs-ready", 0))
        out["rss_after_restart_kb"] = server.rss_kb()
        if out["jobs_after_restart"] != fill.jobs:
            out["error"] = f"put {fill.jobs} jobs, {out['jobs_after_restart']} after restart"
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    return out

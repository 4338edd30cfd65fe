"""Memory: resident bytes per ready job and per idle connection, from VmRSS deltas.

VmRSS is what the operator's machine pays. Dividing the delta by N over a large N makes
allocator slack and the interpreter's fixed cost disappear into the noise, leaving the
marginal cost that decides how many jobs fit on a box.
"""

from __future__ import annotations

import time
from typing import Any

from bench.holders import close_all, open_idle, wait_stat
from bench.loadgen import LoadGen, LoadSpec
from bench.proto import Client
from bench.servers import Server, ServerKind

SETTLE_S = 0.5


def _settled_rss(server: Server) -> int:
    time.sleep(SETTLE_S)
    return server.rss_kb()


def per_job(kind: ServerKind, lg: LoadGen, jobs: int, body_size: int = 100) -> dict[str, Any]:
    """Fill a fresh server with ``jobs`` ready jobs; bytes of RSS per job."""
    out: dict[str, Any] = {"server": kind.name, "jobs_wanted": jobs}
    server = Server(kind)
    try:
        server.start()
        before = _settled_rss(server)
        t = time.monotonic()
        spec = LoadSpec(
            kind="put",
            port=server.port,
            conns=10,
            depth=32,
            body_size=body_size,
            tube="memory",
            duration=None,
            count=jobs,
            hard_timeout=150.0,
        )
        fill = lg.run(spec, server.pid)
        out["fill_s"] = round(time.monotonic() - t, 2)
        out["fill_jobs_per_s"] = round(fill.jobs_per_s, 1)
        after = _settled_rss(server)
        with Client(server.port) as c:
            ready = int(c.stats("memory").get("current-jobs-ready", 0))
        out.update(
            rss_before_kb=before,
            rss_after_kb=after,
            jobs=ready,
            bytes_per_job=round((after - before) * 1024 / ready, 1) if ready else None,
        )
        if fill.errors:
            out["error"] = f"fill errors: {fill.errors}"
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    return out


def per_connection(kind: ServerKind, conns: int) -> dict[str, Any]:
    """Open ``conns`` idle connections to a fresh server; bytes of RSS per connection."""
    out: dict[str, Any] = {"server": kind.name, "conns_wanted": conns}
    server = Server(kind)
    socks = []
    try:
        server.start()
        before = _settled_rss(server)
        t = time.monotonic()
        socks = open_idle(server.port, conns, timeout=90.0)
        # The stats connection itself is one more.
        seen = wait_stat(server.port, "current-connections", conns + 1, timeout=60.0) - 1
        out["connect_s"] = round(time.monotonic() - t, 2)
        after = _settled_rss(server)
        out.update(
            rss_before_kb=before,
            rss_after_kb=after,
            conns=seen,
            bytes_per_conn=round((after - before) * 1024 / seen, 1) if seen else None,
        )
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        close_all(socks)
        server.stop()
    return out

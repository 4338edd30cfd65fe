"""Flat cost: does the cost of a put or a reserve on one tube depend on unrelated state?

A server whose per-op work scans every tube or every waiting connection gets slower as the
rest of the system grows, even though the tube being used is unchanged. We measure put and
reserve on one tube three times on the same server: alone, with 10,000 other tubes alive
(kept by a few connections watching them), and with 1,000 more connections blocked in
``reserve`` on yet another tube. A flat server keeps its ops/s across the three phases.
"""

from __future__ import annotations

from typing import Any

from bench.holders import TubeWatchers, close_all, open_idle, send_and_expect, wait_stat
from bench.loadgen import LoadGen, LoadResult, LoadSpec
from bench.servers import Server, ServerKind

TUBE = "flat-main"
BLOCKED_TUBE = "flat-blocked"
PHASES = ("1 tube", "many tubes", "many tubes + blocked")


def _measure(lg: LoadGen, server: Server, duration: float, workers: int) -> dict[str, Any]:
    """put for ``duration`` then drain those jobs with reserve; ops/s of each."""
    out: dict[str, Any] = {}
    for kind in ("put", "reserve"):
        spec = LoadSpec(
            kind=kind,
            port=server.port,
            conns=50,
            depth=16,
            tube=TUBE,
            duration=duration,
            workers=workers,
            hard_timeout=duration + 30.0,
        )
        r: LoadResult = lg.run(spec, server.pid)
        out[kind] = r.to_json()
        if r.errors:
            raise RuntimeError(f"flat {kind}: {r.errors}")
    return out


def run_once(
    kind: ServerKind,
    lg: LoadGen,
    *,
    round_no: int,
    duration: float,
    workers: int,
    tubes: int,
    blocked: int,
) -> dict[str, Any]:
    result: dict[str, Any] = {"server": kind.name, "round": round_no, "phases": {}}
    server = Server(kind)
    watchers: TubeWatchers | None = None
    blockers = []
    try:
        server.start()
        phases = result["phases"]
        phases[PHASES[0]] = _measure(lg, server, duration, workers)
        watchers = TubeWatchers(server.port, tubes)
        result["tubes"] = wait_stat(server.port, "current-tubes", tubes)
        phases[PHASES[1]] = _measure(lg, server, duration, workers)
        blockers = open_idle(server.port, blocked)
        send_and_expect(
            blockers, b"watch %s\r\nignore default\r\nreserve\r\n" % BLOCKED_TUBE.encode(), 2, 30
        )
        result["waiting"] = wait_stat(server.port, "current-waiting", blocked, tube=BLOCKED_TUBE)
        phases[PHASES[2]] = _measure(lg, server, duration, workers)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        close_all(blockers)
        if watchers is not None:
            watchers.close()
        server.stop()
    return result

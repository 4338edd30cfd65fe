"""The throughput matrix: which workloads exist, and how one run of one of them goes.

Every run gets a fresh server (own port, own temp dir), so no run inherits jobs, tubes,
heap fragmentation or a warm binlog from an earlier one, and a crash spoils one sample only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.loadgen import LoadGen, LoadResult, LoadSpec
from bench.proto import Client
from bench.servers import Server, ServerKind

SMALL_BODY = 100
BIG_BODY = 64 * 1024
# beanstalkd's default max job size is 65535, one byte short of 64 KiB: both servers get -z.
BIG_FLAGS = ("-z", str(BIG_BODY))


@dataclass(frozen=True)
class Workload:
    """One cell of the matrix; ``id`` is what ``--workloads`` and the table use."""

    id: str
    kind: str
    conns: int
    depth: int
    body_size: int = SMALL_BODY
    binlog: bool = False
    flags: tuple[str, ...] = ()
    group: str = "100 B"
    # the same load without -b: the binlog's cost is reported as a ratio to it, same server
    baseline: str | None = None

    def spec(self, port: int, duration: float, workers: int) -> LoadSpec:
        return LoadSpec(
            kind=self.kind,
            port=port,
            conns=self.conns,
            depth=self.depth,
            body_size=self.body_size,
            tube=f"bench-{self.kind}",
            duration=duration,
            workers=workers,
            mixed_cap=max(1000, self.conns * self.depth),
            hard_timeout=duration + 30.0,
        )


def matrix(quick: bool) -> list[Workload]:
    """All workloads in run order; ``quick`` keeps c1-p1, c50-p1 and c50-p16 of each kind."""
    out: list[Workload] = []
    if quick:
        cells = [(1, 1), (50, 1), (50, 16)]
    else:
        cells = [(c, p) for c in (1, 50, 500) for p in (1, 16)]
    for kind in ("put", "reserve", "cycle", "mixed"):
        for conns, depth in cells:
            # mixed needs a producer and a consumer: its "1 connection" case has 2.
            c = 2 if kind == "mixed" and conns == 1 else conns
            out.append(Workload(f"{kind}-c{c}-p{depth}", kind, c, depth))
    for kind in ("put", "cycle"):
        out.append(
            Workload(
                f"{kind}-64k-c50-p1",
                kind,
                50,
                1,
                body_size=BIG_BODY,
                flags=BIG_FLAGS,
                group="64 KiB",
            )
        )
    for depth in (1, 16):
        out.append(
            Workload(
                f"put-binlog-c50-p{depth}",
                "put",
                50,
                depth,
                binlog=True,
                group="binlog",
                baseline=f"put-c50-p{depth}",
            )
        )
    out.append(
        Workload(
            "put-binlog-f0-c50-p1",
            "put",
            50,
            1,
            binlog=True,
            flags=("-f", "0"),
            group="binlog",
            baseline="put-c50-p1",
        )
    )
    return out


@dataclass
class Sample:
    """One run of one workload on one server."""

    workload: str
    server: str
    round: int
    result: LoadResult | None = None
    error: str | None = None
    startup_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workload": self.workload, "server": self.server}
        out["round"] = self.round
        out["startup_s"] = round(self.startup_s, 4)
        if self.result is not None:
            out.update(self.result.to_json())
        if self.error is not None:
            out["error"] = self.error
        out.update(self.extra)
        return out


def prefill(lg: LoadGen, server: Server, tube: str, jobs: int, body_size: int) -> int:
    """Put ``jobs`` jobs as fast as the server takes them (unmeasured); return how many."""
    spec = LoadSpec(
        kind="put",
        port=server.port,
        conns=10,
        depth=32,
        body_size=body_size,
        tube=tube,
        duration=None,
        count=jobs,
        hard_timeout=120.0,
    )
    result = lg.run(spec, server.pid)
    if result.errors:
        raise RuntimeError(f"prefill errors: {result.errors}")
    return result.jobs


def run_once(
    w: Workload,
    kind: ServerKind,
    lg: LoadGen,
    *,
    round_no: int,
    duration: float,
    workers: int,
    reserve_jobs: int,
) -> Sample:
    sample = Sample(w.id, kind.name, round_no)
    server = Server(kind, flags=w.flags, binlog=w.binlog)
    try:
        server.start()
        sample.startup_s = server.startup_s
        spec = w.spec(server.port, duration, workers)
        if w.kind == "reserve":
            sample.extra["prefilled"] = prefill(lg, server, spec.tube, reserve_jobs, w.body_size)
        sample.result = lg.run(spec, server.pid)
        if sample.result.errors:
            sample.error = f"protocol errors: {sample.result.errors}; {server.crash_report()}"
        elif not server.alive():
            sample.error = f"server exited during the run: {server.crash_report()}"
        else:
            with Client(server.port) as c:
                stats = c.stats()
            sample.extra["server_rss_kb"] = server.rss_kb()
            sample.extra["current_connections_after"] = int(stats.get("current-connections", 0))
    except Exception as e:
        sample.error = f"{type(e).__name__}: {e}; {server.crash_report()}"
    finally:
        server.stop()
    return sample

"""Command line and run order of the whole benchmark.

The order of sections is chosen so that the cheap, always-useful figures come first and the
whole default run stays inside its time budget on a 2-core machine; a section that would
start after the budget is spent is skipped and says so, rather than running long.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import (
    extensions,
    flat,
    hogs,
    http_cost,
    memory,
    report,
    schedules,
    startup,
    tls_cost,
    workloads,
)
from bench.loadgen import LoadGen
from bench.servers import ServerKind, beanq_kind, beanstalkd_kind, probe, raise_nofile

SECTIONS = ("startup", "throughput", "flat", "memory", "extensions", "http", "tls", "schedules")

# One core for the server under test, the others for the load generator: with more busy
# processes than cores, the scheduler's time slices (~3 ms) land in the latency figures and
# both servers lose throughput (2 cores, 50 connections without pipelining: 2 workers gave
# 120-145k ops/s and p99 2-4 ms for both servers, 1 worker 167-190k and 0.4-0.6 ms).
DEFAULT_WORKERS = max(1, (os.cpu_count() or 2) - 1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Compare beanq with beanstalkd: throughput, flat cost, memory, start-up.",
    )
    p.add_argument("--quick", action="store_true", help="smoke run, about 1-2 minutes")
    p.add_argument("--rounds", type=int, help="alternated A B rounds per workload (default 3)")
    p.add_argument(
        "--workloads",
        help="comma list of workload ids or prefixes (put, reserve-c50, mixed-c500-p16, ...) "
        "and/or sections (throughput, flat, memory, startup, http); default: everything",
    )
    p.add_argument("--duration", type=float, help="measured seconds per run (default 1.0)")
    p.add_argument("--only-beanq", action="store_true", help="do not start beanstalkd")
    p.add_argument(
        "--self-check",
        action="store_true",
        help="run beanstalkd on both sides (B labelled beanstalkd-B): ratios should be ~1",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results.json",
        help="JSON output (default bench/results.json); the chart goes beside it as .png",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help="load generator processes (default: one per core but the server's)",
    )
    p.add_argument("--reserve-jobs", type=int, help="jobs pre-filled for reserve (50,000)")
    p.add_argument("--memory-jobs", type=int, help="jobs for RSS per job (1,000,000)")
    p.add_argument("--memory-conns", type=int, help="idle connections for RSS (10,000)")
    p.add_argument("--startup-jobs", type=int, help="jobs in the start-up binlog (1,000,000)")
    p.add_argument("--flat-tubes", type=int, help="extra tubes for flat cost (10,000)")
    p.add_argument("--flat-blocked", type=int, help="blocked reservers for flat cost (1,000)")
    p.add_argument("--budget", type=float, help="seconds after which sections are skipped")
    args = p.parse_args(argv)
    quick = args.quick
    defaults: dict[str, Any] = {
        "rounds": 3,
        "duration": 0.4 if quick else 1.0,
        "reserve_jobs": 10_000 if quick else 50_000,
        "memory_jobs": 100_000 if quick else 1_000_000,
        "memory_conns": 1_000 if quick else 10_000,
        "startup_jobs": 100_000 if quick else 1_000_000,
        "flat_tubes": 1_000 if quick else 10_000,
        "flat_blocked": 100 if quick else 1_000,
        "budget": 150.0 if quick else 900.0,  # (every section: ~6 min idle, ~12 loaded)
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1 or args.duration <= 0 or args.workers < 1:
        p.error("--rounds, --duration and --workers must be positive")
    return args


def select_workloads(
    tokens: list[str] | None, matrix: list[workloads.Workload]
) -> tuple[list[workloads.Workload], set[str]]:
    """Which matrix workloads and which other sections the ``--workloads`` tokens name."""
    if not tokens:
        return matrix, set(SECTIONS)
    sections = {t for t in tokens if t in SECTIONS}
    chosen: list[workloads.Workload] = []
    for w in matrix:
        if "throughput" in sections or any(
            w.id == t or w.id.startswith(t + "-") for t in tokens if t not in SECTIONS
        ):
            chosen.append(w)
    # a binlog workload is reported against the same load without -b: run that one too
    ids = {w.id for w in chosen}
    needed = {w.baseline for w in chosen if w.baseline is not None and w.baseline not in ids}
    chosen = [w for w in matrix if w.id in ids or w.id in needed]
    if chosen:
        sections.add("throughput")
    unknown = [
        t
        for t in tokens
        if t not in SECTIONS and not any(w.id == t or w.id.startswith(t + "-") for w in matrix)
    ]
    if unknown:
        raise SystemExit(
            f"unknown workloads: {', '.join(unknown)}; known: {[w.id for w in matrix]}"
        )
    return chosen, sections


class Runner:
    """Holds the run's state: sides, budget, progress output and the growing results."""

    def __init__(self, args: argparse.Namespace, sides: list[ServerKind], lg: LoadGen) -> None:
        self.args = args
        self.sides = sides
        self.lg = lg
        self.t0 = time.monotonic()
        self.notes: list[str] = []

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def over_budget(self, what: str) -> bool:
        if self.elapsed() > self.args.budget:
            self.note(f"time budget of {self.args.budget:.0f}s spent: skipped {what}")
            return True
        return False

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.log(f"NOTE: {text}")

    def log(self, text: str) -> None:
        m, s = divmod(int(self.elapsed()), 60)
        print(f"[{m:2d}:{s:02d}] {text}", file=sys.stderr, flush=True)

    def alternate(self, fn: Callable[[ServerKind, int], None]) -> None:
        """A B A B ...: drift over time hits both sides alike."""
        for r in range(self.args.rounds):
            for kind in self.sides:
                fn(kind, r)


STARTUP_CASES = ("empty", "empty -b", "empty, both cores busy")


def run_startup_empty(run: Runner, results: dict[str, Any]) -> None:
    """Exec to first answer with nothing to replay: idle, with an empty binlog directory, and
    beside a spinning process per core (test suites that spawn a server connect ~0.1 s later,
    often on a busy CI runner)."""
    for case in STARTUP_CASES:
        times: dict[str, list[float]] = {k.name: [] for k in run.sides}

        def one(
            kind: ServerKind, _r: int, case: str = case, times: dict[str, list[float]] = times
        ) -> None:
            times[kind.name].append(startup.empty(kind, binlog=case == "empty -b"))

        with hogs.cpu_hogs() if "busy" in case else contextlib.nullcontext():
            for _ in range(2):  # six samples a side: start-up is cheap and noisy
                run.alternate(one)
        results["startup"][case] = times
        for name, ts in times.items():
            med = report.median(ts)
            if med is not None:
                run.log(f"start-up {case} {name}: median {med * 1e3:.1f} ms")


def run_throughput(run: Runner, chosen: list[workloads.Workload], results: dict[str, Any]) -> None:
    samples: list[workloads.Sample] = []
    total = len(chosen) * run.args.rounds * len(run.sides)
    done = 0
    for w in chosen:
        if run.over_budget(f"throughput from {w.id} on"):
            break
        for r in range(run.args.rounds):
            for kind in run.sides:
                s = workloads.run_once(
                    w,
                    kind,
                    run.lg,
                    round_no=r,
                    duration=run.args.duration,
                    workers=run.args.workers,
                    reserve_jobs=run.args.reserve_jobs,
                )
                samples.append(s)
                done += 1
                res = s.result
                msg = f"{done}/{total} {w.id} r{r} {kind.name}: "
                if res is not None:
                    msg += (
                        f"{res.ops_per_s:,.0f} ops/s p99 {res.p99_us / 1e3:.1f} ms"
                        f" server {res.server_cpu_pct:.0f}% loadgen {res.loadgen_cpu_pct:.0f}%"
                    )
                if s.error:
                    msg += f" ERROR {report.short_error(s.error)}"
                run.log(msg)
    names = [k.name for k in run.sides]
    results["throughput"] = {
        "samples": [s.to_json() for s in samples],
        "summary": report.summarize_throughput(chosen, samples, names),
    }


def run_flat(run: Runner, results: dict[str, Any]) -> None:
    runs: list[dict[str, Any]] = []

    def one(kind: ServerKind, r: int) -> None:
        if run.over_budget(f"flat cost round {r} {kind.name}"):
            return
        res = flat.run_once(
            kind,
            run.lg,
            round_no=r,
            duration=run.args.duration,
            workers=run.args.workers,
            tubes=run.args.flat_tubes,
            blocked=run.args.flat_blocked,
        )
        runs.append(res)
        phases = res["phases"]
        parts = [
            f"{ph}: put {v['put']['ops_per_s']:,.0f} reserve {v['reserve']['ops_per_s']:,.0f}"
            for ph, v in phases.items()
        ]
        run.log(
            f"flat r{r} {kind.name}: "
            + "; ".join(parts)
            + (f" ERROR {res['error']}" if "error" in res else "")
        )

    run.alternate(one)
    names = [k.name for k in run.sides]
    results["flat"] = {
        "tubes": run.args.flat_tubes,
        "blocked": run.args.flat_blocked,
        "runs": runs,
        "summary": report.summarize_flat(runs, names),
    }


def run_memory(run: Runner, results: dict[str, Any], nofile: int) -> None:
    mem: dict[str, Any] = {"jobs": [], "conns": []}
    results["memory"] = mem
    for kind in run.sides:
        if run.over_budget(f"memory per job for {kind.name}"):
            continue
        r = memory.per_job(kind, run.lg, run.args.memory_jobs)
        mem["jobs"].append(r)
        run.log(f"memory per job {kind.name}: {_brief(r)}")
    conns = run.args.memory_conns
    if nofile < conns + 200:
        conns = max(100, nofile - 200)
        run.note(f"RLIMIT_NOFILE is {nofile}: idle connections cut to {conns}")
    for kind in run.sides:
        if run.over_budget(f"memory per connection for {kind.name}"):
            continue
        r = memory.per_connection(kind, conns)
        mem["conns"].append(r)
        run.log(f"memory per connection {kind.name}: {_brief(r)}")


def run_extensions(run: Runner, results: dict[str, Any]) -> None:
    """beanq's beanq-* commands, on the beanq side only (beanstalkd has none)."""
    beanq = [k for k in run.sides if k.name == "beanq"]
    if not beanq or run.over_budget("the extensions"):
        return
    jobs = 100_000 if run.args.quick else 1_000_000
    res: dict[str, Any] = {}
    results["extensions"] = res
    res["flush_list_move"] = extensions.flush_list_move(beanq[0], run.lg, jobs, jobs // 10)
    run.log(f"extensions: {res['flush_list_move']}")
    if run.over_budget("reserve-batch"):
        return
    res["reserve_batch"] = extensions.reserve_batch(beanq[0], run.lg, 400_000, 3.0)
    run.log(f"extensions: {res['reserve_batch']}")


def _brief(r: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={report.short_error(v) if k == 'error' else v}" for k, v in r.items() if k != "server"
    )


def run_startup_binlog(run: Runner, results: dict[str, Any]) -> None:
    out: list[dict[str, Any]] = []
    results["startup"]["binlog"] = out
    for kind in run.sides:
        if run.over_budget(f"start-up with binlog for {kind.name}"):
            continue
        r = startup.with_binlog(kind, run.lg, run.args.startup_jobs)
        out.append(r)
        run.log(f"start-up with binlog {kind.name}: {_brief(r)}")


HTTP_RUN_SECONDS = 3.0  # at least, per put run: a few scrapes land in each
HTTP_ROUNDS = 4


def run_http(run: Runner, results: dict[str, Any]) -> None:
    """beanq with --http, a scrape a second and an open console's polling against beanq
    without --http, alternated
    (drift hits both alike); then one scrape's time at many tubes."""
    kind = beanq_kind()
    duration = max(HTTP_RUN_SECONDS, run.args.duration)
    runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
    # At least four rounds, in A B B A order: a 3 % target is within one round's noise here.
    for r in range(max(run.args.rounds, HTTP_ROUNDS)):
        if run.over_budget(f"http round {r}"):
            break
        for with_http in (False, True) if r % 2 == 0 else (True, False):
            res = http_cost.put_with_scrapes(
                kind, run.lg, with_http=with_http, duration=duration, workers=run.args.workers
            )
            runs["with" if with_http else "without"].append(res)
            side = "with --http, scraped, console open" if with_http else "without --http"
            run.log(
                f"http r{r} put c50 {side}: {res.get('ops_per_s', 0):,.0f} ops/s"
                + (f" ERROR {res['error']}" if "error" in res else "")
            )
    out: dict[str, Any] = {"put_c50": runs}
    out.update(report.run_ratios(runs["without"], runs["with"]))
    if not run.over_budget("the /metrics scrape at many tubes"):
        many = http_cost.scrape_at_many_tubes(kind, run.args.flat_tubes)
        out["scrape_many_tubes"] = many
        run.log(
            f"http /metrics at {many['tubes']} tubes: "
            + (f"median {many['median_s'] * 1e3:.1f} ms" if "median_s" in many else "")
            + (f" ERROR {many['error']}" if "error" in many else "")
        )
    results["http"] = out


TLS_RUN_SECONDS = 3.0  # at least, per put run


def run_tls(run: Runner, results: dict[str, Any]) -> None:
    """Put at 50 connections over a tls:// listener and over a plaintext one beside it on
    the same beanq, alternated; then full TLS handshakes a second (bench/tls_cost.py)."""
    if run.over_budget("tls"):
        return
    duration = max(TLS_RUN_SECONDS, run.args.duration)
    res = tls_cost.tls_cost(beanq_kind(), run.args.rounds, duration)
    run.log(f"tls: {_brief(res)}")
    results["tls"] = res


def _version(argv: tuple[str, ...]) -> str:
    try:
        done = subprocess.run(
            [*argv, "-v"], capture_output=True, text=True, timeout=20, check=False
        )
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "unknown"


NOISY_OTHERS_PCT = 30.0


def _note_noise(run: Runner, results: dict[str, Any]) -> None:
    """Say so when other processes loaded the machine: the figures are then depressed."""
    samples = results.get("throughput", {}).get("samples", [])
    med = report.median(s["others_pct"] for s in samples if "others_pct" in s)
    if med is not None and med > NOISY_OTHERS_PCT:
        run.note(
            f"other processes used {med:.0f}% of a core (median over the throughput runs):"
            " absolute figures are depressed and noisy; rerun on a quiet machine before"
            " drawing conclusions from single ratios"
        )


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through every finally: servers and workers stopped


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    nofile = raise_nofile()
    matrix = workloads.matrix(args.quick)
    chosen, sections = select_workloads(
        [t.strip() for t in args.workloads.split(",") if t.strip()] if args.workloads else None,
        matrix,
    )
    notes: list[str] = []
    a = beanstalkd_kind()
    b = beanq_kind()
    if args.self_check:
        if a is None:
            raise SystemExit("--self-check needs beanstalkd")
        b = ServerKind("beanstalkd-B", a.argv)
    if args.only_beanq:
        a = None
    elif a is None:
        notes.append("beanstalkd is not installed: measuring beanq alone, no ratios")
    why = probe(b)
    sides = [k for k in (a, b) if k is not None]
    if why is not None:
        notes.append(f"{b.name} did not answer, measuring without it: {why}")
        sides = [k for k in sides if k is not b]
    if not sides:
        print("\n".join(notes), file=sys.stderr)
        return 1
    results: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "sides": [k.name for k in sides],
            "commands": {k.name: " ".join(k.argv) for k in sides},
            "versions": {k.name: _version(k.argv) for k in sides},
            "python": sys.version.split()[0],
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.release()}",
            "loadavg_start": os.getloadavg(),
            "rlimit_nofile": nofile,
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        },
        "startup": {},
    }
    with LoadGen(args.workers) as lg:
        run = Runner(args, sides, lg)
        for text in notes:
            run.note(text)
        try:
            if "startup" in sections:
                run_startup_empty(run, results)
            if "throughput" in sections:
                run_throughput(run, chosen, results)
            if "flat" in sections:
                run_flat(run, results)
            if "memory" in sections:
                run_memory(run, results, nofile)
            if "extensions" in sections:
                run_extensions(run, results)
            if "startup" in sections:
                run_startup_binlog(run, results)
            if "http" in sections:
                run_http(run, results)
            if "tls" in sections:
                run_tls(run, results)
            if "schedules" in sections and not run.over_budget("the schedules"):
                results["schedules"] = schedules.run(
                    beanq_kind(),
                    run.lg,
                    schedules=1_000 if run.args.quick else 10_000,
                    rounds=run.args.rounds,
                    duration=max(HTTP_RUN_SECONDS, run.args.duration),
                    workers=run.args.workers,
                    log=run.log,
                )
        except KeyboardInterrupt:
            run.note("interrupted: the figures below are partial")
        _note_noise(run, results)
        results["meta"]["elapsed_s"] = round(run.elapsed(), 1)
        results["meta"]["loadavg_end"] = os.getloadavg()
        results["notes"] = run.notes
    names = [k.name for k in sides]
    print(render(results, names))
    report.write_json(args.out, results)
    chart = args.out.with_suffix(".png")
    why_not = report.write_chart(chart, results)
    print(f"\nwrote {args.out}" + (f" and {chart}" if why_not is None else f" ({why_not})"))
    return 0


def render(results: dict[str, Any], names: list[str]) -> str:
    out: list[str] = []
    meta = results["meta"]
    out.append(
        f"\nbeanq benchmark, {meta['started']}, {meta['machine']}, {meta.get('elapsed_s')} s;"
        f" {meta['settings']['rounds']} rounds x {meta['settings']['duration']} s, medians"
    )
    if "throughput" in results:
        out.append("\nThroughput (median ops/s; p50/p99 latency and CPU as A|B; cpu% of one core)")
        out.append(report.throughput_table(results["throughput"]["summary"], names))
        cost = report.binlog_cost_table(results["throughput"]["summary"], names)
        if cost:
            out.append(
                "\nBinlog cost (ops/s with -b / the same load without -b, same server, same run)"
            )
            out.append(cost)
        errors = report.throughput_errors(results["throughput"]["summary"])
        if errors:
            out.append("\nErrors (first and last line; full text in the JSON):")
            out.append(errors)
    if "flat" in results:
        f = results["flat"]
        out.append("\nFlat cost (put then reserve, 50 connections x 16 in flight, on one tube)")
        out.append(report.flat_table(f["summary"], f["tubes"], f["blocked"]))
    if "memory" in results:
        out.append("\nMemory (VmRSS delta / N)")
        out.append(report.memory_table(results["memory"]))
    if results.get("extensions"):
        out.append(extensions.render(results["extensions"]))
    if results.get("startup"):
        out.append("\nStart-up (exec to first answered stats)")
        out.append(report.startup_table(results["startup"]))
    if "http" in results:
        out.append("\nHTTP side (beanq alone)")
        out.append(http_table(results["http"]))
    if "tls" in results:
        out.append("\ntls:// listeners (beanq alone)")
        out.append(tls_cost.render(results["tls"]))
    if results.get("schedules"):
        out.append(schedules.render(results["schedules"]))
    if results.get("notes"):
        out.append("\nNotes:")
        out.extend(f"- {n}" for n in results["notes"])
    return "\n".join(out)


def http_table(h: dict[str, Any]) -> str:
    rows = []
    runs = h.get("put_c50", {})
    a = report.median(x["ops_per_s"] for x in runs.get("without", []) if "ops_per_s" in x)
    b = report.median(x["ops_per_s"] for x in runs.get("with", []) if "ops_per_s" in x)
    if a and b:
        rows.append(
            f"put c50 with --http, a /metrics scrape a second and an open console:"
            f" {b:,.0f} ops/s,"
            f" without --http {a:,.0f}: ratio {b / a:.3f} (target >= 0.97)"
            + (f"; per server CPU second {h['ratio_per_cpu_s']}" if "ratio_per_cpu_s" in h else "")
        )
    many = h.get("scrape_many_tubes")
    if many and "median_s" in many:
        rows.append(
            f"/metrics scrape at {many['tubes']:,} tubes: median {many['median_s'] * 1e3:.1f} ms"
            " (target < 100 ms)"
        )
    elif many:
        rows.append(f"/metrics scrape at many tubes: {many.get('error')}")
    if many and "tubes_page_median_s" in many:
        rows.append(
            f"console tubes page (50 of {many['tubes']:,}, sorted by ready): median"
            f" {many['tubes_page_median_s'] * 1e3:.1f} ms"
        )
    return "\n".join(rows) or "(no figures)"

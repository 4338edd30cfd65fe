"""Turning samples into the three outputs: a text table, results.json and a ratio chart.

Medians, not means: on a shared 2-core VM one disturbed run would drag a mean far off,
while the median of three alternated runs stays put. Ratios are always beanq / beanstalkd,
so above 1 means beanq did more ops/s (or, for memory and start-up, used more).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.workloads import Sample, Workload


def median(values: Iterable[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def ratio(b: float | None, a: float | None) -> float | None:
    if a is None or b is None or a == 0:
        return None
    return b / a


def run_ratios(base: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, float]:
    """``ratio`` of the median ops/s of ``other``'s runs to ``base``'s, and
    ``ratio_per_cpu_s`` of their ops per server CPU second (LoadResult.rates), where known."""
    out: dict[str, float] = {}
    for key, name in (("ops_per_s", "ratio"), ("ops_per_cpu_s", "ratio_per_cpu_s")):
        a = median(x[key] for x in base if key in x)
        b = median(x[key] for x in other if key in x)
        if a and b:
            out[name] = round(b / a, 3)
    return out


def geomean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))


def short_error(text: str, width: int = 160) -> str:
    """First and last line of an error (the last line of a traceback names the cause)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    out = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return out if len(out) <= width else out[: width - 3] + "..."


def _fmt(value: float | None, spec: str = ",.0f", empty: str = "-") -> str:
    return empty if value is None else format(value, spec)


# --------------------------------------------------------------------------- throughput


def summarize_throughput(
    workloads: list[Workload], samples: list[Sample], sides: list[str]
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for w in workloads:
        row: dict[str, Any] = {"workload": w.id, "group": w.group, "sides": {}}
        for side in sides:
            mine = [s for s in samples if s.workload == w.id and s.server == side]
            ok = [s.result for s in mine if s.result is not None and s.result.ops > 0]
            ops = [r.ops_per_s for r in ok]
            med = median(ops)
            row["sides"][side] = {
                "runs": len(mine),
                "ops_per_s": med,
                "jobs_per_s": median(r.jobs_per_s for r in ok),
                "p50_us": median(r.p50_us for r in ok),
                "p99_us": median(r.p99_us for r in ok),
                "server_cpu_pct": median(r.server_cpu_pct for r in ok),
                "loadgen_cpu_pct": median(r.loadgen_cpu_pct for r in ok),
                "machine_busy_pct": median(r.machine_busy_pct for r in ok),
                "others_pct": median(r.others_pct for r in ok),
                "spread": (max(ops) - min(ops)) / med if med else None,
                "errors": [s.error for s in mine if s.error],
            }
        if len(sides) == 2:
            row["ratio"] = ratio(
                row["sides"][sides[1]]["ops_per_s"], row["sides"][sides[0]]["ops_per_s"]
            )
        if w.baseline is not None:
            row["baseline"] = w.baseline
        rows.append(row)
    by_id = {row["workload"]: row for row in rows}
    for row in rows:
        base = by_id.get(row.get("baseline", ""))
        if base is not None:
            for side in sides:
                mine, theirs = row["sides"][side], base["sides"][side]
                mine["vs_baseline"] = ratio(mine["ops_per_s"], theirs["ops_per_s"])
                mine["vs_baseline_per_cpu"] = ratio(_per_cpu(mine), _per_cpu(theirs))
    return rows


def _per_cpu(side: dict[str, Any]) -> float | None:
    """ops per second of the server's own CPU time: steadier than ops/s when other work
    takes the server's core for part of the run (both runs of a ratio are hit alike)."""
    ops, cpu = side.get("ops_per_s"), side.get("server_cpu_pct")
    return None if ops is None or not cpu else ops / (cpu / 100)


def binlog_cost_table(rows: list[dict[str, Any]], sides: list[str]) -> str:
    """Each binlog workload against the same load without -b, per server: what -b costs, as
    ops/s and as ops per second of the server's CPU time."""
    mine = [row for row in rows if "baseline" in row]
    if not mine:
        return ""
    head = f"{'workload':<22} {'vs':<14}" + "".join(
        f" {side + ' with/without':>26} {'per cpu':>8}" for side in sides
    )
    lines = [head, "-" * len(head)]
    for row in mine:
        line = f"{row['workload']:<22} {row['baseline']:<14}"
        for side in sides:
            data = row["sides"][side]
            line += f" {_fmt(data.get('vs_baseline'), '.2f'):>26}"
            line += f" {_fmt(data.get('vs_baseline_per_cpu'), '.2f'):>8}"
        lines.append(line)
    return "\n".join(lines)


def _loadgen_bound(side: dict[str, Any]) -> bool:
    """The generator, not the server, may have set the pace (bsload's rule of thumb)."""
    gen, srv = side.get("loadgen_cpu_pct"), side.get("server_cpu_pct")
    return gen is not None and srv is not None and gen >= 90 and srv < 90


def throughput_errors(rows: list[dict[str, Any]]) -> str:
    lines = []
    for row in rows:
        for side, data in row["sides"].items():
            for err in dict.fromkeys(data["errors"]):
                lines.append(f"{row['workload']} {side}: {short_error(err)}")
    return "\n".join(lines)


def throughput_table(rows: list[dict[str, Any]], sides: list[str]) -> str:
    two = len(sides) == 2
    a, b = sides[0], sides[-1]
    head = f"{'workload':<22} {a + ' ops/s':>18}"
    if two:
        head += f" {b + ' ops/s':>13} {'ratio':>6}"
    head += f" {'p50 ms':>13} {'p99 ms':>15} {'server cpu%':>12} {'loadgen cpu%':>13}"
    head += f" {'others%':>8} {'spread':>10}"
    lines = [head, "-" * len(head)]

    def pair(key: str, spec: str, scale: float = 1.0) -> str:
        vals = []
        for side in sides:
            v = row["sides"][side][key]
            vals.append(_fmt(None if v is None else v * scale, spec))
        return "|".join(vals)

    for row in rows:
        sa = row["sides"][a]
        line = f"{row['workload']:<22} {_fmt(sa['ops_per_s']):>18}"
        if two:
            line += f" {_fmt(row['sides'][b]['ops_per_s']):>13} {_fmt(row.get('ratio'), '.2f'):>6}"
        line += (
            f" {pair('p50_us', '.2f', 1e-3):>13} {pair('p99_us', '.1f', 1e-3):>15}"
            f" {pair('server_cpu_pct', '.0f'):>12} {pair('loadgen_cpu_pct', '.0f'):>13}"
            f" {pair('others_pct', '.0f'):>8}"
            f" {pair('spread', '.0%'):>10}"
        )
        if any(row["sides"][s]["errors"] for s in sides):
            line += "  !errors"
        bound = [s for s in sides if _loadgen_bound(row["sides"][s])]
        if bound:
            line += f"  ~loadgen({','.join(bound)})"
        lines.append(line)
    if two:
        g = geomean(row.get("ratio") for row in rows)
        lines.append(f"{'geometric mean ratio':<22} {'':>18} {'':>13} {_fmt(g, '.2f'):>6}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- flat cost


def summarize_flat(runs: list[dict[str, Any]], sides: list[str]) -> dict[str, Any]:
    from bench.flat import PHASES

    out: dict[str, Any] = {}
    for side in sides:
        mine = [r for r in runs if r["server"] == side]
        per_phase: dict[str, Any] = {}
        for phase in PHASES:
            cell: dict[str, Any] = {}
            for op in ("put", "reserve"):
                vals = [r["phases"][phase][op]["ops_per_s"] for r in mine if phase in r["phases"]]
                cell[op] = median(vals)
            per_phase[phase] = cell
        base = per_phase[PHASES[0]]
        for phase in PHASES[1:]:
            for op in ("put", "reserve"):
                per_phase[phase][f"{op}_vs_1_tube"] = ratio(per_phase[phase][op], base[op])
        out[side] = {"phases": per_phase, "errors": [r["error"] for r in mine if "error" in r]}
    return out


def flat_table(summary: dict[str, Any], tubes: int, blocked: int) -> str:
    from bench.flat import PHASES

    names = {
        PHASES[0]: "1 tube",
        PHASES[1]: f"{tubes:,} tubes",
        PHASES[2]: f"{tubes:,} tubes + {blocked:,} blocked",
    }
    head = (
        f"{'server':<12} {'phase':<30} {'put ops/s':>10} {'vs 1 tube':>9}"
        f" {'reserve ops/s':>14} {'vs 1 tube':>9}"
    )
    lines = [head, "-" * len(head)]
    for side, data in summary.items():
        for phase in PHASES:
            cell = data["phases"][phase]
            lines.append(
                f"{side:<12} {names[phase]:<30} {_fmt(cell['put']):>10}"
                f" {_fmt(cell.get('put_vs_1_tube'), '.2f'):>9} {_fmt(cell['reserve']):>14}"
                f" {_fmt(cell.get('reserve_vs_1_tube'), '.2f'):>9}"
            )
        for err in dict.fromkeys(data["errors"]):
            lines.append(f"{side:<12} error: {short_error(err)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- memory, start-up


def memory_table(mem: dict[str, Any]) -> str:
    lines = [
        f"{'server':<12} {'measure':<24} {'N':>10} {'RSS before kB':>14}"
        f" {'RSS after kB':>13} {'bytes each':>11}"
    ]
    lines.append("-" * len(lines[0]))
    for r in mem.get("jobs", []):
        lines.append(
            f"{r['server']:<12} {'per ready job (100 B)':<24} {_fmt(r.get('jobs')):>10}"
            f" {_fmt(r.get('rss_before_kb')):>14} {_fmt(r.get('rss_after_kb')):>13}"
            f" {_fmt(r.get('bytes_per_job')):>11}"
            + (f"  error: {short_error(r['error'])}" if "error" in r else "")
        )
    for r in mem.get("conns", []):
        lines.append(
            f"{r['server']:<12} {'per idle connection':<24} {_fmt(r.get('conns')):>10}"
            f" {_fmt(r.get('rss_before_kb')):>14} {_fmt(r.get('rss_after_kb')):>13}"
            f" {_fmt(r.get('bytes_per_conn')):>11}"
            + (f"  error: {short_error(r['error'])}" if "error" in r else "")
        )
    return "\n".join(lines)


def startup_table(st: dict[str, Any]) -> str:
    lines = [f"{'server':<12} {'case':<28} {'start-up ms':>12} {'notes'}"]
    lines.append("-" * 70)
    for case, by_side in st.items():
        if case == "binlog":
            continue
        for side, times in by_side.items():
            med = median(times)
            lines.append(
                f"{side:<12} {case:<28} {_fmt(None if med is None else med * 1e3, '.1f'):>12}"
                f" median of {len(times)}"
            )
    for r in st.get("binlog", []):
        case = f"binlog, {_fmt(r.get('jobs_after_restart'))} jobs"
        ms = r.get("startup_s")
        note = f"binlog {_fmt(r.get('binlog_bytes', 0) / 1e6, '.0f')} MB, fill {r.get('fill_s')} s"
        if "rss_after_restart_kb" in r:
            note += f", RSS after {r['rss_after_restart_kb'] / 1024:,.0f} MB"
        if "error" in r:
            note += f"  error: {short_error(r['error'])}"
        ms_text = _fmt(None if ms is None else ms * 1e3, ".1f")
        lines.append(f"{r['server']:<12} {case:<28} {ms_text:>12} {note}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- files


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")


_FINE_TICKS = (0.5, 0.67, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2)
_COARSE_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)


def _ratio_bars(ax: Any, labels: list[str], vals: list[float], higher_is_better: bool) -> None:
    """Bars grow from 1.0 on a log axis, so 0.5 and 2.0 look equally far from parity."""
    from matplotlib.ticker import FuncFormatter

    good = [(v >= 1) == higher_is_better for v in vals]
    ax.barh(
        labels,
        [v - 1 for v in vals],
        left=1.0,
        color=["tab:green" if g else "tab:red" for g in good],
    )
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    span = max(abs(math.log10(v)) for v in vals) * 1.25 + 0.05
    ax.set_xlim(10**-span, 10**span)
    scale = _FINE_TICKS if span <= 0.35 else _COARSE_TICKS
    ticks = [t for t in scale if 10**-span <= t <= 10**span]
    ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _pos: ""))
    ax.grid(axis="x", color="0.9", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(axis="y", labelsize=8)
    for y, v in enumerate(vals):
        ax.text(
            v,
            y,
            f" {v:.2f} " if v >= 1 else f"{v:.2f} ",
            va="center",
            ha="left" if v >= 1 else "right",
            fontsize=7,
        )


def _flat_ratios(summary: dict[str, Any], a: str, b: str) -> list[tuple[str, float]]:
    from bench.flat import PHASES

    if a not in summary or b not in summary:
        return []
    out = []
    for phase in PHASES:
        for op in ("put", "reserve"):
            rr = ratio(summary[b]["phases"][phase].get(op), summary[a]["phases"][phase].get(op))
            if rr:
                out.append((f"{op}, {phase}", rr))
    return out


def write_chart(path: Path, results: dict[str, Any]) -> str | None:
    """A PNG of beanq/beanstalkd ratios; returns why not if it could not be drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    sides = results.get("meta", {}).get("sides", [])
    if len(sides) != 2:
        return "one server only: no ratios to chart"
    A, B = sides
    rows = [r for r in results.get("throughput", {}).get("summary", []) if r.get("ratio")]
    others: list[tuple[str, float]] = []
    for label, key, field in (
        ("memory per job", "jobs", "bytes_per_job"),
        ("memory per connection", "conns", "bytes_per_conn"),
    ):
        by = {r["server"]: r.get(field) for r in results.get("memory", {}).get(key, [])}
        rr = ratio(by.get(B), by.get(A))
        if rr:
            others.append((label, rr))
    empty = results.get("startup", {}).get("empty", {})
    rr = ratio(median(empty.get(B, [])), median(empty.get(A, [])))
    if rr:
        others.append(("start-up, empty", rr))
    by_s = {r["server"]: r.get("startup_s") for r in results.get("startup", {}).get("binlog", [])}
    rr = ratio(by_s.get(B), by_s.get(A))
    if rr:
        others.append(("start-up, binlog", rr))
    panels = []
    if rows:
        panels.append(
            (
                f"throughput: {B} / {A}, median ops/s (higher is better)",
                [r["workload"] for r in rows][::-1],
                [r["ratio"] for r in rows][::-1],
                True,
            )
        )
    flat_rows = _flat_ratios(results.get("flat", {}).get("summary", {}), A, B)
    if flat_rows:
        panels.append(
            (
                f"flat cost: {B} / {A}, median ops/s on one tube (higher is better)",
                [f[0] for f in flat_rows][::-1],
                [f[1] for f in flat_rows][::-1],
                True,
            )
        )
    if others:
        panels.append(
            (
                f"memory and start-up: {B} / {A} (lower is better)",
                [o[0] for o in others][::-1],
                [o[1] for o in others][::-1],
                False,
            )
        )
    if not panels:
        return "no ratios to chart"
    heights = [len(p[1]) for p in panels]
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(9, 0.28 * sum(heights) + 1.25 * len(panels)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for ax, (title, labels, vals, higher) in zip(axes[:, 0], panels, strict=True):
        _ratio_bars(ax, labels, vals, higher_is_better=higher)
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None

"""``/metrics``: a prometheus-client collector that reads the engine through ``EngineView``.

Names: every numeric field of ``stats`` and ``stats-tube`` comes under the name
davidtannock/beanstalkd_exporter gives it (``beanstalkd_cmd_put_total``,
``beanstalkd_current_jobs_ready_count``, ``beanstalkd_tube_current_jobs_ready_count{tube}``,
...), as gauges like the exporter's, so dashboards built on it work unchanged; fields the
exporter lacks follow the same pattern (``beanstalkd_uptime_seconds``, ...). What beanq adds
beyond ``stats`` is under ``beanq_``: per-tube counters, the age of each tube's oldest ready
job, the reserve-to-delete histogram and the binlog's writes and fsyncs.

Cost: a scrape reads counters, never scans jobs. With more tubes than ``max_tubes``, the
busiest ``max_tubes`` (by jobs held, then jobs put) get their own series and the rest are
summed under ``tube="_other"`` (the oldest-ready age takes their maximum), so a scrape at
10,000 tubes formats a bounded number of samples.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from operator import attrgetter

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from beanq.binlog import FSYNC_BOUNDS
from beanq.dispatch import COUNTED_COMMANDS
from beanq.http.view import EngineView
from beanq.tubes import RESERVE_DELETE_BOUNDS, Engine, Tube

OTHER = "_other"

# (stat, name, help) of stats fields, under the exporter's names where it has them
_SERVER_COUNTS = (
    ("current-jobs-urgent", "current_jobs_urgent_count", "Ready jobs with priority < 1024."),
    ("current-jobs-ready", "current_jobs_ready_count", "Jobs in the ready queue."),
    ("current-jobs-reserved", "current_jobs_reserved_count", "Jobs reserved by all clients."),
    ("current-jobs-delayed", "current_jobs_delayed_count", "Delayed jobs."),
    ("current-jobs-buried", "current_jobs_buried_count", "Buried jobs."),
    ("job-timeouts", "job_timeouts_count", "Times a job has timed out."),
    ("total-jobs", "total_jobs_count", "Jobs created since the server started."),
    ("max-job-size", "max_job_size_bytes", "The largest job body accepted."),
    ("current-tubes", "current_tubes_count", "Tubes that exist."),
    ("current-connections", "current_connections_count", "Open connections."),
    ("current-producers", "current_producers_count", "Open connections that have put."),
    ("current-workers", "current_workers_count", "Open connections that have reserved."),
    ("current-waiting", "current_waiting_count", "Connections waiting in reserve."),
    ("total-connections", "total_connections_count", "Connections since the server started."),
    ("pid", "pid", "The server's process id."),
    ("uptime", "uptime_seconds", "Seconds since the server started."),
    ("binlog-oldest-index", "binlog_oldest_index", "Index of the oldest binlog segment."),
    ("binlog-current-index", "binlog_current_index", "Index of the binlog segment written."),
    ("binlog-records-migrated", "binlog_records_migrated_total", "Records moved forward."),
    ("binlog-records-written", "binlog_records_written_total", "Records written."),
    ("binlog-max-size", "binlog_max_size_bytes", "Size of a binlog segment."),
    ("draining", "draining", "1 in drain mode (puts refused), else 0."),
)

# (stats-tube field, exporter name, help), in _tube_row's order
_TUBE_GAUGES = (
    ("current-jobs-urgent", "current_jobs_urgent_count", "Ready jobs with priority < 1024."),
    ("current-jobs-ready", "current_jobs_ready_count", "Jobs in the ready queue."),
    ("current-jobs-reserved", "current_jobs_reserved_count", "Jobs reserved."),
    ("current-jobs-delayed", "current_jobs_delayed_count", "Delayed jobs."),
    ("current-jobs-buried", "current_jobs_buried_count", "Buried jobs."),
    ("total-jobs", "total_jobs_count", "Jobs created in this tube."),
    ("current-using", "current_using_count", "Connections using this tube."),
    ("current-watching", "current_watching_count", "Connections watching this tube."),
    ("current-waiting", "current_waiting_count", "Connections waiting in reserve on it."),
    ("cmd-delete", "cmd_delete_total", "Deletes of jobs in this tube."),
    ("cmd-pause-tube", "cmd_pause_tube_total", "pause-tube commands for this tube."),
    ("pause", "pause_seconds_total", "Seconds the tube is paused for (0: not paused)."),
    ("pause-time-left", "pause_time_left_seconds_total", "Seconds until the tube resumes."),
)

# beanq's per-tube counters beyond stats-tube (in _tube_row's order)
_TUBE_COUNTERS = (
    ("puts", "Jobs put in this tube."),
    ("reserves", "Reserves of jobs of this tube."),
    ("deletes", "Deletes of jobs of this tube."),
    ("releases", "Releases of jobs of this tube."),
    ("buries", "Buries of jobs of this tube."),
    ("kicks", "Kicks of jobs of this tube."),
    ("timeouts", "TTR expiries of jobs of this tube."),
)


def _tube_row(tube: Tube, now: float) -> list[float]:
    """The values of _TUBE_GAUGES, then of _TUBE_COUNTERS, then paused, then the age."""
    paused_until = tube.paused_until
    oldest = Engine.oldest_ready(tube)
    return [
        tube.urgent_count,
        tube.ready_count,
        tube.reserved_count,
        tube.delayed_count,
        len(tube.buried),
        tube.total_jobs,
        tube.using,
        tube.watching,
        len(tube.waiting),
        tube.delete_count,
        tube.pause_count,
        0 if paused_until is None else tube.pause_seconds,
        0 if paused_until is None else max(0, int(paused_until - now)),
        tube.total_jobs,
        tube.reserve_count,
        tube.delete_count,
        tube.release_count,
        tube.bury_count,
        tube.kick_count,
        tube.timeout_count,
        0 if paused_until is None else 1,
        0.0 if oldest is None else max(0.0, now - oldest.created),
    ]


# The plain counters of a tube, read in one C call per tube (for the tubes summed as _other)
_PLAIN = attrgetter(
    "urgent_count",
    "ready_count",
    "reserved_count",
    "delayed_count",
    "total_jobs",
    "using",
    "watching",
    "delete_count",
    "pause_count",
    "reserve_count",
    "release_count",
    "bury_count",
    "kick_count",
    "timeout_count",
)


def _sum_rows(tubes: list[Tube], now: float) -> list[float]:
    """What _tube_row gives, added up over the tubes, but for the oldest-ready age: their
    maximum. Column-wise, so that most of the work runs in C (10,000 tubes: a few ms)."""
    (
        urgent,
        ready,
        reserved,
        delayed,
        total,
        using,
        watching,
        deletes,
        pauses,
        reserves,
        releases,
        buries,
        kicks,
        timeouts,
    ) = (sum(column) for column in zip(*map(_PLAIN, tubes), strict=True))
    paused = [t for t in tubes if t.paused_until is not None]
    ages = [_tube_row(t, now)[-1] for t in tubes if t.ready_count]
    return [
        urgent,
        ready,
        reserved,
        delayed,
        sum(len(t.buried) for t in tubes),
        total,
        using,
        watching,
        sum(len(t.waiting) for t in tubes),
        deletes,
        pauses,
        sum(t.pause_seconds for t in paused),
        sum(_tube_row(t, now)[12] for t in paused),
        total,
        reserves,
        deletes,
        releases,
        buries,
        kicks,
        timeouts,
        len(paused),
        max(ages, default=0.0),
    ]


def _weight(tube: Tube) -> tuple[int, int]:
    held = tube.ready_count + tube.reserved_count + tube.delayed_count + len(tube.buried)
    return held, tube.total_jobs


class EngineCollector(Collector):
    def __init__(self, view: EngineView, max_tubes: int) -> None:
        self.view = view
        self.max_tubes = max_tubes

    def describe(self) -> list[Metric]:
        return []  # (registering would otherwise collect once to learn the names)

    def server_values(self) -> dict[str, float]:
        """Every numeric ``stats`` field, by its ``stats`` name."""
        view = self.view
        e = view.engine
        b = view.binlog_stats()
        utime, stime = view.host.rusage()
        values: dict[str, float] = {
            "current-jobs-urgent": e.urgent_count,
            "current-jobs-ready": e.ready_count,
            "current-jobs-reserved": e.reserved_count,
            "current-jobs-delayed": e.delayed_count,
            "current-jobs-buried": e.buried_count,
            "job-timeouts": e.timeouts,
            "total-jobs": e.total_jobs,
            "max-job-size": view.max_job_size,
            "current-tubes": len(e.tubes),
            "current-connections": e.connections,
            "current-producers": e.producers,
            "current-workers": e.workers,
            "current-waiting": e.waiting_count,
            "total-connections": e.total_connections,
            "pid": view.host.pid,
            "uptime": view.uptime(),
            "binlog-oldest-index": b.oldest_index,
            "binlog-current-index": b.current_index,
            "binlog-records-migrated": b.records_migrated,
            "binlog-records-written": b.records_written,
            "binlog-max-size": b.max_size,
            "draining": 1 if view.draining else 0,
            "rusage-utime": utime,
            "rusage-stime": stime,
        }
        for name in COUNTED_COMMANDS:
            values[f"cmd-{name}"] = e.commands.get(name, 0)
        return values

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("beanstalkd_up", "1: the server answers.")
        up.add_metric([], 1)
        yield up
        values = self.server_values()
        for name in COUNTED_COMMANDS:
            family = GaugeMetricFamily(
                f"beanstalkd_cmd_{name.replace('-', '_')}_total", f"{name} commands."
            )
            family.add_metric([], values[f"cmd-{name}"])
            yield family
        for stat, name, text in _SERVER_COUNTS:
            family = GaugeMetricFamily(f"beanstalkd_{name}", text)
            family.add_metric([], values[stat])
            yield family
        for stat in ("rusage-utime", "rusage-stime"):
            cpu = CounterMetricFamily(
                f"beanstalkd_{stat.replace('-', '_')}_seconds", f"CPU seconds ({stat})."
            )
            cpu.add_metric([], values[stat])
            yield cpu
        yield from self._tubes()
        yield from self._histograms()
        yield from self._schedules()
        yield from self._auth()

    def _auth(self) -> Iterator[Metric]:
        """--auth's audit counts (``beanq.auth.Audit``); nothing without --auth."""
        audit = self.view.auth
        if audit is None:
            return
        success = CounterMetricFamily(
            "beanq_auth_success",
            "Connections authenticated, by method (token, certificate) and token name.",
            labels=["method", "token"],
        )
        for (method, name), count in sorted(audit.successes().items()):
            success.add_metric([method, name], count)
        yield success
        failures = CounterMetricFamily(
            "beanq_auth_failures",
            "Failed authentications, by method and reason (wrong_token, throttled: tried "
            "while the address had to wait; unknown: a certificate no token names).",
            labels=["method", "reason"],
        )
        for (method, reason), count in sorted(audit.failures().items()):
            failures.add_metric([method, reason], count)
        yield failures
        refused = CounterMetricFamily(
            "beanq_auth_refused_commands",
            "Commands answered UNAUTHORIZED, by reason (unauthenticated, rights) and command.",
            labels=["reason", "command"],
        )
        for (reason, command), count in sorted(audit.refusals().items()):
            refused.add_metric([reason, command], count)
        yield refused

    def _schedules(self) -> Iterator[Metric]:
        """Per schedule (by name, the first ``max_tubes``; the rest summed under _other):
        fires, overlap skips, missed times, paused, next fire. Nothing without schedules."""
        scheds = self.view.schedules()
        if not scheds:
            return
        counters = [
            ("fired", "Jobs put by the schedule."),
            ("skipped", "Fire times skipped: the schedule's last job was alive (overlap)."),
            ("missed", "Fire times missed (server down or late) and not caught up."),
        ]
        families = [
            CounterMetricFamily(f"beanq_schedule_{name}", text, labels=["schedule"])
            for name, text in counters
        ]
        paused = GaugeMetricFamily("beanq_schedule_paused", "1: paused.", labels=["schedule"])
        next_fire = GaugeMetricFamily(
            "beanq_schedule_next_fire_timestamp_seconds",
            "Unix time of the next fire (0 while paused).",
            labels=["schedule"],
        )
        for sched in scheds[: self.max_tubes]:
            label = [sched.name.decode(errors="replace")]
            for family, (name, _) in zip(families, counters, strict=True):
                family.add_metric(label, getattr(sched, name))
            paused.add_metric(label, 1 if sched.paused else 0)
            next_fire.add_metric(label, sched.next_fire or 0)
        rest = scheds[self.max_tubes :]
        if rest:
            for family, (name, _) in zip(families, counters, strict=True):
                family.add_metric([OTHER], sum(getattr(s, name) for s in rest))
        yield from families
        yield paused
        yield next_fire

    def _tubes(self) -> Iterator[Metric]:
        """Built column by column, with the samples appended directly (``add_metric`` makes
        a label dict per sample): at the 500-tube cap a scrape has 11,000 tube samples."""
        view = self.view
        now = view.clock()
        tubes = view.tubes()
        if len(tubes) > self.max_tubes:
            own = heapq.nlargest(self.max_tubes, tubes, key=_weight)
            chosen = set(own)
            rest = [t for t in tubes if t not in chosen]
        else:
            own, rest = list(tubes), []
        rows = [({"tube": t.name.decode(errors="replace")}, _tube_row(t, now)) for t in own]
        if rest:
            rows.append(({"tube": OTHER}, _sum_rows(rest, now)))
        families: list[Metric] = [
            GaugeMetricFamily(f"beanstalkd_tube_{name}", text, labels=["tube"])
            for _stat, name, text in _TUBE_GAUGES
        ]
        families += [
            CounterMetricFamily(f"beanq_tube_{name}", text, labels=["tube"])
            for name, text in _TUBE_COUNTERS
        ]
        families.append(GaugeMetricFamily("beanq_tube_paused", "1: paused.", labels=["tube"]))
        families.append(
            GaugeMetricFamily(
                "beanq_tube_oldest_ready_age_seconds",
                "Age of the tube's oldest ready job, 0 when none is ready (queue latency).",
                labels=["tube"],
            )
        )
        for column, family in enumerate(families):
            name = family.name + ("_total" if family.type == "counter" else "")
            samples = family.samples
            for labels, row in rows:
                samples.append(Sample(name, labels, row[column]))
        return iter(families)

    def _histograms(self) -> Iterator[Metric]:
        e = self.view.engine
        yield _histogram(
            "beanq_reserve_to_delete_seconds",
            "Time from reserve to delete of the jobs deleted while reserved.",
            RESERVE_DELETE_BOUNDS,
            e.reserve_delete_counts,
            e.reserve_delete_sum,
        )
        binlog = self.view.binlog_metrics()
        if binlog is None:
            return
        written = CounterMetricFamily("beanq_binlog_written_bytes", "Bytes written to the binlog.")
        written.add_metric([], binlog.bytes_written)
        yield written
        fsyncs = CounterMetricFamily("beanq_binlog_fsyncs", "fsync rounds of the binlog.")
        fsyncs.add_metric([], binlog.fsyncs)
        yield fsyncs
        yield _histogram(
            "beanq_binlog_fsync_seconds",
            "Time each binlog fsync round took.",
            FSYNC_BOUNDS,
            binlog.fsync_counts,
            binlog.fsync_seconds,
        )
        segments = GaugeMetricFamily("beanq_binlog_segments", "Binlog segment files.")
        segments.add_metric([], binlog.segments)
        yield segments
        size = GaugeMetricFamily("beanq_binlog_segment_bytes", "Size of every binlog segment.")
        size.add_metric([], binlog.segment_bytes)
        yield size


def _histogram(
    name: str, text: str, bounds: tuple[float, ...], counts: list[int], total: float
) -> HistogramMetricFamily:
    """A histogram from per-bucket counts (the last one +Inf), made cumulative here."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        running += count
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), running))
    family = HistogramMetricFamily(name, text)
    family.add_metric([], buckets, total)
    return family


def registry(view: EngineView, max_tubes: int) -> CollectorRegistry:
    result = CollectorRegistry(auto_describe=False)
    result.register(EngineCollector(view, max_tubes))
    return result

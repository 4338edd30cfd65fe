"""--http: what the HTTP side costs the queue, and what one scrape costs at many tubes.

Two figures. Put throughput at 50 connections with ``--http``, a ``/metrics`` scrape every
second and an open web console (the requests its pages make, at their intervals: see
CONSOLE_POLLS), against the same beanq without ``--http``, alternated A B over rounds in one
run (target: a ratio of at least 0.97). And the time of one ``/metrics`` scrape with 10,000
tubes alive (target: under 100 ms); the default ``--metrics-max-tubes`` caps the series.
The HTTP client is the standard library's, so the bench needs no HTTP extra of its own.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from typing import Any

from bench.holders import TubeWatchers, wait_stat
from bench.loadgen import LoadGen, LoadSpec
from bench.servers import Server, ServerKind, free_port

SCRAPE_EVERY = 1.0  # seconds between scrapes during the throughput runs
SCRAPES_AT_MANY_TUBES = 7
# What an open console asks, as beanq/http/static/console.js does: the overview (the page
# that polls fastest) every POLL_OVERVIEW, the server line every 10 s, and a tubes table
# (sorted, one page) every POLL_OTHER, as if both were open. (seconds, paths)
CONSOLE_POLLS = (
    (1.0, ("/api/v1/stats", "/api/v1/rates?seconds=300")),
    (10.0, ("/api/v1/stats",)),
    (2.0, ("/api/v1/tubes?q=&sort=name&order=asc&offset=0&limit=50",)),
)


def _scrape(port: int, path: str = "/metrics") -> float:
    """One GET with its body read; seconds it took."""
    started = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as response:
        response.read()
    return time.perf_counter() - started


def _wait_http(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _scrape(port)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Scraper:
    """GETs ``paths`` every ``every`` seconds on a thread: /metrics as Prometheus would, or
    the API as an open console does."""

    def __init__(
        self, port: int, paths: tuple[str, ...] = ("/metrics",), every: float = SCRAPE_EVERY
    ) -> None:
        self.port = port
        self.paths = paths
        self.every = every
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            for path in self.paths:
                try:
                    self.times.append(_scrape(self.port, path))
                except OSError:
                    self.times.append(float("nan"))


def put_with_scrapes(
    kind: ServerKind, lg: LoadGen, *, with_http: bool, duration: float, workers: int
) -> dict[str, Any]:
    """Put throughput at 50 connections, with --http, scrapes and an open console, or
    without --http."""
    http_port = free_port()
    flags = ("--http", f"127.0.0.1:{http_port}") if with_http else ()
    server = Server(kind, flags=flags)
    out: dict[str, Any] = {"http": with_http}
    try:
        server.start()
        if with_http:
            _wait_http(http_port)
        spec = LoadSpec(
            kind="put",
            port=server.port,
            conns=50,
            duration=duration,
            workers=workers,
            hard_timeout=duration + 30.0,
        )
        if with_http:
            console = [Scraper(http_port, paths, every) for every, paths in CONSOLE_POLLS]
            with Scraper(http_port) as scraper, contextlib.ExitStack() as stack:
                for poller in console:
                    stack.enter_context(poller)
                result = lg.run(spec, server.pid)
            out["scrapes"] = len(scraper.times)
            out["scrape_s"] = scraper.times
            out["console_requests"] = sum(len(p.times) for p in console)
        else:
            result = lg.run(spec, server.pid)
        out.update(result.rates())  # (per CPU second: the scrapers' own CPU is not in it)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        server.stop()
    return out


def scrape_at_many_tubes(kind: ServerKind, tubes: int) -> dict[str, Any]:
    """Seconds per /metrics scrape with ``tubes`` tubes alive (median of a few)."""
    http_port = free_port()
    server = Server(kind, flags=("--http", f"127.0.0.1:{http_port}"))
    watchers: TubeWatchers | None = None
    out: dict[str, Any] = {"tubes": tubes}
    try:
        server.start()
        _wait_http(http_port)
        watchers = TubeWatchers(server.port, tubes, prefix="metrics")
        out["tubes_alive"] = wait_stat(server.port, "current-tubes", tubes)
        times = sorted(_scrape(http_port) for _ in range(SCRAPES_AT_MANY_TUBES))
        out["scrape_s"] = times
        out["median_s"] = times[len(times) // 2]
        # the console's tubes table there: one page, sorted by ready, busiest first
        page = "/api/v1/tubes?q=&sort=ready&order=desc&offset=0&limit=50"
        pages = sorted(_scrape(http_port, page) for _ in range(SCRAPES_AT_MANY_TUBES))
        out["tubes_page_s"] = pages
        out["tubes_page_median_s"] = pages[len(pages) // 2]
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        if watchers is not None:
            watchers.close()
        server.stop()
    return out

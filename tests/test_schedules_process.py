"""Schedules against the real ``beanq`` process (issue 17): kill -9 and restart neither lose a
schedule nor fire one of its times twice, and the catch-up policy covers the downtime."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.servers import spawn_beanq
from tests.test_binlog_wire import Wire


def add(w: Wire, name: bytes, definition: dict[str, Any]) -> bytes:
    data = json.dumps(definition).encode()
    return w.cmd(b"beanq-schedule-add %b %d" % (name, len(data)), data)[0]


def show(w: Wire, name: bytes) -> dict[str, Any]:
    line, body = w.cmd(b"beanq-schedule-show %b" % name)
    assert line.startswith(b"OK ") and body is not None, line
    d: dict[str, Any] = json.loads(body)
    return d


def jobs_in(w: Wire, tube: bytes) -> int:
    return int(w.stats(b"stats-tube %b" % tube)["current-jobs-ready"])


def between_fires(w: Wire, name: bytes, tube: bytes) -> tuple[dict[str, Any], int]:
    """The schedule and the jobs in its tube, read with no fire in between."""
    for _ in range(50):
        before = show(w, name)
        jobs = jobs_in(w, tube)
        if show(w, name)["fired"] == before["fired"]:
            return before, jobs
    raise AssertionError("the schedule fired between every two looks")


def accounted(s: dict[str, Any]) -> None:
    """Every time from the start to the last one handled was fired, skipped or missed, once."""
    handled = round((s["next_fire"] - s["start"]) / s["every"]) - 1  # (start: when added)
    assert s["fired"] + s["skipped"] + s["missed"] == handled, s


@pytest.mark.parametrize("catchup", ["none", "all"])
def test_kill_9_never_fires_a_time_twice_and_catches_up(tmp_path: Path, catchup: str) -> None:
    args = ("-b", str(tmp_path), "-f", "0")
    every = 0.1
    d = {"tube": "t", "every": every, "overlap": "allow", "catchup": catchup, "body": "x"}
    with spawn_beanq(*args) as (host, port, proc), Wire(host, port) as w:
        assert add(w, b"fast", d) == b"ADDED"
        assert add(w, b"cron", {"tube": "c", "cron": "* * * * * *", "overlap": "allow"}) == (
            b"ADDED"
        )
        time.sleep(1.5)
        proc.kill()
        proc.wait()
    time.sleep(1.0)  # down: about ten times of "fast" pass
    with spawn_beanq(*args) as (host, port, _), Wire(host, port) as w:
        time.sleep(0.5)
        s, jobs = between_fires(w, b"fast", b"t")
        assert s["fired"] >= 10
        assert jobs == s["fired"]  # one job per fire: none repeated, none lost
        accounted(s)
        if catchup == "none":
            assert s["missed"] >= 5
        else:
            assert s["missed"] == 0
        c, jobs = between_fires(w, b"cron", b"c")
        assert c["fired"] >= 1 and jobs == c["fired"]


def test_schedules_live_in_memory_without_b() -> None:
    with spawn_beanq() as (host, port, _), Wire(host, port) as w:
        assert w.cmd(b"beanq-capabilities")[1] == (
            b"---\n- flush\n- list\n- move\n- reserve-batch\n- put-unique\n- schedules\n"
        )
        assert add(w, b"m", {"tube": "t", "every": 0.05, "overlap": "allow"}) == b"ADDED"
        time.sleep(0.5)
        s, jobs = between_fires(w, b"m", b"t")
        assert s["fired"] >= 5 and jobs == s["fired"]
        assert w.cmd(b"beanq-schedule-rm m")[0] == b"DELETED"

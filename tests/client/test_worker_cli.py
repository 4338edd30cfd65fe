"""beanq-worker spawned against a live daemon: it loads MODULE:ATTR (a worker or a function
making one), takes -a/-Q/-c, declares the schedules of its @periodic handlers, stops gracefully
on the first SIGTERM and at once on the second (the server puts the held job back)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from beanq_client import Client, encode_task

from tests.servers import REPO_ROOT, spawn_beanq

PROJECT = """
import os, pathlib, time
from beanq_client import Client, Worker

OUT = pathlib.Path(os.environ["OUT"])
worker = Worker(Client("beanstalk://127.0.0.1:9/nowhere"), "elsewhere", reserve_timeout=0.2)

def write(line):
    with OUT.open("a") as f:
        f.write(line + "\\n")

@worker.task("note")
def note(text):
    write(text)

@worker.task("slow")
def slow():
    write("slow started")
    time.sleep(60)

@worker.periodic("* * * * * *", tube="elsewhere", name="tick")
def tick():
    write("tick")

def make():
    return worker
"""


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def spawn(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OUT": str(tmp_path / "out.txt")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "client")])
    with (tmp_path / "worker.log").open("ab") as log:  # (the child keeps its own copy)
        return subprocess.Popen(
            [sys.executable, "-m", "beanq_client.worker_cli", *args],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def lines(tmp_path: Path) -> list[str]:
    out = tmp_path / "out.txt"
    return out.read_text().splitlines() if out.exists() else []


def test_worker_command_runs_tasks_and_schedules_and_stops_on_signals(tmp_path: Path) -> None:
    (tmp_path / "proj.py").write_text(PROJECT)
    with spawn_beanq() as (host, port, _), Client(f"beanstalk://{host}:{port}/jobs") as c:
        c.put(encode_task("note", "hello"))
        proc = spawn(
            tmp_path,
            "proj:worker",
            "-a",
            f"{host}:{port}",
            "-Q",
            "jobs,elsewhere",
            "-c",
            "2",
            "-l",
            "debug",
        )
        try:
            wait_for(lambda: "hello" in lines(tmp_path), "the task")
            wait_for(lambda: lines(tmp_path).count("tick") >= 2, "two periodic runs")
            (sched,) = c.schedules()
            assert sched["name"] == "tick" and sched["tube"] == "elsewhere"
            # first signal: graceful, the running handler is waited for
            c.put(encode_task("slow"))
            wait_for(lambda: "slow started" in lines(tmp_path), "the slow task")
            proc.send_signal(signal.SIGTERM)
            time.sleep(1.0)
            assert proc.poll() is None  # still finishing the slow job
            # second signal: at once; the server puts the job it held back
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 1
            wait_for(lambda: c.stats_tube("jobs")["current-jobs-ready"] == 1, "the job back")
            assert c.stats_tube("jobs")["current-jobs-reserved"] == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        output = (tmp_path / "worker.log").read_text()
        assert "tubes jobs,elsewhere, concurrency 2, 1 periodic" in output, output


def test_factory_burst_and_a_graceful_stop(tmp_path: Path) -> None:
    (tmp_path / "proj.py").write_text(PROJECT)
    with spawn_beanq() as (host, port, _), Client(f"beanstalk://{host}:{port}/jobs") as c:
        for i in range(3):
            c.put(encode_task("note", f"n{i}"))
        burst = spawn(tmp_path, "proj:make", "-a", f"{host}:{port}", "-Q", "jobs", "--burst")
        assert burst.wait(30) == 0
        assert [x for x in lines(tmp_path) if x.startswith("n")] == ["n0", "n1", "n2"]
        c.schedule_remove("tick")  # (declared by the burst run)
        idle = spawn(tmp_path, "proj:worker", "-a", f"{host}:{port}", "-Q", "jobs")
        wait_for(lambda: bool(c.schedules()), "the schedule declared (signals handled by then)")
        idle.send_signal(signal.SIGINT)
        assert idle.wait(10) == 0
        bad = spawn(tmp_path, "proj:nothing")
        assert bad.wait(30) == 2


ASYNC_PROJECT = """
import os, pathlib
from beanq_client import AsyncClient, AsyncWorker

OUT = pathlib.Path(os.environ["OUT"])
worker = AsyncWorker(AsyncClient("beanstalk://127.0.0.1:9/nowhere"), "jobs", reserve_timeout=0.2)

@worker.task("note")
async def note(text):
    with OUT.open("a") as f:
        f.write(text + "\\n")

@worker.periodic(every=0.2, name="often")
async def often():
    with OUT.open("a") as f:
        f.write("often\\n")
"""


def test_an_async_worker_and_sigterm(tmp_path: Path) -> None:
    (tmp_path / "aproj.py").write_text(ASYNC_PROJECT)
    with spawn_beanq() as (host, port, _), Client(f"beanstalk://{host}:{port}/jobs") as c:
        c.put(encode_task("note", "async hello"))
        proc = spawn(tmp_path, "aproj:worker", "-a", f"{host}:{port}")
        try:
            wait_for(lambda: "async hello" in lines(tmp_path), "the task")
            wait_for(lambda: lines(tmp_path).count("often") >= 2, "the periodic handler")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

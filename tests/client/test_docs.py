"""docs/client.md: the five-line producer and worker run as written, and every other Python
example at least compiles."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading

import pytest
from beanq_client import Client, NotFoundError

from tests.client.conftest import Server
from tests.servers import REPO_ROOT

DOC = REPO_ROOT / "docs" / "client.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def example(name: str) -> str:
    text = DOC.read_text()
    marker = f"<!-- example: {name} -->\n"
    start = text.index(marker) + len(marker)
    match = BLOCK.match(text, start)
    assert match is not None, f"no python block after the {name} marker"
    return match.group(1)


def code_lines(source: str) -> int:
    return sum(1 for line in source.splitlines() if line.strip())


def run_env(server: Server) -> dict[str, str]:
    return dict(os.environ, BEANSTALK_URL=f"beanstalk://{server.host}:{server.port}")


def test_the_examples_are_five_lines() -> None:
    assert code_lines(example("producer")) == 5
    assert code_lines(example("worker")) == 5


def test_every_python_block_compiles() -> None:
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) >= 4
    for n, block in enumerate(blocks):
        compile(block, f"{DOC}:block{n}", "exec")


def test_producer_then_worker_run_as_written(beanq_server: Server) -> None:
    env = run_env(beanq_server)
    # The observer watches "emails", which keeps the tube (and its counters) alive.
    with Client(beanq_server.url("emails")) as observer:
        before = observer.stats_tube("emails")["total-jobs"]
        produced = subprocess.run(
            [sys.executable, "-c", example("producer")],
            env=env,
            check=True,
            timeout=30,
            capture_output=True,
            text=True,
        )
        job_id = int(produced.stdout.removeprefix("queued job "))
        assert observer.stats_tube("emails")["total-jobs"] == before + 1
        assert observer.stats_job(job_id)["state"] == "ready"

        with subprocess.Popen(
            [sys.executable, "-c", example("worker")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            lines: queue.Queue[str] = queue.Queue()

            def pump() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.put(line)

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            try:
                line = lines.get(timeout=20)
                assert line == "sending 'hi' to ada@example.com\n"
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)
            reader.join(5)
            assert proc.stderr is not None
            assert proc.returncode == 0, proc.stderr.read()
        stats = observer.stats_tube("emails")
        assert stats["current-jobs-ready"] == 0 and stats["current-jobs-reserved"] == 0
        assert stats["cmd-delete"] >= 1
        with pytest.raises(NotFoundError):
            observer.peek(job_id)  # the worker deleted it

"""beanqctl against a spawned daemon: every command, text and --json output, exit statuses,
drain with its progress bar, and top for a bounded number of refreshes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from beanq_client import Client, ctl

from tests.client.conftest import Server
from tests.servers import free_port


def run(server: Server, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = ctl.main(["-a", f"{server.host}:{server.port}", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_put_peek_stats_and_tubes(
    server: Server, tube: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(server, capsys, "put", tube, "hello world", "--priority", "7", "--ttr", "9")
    assert code == 0
    job_id = int(out)
    code, out, _ = run(server, capsys, "peek", str(job_id))
    assert (code, out) == (0, f"id: {job_id}\nhello world\n")
    code, out, _ = run(server, capsys, "--json", "peek-ready", tube)
    assert json.loads(out) == {"id": job_id, "body": "hello world"}
    code, out, _ = run(server, capsys, "--json", "stats-tube", tube)
    assert json.loads(out)["current-jobs-ready"] == 1 and json.loads(out)["name"] == tube
    code, out, _ = run(server, capsys, "stats-tube", tube)
    assert f"name: {tube}\n" in out and "current-jobs-urgent: 1\n" in out
    code, out, _ = run(server, capsys, "tubes")
    assert tube in out.split("\n")
    code, out, _ = run(server, capsys, "--json", "stats")
    stats = json.loads(out)
    assert stats["pid"] == server.proc.pid and stats["draining"] is False
    code, out, _ = run(server, capsys, "stats")
    assert "draining: false\n" in out
    with Client(server.address) as c:
        assert c.stats_job(job_id)["pri"] == 7 and c.stats_job(job_id)["ttr"] == 9


def test_delayed_buried_kick_delete_and_pause(
    server: Server, tube: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(server.url(tube)) as c:
        delayed = c.put(b"later", delay=500)
        c.put(b"to bury")
        c.bury(c.reserve(timeout=1))
        buried = c.peek_buried().id
    assert (
        run(server, capsys, "--json", "peek-delayed", tube)[1]
        == json.dumps({"id": delayed, "body": "later"}) + "\n"
    )
    assert run(server, capsys, "peek-buried", tube)[1] == f"id: {buried}\nto bury\n"
    assert (
        run(server, capsys, "--json", "kick", tube, "10")[1]
        == json.dumps({"tube": tube, "kicked": 1}) + "\n"
    )
    assert run(server, capsys, "kick-job", str(delayed))[:2] == (0, f"kicked {delayed}\n")
    assert run(server, capsys, "delete", str(delayed))[:2] == (0, f"deleted {delayed}\n")
    assert run(server, capsys, "pause", tube, "30")[0] == 0
    with Client(server.address) as c:
        assert c.stats_tube(tube)["pause"] == 30
        assert c.stats_tube(tube)["current-jobs-ready"] == 1


def test_exit_statuses(beanq_server: Server, tube: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(beanq_server, capsys, "delete", "999999999")
    assert code == 1 and "NOT_FOUND" in err
    code, _, err = run(beanq_server, capsys, "peek-ready", tube)
    assert code == 1 and "NOT_FOUND" in err
    assert ctl.main(["-a", f"127.0.0.1:{free_port()}", "stats"]) == 3
    assert "cannot connect" in capsys.readouterr().err
    assert run(beanq_server, capsys, "put", "bad*tube", "x")[0] == 2
    with pytest.raises(SystemExit) as info:
        ctl.main(["kick", "t", "-1"])
    assert info.value.code == 2
    capsys.readouterr()


def test_binary_bodies(beanq_server: Server, tube: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(beanq_server.url(tube)) as c:
        job_id = c.put(b"\xff\x00binary")
    code, out, _ = run(beanq_server, capsys, "--json", "peek", str(job_id))
    assert code == 0 and json.loads(out) == {"id": job_id, "body_base64": "/wBiaW5hcnk="}


def test_drain_with_progress(
    beanq_server: Server, tube: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(beanq_server.url(tube)) as c:
        with c.pipeline() as batch:
            for n in range(40):
                batch.put(b"%d" % n)
        c.put(b"delayed", delay=600)
        c.put(b"buried")
        c.bury(c.reserve_job(batch.results[-1] + 2))
    code, out, err = run(beanq_server, capsys, "drain", tube)
    assert (code, out) == (0, f"deleted 40 jobs from {tube}\n")
    assert err.endswith(f"draining {tube} [{'#' * 30}] 40/40\n")
    code, out, err = run(beanq_server, capsys, "--json", "drain", tube, "--all")
    assert json.loads(out) == {"tube": tube, "deleted": 2}
    with Client(beanq_server.address) as c:
        stats = c.stats_tube(tube) if tube in c.tubes() else None
        assert stats is None or stats["current-jobs-ready"] + stats["current-jobs-delayed"] == 0


def test_top_rates_between_refreshes(
    beanq_server: Server,
    tube: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = Client(beanq_server.url(tube))

    def busy_sleep(seconds: float) -> None:
        # Instead of idling between refreshes, put 6 jobs and delete 2.
        ids = [producer.put(b"x") for _ in range(6)]
        producer.delete(ids[0])
        producer.delete(ids[1])

    monkeypatch.setattr("beanq_client.ctl.time.sleep", busy_sleep)
    code, out, _ = run(beanq_server, capsys, "--json", "top", "-n", "2", "--interval", "0.5")
    frames = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(frames) == 2
    assert tube not in frames[0]["tubes"]
    row = frames[1]["tubes"][tube]
    assert row["current-jobs-ready"] == 4 and row["current-waiting"] == 0
    assert row["put_rate"] > 0 and row["delete_rate"] > 0
    assert row["put_rate"] == pytest.approx(3 * row["delete_rate"])
    code, out, _ = run(beanq_server, capsys, "top", "-n", "1")
    header = out.splitlines()[1].split()
    assert header == ["TUBE", "READY", "RESERVED", "DELAYED", "BURIED", "WAITING", "PUT/S", "DEL/S"]
    assert any(line.split()[:2] == [tube, "4"] for line in out.splitlines())
    producer.close()


def test_the_installed_script(beanq_server: Server, tube: str) -> None:
    script = shutil.which("beanqctl", path=str(Path(sys.executable).parent))
    assert script is not None, "beanqctl is not installed (pip install -e .)"
    env = dict(os.environ, BEANSTALK_URL=f"beanstalk://{beanq_server.host}:{beanq_server.port}")
    put = subprocess.run(
        [script, "put", tube], input=b"from stdin\n", env=env, capture_output=True, timeout=30
    )
    assert put.returncode == 0, put.stderr
    job_id = int(put.stdout)
    top = subprocess.run(
        [script, "top", "--iterations", "3", "--interval", "0.1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert top.returncode == 0, top.stderr
    assert top.stdout.count("beanqctl top") == 3
    with Client(beanq_server.address) as c:
        assert c.peek(job_id).body == b"from stdin\n"

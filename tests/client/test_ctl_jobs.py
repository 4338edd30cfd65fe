"""beanqctl flush, ls, move and migrate: against beanq (the extensions) and against beanstalkd
(the standard-protocol loops, which say so), with the same results where both can give them."""

from __future__ import annotations

import json

import pytest
from beanq_client import Client, ctl

from tests.client.conftest import Server
from tests.servers import spawn_beanq


def run(server: Server, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = ctl.main(["-a", f"{server.host}:{server.port}", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _fill(server: Server, tube: str) -> dict[str, list[int]]:
    with Client(server.url(tube)) as c:
        ready = [c.put(b"ready %d" % i, priority=10 + i, ttr=30) for i in range(3)]
        delayed = [c.put(b"later", delay=500, priority=5)]
        c.put(b"to bury", priority=7)
        buried = [c.reserve(timeout=1).id]
        c.bury(buried[0], priority=7)
    return {"ready": ready, "delayed": delayed, "buried": buried}


def test_ls_lists_without_reserving(
    server: Server, tube: str, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _fill(server, tube)
    code, out, err = run(server, capsys, "--json", "ls", tube, "--state", "ready", "--limit", "2")
    assert code == 0
    rows = json.loads(out)
    assert [r["id"] for r in rows] == jobs["ready"][:2]
    assert rows[0]["pri"] == 10 and rows[0]["preview"] == "ready 0" and rows[0]["size"] == 7
    assert ("no beanq extensions" in err) == (server.kind == "beanstalkd")
    code, out, _ = run(server, capsys, "ls", tube, "--state", "delayed")
    assert str(jobs["delayed"][0]) in out and "later" in out
    with Client(server.url(tube)) as c:
        assert c.stats_job(jobs["ready"][0])["reserves"] == 0


def test_move_keeps_priority_delay_ttr_and_buried_state(
    server: Server, tube: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(server, tube)
    other = tube + "-to"
    code, out, _err = run(server, capsys, "move", tube, other)
    assert code == 0 and out == f"moved 5 jobs from {tube} to {other}\n"
    with Client(server.url(other)) as c:
        stats = c.stats_tube(other)
        assert (stats["current-jobs-ready"], stats["current-jobs-delayed"]) == (3, 1)
        assert stats["current-jobs-buried"] == 1
        buried = c.stats_job(c.peek_buried())
        assert (buried["pri"], buried["state"]) == (7, "buried")
        late = c.stats_job(c.peek_delayed())
        assert late["pri"] == 5 and 490 < late["time-left"] <= 500
        first = c.stats_job(c.peek_ready())
        assert (first["pri"], first["ttr"]) == (10, 30)


def test_flush_with_globs_and_confirmation(
    server: Server, tube: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _fill(server, tube)
    _fill(server, tube + "-2")
    code, _, err = run(server, capsys, "flush", tube + "*")
    assert code == 1 and "pass --yes" in err  # stdin is not a terminal here
    code, out, err = run(server, capsys, "--json", "flush", tube + "*", "--state", "ready", "-y")
    assert code == 0
    assert json.loads(out) == {"flushed": {tube: 3, tube + "-2": 3}}
    code, out, err = run(server, capsys, "flush", tube, "-y")
    assert out == f"{tube}: 2 flushed\n"
    assert ("flushing [" in err) == (server.kind == "beanstalkd")


def test_migrate_between_servers(tube: str, capsys: pytest.CaptureFixture[str]) -> None:
    with spawn_beanq() as (h1, p1, _), spawn_beanq() as (h2, p2, _):
        source = Server("beanq", h1, p1, _)
        _fill(source, tube)
        code = ctl.main(["migrate", "--from", f"{h1}:{p1}", "--to", f"{h2}:{p2}", tube])
        out, err = capsys.readouterr()
        assert code == 0 and out == "migrated 5 jobs\n" and "migrating [" in err
        with Client(f"{h2}:{p2}") as c:
            stats = c.stats_tube(tube)
            assert (stats["current-jobs-ready"], stats["current-jobs-delayed"]) == (3, 1)
            assert stats["current-jobs-buried"] == 1
        with Client(f"{h1}:{p1}") as c:
            assert tube not in c.tubes()  # every job left it

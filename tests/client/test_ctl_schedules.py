"""beanqctl schedule add|ls|rm|pause|resume against the beanq process: text and JSON output,
the flags of the issue, exit statuses for a refused definition and an unknown name."""

from __future__ import annotations

import io
import json
import sys

import pytest
from beanq_client import Client, ctl

from tests.client.conftest import Server
from tests.client.test_ctl import run


def test_schedule_commands(
    beanq_server: Server,
    tube: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = tube + "-ctl"
    code, out, _ = run(
        beanq_server,
        capsys,
        "schedule",
        "add",
        name,
        "--tube",
        tube,
        "--cron",
        "30 6 * * 1-5",
        "--tz",
        "Europe/Paris",
        "--body",
        "report",
        "--pri",
        "5",
        "--ttr",
        "120",
        "--delay",
        "2",
        "--overlap",
        "allow",
        "--catchup",
        "all",
        "--grace",
        "60",
    )
    assert (code, out) == (0, f"added schedule {name}\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin")))
    code, out, _ = run(
        beanq_server,
        capsys,
        "--json",
        "schedule",
        "add",
        name + "-2",
        "--tube",
        tube,
        "--every",
        "90",
    )
    assert code == 0 and json.loads(out) == {"name": name + "-2", "replaced": False}
    with Client(beanq_server.url(tube)) as c:
        first, second = c.schedule(name), c.schedule(name + "-2")
    assert (first["cron"], first["tz"], first["body"], first["pri"]) == (
        "30 6 * * 1-5",
        "Europe/Paris",
        "report",
        5,
    )
    assert (first["ttr"], first["delay"], first["overlap"], first["catchup"], first["grace"]) == (
        120,
        2,
        "allow",
        "all",
        60.0,
    )
    assert second["every"] == 90 and second["body"] == "from stdin"
    code, out, _ = run(beanq_server, capsys, "schedule", "pause", name + "-2")
    assert (code, out) == (0, f"paused schedule {name}-2\n")
    code, out, _ = run(beanq_server, capsys, "schedule", "ls")
    lines = out.splitlines()
    assert lines[0].split() == [
        "NAME",
        "TUBE",
        "TRIGGER",
        "NEXT",
        "FIRE",
        "LAST",
        "FIRE",
        "FIRED",
        "SKIPPED",
        "MISSED",
    ]
    mine = {line.split()[0]: line for line in lines[1:] if line.startswith(name)}
    assert "cron 30 6 * * 1-5 Europe/Paris" in mine[name]
    assert mine[name].split()[-3:] == ["0", "0", "0"] and "paused" in mine[name + "-2"]
    assert "every 90s" in mine[name + "-2"]
    code, out, _ = run(beanq_server, capsys, "schedule", "ls", "--json")
    listed = {s["name"]: s for s in json.loads(out)}
    assert listed[name + "-2"]["paused"] is True and listed[name]["next_fire"] > 0
    code, out, _ = run(beanq_server, capsys, "schedule", "resume", name + "-2")
    assert code == 0
    for n in (name, name + "-2"):
        assert run(beanq_server, capsys, "schedule", "rm", n)[:2] == (0, f"removed schedule {n}\n")
    code, _, err = run(beanq_server, capsys, "schedule", "rm", name)
    assert code == ctl.EXIT_REFUSED and "NOT_FOUND" in err
    code, _, err = run(
        beanq_server,
        capsys,
        "schedule",
        "add",
        name,
        "--tube",
        tube,
        "--cron",
        "* * *",
        "--body",
        "",
    )
    assert code == ctl.EXIT_REFUSED and "5 or 6 fields" in err


def test_schedule_add_needs_one_trigger(
    beanq_server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["--tube", "t"], ["--tube", "t", "--cron", "* * * * *", "--every", "5"]):
        with pytest.raises(SystemExit) as exc:
            run(beanq_server, capsys, "schedule", "add", "x", *args)
        assert exc.value.code == ctl.EXIT_USAGE

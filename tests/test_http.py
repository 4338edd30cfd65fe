"""--http: the real ``beanq`` process with its HTTP listener, read with an HTTP client and
checked against what the beanstalk protocol says at the same moment."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from beanq import protocol as p
from tests.servers import free_port, spawn_beanq

HTTP_TIMEOUT = 10.0


class Beanstalk:
    """A raw protocol connection: every reply as the server sent it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = p.ReplyReader()
        self.replies: list[p.Reply] = []

    def ask(self, line: str, body: bytes | None = None) -> p.Reply:
        data = line.encode() + b"\r\n"
        if body is not None:
            data += body + b"\r\n"
        self.sock.sendall(data)
        while not self.replies:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.replies.extend(self.reader.feed(chunk))
        return self.replies.pop(0)

    def yaml(self, line: str) -> dict[str, str]:
        reply = self.ask(line)
        assert reply.word == "OK" and reply.body is not None, reply
        pairs = (row.split(": ", 1) for row in reply.body.decode().splitlines()[1:])
        return {key: value.strip('"') for key, value in pairs}

    def close(self) -> None:
        self.sock.close()


@contextmanager
def http_server(*args: str) -> Iterator[tuple[int, httpx.Client]]:
    """beanq with --http on a free loopback port; yields its beanstalk port and a client."""
    http_port = free_port()
    with spawn_beanq("--http", f"127.0.0.1:{http_port}", *args) as (_host, port, proc):
        client = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=HTTP_TIMEOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get("/healthz")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(proc.describe()) from None
                time.sleep(0.05)
        try:
            yield port, client
        finally:
            client.close()


def scrape(client: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """/metrics parsed by prometheus-client's own parser: (sample name, labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def busy_queue(bs: Beanstalk) -> None:
    """Jobs in every state in two tubes, and a few of every counted command."""
    bs.ask("use work")
    for i in range(5):
        assert bs.ask("put 100 0 60 3", b"j%02d" % i).word == "INSERTED"
    assert bs.ask("put 2000 30 60 1", b"d").word == "INSERTED"
    bs.ask("watch work")
    first = bs.ask("reserve-with-timeout 0")
    assert first.word == "RESERVED"
    assert bs.ask(f"bury {first.args[0]} 5").word == "BURIED"
    second = bs.ask("reserve-with-timeout 0")
    assert bs.ask(f"release {second.args[0]} 7 0").word == "RELEASED"
    third = bs.ask("reserve-with-timeout 0")
    assert bs.ask(f"delete {third.args[0]}").word == "DELETED"
    assert bs.ask("reserve-with-timeout 0").word == "RESERVED"  # stays reserved
    bs.ask("use other")
    assert bs.ask("put 0 0 60 2", b"ok").word == "INSERTED"
    assert bs.ask("kick 1").word == "KICKED"  # nothing buried in "other": kicks no delayed
    bs.ask("use work")
    assert bs.ask("kick 1").word == "KICKED"
    bs.ask("pause-tube other 100")
    bs.ask("peek-ready")
    bs.ask("stats-job 1")


STAT_TO_METRIC = {
    "current-jobs-urgent": "beanstalkd_current_jobs_urgent_count",
    "current-jobs-ready": "beanstalkd_current_jobs_ready_count",
    "current-jobs-reserved": "beanstalkd_current_jobs_reserved_count",
    "current-jobs-delayed": "beanstalkd_current_jobs_delayed_count",
    "current-jobs-buried": "beanstalkd_current_jobs_buried_count",
    "job-timeouts": "beanstalkd_job_timeouts_count",
    "total-jobs": "beanstalkd_total_jobs_count",
    "max-job-size": "beanstalkd_max_job_size_bytes",
    "current-tubes": "beanstalkd_current_tubes_count",
    "current-connections": "beanstalkd_current_connections_count",
    "current-producers": "beanstalkd_current_producers_count",
    "current-workers": "beanstalkd_current_workers_count",
    "current-waiting": "beanstalkd_current_waiting_count",
    "total-connections": "beanstalkd_total_connections_count",
    "pid": "beanstalkd_pid",
    "binlog-oldest-index": "beanstalkd_binlog_oldest_index",
    "binlog-current-index": "beanstalkd_binlog_current_index",
    "binlog-records-migrated": "beanstalkd_binlog_records_migrated_total",
    "binlog-records-written": "beanstalkd_binlog_records_written_total",
    "binlog-max-size": "beanstalkd_binlog_max_size_bytes",
}
TUBE_STAT_TO_METRIC = {
    "current-jobs-urgent": "beanstalkd_tube_current_jobs_urgent_count",
    "current-jobs-ready": "beanstalkd_tube_current_jobs_ready_count",
    "current-jobs-reserved": "beanstalkd_tube_current_jobs_reserved_count",
    "current-jobs-delayed": "beanstalkd_tube_current_jobs_delayed_count",
    "current-jobs-buried": "beanstalkd_tube_current_jobs_buried_count",
    "total-jobs": "beanstalkd_tube_total_jobs_count",
    "current-using": "beanstalkd_tube_current_using_count",
    "current-watching": "beanstalkd_tube_current_watching_count",
    "current-waiting": "beanstalkd_tube_current_waiting_count",
    "cmd-delete": "beanstalkd_tube_cmd_delete_total",
    "cmd-pause-tube": "beanstalkd_tube_cmd_pause_tube_total",
    "pause": "beanstalkd_tube_pause_seconds_total",
    "pause-time-left": "beanstalkd_tube_pause_time_left_seconds_total",
}


def test_metrics_equal_stats_and_stats_tube(tmp_path: Path) -> None:
    with http_server("-b", str(tmp_path), "-f", "0") as (port, client):
        bs = Beanstalk(port)
        busy_queue(bs)
        # both read after the last command: nothing changes in between
        stats = bs.yaml("stats")
        tube_stats = {name: bs.yaml(f"stats-tube {name}") for name in ("default", "work")}
        tube_stats["other"] = bs.yaml("stats-tube other")
        samples = scrape(client)
        after = bs.yaml("stats")
        bs.close()
    numeric = [k for k, v in stats.items() if v.isdigit() and k not in ("uptime",)]
    assert len(numeric) >= 40  # every counter and gauge of stats, not a sample of them
    for key in numeric:
        if key.startswith("cmd-"):
            name = f"beanstalkd_{key.replace('-', '_')}_total"
            # the scrape came after the stats-tube commands and before the last stats
            expected = int(stats[key]) + (3 if key == "cmd-stats-tube" else 0)
        else:
            name = STAT_TO_METRIC[key]
            expected = int(stats[key])
        assert samples[(name, ())] == expected, key
    assert int(after["cmd-stats"]) == int(stats["cmd-stats"]) + 1
    assert samples[("beanstalkd_draining", ())] == 0
    assert samples[("beanstalkd_up", ())] == 1
    assert abs(samples[("beanstalkd_uptime_seconds", ())] - int(stats["uptime"])) <= 1
    for tube, fields in tube_stats.items():
        label = (("tube", tube),)
        for key, name in TUBE_STAT_TO_METRIC.items():
            assert samples[(name, label)] == int(fields[key]), (tube, key)
    work = (("tube", "work"),)
    # counters beyond stats-tube: 5 + 1 puts, 4 reserves, 1 each of the rest
    assert samples[("beanq_tube_puts_total", work)] == 6
    assert samples[("beanq_tube_reserves_total", work)] == 4
    assert samples[("beanq_tube_deletes_total", work)] == 1
    assert samples[("beanq_tube_releases_total", work)] == 1
    assert samples[("beanq_tube_buries_total", work)] == 1
    assert samples[("beanq_tube_kicks_total", work)] == 1
    assert samples[("beanq_tube_timeouts_total", work)] == 0
    assert samples[("beanq_tube_paused", (("tube", "other"),))] == 1
    assert samples[("beanq_tube_paused", work)] == 0
    assert samples[("beanq_tube_oldest_ready_age_seconds", work)] >= 0
    assert samples[("beanq_reserve_to_delete_seconds_count", ())] == 1
    assert samples[("beanq_reserve_to_delete_seconds_bucket", (("le", "+Inf"),))] == 1
    # -f 0: each reply waited for an fsync
    assert samples[("beanq_binlog_fsyncs_total", ())] >= 1
    assert (
        samples[("beanq_binlog_fsync_seconds_count", ())]
        == samples[("beanq_binlog_fsyncs_total", ())]
    )
    assert samples[("beanq_binlog_written_bytes_total", ())] > 0
    assert samples[("beanq_binlog_segments", ())] >= 1
    assert samples[("beanq_binlog_segment_bytes", ())] > 0


def test_oldest_ready_age_is_the_first_put_not_the_heap_top() -> None:
    with http_server() as (port, client):
        bs = Beanstalk(port)
        bs.ask("use q")
        bs.ask("put 9000 0 60 1", b"a")  # oldest, lowest priority: last out of the heap
        time.sleep(1.2)
        bs.ask("put 1 0 60 1", b"b")
        age = scrape(client)[("beanq_tube_oldest_ready_age_seconds", (("tube", "q"),))]
        assert 1.1 <= age < 10
        bs.ask("watch q")
        bs.ask("ignore default")
        top = bs.ask("reserve-with-timeout 0")
        assert top.body == b"b"
        bs.ask("delete 1")  # the oldest goes: the age is the younger job's now
        age = scrape(client)[("beanq_tube_oldest_ready_age_seconds", (("tube", "q"),))]
        assert age == 0  # nothing ready: "b" is reserved
        assert bs.ask(f"release {top.args[0]} 1 0").word == "RELEASED"
        age = scrape(client)[("beanq_tube_oldest_ready_age_seconds", (("tube", "q"),))]
        assert 0 <= age < 1.1
        bs.close()


def test_schedules_in_metrics() -> None:
    with http_server("--metrics-max-tubes", "2") as (port, client):
        bs = Beanstalk(port)
        assert not [k for k in scrape(client) if k[0].startswith("beanq_schedule")]
        for name, every in (("a", 0.1), ("b", 3600), ("c", 0.1)):
            d = b'{"tube":"s","every":%s,"overlap":"allow"}' % str(every).encode()
            assert bs.ask(f"beanq-schedule-add {name} {len(d)}", d).word == "ADDED"
        assert bs.ask("beanq-schedule-pause b").word == "PAUSED"
        time.sleep(0.5)
        assert bs.ask("beanq-schedule-pause a").word == "PAUSED"
        assert bs.ask("beanq-schedule-pause c").word == "PAUSED"
        got = scrape(client)
        fired = {k[1][0][1]: v for k, v in got.items() if k[0] == "beanq_schedule_fired_total"}
        assert set(fired) == {"a", "b", "_other"} and fired["a"] >= 3 and fired["b"] == 0
        listed = json.loads(bs.ask("beanq-schedule-list").body or b"")
        assert fired["_other"] == listed[2]["fired"] and fired["a"] == listed[0]["fired"]
        assert got[("beanq_schedule_paused", (("schedule", "b"),))] == 1
        assert got[("beanq_schedule_missed_total", (("schedule", "a"),))] == 0
        bs.close()


def add_schedule(bs: Beanstalk, name: str, **definition: object) -> None:
    data = json.dumps(definition).encode()
    assert bs.ask(f"beanq-schedule-add {name} {len(data)}", data).word == "ADDED"


def show_schedule(bs: Beanstalk, name: str) -> dict[str, object] | None:
    reply = bs.ask(f"beanq-schedule-show {name}")
    if reply.word == "NOT_FOUND":
        return None
    assert reply.word == "OK" and reply.body is not None, reply
    shown: dict[str, object] = json.loads(reply.body)
    return shown


STEADY = ("pri", "ttr", "delay", "overlap", "catchup", "grace", "paused", "next_fire", "missed")


def test_schedules_api_and_actions(tmp_path: Path) -> None:
    """GET /api/v1/schedules (all, a page, one) says what beanq-schedule-show says; pause,
    resume and delete over HTTP act as the protocol's commands, wake the loop's timers and
    reach the binlog."""
    token_file = tmp_path / "token"
    token_file.write_text("sched-token\n")
    data = tmp_path / "binlog"
    data.mkdir()
    bearer = {"Authorization": "Bearer sched-token"}
    args = ("-b", str(data), "--http-token-file", str(token_file))
    with http_server(*args) as (port, client):
        client.headers.update(bearer)
        bs = Beanstalk(port)
        assert client.get("/api/v1/schedules").json() == {
            "schedules": [],
            "total": 0,
            "now": pytest.approx(time.time(), abs=5),
        }
        for action in ("pause", "resume", "delete"):  # (no schedule yet: no book either)
            assert client.post(f"/api/v1/schedules/a/{action}").status_code == 404
        assert client.get("/api/v1/schedules/a").status_code == 404
        add_schedule(
            bs, "digest", tube="mail", cron="*/5 * * * *", tz="Europe/Paris", body="hello", pri=7
        )
        add_schedule(bs, "a/b", tube="x/y", every=3600, body_b64="/wA=", ttr=5)
        add_schedule(bs, "tick", tube="ticks", every=0.2, overlap="allow")
        everything = client.get("/api/v1/schedules").json()
        assert everything["total"] == 3
        rows = {row["name"]: row for row in everything["schedules"]}
        assert list(rows) == ["a/b", "digest", "tick"]  # by name
        for name in ("digest", "a/b"):
            shown = show_schedule(bs, name)
            assert shown is not None
            assert {k: rows[name][k] for k in shown} == shown  # beanq-schedule-show's fields
        digest = rows["digest"]
        assert digest["trigger"] == "cron */5 * * * * Europe/Paris" and digest["size"] == 5
        assert digest["body"] == "hello" and digest["pri"] == 7  # bodies: with a token
        next_in = digest["next_fire"] - everything["now"]
        assert 0 < next_in <= 300 and digest["next_fire_in"] == pytest.approx(next_in, abs=0.05)
        assert digest["last_fire"] is None and digest["last_fire_ago"] is None
        assert rows["a/b"]["trigger"] == "every 3600s" and rows["a/b"]["body_b64"] == "/wA="
        # one, by its percent-encoded name
        one = client.get("/api/v1/schedules/a%2Fb").json()
        assert one["name"] == "a/b" and one["tube"] == "x/y" and one["every"] == 3600
        # pages: sorted, filtered (by name or tube) on the server
        page = client.get("/api/v1/schedules", params={"sort": "next", "limit": 2}).json()
        assert [r["name"] for r in page["schedules"]] == ["tick", "digest"]
        assert (page["total"], page["matched"], page["offset"]) == (3, 3, 0)
        desc = client.get("/api/v1/schedules", params={"order": "desc", "offset": 1}).json()
        assert [r["name"] for r in desc["schedules"]] == ["digest", "a/b"]
        by_tube = client.get("/api/v1/schedules", params={"q": "mai"}).json()
        assert [r["name"] for r in by_tube["schedules"]] == ["digest"] and by_tube["matched"] == 1
        wait = time.monotonic() + 10
        while client.get("/api/v1/schedules/tick").json()["fired"] < 2:
            assert time.monotonic() < wait
            time.sleep(0.1)
        tick = client.get("/api/v1/schedules/tick").json()
        assert 0 <= tick["last_fire_ago"] < 5 and tick["last_job_alive"]
        for path, status in [
            ("/api/v1/schedules/nope", 404),
            ("/api/v1/schedules?sort=size", 400),
            ("/api/v1/schedules?order=up", 400),
            ("/api/v1/schedules?limit=0", 400),
            ("/api/v1/schedules?offset=-1", 400),
        ]:
            answer = client.get(path)
            assert answer.status_code == status, path
            assert set(answer.json()) == {"error", "message"}
        assert client.get("/api/v1/schedules", headers={"Authorization": ""}).status_code == 401

        # pause and resume: seen over the protocol
        assert client.post("/api/v1/schedules/digest/pause").json() == {"paused": True}
        shown = show_schedule(bs, "digest")
        assert shown is not None and shown["paused"] is True and shown["next_fire"] is None
        assert client.get("/api/v1/schedules/digest").json()["next_fire_in"] is None
        assert client.post("/api/v1/schedules/digest/resume").json() == {"paused": False}
        shown = show_schedule(bs, "digest")
        assert shown is not None and shown["paused"] is False
        assert shown["next_fire"] == digest["next_fire"]  # (the same five minutes)
        assert client.post("/api/v1/schedules/a%2Fb/pause").json() == {"paused": True}
        assert (show_schedule(bs, "a/b") or {})["paused"] is True
        # a resume arms the engine's timer: a reserve waiting on the tube gets the next fire
        assert client.post("/api/v1/schedules/tick/pause").is_success
        worker = Beanstalk(port)
        worker.ask("watch ticks")
        while (got := worker.ask("reserve-with-timeout 0")).word == "RESERVED":
            worker.ask(f"delete {got.args[0]}")
        fired = (show_schedule(bs, "tick") or {})["fired"]
        worker.sock.sendall(b"reserve-with-timeout 10\r\n")
        time.sleep(0.5)  # paused: nothing comes
        assert not worker.replies and (show_schedule(bs, "tick") or {})["fired"] == fired
        resumed = time.monotonic()
        assert client.post("/api/v1/schedules/tick/resume").is_success
        worker.sock.settimeout(10)
        woke = worker.reader.feed(worker.sock.recv(4096))
        assert woke[0].word == "RESERVED" and time.monotonic() - resumed < 3
        # delete: gone from the protocol's list; its jobs stay
        assert client.post("/api/v1/schedules/tick/delete").json() == {"deleted": "tick"}
        assert show_schedule(bs, "tick") is None
        listed = json.loads(bs.ask("beanq-schedule-list").body or b"")
        assert [s["name"] for s in listed] == ["a/b", "digest"]
        assert bs.yaml(f"stats-job {woke[0].args[0]}")["state"] == "reserved"
        for path, status in [
            ("/api/v1/schedules/tick/pause", 404),
            ("/api/v1/schedules/tick/resume", 404),
            ("/api/v1/schedules/tick/delete", 404),
            ("/api/v1/schedules/a%2Fpause", 400),  # (no action named: not a pause of "a")
        ]:
            answer = client.post(path)
            assert answer.status_code == status, path
            assert set(answer.json()) == {"error", "message"}
        steady = {name: show_schedule(bs, name) for name in ("a/b", "digest")}
        bs.close()
        worker.close()
    # the binlog recorded the console's changes as it records the commands
    with http_server(*args) as (port, client):
        bs = Beanstalk(port)
        listed = json.loads(bs.ask("beanq-schedule-list").body or b"")
        assert [s["name"] for s in listed] == ["a/b", "digest"]
        for shown in listed:
            before = steady[shown["name"]]
            assert before is not None
            assert {k: shown[k] for k in STEADY} == {k: before[k] for k in STEADY}
        bs.close()


def test_schedules_read_only_without_a_token_file() -> None:
    with http_server() as (port, client):
        bs = Beanstalk(port)
        add_schedule(bs, "nightly", tube="n", cron="0 3 * * *", body="secret")
        row = client.get("/api/v1/schedules/nightly").json()
        assert row["size"] == 6 and "body" not in row and "body_b64" not in row  # hidden
        (listed,) = client.get("/api/v1/schedules").json()["schedules"]
        assert listed.pop("next_fire_in") == pytest.approx(row.pop("next_fire_in"), abs=1)
        assert listed == row
        for action in ("pause", "resume", "delete"):
            answer = client.post(f"/api/v1/schedules/nightly/{action}")
            assert answer.status_code == 403 and answer.json()["error"] == "forbidden"
        assert (show_schedule(bs, "nightly") or {})["paused"] is False
        bs.close()


def auth_samples(client: httpx.Client) -> dict[tuple[str, str], float]:
    """The beanq_auth_* samples: (name, "label=value,...") -> value."""
    return {
        (name, ",".join(f"{key}={value}" for key, value in labels)): value
        for (name, labels), value in scrape(client).items()
        if name.startswith("beanq_auth_")
    }


def test_auth_counts_in_metrics(tmp_path: Path) -> None:
    """--auth's successes, failures and refused commands are counted in /metrics (stats has
    no such field and its counters do not move for refused commands)."""
    from tests.test_auth import ADMIN_TOKEN, PUT_TOKEN, entry

    path = tmp_path / "auth.toml"
    path.write_text(entry("adm", ADMIN_TOKEN, admin=True) + entry("prod", PUT_TOKEN, put='["a"]'))
    with http_server("--auth", str(path)) as (port, client):
        assert auth_samples(client) == {  # (the failures from 0, so that the first is a rise)
            ("beanq_auth_failures_total", "method=certificate,reason=unknown"): 0,
            ("beanq_auth_failures_total", "method=token,reason=throttled"): 0,
            ("beanq_auth_failures_total", "method=token,reason=wrong_token"): 0,
        }
        producer = Beanstalk(port)
        assert producer.ask("use a").word == "UNAUTHORIZED"
        assert producer.ask("put 0 0 60 1", b"x").word == "UNAUTHORIZED"
        assert producer.ask("beanq-auth prod.wrong").word == "UNAUTHORIZED"
        assert producer.ask(f"beanq-auth {PUT_TOKEN}").word == "OK"
        assert producer.ask("use a").word == "USING"
        assert producer.ask("pause-tube a 1").word == "UNAUTHORIZED"
        assert producer.ask("watch a").word == "UNAUTHORIZED"
        assert producer.ask("reserve-with-timeout 0").word == "UNAUTHORIZED"  # default
        admin = Beanstalk(port)
        assert admin.ask(f"beanq-auth {ADMIN_TOKEN}").word == "OK"
        stats = admin.yaml("stats")
        assert stats["cmd-use"] == "1" and stats["cmd-pause-tube"] == "0"
        assert not [key for key in stats if "auth" in key]
        guesser = Beanstalk(port)  # 3 free failures, a 4th that makes the address wait...
        for _ in range(4):
            assert guesser.ask("beanq-auth nobody.guess").word == "UNAUTHORIZED"
        assert guesser.ask(f"beanq-auth {ADMIN_TOKEN}").word == "UNAUTHORIZED"  # ...unchecked
        got = auth_samples(client)
        for conn in (producer, admin, guesser):
            conn.close()
    assert got == {
        ("beanq_auth_success_total", "method=token,token=adm"): 1,
        ("beanq_auth_success_total", "method=token,token=prod"): 1,
        ("beanq_auth_failures_total", "method=certificate,reason=unknown"): 0,
        ("beanq_auth_failures_total", "method=token,reason=throttled"): 1,
        ("beanq_auth_failures_total", "method=token,reason=wrong_token"): 5,
        ("beanq_auth_refused_commands_total", "command=pause-tube,reason=rights"): 1,
        ("beanq_auth_refused_commands_total", "command=reserve-with-timeout,reason=rights"): 1,
        ("beanq_auth_refused_commands_total", "command=watch,reason=rights"): 1,
        ("beanq_auth_refused_commands_total", "command=put,reason=unauthenticated"): 1,
        ("beanq_auth_refused_commands_total", "command=use,reason=unauthenticated"): 1,
    }


def test_certificate_authentications_in_metrics(tmp_path: Path) -> None:
    """In process: a client certificate's subject that a token names counts as a success of
    that token, one that none names as a failure; /metrics shows both (token names only)."""
    from prometheus_client import generate_latest

    from beanq import auth
    from beanq.dispatch import Hub
    from beanq.http.metrics import registry
    from beanq.http.view import EngineView
    from beanq.tubes import Engine
    from tests.test_auth import HOST, NOW, entry

    path = tmp_path / "auth.toml"
    path.write_text(entry("w", None, reserve='["jobs"]', subject="O=Example,CN=worker-1"))
    store = auth.TokenStore.load(str(path))
    authority = auth.Authority(store, required=True)
    engine = Engine(NOW)
    hub = Hub(engine, HOST)
    for subject in ("O=Example,CN=worker-1", "O=Example,CN=worker-1", "O=Example,CN=mallory"):
        conn = hub.open()
        authority.attach(conn, "127.0.0.1")
        authority.certified(conn, subject)
    view = EngineView(
        engine,
        HOST,
        max_job_size=1,
        clock=lambda: NOW,
        draining=lambda: False,
        sessions=list,
        auth=authority.audit(),
    )
    text = generate_latest(registry(view, 10)).decode()
    samples = {
        (s.name, tuple(s.labels.values())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("beanq_auth_")
    }
    assert samples[("beanq_auth_success_total", ("certificate", "w"))] == 2
    assert samples[("beanq_auth_failures_total", ("certificate", "unknown"))] == 1
    assert "mallory" not in text


def test_tube_cap_sums_the_rest_under_other() -> None:
    with http_server("--metrics-max-tubes", "3") as (port, client):
        bs = Beanstalk(port)
        for i in range(1, 8):  # tube t7 holds the most jobs, t1 the fewest
            bs.ask(f"use t{i}")
            for _ in range(i):
                bs.ask("put 0 0 60 1", b"x")
        bs.ask("use t1")
        bs.ask("watch t2")
        held = bs.ask("reserve-with-timeout 0")  # t2's first job: only t2 and default watched
        assert bs.ask(f"bury {held.args[0]} 5").word == "BURIED"
        assert bs.ask("reserve-with-timeout 0").word == "RESERVED"  # another of t2's, held
        bs.ask("pause-tube t3 100")
        bs.ask("pause-tube t4 200")
        names = [f"t{i}" for i in range(1, 8)] + ["default"]
        tube_stats = {name: bs.yaml(f"stats-tube {name}") for name in names}
        samples = scrape(client)
        bs.close()
    ready = {
        dict(labels)["tube"]: value
        for (name, labels), value in samples.items()
        if name == "beanstalkd_tube_current_jobs_ready_count"
    }
    assert set(ready) == {"t7", "t6", "t5", "_other"}
    rest = [name for name in names if name not in ready]
    other = (("tube", "_other"),)
    for key, metric in TUBE_STAT_TO_METRIC.items():
        expected = sum(int(tube_stats[name][key]) for name in rest)
        if key == "pause-time-left":  # (a second may pass between stats-tube and the scrape)
            assert expected - 2 <= samples[(metric, other)] <= expected, key
        else:
            assert samples[(metric, other)] == expected, key
    assert samples[("beanq_tube_puts_total", other)] == 1 + 2 + 3 + 4
    assert samples[("beanq_tube_reserves_total", other)] == 2
    assert samples[("beanq_tube_buries_total", other)] == 1
    assert samples[("beanq_tube_paused", other)] == 2
    assert samples[("beanq_tube_oldest_ready_age_seconds", other)] >= 0


def test_health_and_readiness_follow_drain_mode() -> None:
    with http_server() as (_port, client):
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        pid = int(client.get("/api/v1/stats").json()["pid"])
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while (ready := client.get("/readyz")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.json() == {"status": "draining"}
        assert client.get("/healthz").status_code == 200
        samples = scrape(client)
        assert samples[("beanstalkd_draining", ())] == 1
        assert not [key for key in samples if key[0].startswith("beanq_auth")]  # (no --auth)


def test_api_endpoints_and_errors() -> None:
    with http_server() as (port, client):
        bs = Beanstalk(port)
        bs.ask("use api")
        ids = [int(bs.ask("put 5 0 60 4", b"b%03d" % i).args[0]) for i in range(7)]
        stats = client.get("/api/v1/stats").json()
        assert stats["total-jobs"] == 7 and stats["version"].startswith("beanq-")
        names = [t["name"] for t in client.get("/api/v1/tubes").json()["tubes"]]
        assert names == ["default", "api"]
        tube = client.get("/api/v1/tubes/api").json()
        assert tube["current-jobs-ready"] == 7 and tube["total-jobs"] == 7
        # paging by id
        first = client.get("/api/v1/tubes/api/jobs", params={"state": "ready", "limit": 3})
        page = first.json()
        assert [j["id"] for j in page["jobs"]] == ids[:3]
        assert page["next_after"] == ids[2]
        rest = client.get(
            "/api/v1/tubes/api/jobs", params={"after": page["next_after"], "limit": 10}
        ).json()
        assert [j["id"] for j in rest["jobs"]] == ids[3:] and rest["next_after"] is None
        assert client.get("/api/v1/tubes/api/jobs", params={"state": "buried"}).json()["jobs"] == []
        job = client.get(f"/api/v1/jobs/{ids[0]}").json()
        assert job["state"] == "ready" and job["tube"] == "api" and job["size"] == 4
        assert "body" not in job  # no token file, no --http-show-bodies
        conns = client.get("/api/v1/connections").json()["connections"]
        assert len(conns) == 1 and conns[0]["use"] == "api" and conns[0]["producer"]
        # errors: JSON bodies with the right status
        for path, status in [
            ("/api/v1/tubes/nope", 404),
            ("/api/v1/tubes/nope/jobs", 404),
            ("/api/v1/jobs/999999", 404),
            ("/api/v1/jobs/abc", 400),
            ("/api/v1/tubes/api/jobs?limit=0", 400),
            ("/api/v1/tubes/api/jobs?limit=1001", 400),
            ("/api/v1/tubes/api/jobs?after=-1", 400),
            ("/api/v1/tubes/api/jobs?after=x", 400),
            ("/api/v1/tubes/api/jobs?state=gone", 400),
            ("/api/v1/nothing", 404),
        ]:
            response = client.get(path)
            assert response.status_code == status, path
            assert response.headers["content-type"] == "application/json"
            assert set(response.json()) == {"error", "message"}
        assert client.post("/api/v1/stats").status_code == 405
        bs.close()


def test_show_bodies_without_token() -> None:
    with http_server("--http-show-bodies") as (port, client):
        bs = Beanstalk(port)
        job_id = bs.ask("put 0 0 60 5", b"hello").args[0]
        binary_id = bs.ask("put 0 0 60 2", b"\xff\x00").args[0]
        assert client.get(f"/api/v1/jobs/{job_id}").json()["body"] == "hello"
        assert client.get(f"/api/v1/jobs/{binary_id}").json()["body_base64"] == "/wA="
        bs.close()


def test_token_gate(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")
    with http_server("--http-token-file", str(token_file)) as (port, client):
        bs = Beanstalk(port)
        job_id = bs.ask("put 0 0 60 5", b"hello").args[0]
        for path in ("/api/v1/stats", "/api/v1/tubes", f"/api/v1/jobs/{job_id}"):
            missing = client.get(path)
            assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
            assert missing.headers["www-authenticate"].startswith("Bearer")
            wrong = client.get(path, headers={"Authorization": "Bearer s3cret-tokeX"})
            assert wrong.status_code == 401
            assert client.get(path, headers={"Authorization": "Bearer s3cret-token"}).is_success
        job = client.get(
            f"/api/v1/jobs/{job_id}", headers={"Authorization": "Bearer s3cret-token"}
        ).json()
        assert job["body"] == "hello"  # with a token, bodies are shown
        # health checks and metrics stay open, for probes and scrapers
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200
        bs.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http", "127.0.0.1:notaport"], "--http takes [ADDR:]PORT"),
        (["--http", "70000"], "--http takes [ADDR:]PORT"),
        (["--log-format", "xml"], "--log-format takes text or json"),
        (["--metrics-max-tubes", "many"], "invalid size: many"),
    ],
)
def test_bad_http_flags_exit_5(args: list[str], message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "beanq", *args], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 5 and message in out.stderr


def test_http_port_taken_exits_111() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        http_port = taken.getsockname()[1]
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "beanq",
                "-p",
                str(free_port()),
                "--http",
                f"127.0.0.1:{http_port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 111 and "--http 127.0.0.1" in out.stderr


def test_json_log_lines() -> None:
    with spawn_beanq("-V", "--log-format", "json") as (_host, port, proc):
        bs = Beanstalk(port)
        bs.ask("list-tubes")
        bs.close()
        deadline = time.monotonic() + 10
        while "close" not in proc.output():
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.05)
        lines = [json.loads(line) for line in proc.output().splitlines() if line.strip()]
    assert all({"time", "level", "event"} <= set(line) for line in lines)
    accept = next(line for line in lines if line["event"].startswith("accept"))
    assert accept["level"] == "info" and isinstance(accept["connection"], int)


SERVING_SPY = """
import json, os, socket, sys, threading, time
from beanq import cli
port = int(sys.argv[sys.argv.index("-p") + 1])
http = sys.argv[sys.argv.index("--http") + 1] if "--http" in sys.argv else None
def probe():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"list-tubes\\r\\n")
                s.recv(100)
            if http is not None:
                host, _, http_port = http.rpartition(":")
                socket.create_connection((host, int(http_port)), timeout=5).close()
            elif "trio" not in sys.modules:
                raise OSError("trio not there yet")
            time.sleep(0.3)
            break
        except OSError:
            time.sleep(0.02)
    print(json.dumps(sorted(sys.modules)), flush=True)
    os._exit(0)
threading.Thread(target=probe, daemon=True).start()
cli.main(sys.argv[1:])
"""
HTTP_MODULES = {"beanq.http", "hypercorn", "starlette", "prometheus_client", "anyio", "h11"}


@pytest.mark.parametrize("with_http", [False, True], ids=["without", "with"])
def test_http_stack_is_imported_only_with_http(with_http: bool) -> None:
    args = ["-l", "127.0.0.1", "-p", str(free_port())]
    if with_http:
        args += ["--http", f"127.0.0.1:{free_port()}"]
    out = subprocess.run(
        [sys.executable, "-c", SERVING_SPY, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr
    modules = set(json.loads(out.stdout.splitlines()[0]))
    assert "trio" in modules and "beanq.server" in modules  # serving, on trio
    if with_http:
        assert modules >= HTTP_MODULES
    else:
        assert not HTTP_MODULES & modules, sorted(HTTP_MODULES & modules)

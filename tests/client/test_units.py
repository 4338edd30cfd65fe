"""The client's pure parts: addresses, bodies, the error table, reply parsing, stats typing,
the pool's choice of server, and the worker's routing and retry decisions."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import cast

import beanq_client
import pytest
from beanq_client import commands, errors
from beanq_client.address import Address, default_address, parse_address
from beanq_client.jobs import JSON, RawCodec, TextCodec, make_codec
from beanq_client.pool import Member, Ring
from beanq_client.stats import JobStats, StatsFormatError, parse_job_stats, parse_list, parse_stats
from beanq_client.worker import Backoff, Outcome, Registry, encode_task

from beanq.protocol import Reply

# --- addresses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (("10.0.0.1", 11301), Address("10.0.0.1", 11301)),
        ("example.org:12000", Address("example.org", 12000)),
        ("example.org", Address("example.org", 11300)),
        (":11400", Address("127.0.0.1", 11400)),
        ("[::1]:11301", Address("::1", 11301)),
        ("[::1]", Address("::1", 11300)),
        ("::1", Address("::1", 11300)),
        ("unix:/run/beanq.sock", Address("", 0, unix_path="/run/beanq.sock")),
        ("unix:///run/beanq.sock", Address("", 0, unix_path="/run/beanq.sock")),
        ("beanstalk://q.example:11302/emails", Address("q.example", 11302, tube="emails")),
        ("beanstalk://q.example", Address("q.example", 11300)),
        ("beanstalk://[::1]:11303/", Address("::1", 11303)),
    ],
)
def test_address_spellings(text: str | tuple[str, int], expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "host:0",
        "host:99999",
        "host:port",
        "unix:",
        "http://host:1/",
        "beanstalk://host:1/-bad",
        "beanstalk://host:1/a?b=c",
        "[::1",
        "[::1]x",
    ],
)
def test_bad_addresses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)


def test_address_text_round_trips() -> None:
    for text in (
        "127.0.0.1:11300",
        "[::1]:11301",
        "unix:/tmp/x.sock",
        "beanstalk://10.1.1.1:5/jobs",
    ):
        assert str(parse_address(text)) == text
    assert parse_address("beanstalk://h:7/jobs").endpoint == "h:7"


def test_default_address_reads_beanstalk_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEANSTALK_URL", raising=False)
    assert default_address() == Address("127.0.0.1", 11300)
    monkeypatch.setenv("BEANSTALK_URL", "beanstalk://10.2.3.4:11400/mail")
    assert default_address() == Address("10.2.3.4", 11400, tube="mail")


# --- bodies ------------------------------------------------------------------------------------


def test_body_codecs() -> None:
    assert make_codec(None, None).encode(b"\x00\xff") == b"\x00\xff"
    with pytest.raises(TypeError):
        RawCodec().encode("text")  # type: ignore[arg-type]
    latin = make_codec("latin-1", None)
    assert latin.encode("é") == b"\xe9" and latin.decode(b"\xe9") == "é"
    with pytest.raises(TypeError):
        TextCodec().encode(b"bytes")  # type: ignore[arg-type]
    as_json = make_codec(None, JSON)
    assert as_json.encode({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    assert as_json.decode(b'{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError):
        make_codec("utf-8", JSON)
    with pytest.raises(LookupError):
        make_codec("no-such-encoding", None)


def test_encode_task_payload() -> None:
    payload = json.loads(encode_task("send", "bob", retries=2))
    assert payload == {"task": "send", "args": ["bob"], "kwargs": {"retries": 2}}


# --- the error table ---------------------------------------------------------------------------

ERROR_WORDS = {
    "NOT_FOUND": errors.NotFoundError,
    "TIMED_OUT": errors.TimedOutError,
    "DEADLINE_SOON": errors.DeadlineSoonError,
    "BURIED": errors.BuriedError,
    "JOB_TOO_BIG": errors.JobTooBigError,
    "DRAINING": errors.DrainingError,
    "EXPECTED_CRLF": errors.ExpectedCrlfError,
    "BAD_FORMAT": errors.BadFormatError,
    "UNKNOWN_COMMAND": errors.UnknownCommandError,
    "OUT_OF_MEMORY": errors.OutOfMemoryError,
    "INTERNAL_ERROR": errors.InternalError,
    "NOT_IGNORED": errors.NotIgnoredError,
    "UNAUTHORIZED": errors.UnauthorizedError,  # beanq with --auth
    "BAD_SCHEDULE": errors.BadScheduleError,
}


def test_every_error_reply_has_its_exception() -> None:
    assert errors.ERRORS == ERROR_WORDS
    for word, cls in ERROR_WORDS.items():
        exc = errors.error_from_reply(Reply(word), "INSERTED")
        assert type(exc) is cls and isinstance(exc, errors.CommandError)
        assert str(exc) == word
    bad = errors.error_from_reply(Reply("BAD_SCHEDULE", ("unknown", "key", "'x'")), "ADDED")
    assert isinstance(bad, errors.BadScheduleError) and str(bad) == "unknown key 'x'"
    buried = errors.error_from_reply(Reply("BURIED", ("17",)), "INSERTED")
    assert isinstance(buried, errors.BuriedError) and buried.id == 17
    assert errors.BeanstalkConnectionError.__mro__[1:3] == (errors.BeanstalkError, ConnectionError)


@pytest.mark.parametrize(
    ("request_", "reply", "expected"),
    [
        (commands.put(b"x", 0, 0, 1), Reply("INSERTED", ("5",)), 5),
        (commands.reserve(None), Reply("RESERVED", ("5", "1"), b"x"), (5, b"x")),
        (commands.bury(5, 1), Reply("BURIED"), None),
        (commands.kick(9), Reply("KICKED", ("3",)), 3),
        (commands.kick_job(9), Reply("KICKED"), None),
        (commands.watch("a"), Reply("WATCHING", ("2",)), 2),
        (commands.use("a"), Reply("USING", ("a",)), "a"),
        (commands.list_tubes(), Reply("OK", ("14",), b"---\n- default\n"), ["default"]),
    ],
)
def test_reply_meanings(request_: commands.Request[object], reply: Reply, expected: object) -> None:
    assert request_.parse(reply) == expected


def test_same_word_means_success_or_error_by_command() -> None:
    with pytest.raises(errors.BuriedError) as info:
        commands.put(b"x", 0, 0, 1).parse(Reply("BURIED", ("8",)))
    assert info.value.id == 8
    with pytest.raises(errors.BuriedError) as info:
        commands.release(8, 0, 0).parse(Reply("BURIED"))
    assert info.value.id is None
    assert commands.bury(8, 0).parse(Reply("BURIED")) is None


def test_unexpected_replies_are_reported_not_guessed() -> None:
    with pytest.raises(errors.UnexpectedReplyError):
        commands.delete(1).parse(Reply("INSERTED", ("1",)))
    with pytest.raises(errors.UnexpectedReplyError):
        commands.put(b"x", 0, 0, 1).parse(Reply("INSERTED", ("x",)))
    with pytest.raises(errors.UnexpectedReplyError):
        commands.touch(1).parse(Reply("WHAT"))


def test_reserve_timeouts_round_up() -> None:
    assert commands.reserve(0.2).data == b"reserve-with-timeout 1\r\n"
    assert commands.reserve(0).data == b"reserve-with-timeout 0\r\n"
    assert commands.reserve(None).wait is None
    with pytest.raises(ValueError):
        commands.reserve(-1)


def test_tube_state_restore_commands() -> None:
    state = commands.TubeState.starting_at("jobs")
    assert [r.data for r in state.restore()] == [
        b"use jobs\r\n",
        b"watch jobs\r\n",
        b"ignore default\r\n",
    ]
    state.watched("default")
    assert [r.data for r in state.restore()] == [b"use jobs\r\n", b"watch jobs\r\n"]
    assert commands.TubeState().restore() == []


# --- stats ------------------------------------------------------------------------------------


def test_stats_types_come_from_the_field_not_the_text() -> None:
    # beanstalkd 1.12 writes strings bare: a tube named 007 must stay "007".
    body = b"---\nid: 3\ntube: 007\nstate: ready\npri: 10\nreserves: 0\n"
    stats = parse_job_stats(body)
    assert stats["tube"] == "007" and stats["id"] == 3 and stats["pri"] == 10
    server = parse_stats(
        b'---\nversion: "1.12"\nrusage-utime: 0.001500\ndraining: false\nid: 1234567890123456\n'
        b"os: #1 SMP PREEMPT\nfuture-field: 12\nfuture-flag: true\n",
        "server",
    )
    assert server == {
        "version": "1.12",
        "rusage-utime": 0.0015,
        "draining": False,
        "id": "1234567890123456",
        "os": "#1 SMP PREEMPT",
        "future-field": 12,
        "future-flag": True,
    }
    assert parse_stats(b'---\nname: "a \\"b\\""\n', "tube") == {"name": 'a "b"'}


def test_stats_format_errors() -> None:
    with pytest.raises(StatsFormatError):
        parse_job_stats(b"---\npri: high\n")
    with pytest.raises(StatsFormatError):
        parse_job_stats(b"---\nnot yaml\n")
    with pytest.raises(StatsFormatError):
        parse_list(b"---\nnot a list\n")
    assert parse_list(b'---\n- default\n- "quoted"\n') == ["default", "quoted"]


# --- pool ring ---------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ring(strategy: str = "round-robin") -> tuple[Ring[None], FakeClock]:
    clock = FakeClock()
    members = [Member(name, None) for name in ("a:1", "b:1", "c:1")]
    return Ring(members, strategy, 5.0, clock), clock  # type: ignore[arg-type]


def test_round_robin_skips_servers_that_are_down_until_retry_time() -> None:
    r, clock = ring()
    firsts = [r.put_order(None)[0].name for _ in range(4)]
    assert firsts == ["a:1", "b:1", "c:1", "a:1"]
    r.down(r.members[1])
    assert [m.name for m in r.put_order(None)] == ["c:1", "a:1"]  # b is resting
    assert [m.name for m in r.reserve_order()] == ["a:1", "c:1"]
    clock.now += 5.0
    assert [m.name for m in r.reserve_order()] == ["b:1", "c:1", "a:1"]  # b is tried again


def test_hash_strategy_keeps_a_key_on_one_server_and_fails_over_in_order() -> None:
    r, _ = ring("hash")
    with pytest.raises(ValueError):
        r.put_order(None)
    homes = {key: r.put_order(key)[0].name for key in ("user-1", "user-2", "user-3", "user-4")}
    assert {key: r.put_order(key)[0].name for key in homes} == homes  # stable
    assert len(set(homes.values())) > 1  # and spread
    home = next(m for m in r.members if m.name == homes["user-1"])
    order = [m.name for m in r.put_order("user-1")]
    r.down(home)
    assert [m.name for m in r.put_order("user-1")] == order[1:]


def test_ring_refuses_bad_configuration() -> None:
    with pytest.raises(ValueError):
        Ring([], "round-robin", 1.0, FakeClock())
    with pytest.raises(ValueError):
        Ring([Member("a:1", None), Member("a:1", None)], "round-robin", 1.0, FakeClock())
    with pytest.raises(ValueError):
        Ring([Member("a:1", None)], "random", 1.0, FakeClock())  # type: ignore[arg-type]


# --- worker decisions --------------------------------------------------------------------------


def registry(**overrides: object) -> Registry:
    settings: dict[str, object] = {
        "concurrency": 1,
        "max_attempts": 3,
        "backoff": Backoff(base=2, factor=3, maximum=60),
        "attempts_from": "reserves",
        "reserve_timeout": 1.0,
        "logger": None,
    }
    settings.update(overrides)
    reg = Registry(["jobs"], **settings)  # type: ignore[arg-type]

    @reg.task("add")
    def add(a: int, b: int = 0) -> int:
        return a + b

    @reg.task("jobs", raw=True)
    def raw(body: bytes) -> None:
        pass

    return reg


def job_stats(tube: str = "mail", reserves: int = 1, pri: int = 7) -> JobStats:
    return cast(JobStats, {"tube": tube, "reserves": reserves, "pri": pri, "ttr": 10})


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(base=2, factor=3, maximum=60)
    assert [backoff.delay(n) for n in range(1, 6)] == [2, 6, 18, 54, 60]
    assert Backoff(base=0.2).delay(1) == 1  # whole seconds, rounded up
    assert Backoff(base=0).delay(3) == 0


def test_plan_routes_payloads_and_raw_tubes() -> None:
    reg = registry()
    job = beanq_client.Job(1, encode_task("add", 1, b=2))
    plan = reg.plan(job, job_stats(reserves=2))
    assert plan.task is not None and plan.task.name == "add"
    assert (plan.args, plan.kwargs, plan.attempt) == ((1,), {"b": 2}, 2)
    raw = reg.plan(beanq_client.Job(2, b"\x00bytes"), job_stats(tube="jobs"))
    assert raw.task is not None and raw.task.raw and raw.args == (b"\x00bytes",)
    for body, problem in [
        (b"\xff not json", "not a JSON task payload"),
        (b"[1, 2]", "no task name"),
        (b'{"task": "add", "args": {}}', "malformed"),
        (encode_task("missing"), "unknown task"),
    ]:
        plan = reg.plan(beanq_client.Job(3, body), job_stats())
        assert plan.task is None and plan.problem is not None and problem in plan.problem


def test_settle_deletes_releases_with_backoff_then_buries() -> None:
    reg = registry()
    job = beanq_client.Job(1, encode_task("add", 1))
    outcomes = []
    for reserves in (1, 2, 3):
        stats = job_stats(reserves=reserves)
        plan = reg.plan(job, stats)
        outcomes.append(reg.settle(plan, stats, RuntimeError("boom")))
    assert [(s.outcome, s.delay, s.priority) for s in outcomes] == [
        (Outcome.RELEASED, 2, 7),
        (Outcome.RELEASED, 6, 7),
        (Outcome.BURIED, 0, 7),
    ]
    plan = reg.plan(job, job_stats())
    assert reg.settle(plan, job_stats(), None).outcome is Outcome.DELETED
    unknown = reg.plan(beanq_client.Job(2, encode_task("nope")), job_stats())
    assert reg.settle(unknown, job_stats(), None).outcome is Outcome.BURIED


def test_settle_with_attempts_in_the_payload() -> None:
    reg = registry(attempts_from="payload")
    job = beanq_client.Job(1, encode_task("add", 1))
    stats = job_stats(reserves=9)  # ignored in this mode
    plan = reg.plan(job, stats)
    assert plan.attempt == 1
    settle = reg.settle(plan, stats, ValueError())
    assert settle.outcome is Outcome.RETRIED and settle.delay == 2
    assert settle.body is not None
    again = beanq_client.Job(2, settle.body)
    assert json.loads(settle.body)["attempts"] == 1
    plan = reg.plan(again, stats)
    assert plan.attempt == 2 and plan.args == (1,)
    last = reg.plan(
        beanq_client.Job(3, json.dumps({**json.loads(settle.body), "attempts": 2}).encode()), stats
    )
    assert reg.settle(last, stats, ValueError()).outcome is Outcome.BURIED


def test_registry_refuses_duplicates_and_bad_settings() -> None:
    reg = registry()
    with pytest.raises(ValueError):
        reg.task("add")(lambda: None)
    for bad in ({"concurrency": 0}, {"max_attempts": 0}, {"attempts_from": "magic"}):
        with pytest.raises(ValueError):
            registry(**bad)
    assert reg.tube_commands() == [("watch", "jobs"), ("ignore", "default")]


# --- packaging ---------------------------------------------------------------------------------


def test_sync_client_imports_neither_trio_nor_the_server() -> None:
    code = (
        "import sys, beanq_client\n"
        "c = beanq_client.Client(('127.0.0.1', 1))\n"
        "bad = [m for m in sys.modules if m == 'trio' or m.split('.')[0] == 'beanq' and m not in "
        "('beanq', 'beanq.protocol', 'beanq.config', 'beanq._compiled__mypyc')]\n"
        # (mypyc's runtime library; beanq.config, the job-size constants, imports nothing)
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert out.stdout.strip() == "[]"


def test_trio_names_load_on_first_use() -> None:
    assert beanq_client.AsyncClient.__name__ == "AsyncClient"
    with pytest.raises(AttributeError):
        beanq_client.NoSuchThing  # noqa: B018

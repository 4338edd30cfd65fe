"""Non-Python clients, unchanged, through their public APIs against the real beanq process.

Ruby's beaneater, PHP's Pheanstalk and Node's fivebeans and jackd each run one scenario
(tests/foreign/*/, one script per client) and print what their API handed back, one JSON object a
line; this module compares that with what the scenario must give. The same scripts also run
against the reference beanstalkd, so the expectations below are the reference's, except where a
client shows beanq's documented YAML quoting (README, "Differences from beanstalkd").

The scenario: use/put with priority, delay and TTR, a UTF-8 text body, a binary body and one of
60,000 bytes; stats-job after each change of state; peek-ready, -delayed, -buried and peek by id;
watch/ignore and list-tubes-watched; reserve with timeouts; bury, kick, kick-job, release with a
delay, touch, delete; stats-tube before and after pause-tube; list-tubes; stats; and the errors
the client surfaces: TIMED_OUT, NOT_FOUND on delete and peek, JOB_TOO_BIG, NOT_IGNORED.

A missing runtime or package skips its tests, or fails them when BEANQ_REQUIRE_FOREIGN=1 (as in
CI, whose .ci/run installs them: Debian's ruby-beaneater and php-pda-pheanstalk, and `npm ci` in
tests/foreign/node from its lock file).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import ServerProcess, skip_or_fail, spawn_beanq, spawn_beanstalkd

REQUIRE_FOREIGN_ENV = "BEANQ_REQUIRE_FOREIGN"
FOREIGN = Path(__file__).resolve().parent / "foreign"
SCRIPT_TIMEOUT = 60.0

TEXT = "héllo wörld ✓ 日本"
BINARY = bytes(range(256)) + TEXT.encode()
LARGE = b"beanq " * 10_000
# jackd 2.2.2's put JSON-encodes every object, Buffers included (its README says a Buffer goes
# as-is), so the binary job it sends is this text.
BINARY_VIA_JACKD = json.dumps({"type": "Buffer", "data": list(BINARY)}, separators=(",", ":"))


class Quoted(str):
    """A stats string that beanq double-quotes (``tube: "jobs"``, as beanstalkd 1.13 does) and
    beanstalkd 1.12 does not. Clients that parse the YAML see neither quotes."""


@dataclass(frozen=True)
class Client:
    runtime: str
    script: str
    # How to tell whether the client library is installed: a command that exits 0 if it is.
    probe: Callable[[], bool]
    install_hint: str
    # True when the client hands stats over as the reply's text (Pheanstalk splits lines at
    # ': '; jackd returns the YAML unparsed), so numbers are strings and quotes stay.
    yaml_text: bool
    # What the client gives back for each error step.
    errors: dict[str, dict[str, object]]
    pauses: bool = True
    binary_sent: bytes = BINARY


def _exits_zero(*argv: str) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _node_package(name: str) -> Callable[[], bool]:
    return lambda: (FOREIGN / "node" / "node_modules" / name / "package.json").is_file()


_WORDS = {
    "timed-out": {"error": "TIMED_OUT"},
    "delete-missing": {"error": "NOT_FOUND"},
    "peek-missing": {"error": "NOT_FOUND"},
    "too-big": {"error": "JOB_TOO_BIG"},
    "not-ignored": {"error": "NOT_IGNORED"},
}

CLIENTS = {
    "beaneater": Client(
        runtime="ruby",
        script="ruby/beaneater.rb",
        probe=lambda: _exits_zero("ruby", "-e", 'require "beaneater"'),
        install_hint="apt-get install ruby ruby-beaneater",
        yaml_text=False,
        errors={
            "timed-out": {"error": "TimedOutError"},
            "delete-missing": {"error": "NotFoundError"},
            "peek-missing": {"job": None},  # jobs.find answers nil for NOT_FOUND
            "too-big": {"error": "JobTooBigError"},
            "not-ignored": {"error": "NotIgnoredError"},
        },
    ),
    "pheanstalk": Client(
        runtime="php",
        script="php/pheanstalk.php",
        probe=lambda: _exits_zero(
            "php", "-r", 'exit((@include "Pheanstalk/autoload.php") ? 0 : 1);'
        ),
        install_hint="apt-get install php-cli php-pda-pheanstalk",
        yaml_text=True,
        errors={
            "timed-out": {"job": None},  # reserveWithTimeout answers null for TIMED_OUT
            "delete-missing": {"error": "JobNotFoundException: Cannot delete job 3: NOT_FOUND"},
            "peek-missing": {"error": "JobNotFoundException: NOT_FOUND: Job 3 does not exist."},
            "too-big": {
                "error": "JobTooBigException: JOB_TOO_BIG: job data exceeds server-enforced limit"
            },
            "not-ignored": {
                "error": "ServerException: NOT_IGNORED: cannot ignore last tube in watchlist"
            },
        },
    ),
    "fivebeans": Client(
        runtime="node",
        script="node/fivebeans.js",
        probe=_node_package("fivebeans"),
        install_hint="install node and npm, then run `npm ci` in tests/foreign/node",
        yaml_text=False,
        errors=_WORDS,
    ),
    "jackd": Client(
        runtime="node",
        script="node/jackd.js",
        probe=_node_package("jackd"),
        install_hint="install node and npm, then run `npm ci` in tests/foreign/node",
        yaml_text=True,
        errors=_WORDS,
        pauses=False,  # jackd 2.2.2 sends pause-tube without its CRLF: no server answers
        binary_sent=BINARY_VIA_JACKD.encode(),
    ),
}


@functools.cache
def _missing(name: str) -> str | None:
    client = CLIENTS[name]
    if shutil.which(client.runtime) is None:
        return f"`{client.runtime}` is not installed, so {name} cannot run ({client.install_hint})"
    if not client.probe():
        return f"the {name} client is not installed ({client.install_hint})"
    return None


def expected_steps(client: Client, server: str, tube: str) -> list[dict[str, object]]:
    """What the scenario's script prints when every reply is right."""

    def seen(value: object) -> object:
        if not client.yaml_text:
            return value
        if isinstance(value, Quoted) and server == "beanq":
            return f'"{value}"'
        return str(value)

    def stats(**values: object) -> dict[str, object]:
        return {key.replace("_", "-"): seen(value) for key, value in values.items()}

    def job(job_id: int, state: str, pri: int, delay: int, ttr: int, **counts: int) -> object:
        counters = {"reserves": 0, "releases": 0, "buries": 0, "kicks": 0} | counts
        values = stats(tube=Quoted(tube), state=state, pri=pri, delay=delay, ttr=ttr, **counters)
        return {"step": "stats-job", "id": job_id, "stats": values}

    def tube_stats(paused: bool) -> object:
        values = stats(
            name=Quoted(tube),
            current_jobs_ready=1,
            current_jobs_delayed=0,
            current_jobs_buried=0,
            current_jobs_reserved=0,
            total_jobs=4,
            current_using=1,
            current_watching=1,
            cmd_delete=3,
            cmd_pause_tube=1 if paused else 0,
            pause=60 if paused else 0,
        )
        return {"step": "stats-tube", "stats": values}

    binary = {"step": "reserved", "id": 2, "body_hex": client.binary_sent.hex()}
    text = {"step": "reserved", "id": 1, "text": TEXT}
    large_sha = "bec1c128577e7a4a132542051a27587c4ca80259fc72cd36cb242cdf1e244f4e"
    errors = client.errors
    return [
        {"step": "used", "tube": tube},
        {"step": "put", "ids": [1, 2, 3, 4]},
        job(3, "delayed", pri=100, delay=60, ttr=5),
        {"step": "peek-delayed", "id": 3, "body": "later"},
        {"step": "peek-ready", "id": 2},
        {"step": "watched", "tubes": [tube]},
        binary,
        job(2, "reserved", pri=5, delay=0, ttr=30, reserves=1),
        text,
        {"step": "peek-buried", "id": 1},
        job(1, "buried", pri=50, delay=0, ttr=30, reserves=1, buries=1),
        {"step": "kicked", "count": 1},
        job(1, "ready", pri=50, delay=0, ttr=30, reserves=1, buries=1, kicks=1),
        job(2, "delayed", pri=1000, delay=1, ttr=30, reserves=1, releases=1),
        {"step": "reserved", "id": 4, "size": len(LARGE), "sha256": large_sha},
        text,
        binary,
        {"step": "timed-out", **errors["timed-out"]},
        job(3, "ready", pri=100, delay=60, ttr=5, kicks=1),
        tube_stats(paused=False),
        *([tube_stats(paused=True)] if client.pauses else []),
        {"step": "peek", "id": 3, "body": "later"},
        {"step": "delete-missing", **errors["delete-missing"]},
        {"step": "peek-missing", **errors["peek-missing"]},
        {"step": "too-big", **errors["too-big"]},
        {"step": "not-ignored", **errors["not-ignored"]},
        {"step": "list-tubes", "tubes": ["default", tube]},
        {"step": "stats", "stats": stats(total_jobs=4, current_tubes=2, cmd_put=5, cmd_delete=5)},
    ]


def _run(name: str, host: str, port: int, tube: str, server: ServerProcess) -> list[object]:
    client = CLIENTS[name]
    argv = [client.runtime, str(FOREIGN / client.script), host, str(port), tube]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{name} did not finish in {SCRIPT_TIMEOUT}s; it printed:\n{exc.stdout!r}")
    report = (
        f"{' '.join(argv)} exited {done.returncode}\nstdout:\n{done.stdout}\n"
        f"stderr:\n{done.stderr}\nserver: {server.describe()}"
    )
    steps = []
    for line in done.stdout.splitlines():
        try:
            steps.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n{report}")
    if done.returncode != 0:
        pytest.fail(report)
    return steps


@pytest.mark.parametrize("server", ["beanq", "beanstalkd"])
@pytest.mark.parametrize("name", list(CLIENTS))
def test_client_scenario(name: str, server: str) -> None:
    missing = _missing(name)
    if missing is not None:
        skip_or_fail(missing, REQUIRE_FOREIGN_ENV)
    spawn = spawn_beanq if server == "beanq" else spawn_beanstalkd
    tube = f"{name}-jobs"
    with spawn() as (host, port, proc):
        got = _run(name, host, port, tube, proc)
    want = expected_steps(CLIENTS[name], server, tube)
    for index, step in enumerate(want):
        assert index < len(got), f"{name} stopped before step {index} ({step['step']})"
        assert got[index] == step, f"{name} against {server}, step {index} ({step['step']})"
    assert got[len(want) :] == [], f"{name} printed more steps than the scenario has"

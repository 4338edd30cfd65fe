"""--auth: tokens, rights and the gate (beanq.auth), in process on the dispatcher: every
command against every right (a table written out by hand, not derived from the gate), the
state machine fuzzed (no command runs before OK), failures and their growing delay, reload."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from beanq import auth, tokens
from beanq import protocol as p
from beanq.dispatch import Connection, HostInfo, Hub
from beanq.tubes import Engine
from tests.servers import spawn_beanq

HOST = HostInfo("test", 1, "host", "os", "arch", "0" * 16, lambda: (0.0, 0.0))
NOW = 1000.0
ADMIN_TOKEN = "adm.secret-admin"
PUT_TOKEN = "prod.secret-producer"


def entry(
    name: str,
    token: str | None,
    put: str = "[]",
    reserve: str = "[]",
    admin: bool = False,
    subject: str | None = None,
) -> str:
    lines = [f"[tokens.{name}]"]
    if token is not None:
        lines.append(f'hash = "{tokens.hash_token(token, log_n=4)}"')
    lines += [f"put = {put}", f"reserve = {reserve}", f"admin = {'true' if admin else 'false'}"]
    if subject is not None:
        lines.append(f'subject = "{subject}"')
    return "\n".join(lines) + "\n"


def store_file(tmp_path: Path) -> Path:
    path = tmp_path / "auth.toml"
    path.write_text(
        entry("adm", ADMIN_TOKEN, admin=True) + entry("prod", PUT_TOKEN, put='["a", "e-*"]')
    )
    return path


def ask(conn: Connection, data: bytes, now: float = NOW) -> bytes:
    conn.receive(data, now)
    out = b"".join(conn.out)
    conn.out.clear()
    conn.unsent = 0
    return out


def snapshot(hub: Hub) -> object:
    """Everything a command could change, bar the output."""
    e = hub.engine
    return (
        {i: (j.state, j.tube.name, j.pri, j.delay, j.reserver) for i, j in e.jobs.items()},
        {t.name: t.paused_until for t in e.tube_order},
        {s.id: (s.use.name, [t.name for t in s.watch], list(s.reserved)) for s in hub.connections},
        dict(e.commands),
        e.next_id,
    )


# --- the table: every command against every right ---------------------------------------------

# Rights under test: a producer on tube a, a worker on tube a, an admin; None: unauthenticated.
RIGHTS = {
    "none": None,
    "put": auth.Rights("p", ["a"], [], False),
    "reserve": auth.Rights("r", [], ["a"], False),
    "admin": auth.Rights("x", [], [], True),
}
# The connection under test uses and watches tube a (only) and holds job 3. Job 2 is ready in
# a, job 1 buried in b, job 4 delayed in b. Written out by hand: which rights may run what.
P, R, A = "put", "reserve", "admin"
TABLE: list[tuple[bytes, set[str]]] = [
    (b"put 0 0 10 1\r\nx\r\n", {P, A}),
    (b"beanq-put-unique k 0 0 10 1\r\nx\r\n", {P, A}),
    (b"use a\r\n", {P, A}),
    (b"use b\r\n", {A}),
    (b"watch a\r\n", {R, A}),
    (b"watch b\r\n", {A}),
    (b"ignore a\r\n", {P, R, A}),
    (b"reserve-with-timeout 0\r\n", {R, A}),
    (b"beanq-reserve-batch 2 0\r\n", {R, A}),
    (b"reserve-job 2\r\n", {R, A}),
    (b"reserve-job 1\r\n", {A}),
    (b"delete 3\r\n", {P, R, A}),
    (b"delete 2\r\n", {A}),
    (b"delete 1\r\n", {A}),
    (b"release 3 0 0\r\n", {P, R, A}),
    (b"bury 3 0\r\n", {P, R, A}),
    (b"touch 3\r\n", {P, R, A}),
    (b"stats-job 3\r\n", {P, R, A}),
    (b"stats-job 2\r\n", {A}),
    (b"peek 2\r\n", {A}),
    (b"peek-ready\r\n", {A}),
    (b"peek-delayed\r\n", {A}),
    (b"peek-buried\r\n", {A}),
    (b"kick 5\r\n", {A}),
    (b"kick-job 1\r\n", {A}),
    (b"pause-tube a 10\r\n", {A}),
    (b"beanq-flush b buried\r\n", {A}),
    (b"beanq-move b a buried 5\r\n", {A}),
    (b"beanq-list a ready 0 10\r\n", {A}),
    (b"stats\r\n", {P, R, A}),
    (b"stats-tube a\r\n", {P, R, A}),
    (b"list-tubes\r\n", {P, R, A}),
    (b"list-tube-used\r\n", {P, R, A}),
    (b"list-tubes-watched\r\n", {P, R, A}),
    (b"beanq-capabilities\r\n", {P, R, A}),
    (b"bogus\r\n", {P, R, A}),
]


def setup_hub(tmp_path: Path, required: bool = True) -> tuple[Hub, Connection, auth.TokenStore]:
    hub = Hub(Engine(NOW), HOST)
    store = auth.TokenStore.load(str(store_file(tmp_path)))
    other = hub.open()  # a plain connection makes jobs 3 and 4 in tube b
    assert ask(other, b"use b\r\nwatch b\r\nput 0 0 10 1\r\nx\r\n").startswith(b"USING")
    assert ask(other, b"reserve-job 1\r\nbury 1 0\r\n").endswith(b"BURIED\r\n")
    conn = hub.open()
    auth.Authority(store, required=required).attach(conn, "127.0.0.1")
    setup = b"beanq-auth %b\r\nuse a\r\nwatch a\r\nignore default\r\n" % ADMIN_TOKEN.encode()
    setup += b"put 0 0 10 1\r\nx\r\nput 0 0 10 1\r\nx\r\nreserve-job 3\r\n"
    ask(conn, setup)
    assert ask(other, b"put 0 100 10 1\r\nx\r\n") == b"INSERTED 4\r\n"
    return hub, conn, store


@pytest.mark.parametrize(
    "command,allowed", TABLE, ids=[c[0].split(b"\r")[0].decode() for c in TABLE]
)
@pytest.mark.parametrize("right", list(RIGHTS))
def test_every_command_against_every_right(
    tmp_path: Path, command: bytes, allowed: set[str], right: str
) -> None:
    hub, conn, _ = setup_hub(tmp_path)
    jobs = hub.engine.jobs
    assert jobs[2].tube.name == b"a" and jobs[3].reserver is conn.session
    assert jobs[1].tube.name == b"b" and jobs[4].tube.name == b"b"
    guard = conn.guard
    assert isinstance(guard, auth.Guard)
    guard.rights = RIGHTS[right]
    before = snapshot(hub)
    reply = ask(conn, command)
    if right in allowed:
        assert reply != p.UNAUTHORIZED, (command, reply)
    else:
        assert reply == p.UNAUTHORIZED, (command, reply)
        assert snapshot(hub) == before


# --- the state machine: nothing runs before OK ------------------------------------------------

COMMANDS = [command for command, _ in TABLE] + [
    b"beanq-auth wrong.token\r\n",
    b"beanq-auth prod.secret-produce\r\n",
    b"beanq-auth\r\n",
    b"beanq-auth a b\r\n",
    b"put 0 0 10 70000\r\n" + b"x" * 70000 + b"\r\n",  # JOB_TOO_BIG
    b"put 0 0 10 3\r\nabcde\r\n",
    b"\r\n",
]


@settings(max_examples=150, deadline=None)
@given(
    before=st.lists(st.sampled_from(COMMANDS), max_size=12),
    token=st.sampled_from([ADMIN_TOKEN, PUT_TOKEN]),
    after=st.lists(st.sampled_from(COMMANDS), max_size=6),
    cut=st.integers(min_value=1, max_value=40),
)
def test_no_command_runs_before_ok(
    tmp_path_factory: pytest.TempPathFactory,
    before: list[bytes],
    token: str,
    after: list[bytes],
    cut: int,
) -> None:
    """On an auth=required listener, whatever comes before a good beanq-auth (in any split
    of reads) gets UNAUTHORIZED (or BAD_FORMAT for a malformed beanq-auth) and changes
    nothing; the good token gets OK, and then the token's rights apply."""
    tmp_path = tmp_path_factory.mktemp("auth")
    hub = Hub(Engine(NOW), HOST)
    store = auth.TokenStore.load(str(store_file(tmp_path)))
    conn = hub.open()
    auth.Authority(store, required=True).attach(conn, "10.0.0.1")
    start = snapshot(hub)
    stream = b"".join(before)
    out = b""
    for i in range(0, len(stream), cut):
        out += ask(conn, stream[i : i + cut])
        assert snapshot(hub) == start
    replies = p.ReplyReader().feed(out)
    assert all(r.word in ("UNAUTHORIZED", "BAD_FORMAT") for r in replies), replies
    assert len(replies) >= len(before)  # a refusal each (a bad put's leftovers get more)
    # (failures may have started the delay; a real client would wait it out)
    ok = ask(conn, b"beanq-auth %b\r\n" % token.encode(), NOW + 3600)
    assert ok == p.AUTH_OK
    rest = ask(conn, b"".join(after), NOW + 3600)
    assert b"INTERNAL_ERROR" not in rest


# --- failures, delay, reload, optional ---------------------------------------------------------


def test_failures_delay_grows_per_address(tmp_path: Path) -> None:
    store = auth.TokenStore.load(str(store_file(tmp_path)))
    now = NOW
    for _ in range(auth.FAILURES_FREE):
        assert store.check(b"adm.wrong", "10.0.0.1", now) is None
    assert store.delay("10.0.0.1", now) == 0.0
    assert store.check(b"adm.wrong", "10.0.0.1", now) is None
    assert store.delay("10.0.0.1", now) == 1.0
    # during the delay even the right token fails, unchecked, and the delay grows
    assert store.check(ADMIN_TOKEN.encode(), "10.0.0.1", now + 0.5) is None
    assert store.delay("10.0.0.1", now + 0.5) == pytest.approx(2.0 - 0.5 + 0.5)
    # another address is not affected
    assert store.check(ADMIN_TOKEN.encode(), "10.0.0.2", now) is not None
    # once the delay is over, the right token works and clears the count
    later = now + 10
    rights = store.check(ADMIN_TOKEN.encode(), "10.0.0.1", later)
    assert rights is not None and rights.admin
    assert store.delay("10.0.0.1", later) == 0.0


def test_reload_applies_to_new_authentications_only(tmp_path: Path) -> None:
    path = store_file(tmp_path)
    hub = Hub(Engine(NOW), HOST)
    store = auth.TokenStore.load(str(path))
    authority = auth.Authority(store, required=True)
    old = hub.open()
    authority.attach(old, "127.0.0.1")
    assert ask(old, b"beanq-auth %b\r\n" % PUT_TOKEN.encode()) == p.AUTH_OK
    path.write_text(entry("prod", "prod.rotated", put='["z"]'))
    store.reload()
    assert ask(old, b"use a\r\n") == b"USING a\r\n"  # proved before the reload
    new = hub.open()
    authority.attach(new, "127.0.0.1")
    assert ask(new, b"beanq-auth %b\r\n" % PUT_TOKEN.encode()) == p.UNAUTHORIZED
    assert ask(new, b"beanq-auth prod.rotated\r\n") == p.AUTH_OK
    assert ask(new, b"use a\r\nuse z\r\n") == p.UNAUTHORIZED + b"USING z\r\n"
    path.write_text("[tokens.broken\n")
    store.reload()  # a broken file keeps the tokens loaded before
    assert store.check(b"prod.rotated", "127.0.0.2", NOW) is not None


def test_optional_listener_serves_anonymous_and_narrows_on_auth(tmp_path: Path) -> None:
    hub = Hub(Engine(NOW), HOST)
    store = auth.TokenStore.load(str(store_file(tmp_path)))
    conn = hub.open()
    auth.Authority(store, required=False).attach(conn, "127.0.0.1")
    assert ask(conn, b"use b\r\n") == b"USING b\r\n"
    assert ask(conn, b"beanq-auth %b\r\n" % PUT_TOKEN.encode()) == p.AUTH_OK
    assert ask(conn, b"use b\r\nuse e-mail\r\n") == p.UNAUTHORIZED + b"USING e-mail\r\n"


def test_plain_connections_answer_beanq_auth_as_an_unknown_command() -> None:
    """A listener with auth=none: byte for byte what beanstalkd answers."""
    hub = Hub(Engine(NOW), HOST)
    conn = hub.open()
    assert ask(conn, b"beanq-auth x.y\r\nuse a\r\n") == p.UNKNOWN_COMMAND + b"USING a\r\n"


def test_certificate_subject_maps_to_rights(tmp_path: Path) -> None:
    path = tmp_path / "auth.toml"
    path.write_text(entry("w", None, reserve='["jobs"]', subject="O=Example,CN=worker-1"))
    store = auth.TokenStore.load(str(path))
    authority = auth.Authority(store, required=True)
    hub = Hub(Engine(NOW), HOST)
    known, unknown = hub.open(), hub.open()
    authority.attach(known, "127.0.0.1")
    authority.attach(unknown, "127.0.0.1")
    authority.certified(known, "O=Example,CN=worker-1")
    authority.certified(unknown, "O=Example,CN=worker-2")
    assert ask(known, b"watch jobs\r\nuse jobs\r\n") == b"WATCHING 2\r\n" + p.UNAUTHORIZED
    assert ask(unknown, b"watch jobs\r\n") == p.UNAUTHORIZED


@pytest.mark.parametrize(
    "text",
    [
        "[tokens.a]\nput = []\n",  # neither hash nor subject
        '[tokens.a]\nhash = "plain"\n',
        '[tokens.a]\nhash = "scrypt$4$8$1$AA$AA"\nput = "a"\n',
        '[tokens.a]\nhash = "scrypt$4$8$1$AA$AA"\nadmin = "yes"\n',
        '[tokens.a]\nhash = "scrypt$4$8$1$AA$AA"\nowner = "me"\n',
        "tokens = 3\n",
    ],
)
def test_bad_auth_files_are_refused(text: str) -> None:
    with pytest.raises(auth.AuthFileError):
        auth.parse(text)


def test_hash_round_trip() -> None:
    token = tokens.new_token("svc")
    assert token.startswith("svc.") and len(token) > 40
    encoded = tokens.hash_token(token, log_n=4)
    assert token not in encoded
    assert tokens.verify_token(token.encode(), encoded)
    assert not tokens.verify_token(token.encode() + b"x", encoded)
    assert not tokens.verify_token(token.encode(), "scrypt$bad")


def test_the_real_process_reloads_tokens_on_sighup_and_audits(tmp_path: Path) -> None:
    """--auth on the real process: listeners default to auth=required, SIGHUP reloads the
    file, -V logs names and addresses, never a token."""
    path = store_file(tmp_path)
    with spawn_beanq("--auth", str(path), "-V") as (host, port, proc):
        old = socket.create_connection((host, port), timeout=5)
        assert _ask_sock(old, b"use a\r\n") == p.UNAUTHORIZED
        assert _ask_sock(old, b"beanq-auth %b\r\n" % PUT_TOKEN.encode()) == p.AUTH_OK
        path.write_text(entry("prod", "prod.rotated", put='["z"]'))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "reloaded: 1 tokens" not in proc.output():
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.02)
        new = socket.create_connection((host, port), timeout=5)
        assert _ask_sock(new, b"beanq-auth %b\r\n" % PUT_TOKEN.encode()) == p.UNAUTHORIZED
        assert _ask_sock(new, b"beanq-auth prod.rotated\r\n") == p.AUTH_OK
        assert _ask_sock(old, b"use a\r\n") == b"USING a\r\n"  # proved before the reload
        old.close()
        new.close()
        log = proc.output()
        assert "auth: prod authenticated from 127.0.0.1" in log
        assert "auth: failed from 127.0.0.1" in log
        assert "refused use for (unauthenticated)" in log
        assert "secret" not in log and "rotated" not in log


def _ask_sock(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(100)

"""Several listeners (-l repeated, IPv6, unix:, systemd activation with several sockets), the
flags that go with them, and dead peers: keepalive on accepted sockets, --idle-timeout and
its exemptions, --max-connections-per-ip."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from beanq import cli, listener
from beanq import protocol as p
from beanq.dispatch import Hub
from beanq.listener import Endpoint, tune_keepalive
from beanq.server import EpollLoop, Listening, host_info
from beanq.tubes import Engine
from tests.servers import free_port, spawn_beanq
from tests.test_process import ask


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_endpoint_syntax() -> None:
    e = Endpoint("tls://[::1]:11400,auth=required", 11300)
    assert (e.tls, e.host, e.port, e.auth, e.path) == (True, "::1", 11400, "required", None)
    e = Endpoint("::1", 11300)
    assert (e.tls, e.host, e.port) == (False, "::1", 11300)
    e = Endpoint("0.0.0.0:11301", 11300)
    assert (e.host, e.port, e.auth) == ("0.0.0.0", 11301, None)
    e = Endpoint("unix:/run/beanq.sock,auth=none", 11300)
    assert (e.path, e.auth) == ("/run/beanq.sock", "none")
    e = Endpoint("tls://0.0.0.0:11400,client-cert=optional,auth=required", 11300)
    assert (e.tls, e.port, e.auth, e.client_cert) == (True, 11400, "required", "optional")
    bad_ones = ("1.2.3.4:x", "[::1", "a,auth=maybe", "a,color=red", "unix:", "a:70000")
    for bad in (*bad_ones, "tls://a,client-cert=maybe", "tls://a,client-cert"):
        with pytest.raises(ValueError):
            Endpoint(bad, 11300)


TLS = ["--tls-cert", "server.pem", "--tls-key", "server.pem"]
CA = ["--tls-client-ca", "ca.pem"]


@pytest.mark.parametrize(
    "args",
    [
        ["-l", "tls://127.0.0.1"],  # no certificate
        ["-l", "127.0.0.1,auth=required"],  # no --auth
        ["-l", "127.0.0.1,secure=yes"],
        # client-cert= on a plaintext listener; without a CA to check certificates with;
        # optional where there is no auth for a certificate to stand for
        ["-l", "127.0.0.1,client-cert=required", "--tls-client-ca", "ca.pem"],
        ["-l", "tls://127.0.0.1,client-cert=required", *TLS],
        ["-l", "tls://127.0.0.1,client-cert=optional", *TLS],
        ["-l", "tls://127.0.0.1,client-cert=optional", *TLS, "--tls-client-ca", "ca.pem"],
        ["-l", "tls://127.0.0.1,client-cert=optional,auth=none", *TLS, *CA, "--auth", "a"],
        ["--keepalive", "60,10"],
        ["--idle-timeout", "-1"],
    ],
)
def test_bad_listener_flags_exit_5(args: list[str]) -> None:
    with pytest.raises(cli.UsageExit) as exc:
        cli.parse_args(args)
    assert exc.value.code == 5


def test_client_cert_modes_and_their_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """Without client-cert=, a tls:// listener requires a certificate when there is
    --tls-client-ca (as before the option existed) and asks for none otherwise."""
    listens = ["-l", "tls://127.0.0.1:1", "-l", "tls://127.0.0.1:2,client-cert=none"]
    listens += ["-l", "tls://127.0.0.1:3,client-cert=optional", "-l", "127.0.0.1:4"]
    config = cli.parse_args([*listens, *TLS, *CA, "--auth", "a"])
    modes = [listener.client_cert_mode(e, config) for e in listener.endpoints(config)]
    assert modes == ["required", "none", "optional", "none"]
    config = cli.parse_args(["-l", "tls://127.0.0.1", *TLS])
    assert [listener.client_cert_mode(e, config) for e in listener.endpoints(config)] == ["none"]
    with pytest.raises(cli.UsageExit):
        cli.parse_args(["-l", "127.0.0.1,client-cert=none"])
    assert "client-cert= is for tls:// listeners" in capsys.readouterr().err


def test_flags_reach_the_config() -> None:
    config = cli.parse_args(
        [
            *("-l", "127.0.0.1", "-l", "unix:/tmp/x", "--keepalive", "30,5,3"),
            *("--idle-timeout", "9", "--tcp-user-timeout", "40", "--max-connections-per-ip", "7"),
        ]
    )
    assert config.listen == ("127.0.0.1", "unix:/tmp/x")
    assert config.keepalive == (30, 5, 3) and config.user_timeout == 40
    assert config.idle_timeout == 9.0 and config.max_connections_per_ip == 7
    defaults = cli.parse_args([])
    assert defaults.listen == ("127.0.0.1",)
    assert defaults.keepalive == (60, 10, 6) and defaults.user_timeout == 120


def test_several_listeners_serve_one_engine(tmp_path: Path) -> None:
    second = free_port()
    path = str(tmp_path / "beanq.sock")
    extra = ["-l", f"127.0.0.1:{second}", "-l", f"unix:{path}"]
    v6 = _has_ipv6()
    if v6:
        third = free_port("::1")
        extra += ["-l", f"[::1]:{third}"]
    with spawn_beanq(*extra) as (host, port, _proc):
        a = socket.create_connection((host, port), timeout=5)
        b = socket.create_connection((host, second), timeout=5)
        c = socket.socket(socket.AF_UNIX)
        c.settimeout(5)
        c.connect(path)
        assert ask(a, b"put 0 0 10 1\r\na\r\n") == p.Reply("INSERTED", ("1",))
        assert ask(b, b"put 0 0 10 1\r\nb\r\n") == p.Reply("INSERTED", ("2",))
        assert ask(c, b"peek 1\r\n").body == b"a"
        if v6:
            d = socket.create_connection(("::1", third), timeout=5)
            assert ask(d, b"peek 2\r\n").body == b"b"
            d.close()
        for sock in (a, b, c):
            sock.close()


def test_systemd_activation_with_several_sockets() -> None:
    """Two inherited sockets paired in order with two -l entries (whose addresses are then
    ignored), both served."""
    first = socket.create_server(("127.0.0.1", 0))
    second = socket.create_server(("127.0.0.1", 0))
    ports = [first.getsockname()[1], second.getsockname()[1]]
    script = (
        "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
        "os.environ['LISTEN_FDS'] = '2'; os.environ['LISTEN_PID'] = str(os.getpid()); "
        "os.environ['LISTEN_FDNAMES'] = 'plain:other'; "
        "os.execv(sys.executable, [sys.executable, '-m', 'beanq', '-l', 'x', '-l', 'y'])"
    )
    fds = [first.fileno(), second.fileno()]
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, fds)], pass_fds=fds)
    first.close()
    second.close()
    try:
        for port in ports:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                assert ask(sock, b"list-tube-used\r\n") == p.Reply("USING", ("default",))
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _loop(clock: Clock | None = None) -> tuple[EpollLoop, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    tune_keepalive(listener, (61, 11, 7), 90)
    hub = Hub(Engine(clock() if clock else time.monotonic()), host_info())
    loop = EpollLoop([Listening(listener)], hub, clock=clock or time.monotonic)
    return loop, listener


def _connect(loop: EpollLoop, listener: socket.socket) -> socket.socket:
    count = len(loop.clients)
    client = socket.create_connection(listener.getsockname(), timeout=5)
    deadline = time.monotonic() + 5
    while len(loop.clients) == count:
        assert time.monotonic() < deadline
        loop.step(loop.epoll.poll(0.1))
    return client


def _talk(loop: EpollLoop, client: socket.socket, data: bytes, replies: int = 1) -> bytes:
    client.sendall(data)
    got = b""
    deadline = time.monotonic() + 5
    client.settimeout(0.01)
    while got.count(b"\r\n") < replies and time.monotonic() < deadline:
        loop.step(loop.epoll.poll(0.01))
        with contextlib.suppress(TimeoutError):
            got += client.recv(65536)
    return got


def test_accepted_sockets_have_keepalive_and_user_timeout() -> None:
    loop, listener = _loop()
    try:
        client = _connect(loop, listener)
        (accepted,) = [c.sock for c in loop.clients.values()]
        assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        tcp = socket.IPPROTO_TCP
        assert accepted.getsockopt(tcp, socket.TCP_KEEPIDLE) == 61
        assert accepted.getsockopt(tcp, socket.TCP_KEEPINTVL) == 11
        assert accepted.getsockopt(tcp, socket.TCP_KEEPCNT) == 7
        assert accepted.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == 90_000
        client.close()
    finally:
        loop.close()


def test_daemon_listeners_carry_the_keepalive_defaults() -> None:
    """What ``beanq`` does with its bound sockets: the defaults (60 s, 10 s, 6 probes,
    120 s) go on each TCP listener, which accepted sockets inherit (the test above)."""
    from beanq import listener, peers

    config = cli.parse_args(["-l", "127.0.0.1", "-p", "0"])
    bound = listener.bind(config)
    made, _reload = peers.listeners(config, bound)
    (only,) = made
    try:
        tcp = socket.IPPROTO_TCP
        options = (socket.TCP_KEEPIDLE, socket.TCP_KEEPINTVL, socket.TCP_KEEPCNT)
        assert [only.sock.getsockopt(tcp, o) for o in options] == [60, 10, 6]
        assert only.sock.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == 120_000
        assert only.sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    finally:
        only.sock.close()


def test_idle_timeout_spares_waiting_and_holding_clients() -> None:
    clock = Clock()
    loop, listener = _loop(clock)
    loop.idle_timeout = 5.0
    try:
        idle = _connect(loop, listener)
        waiting = _connect(loop, listener)
        holding = _connect(loop, listener)
        assert _talk(loop, holding, b"put 0 0 100 1\r\nx\r\nreserve\r\n", 2).startswith(
            b"INSERTED 1\r\nRESERVED 1 1"
        )
        waiting.sendall(b"reserve\r\n")
        loop.step(loop.epoll.poll(0.5))
        clock.now += 4.0
        loop.next_deadline()
        assert len(loop.clients) == 3
        clock.now += 1.5
        loop.next_deadline()
        assert len(loop.clients) == 2  # the idle one is gone
        idle.settimeout(1)
        assert idle.recv(10) == b""
        # the holder lets its job go: now idle, it is closed at the next sweep
        assert _talk(loop, holding, b"delete 1\r\n") == b"DELETED\r\n"
        clock.now += 6
        loop.next_deadline()
        assert len(loop.clients) == 1
        for sock in (idle, waiting, holding):
            sock.close()
    finally:
        loop.close()


def test_max_connections_per_ip() -> None:
    with spawn_beanq("--max-connections-per-ip", "2") as (host, port, _proc):
        a = socket.create_connection((host, port), timeout=5)
        b = socket.create_connection((host, port), timeout=5)
        assert ask(a, b"list-tube-used\r\n").word == "USING"
        assert ask(b, b"list-tube-used\r\n").word == "USING"
        c = socket.create_connection((host, port), timeout=5)
        assert c.recv(10) == b""  # closed at once
        a.close()
        deadline = time.monotonic() + 5
        while True:  # a slot is free again once the server has seen a go
            d = socket.create_connection((host, port), timeout=5)
            with contextlib.suppress(ConnectionResetError):
                d.sendall(b"list-tube-used\r\n")
                if d.recv(100).startswith(b"USING"):
                    break
            d.close()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for sock in (b, c, d):
            sock.close()

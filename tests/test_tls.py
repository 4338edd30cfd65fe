"""tls:// listeners on the real process, with certificates made by ``trustme``: TLS, mTLS with
a certificate mapped to a token's rights, wrong CA, expired certificates, plaintext sent to a
TLS port, a stalled handshake, big pipelined jobs, SIGHUP reloading certificates without
dropping connections; stock clients (greenstalk, pystalk) on a plaintext listener beside."""

from __future__ import annotations

import contextlib
import datetime
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from beanq import protocol as p
from beanq import tokens
from tests.servers import ServerProcess, free_port, spawn_beanq

trustme = pytest.importorskip("trustme")

TOKEN = "prod.token-for-tests"


class Pki:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = trustme.CA()
        self.ca_file = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.server = tmp / "server.pem"
        self.ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(self.server)
        )

    def client_cert(
        self, name: str, ca: Any = None, file: str | None = None, **kwargs: object
    ) -> Path:
        path = self.tmp / (file or f"{name}.pem")
        issuer = ca or self.ca
        cert = issuer.issue_cert(
            name,
            common_name=name,
            organization_name="Example",
            organization_unit_name="ops",
            **kwargs,
        )
        cert.private_key_and_cert_chain_pem.write_to_path(str(path))
        return path

    def context(self, cert: Path | None = None, ca_file: Path | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(ca_file or self.ca_file))
        if cert is not None:
            context.load_cert_chain(str(cert))
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@contextlib.contextmanager
def tls_server(
    pki: Pki, *extra: str, listener: str = "tls://127.0.0.1:{port}"
) -> Iterator[tuple[int, int, ServerProcess]]:
    tls_port = free_port()
    args = [
        *("-l", listener.format(port=tls_port), "--tls-cert", str(pki.server)),
        *("--tls-key", str(pki.server), "-V", *extra),
    ]
    with spawn_beanq(*args) as (_host, port, proc):
        yield port, tls_port, proc


def connect(pki: Pki, port: int, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return (context or pki.context()).wrap_socket(raw, server_hostname="localhost")


def ask(sock: socket.socket, data: bytes) -> p.Reply:
    sock.sendall(data)
    reader = p.ReplyReader()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise ConnectionResetError("closed")
        replies = reader.feed(chunk)
        if replies:
            return replies[0]


def assert_refused(port: int, context: ssl.SSLContext) -> None:
    """The handshake fails, or (TLS 1.3, where the client finishes first) the first
    command finds the connection dropped."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock: socket.socket = raw
    try:
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
            sock = context.wrap_socket(raw, server_hostname="localhost")
            ask(sock, b"stats\r\n")
    finally:
        sock.close()


def test_tls_and_plaintext_listeners_share_the_engine(pki: Pki) -> None:
    with (
        tls_server(pki) as (port, tls_port, _proc),
        connect(pki, tls_port) as tls,
        socket.create_connection(("127.0.0.1", port)) as plain,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert ask(tls, b"put 0 0 10 5\r\nhello\r\n") == p.Reply("INSERTED", ("1",))
        assert ask(plain, b"reserve-with-timeout 0\r\n") == p.Reply(
            "RESERVED", ("1", "5"), b"hello"
        )


def test_big_pipelined_jobs_over_tls(pki: Pki) -> None:
    """Bodies of many TLS records, pipelined: every byte OpenSSL decrypted is answered (none
    left waiting inside OpenSSL where epoll cannot see it)."""
    with tls_server(pki, "-z", "200000") as (_port, tls_port, _proc), connect(pki, tls_port) as tls:
        bodies = [bytes([65 + i]) * (100_000 + i) for i in range(20)]
        tls.sendall(b"".join(b"put 0 0 10 %d\r\n%b\r\n" % (len(b), b) for b in bodies))
        reader = p.ReplyReader()
        replies: list[p.Reply] = []
        while len(replies) < 20:
            replies += reader.feed(tls.recv(1 << 20))
        assert [r.args[0] for r in replies] == [str(i) for i in range(1, 21)]
        tls.sendall(b"".join(b"peek %d\r\n" % i for i in range(1, 21)))
        got: list[p.Reply] = []
        while len(got) < 20:
            got += reader.feed(tls.recv(1 << 20))
        assert [r.body for r in got] == bodies


def test_wrong_ca_and_plaintext_on_a_tls_port(pki: Pki) -> None:
    (pki.tmp / "other").mkdir()
    other = Pki(pki.tmp / "other")
    with tls_server(pki) as (port, tls_port, _proc):
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(pki, tls_port, other.context())
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as plain:
            plain.sendall(b"stats\r\n")
            with contextlib.suppress(ConnectionResetError):
                assert plain.recv(100) == b""  # dropped, nothing answered in plaintext
        with socket.create_connection(("127.0.0.1", port)) as sock:  # the server is fine
            assert ask(sock, b"list-tube-used\r\n").word == "USING"


def test_expired_server_certificate_is_refused_by_clients(pki: Pki) -> None:
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    expired = pki.ca.issue_cert(
        "127.0.0.1", "localhost", not_before=past, not_after=past + datetime.timedelta(days=1)
    )
    expired.private_key_and_cert_chain_pem.write_to_path(str(pki.server))
    with (
        tls_server(pki) as (_port, tls_port, _proc),
        pytest.raises(ssl.SSLCertVerificationError, match="expired"),
    ):
        connect(pki, tls_port)


def test_handshake_stall_is_dropped_and_blocks_nobody(pki: Pki) -> None:
    with tls_server(pki, "--tls-handshake-timeout", "0.5") as (port, tls_port, proc):
        stalled = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
        stalled.sendall(b"\x16\x03\x01\x00\xff")  # the start of a ClientHello, never finished
        silent = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
        start = time.monotonic()
        with connect(pki, tls_port) as tls, socket.create_connection(("127.0.0.1", port)) as plain:
            assert ask(tls, b"list-tube-used\r\n").word == "USING"
            assert ask(plain, b"list-tube-used\r\n").word == "USING"
        assert time.monotonic() - start < 0.5
        for sock in (stalled, silent):
            assert sock.recv(10) == b""  # dropped
            sock.close()
        assert time.monotonic() - start < 3
        assert "TLS handshake timed out" in proc.output()


def _auth_file(pki: Pki) -> Path:
    """Tokens: w1 (worker-1's certificate) may reserve from jobs, prod (TOKEN) may put there."""
    path = pki.tmp / "auth.toml"
    path.write_text(
        "[tokens.w1]\n"
        'subject = "O=Example,OU=ops,CN=worker-1"\n'
        'reserve = ["jobs"]\n'
        f'[tokens.prod]\nhash = "{tokens.hash_token(TOKEN, log_n=4)}"\nput = ["jobs"]\n'
    )
    return path


def test_mtls_maps_the_certificate_to_a_tokens_rights(pki: Pki) -> None:
    worker = pki.client_cert("worker-1")
    stranger = pki.client_cert("worker-2")
    rogue_ca = trustme.CA()
    rogue = pki.client_cert("rogue", ca=rogue_ca)
    auth_file = _auth_file(pki)
    extra = ["--tls-client-ca", str(pki.ca_file), "--auth", str(auth_file)]
    listener = "tls://127.0.0.1:{port},auth=required"
    with tls_server(pki, *extra, listener=listener) as (port, tls_port, proc):
        with connect(pki, tls_port, pki.context(worker)) as tls:
            assert ask(tls, b"watch jobs\r\n") == p.Reply("WATCHING", ("2",))
            assert ask(tls, b"use jobs\r\n") == p.Reply("UNAUTHORIZED")
            assert ask(tls, b"beanq-auth %b\r\n" % TOKEN.encode()) == p.Reply("OK")
            assert ask(tls, b"use jobs\r\n") == p.Reply("USING", ("jobs",))
        with connect(pki, tls_port, pki.context(stranger)) as tls:
            assert ask(tls, b"watch jobs\r\n") == p.Reply("UNAUTHORIZED")
        for cert in (None, rogue):
            assert_refused(tls_port, pki.context(cert))
        assert "w1 by certificate" in proc.output()
        assert TOKEN not in proc.output()
        with socket.create_connection(("127.0.0.1", port)) as plain:  # auth=required too
            assert ask(plain, b"use jobs\r\n") == p.Reply("UNAUTHORIZED")


def test_expired_client_certificate_is_refused(pki: Pki) -> None:
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    old = pki.client_cert("old", not_before=past, not_after=past + datetime.timedelta(days=1))
    with tls_server(pki, "--tls-client-ca", str(pki.ca_file)) as (_port, tls_port, _proc):
        assert_refused(tls_port, pki.context(old))


def test_sighup_reloads_certificates_without_dropping_connections(pki: Pki) -> None:
    with tls_server(pki) as (_port, tls_port, proc):
        before = connect(pki, tls_port)
        assert ask(before, b"list-tube-used\r\n").word == "USING"
        new_ca = trustme.CA()
        new_ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(pki.server)
        )
        new_ca_file = pki.tmp / "new-ca.pem"
        new_ca.cert_pem.write_to_path(str(new_ca_file))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "TLS certificates reloaded" not in proc.output():
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.02)
        with connect(pki, tls_port, pki.context(ca_file=new_ca_file)) as after:
            assert ask(after, b"list-tube-used\r\n").word == "USING"
        with pytest.raises(ssl.SSLCertVerificationError):
            connect(pki, tls_port)  # the old CA no longer vouches for the server
        assert ask(before, b"list-tube-used\r\n").word == "USING"  # still connected
        before.close()


def test_stock_clients_on_plaintext_beside_tls(pki: Pki) -> None:
    greenstalk = pytest.importorskip("greenstalk")
    pystalk = pytest.importorskip("pystalk")
    with tls_server(pki) as (port, tls_port, _proc):
        with greenstalk.Client(("127.0.0.1", port), use="g", watch="g") as client:
            job_id = client.put(b"from greenstalk")
            job = client.reserve(timeout=1)
            assert (job.id, job.body) == (job_id, "from greenstalk")
            client.delete(job)
        bs = pystalk.BeanstalkClient("127.0.0.1", port)
        bs.use("p")
        bs.put_job("from pystalk")
        bs.watch("p")
        job = bs.reserve_job(timeout=1)
        assert job.job_data == b"from pystalk"
        bs.delete_job(job.job_id)
        bs.close()
        with connect(pki, tls_port) as tls:
            assert ask(tls, b"stats-job %d\r\n" % job_id).word == "NOT_FOUND"  # (deleted)
            assert ask(tls, b"stats\r\n").word == "OK"


@contextlib.contextmanager
def per_listener_server(pki: Pki) -> Iterator[tuple[dict[str, int], ServerProcess]]:
    """One beanq with a tls:// listener for each client-cert= mode, --tls-client-ca and
    tokens: w1's certificate may reserve from jobs, the prod token may put into it."""
    auth_file = _auth_file(pki)
    ports = {mode: free_port() for mode in ("required", "optional", "none")}
    listeners = [
        arg
        for mode, port in ports.items()
        for arg in ("-l", f"tls://127.0.0.1:{port},client-cert={mode}")
    ]
    args = [
        *listeners,
        *("--tls-cert", str(pki.server), "--tls-key", str(pki.server)),
        *("--tls-client-ca", str(pki.ca_file), "--auth", str(auth_file), "-V"),
    ]
    with spawn_beanq(*args) as (_host, _port, proc):
        yield ports, proc


def test_client_certificates_per_listener(pki: Pki) -> None:
    """client-cert=required refuses a client without a certificate; optional takes one (its
    subject maps to a token's rights) or none (then beanq-auth); none ignores one."""
    worker = pki.client_cert("worker-1")
    rogue = pki.client_cert("rogue", ca=trustme.CA())
    with per_listener_server(pki) as (ports, proc):
        assert "client-cert=optional" in proc.output()  # (the listeners say what they are)
        assert_refused(ports["required"], pki.context())
        with connect(pki, ports["required"], pki.context(worker)) as tls:
            assert ask(tls, b"watch jobs\r\n") == p.Reply("WATCHING", ("2",))

        with connect(pki, ports["optional"], pki.context(worker)) as tls:
            assert ask(tls, b"watch jobs\r\n") == p.Reply("WATCHING", ("2",))
            assert ask(tls, b"use jobs\r\n") == p.Reply("UNAUTHORIZED")  # w1's rights only
        with connect(pki, ports["optional"]) as tls:  # no certificate: a token is needed
            assert ask(tls, b"watch jobs\r\n") == p.Reply("UNAUTHORIZED")
            assert ask(tls, b"use jobs\r\n") == p.Reply("UNAUTHORIZED")
            assert ask(tls, b"beanq-auth %b\r\n" % TOKEN.encode()) == p.Reply("OK")
            assert ask(tls, b"use jobs\r\n") == p.Reply("USING", ("jobs",))
        assert_refused(ports["optional"], pki.context(rogue))  # one presented is checked

        before = proc.output().count("by certificate")
        for cert in (worker, rogue):  # not asked for, so never sent, never checked
            with connect(pki, ports["none"], pki.context(cert)) as tls:
                assert ask(tls, b"watch jobs\r\n") == p.Reply("UNAUTHORIZED")
                assert ask(tls, b"beanq-auth %b\r\n" % TOKEN.encode()) == p.Reply("OK")
                assert ask(tls, b"use jobs\r\n") == p.Reply("USING", ("jobs",))
        assert proc.output().count("by certificate") == before == 2


def test_sighup_reloads_every_listeners_context(pki: Pki) -> None:
    """A new server certificate and a new client CA on SIGHUP, in each client-cert= mode's
    context: certificates of the old CA are refused wherever one is asked for."""
    old_worker = pki.client_cert("worker-1")
    old_trust = pki.tmp / "old-ca.pem"
    pki.ca.cert_pem.write_to_path(str(old_trust))
    with per_listener_server(pki) as (ports, proc):
        new_ca = trustme.CA()
        new_ca.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(pki.server)
        )
        new_ca.cert_pem.write_to_path(str(pki.ca_file))  # the client CA file too
        new_worker = pki.client_cert("worker-1", ca=new_ca, file="new-worker-1.pem")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "TLS certificates reloaded" not in proc.output():
            assert time.monotonic() < deadline, proc.output()
            time.sleep(0.02)
        for port in ports.values():
            with pytest.raises(ssl.SSLCertVerificationError):  # the server's is new
                connect(pki, port, pki.context(ca_file=old_trust))
        for mode in ("required", "optional"):
            assert_refused(ports[mode], pki.context(old_worker))
            with connect(pki, ports[mode], pki.context(new_worker)) as tls:
                assert ask(tls, b"watch jobs\r\n") == p.Reply("WATCHING", ("2",))
        with connect(pki, ports["none"], pki.context(old_worker)) as tls:
            assert ask(tls, b"watch jobs\r\n") == p.Reply("UNAUTHORIZED")
        assert proc.output().count("TLS certificates reloaded") == 1

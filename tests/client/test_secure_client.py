"""The bundled client against beanq's TLS and tokens: beanstalks:// URLs (CA, client
certificate), tokens from the URL, the environment or a file, sent with beanq-auth on every
new connection by Client, AsyncClient, Pool, Worker and beanqctl."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import trio
from beanq_client import AsyncClient, Client, ctl
from beanq_client.address import parse_address
from beanq_client.errors import UnauthorizedError
from beanq_client.pool import Pool
from beanq_client.worker import Worker, encode_task

from beanq import tokens
from tests.servers import free_port, spawn_beanq

trustme = pytest.importorskip("trustme")

TOKEN = "app.client-test-token"


class Setup:
    def __init__(self, tmp: Path, tls_port: int, port: int) -> None:
        self.tmp = tmp
        self.tls_port = tls_port
        self.port = port

    def url(self, token: str | None = TOKEN, tube: str = "") -> str:
        """(--tls-client-ca requires a certificate: every client shows one, whose rights a
        token then replaces)"""
        creds = f":{token}@" if token else ""
        query = f"?ca={self.tmp / 'ca.pem'}&cert={self.tmp / 'client.pem'}"
        return f"beanstalks://{creds}127.0.0.1:{self.tls_port}/{tube}{query}"


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = tmp_path / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(server))
    ca.issue_cert(
        "w", common_name="w", organization_name="Ex", organization_unit_name="ops"
    ).private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    auth_file = tmp_path / "auth.toml"
    auth_file.write_text(
        f'[tokens.app]\nhash = "{tokens.hash_token(TOKEN, log_n=4)}"\n'
        'put = ["*"]\nreserve = ["*"]\nadmin = true\n'
        '[tokens.w]\nsubject = "O=Ex,OU=ops,CN=w"\nreserve = ["*"]\n'
    )
    tls_port = free_port()
    args = [
        *("-l", f"tls://127.0.0.1:{tls_port},auth=required", "--auth", str(auth_file)),
        *("--tls-cert", str(server), "--tls-key", str(server)),
        *("--tls-client-ca", str(tmp_path / "ca.pem")),
    ]
    with spawn_beanq(*args) as (_host, port, _proc):
        yield Setup(tmp_path, tls_port, port)


def test_addresses() -> None:
    a = parse_address("beanstalks://:s3cret@example.com:11400/jobs?ca=/ca.pem&cert=/c.pem")
    assert (a.tls, a.host, a.port, a.tube, a.token) == (
        True,
        "example.com",
        11400,
        "jobs",
        "s3cret",
    )
    assert (a.ca_file, a.cert_file, a.key_file) == ("/ca.pem", "/c.pem", None)
    assert "s3cret" not in repr(a) and "s3cret" not in str(a)
    assert parse_address("beanstalk://:tok@h:1").token == "tok"
    with pytest.raises(ValueError):
        parse_address("beanstalk://h:1?ca=/x")  # TLS options on a plaintext URL
    with pytest.raises(ValueError):
        parse_address("beanstalk://user:tok@h:1")


def test_token_from_environment_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEANQ_TOKEN", "from.env")
    assert parse_address("h:1").token == "from.env"
    assert parse_address("beanstalk://:from.url@h:1").token == "from.url"
    monkeypatch.delenv("BEANQ_TOKEN")
    path = tmp_path / "token"
    path.write_text("from.file\n")
    monkeypatch.setenv("BEANQ_TOKEN_FILE", str(path))
    assert parse_address("h:1").token == "from.file"
    monkeypatch.delenv("BEANQ_TOKEN_FILE")
    assert parse_address(f"beanstalk://h:1?token_file={path}").token == "from.file"


def test_sync_client_over_tls_with_a_token(setup: Setup) -> None:
    with Client(setup.url(tube="jobs")) as client:
        job_id = client.put(b"secret work")
        job = client.reserve(timeout=1)
        assert (job.id, job.body) == (job_id, b"secret work")
        client.delete(job)
    with pytest.raises(UnauthorizedError), Client(setup.url(token="app.wrong")) as client:
        client.stats()


def test_client_certificate_instead_of_a_token(setup: Setup) -> None:
    with Client(setup.url(token=None)) as client:
        assert client.watch("t") == 2
        with pytest.raises(UnauthorizedError):
            client.use("t")  # the certificate's rights: reserve only


def test_token_on_a_listener_without_auth(setup: Setup) -> None:
    """A client configured with a token still works against a server without auth (a beanq
    listener with auth=none answers beanq-auth UNKNOWN_COMMAND, as beanstalkd would)."""
    with spawn_beanq() as (host, port, _proc), Client(f"beanstalk://:{TOKEN}@{host}:{port}") as c:
        assert c.put(b"x") == 1


def test_async_client_over_tls(setup: Setup) -> None:
    async def main() -> bytes:
        async with AsyncClient(setup.url(tube="a")) as client:
            await client.put(b"async")
            job = await client.reserve(timeout=1)
            assert job is not None
            await client.delete(job)
            return job.body

    assert trio.run(main) == b"async"


def test_pool_and_worker_over_tls(setup: Setup) -> None:
    pool: Pool[bytes] = Pool([setup.url(tube="w")])
    try:
        pool.put(encode_task("add", 2, b=3))
    finally:
        pool.close()
    worker = Worker(Client(setup.url(tube="w")), ["w"], reserve_timeout=0)
    sums: list[int] = []

    @worker.task("add")
    def add(a: int, b: int = 0) -> None:
        sums.append(a + b)

    worker.run(burst=True, handle_signals=False)
    assert sums == [5]


def test_beanqctl_over_tls(setup: Setup) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        assert ctl.main(["-a", setup.url(), "--json", "stats"]) == 0
    assert '"current-connections"' in out.getvalue()

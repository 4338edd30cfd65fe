"""Where a server is: every spelling users bring, reduced to one value.

Accepted: ``(host, port)``, ``"host:port"``, ``"host"`` (port 11300), ``"[::1]:11300"``,
``"unix:/path"``, and ``beanstalk://host:port/tube`` as found in ``BEANSTALK_URL``. The tube
of a URL is where the client starts: it uses and watches that tube instead of ``default``.

beanq's security (docs/security.md): ``beanstalks://host:port/tube?ca=FILE&cert=FILE&key=FILE``
connects over TLS (``ca``: the CAs to trust instead of the system's; ``cert``/``key``: a
client certificate). A token comes from the URL's password (``beanstalk://:TOKEN@host``),
else ``$BEANQ_TOKEN``, else the file named by ``$BEANQ_TOKEN_FILE`` (or ``?token_file=``),
and is sent with ``beanq-auth`` on every new connection.
"""

from __future__ import annotations

import os
from typing import Final, TypeAlias
from urllib.parse import parse_qs, unquote, urlsplit

import attrs

from beanq.protocol import valid_tube_name

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 11300
ENV_VAR: Final = "BEANSTALK_URL"
TOKEN_ENV: Final = "BEANQ_TOKEN"
TOKEN_FILE_ENV: Final = "BEANQ_TOKEN_FILE"


@attrs.frozen
class Address:
    """A TCP host and port, or a unix socket path (then ``host`` is empty and ``port`` 0)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    unix_path: str | None = None
    tube: str | None = None
    tls: bool = False  # beanstalks://
    ca_file: str | None = None  # trust these CAs (else the system's)
    cert_file: str | None = None  # a client certificate (mTLS) ...
    key_file: str | None = None  # ... and its key, if not in cert_file
    token: str | None = attrs.field(default=None, repr=False)  # sent with beanq-auth

    def __str__(self) -> str:
        if self.unix_path is not None:
            text = f"unix:{self.unix_path}"
        elif ":" in self.host:
            text = f"[{self.host}]:{self.port}"
        else:
            text = f"{self.host}:{self.port}"
        if self.tls:
            return f"beanstalks://{text}/{self.tube or ''}"
        if self.tube is None:
            return text
        if self.unix_path is not None:
            return f"{text} (tube {self.tube})"  # no URL spelling carries both
        return f"beanstalk://{text}/{self.tube}"

    @property
    def endpoint(self) -> str:
        """The server alone, without the tube: what identifies it inside a pool."""
        return str(attrs.evolve(self, tube=None))


AddressLike: TypeAlias = Address | str | tuple[str, int]


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in beanstalk address {original!r}")
    return int(text)


def _host_port(text: str, original: str) -> tuple[str, int]:
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"bad IPv6 address in {original!r}")
        if not rest:
            return host, DEFAULT_PORT
        if not rest.startswith(":"):
            raise ValueError(f"bad beanstalk address {original!r}")
        return host, _port(rest[1:], original)
    if text.count(":") > 1:
        return text, DEFAULT_PORT  # a bare IPv6 address
    host, sep, port = text.partition(":")
    return host or DEFAULT_HOST, _port(port, original) if sep else DEFAULT_PORT


def _tube(text: str, original: str) -> str | None:
    if not text:
        return None
    if not valid_tube_name(text.encode("ascii", "replace")):
        raise ValueError(f"bad tube name in beanstalk address {original!r}")
    return text


def parse_address(address: AddressLike) -> Address:
    if isinstance(address, Address):
        return address
    if isinstance(address, tuple):
        host, port = address
        if not isinstance(host, str) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"bad beanstalk address {address!r}")
        return Address(host, port)
    text = address.strip()
    if not text:
        raise ValueError("empty beanstalk address")
    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if path.startswith("//"):
            path = path[2:]  # unix:///run/beanstalkd.sock
        if not path:
            raise ValueError(f"no path in beanstalk address {address!r}")
        return Address("", 0, unix_path=path)
    if "://" in text:
        return _url(text, address)
    host, port = _host_port(text, address)
    return Address(host, port, token=env_token())


def _url(text: str, original: str) -> Address:
    parts = urlsplit(text)
    if parts.scheme not in ("beanstalk", "beanstalks"):
        raise ValueError(f"unsupported scheme {parts.scheme!r} in {original!r}")
    if parts.fragment or parts.username:
        raise ValueError(f"unsupported parts in beanstalk URL {original!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    allowed = {"token_file"} | ({"ca", "cert", "key"} if parts.scheme == "beanstalks" else set())
    if set(query) - allowed:
        raise ValueError(f"unsupported query {sorted(set(query) - allowed)} in {original!r}")
    token = unquote(parts.password) if parts.password else None
    if token is None and "token_file" in query:
        token = _read_token(query["token_file"])
    host, port = _host_port(parts.netloc.rpartition("@")[2], original)
    return Address(
        host,
        port,
        tube=_tube(unquote(parts.path.strip("/")), original),
        tls=parts.scheme == "beanstalks",
        ca_file=query.get("ca"),
        cert_file=query.get("cert"),
        key_file=query.get("key"),
        token=token or env_token(),
    )


def _read_token(path: str) -> str:
    with open(path, encoding="utf-8") as file:
        token = file.read().strip()
    if not token:
        raise ValueError(f"the token file {path} is empty")
    return token


def env_token() -> str | None:
    """``$BEANQ_TOKEN``, else the contents of ``$BEANQ_TOKEN_FILE``, else None."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    path = os.environ.get(TOKEN_FILE_ENV, "").strip()
    return _read_token(path) if path else None


def default_address() -> Address:
    """``$BEANSTALK_URL`` if set, else 127.0.0.1:11300."""
    value = os.environ.get(ENV_VAR, "").strip()
    return parse_address(value) if value else Address()

"""Where a server is: every spelling users bring, reduced to one value.

Accepted: ``(host, port)``, ``"host:port"``, ``"host"`` (port 11300), ``"[::1]:11300"``,
``"unix:/path"``, and ``beanstalk://host:port/tube`` as found in ``BEANSTALK_URL``. The tube
of a URL is where the client starts: it uses and watches that tube instead of ``default``.
"""

from __future__ import annotations

import os
from typing import Final, TypeAlias
from urllib.parse import unquote, urlsplit

import attrs

from beanq.protocol import valid_tube_name

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 11300
ENV_VAR: Final = "BEANSTALK_URL"


@attrs.frozen
class Address:
    """A TCP host and port, or a unix socket path (then ``host`` is empty and ``port`` 0)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    unix_path: str | None = None
    tube: str | None = None

    def __str__(self) -> str:
        if self.unix_path is not None:
            text = f"unix:{self.unix_path}"
        elif ":" in self.host:
            text = f"[{self.host}]:{self.port}"
        else:
            text = f"{self.host}:{self.port}"
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
        parts = urlsplit(text)
        if parts.scheme != "beanstalk":
            raise ValueError(f"unsupported scheme {parts.scheme!r} in {address!r}")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError(f"unsupported parts in beanstalk URL {address!r}")
        host, port = _host_port(parts.netloc, address)
        return Address(host, port, tube=_tube(unquote(parts.path.strip("/")), address))
    host, port = _host_port(text, address)
    return Address(host, port)


def default_address() -> Address:
    """``$BEANSTALK_URL`` if set, else 127.0.0.1:11300."""
    value = os.environ.get(ENV_VAR, "").strip()
    return parse_address(value) if value else Address()

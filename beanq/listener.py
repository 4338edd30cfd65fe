"""The listening socket, made before anything else of beanq is imported.

Test suites that spawn a queue server connect to it ~0.1 s after starting it, and on a busy
machine importing beanq's modules and trio takes longer than that. A connection that arrives
once the socket listens waits in its backlog until the loop answers; one that arrives before is
refused. So the socket is bound and listening a few milliseconds after exec, with nothing but
``_socket`` imported (the ``socket`` module's enums and wrappers cost as much again as the
interpreter's own start-up), and ``beanq.server`` wraps it in a ``socket.socket`` later.
Binding and listening are separate steps: ``beanq.cli`` drops privileges and takes the binlog's
lock in between, so that a daemon that cannot start never listens.
"""

from __future__ import annotations

import _socket
import os
import stat

from beanq.config import Config, StartupError

SD_LISTEN_FDS_START = 3
BACKLOG = 1024
AUTH_MODES = ("none", "optional", "required")
CLIENT_CERT_MODES = ("none", "optional", "required")


class Endpoint:
    """One ``-l``: ``[tls://]ADDR[:PORT][,auth=MODE][,client-cert=MODE]`` or
    ``unix:PATH[,auth=MODE]``. An address with two colons or more and no brackets is a bare
    IPv6 address (``-l ::1``); ``[::1]:11301`` has a port. ``auth`` is None until ``--auth``
    decides its default, ``client_cert`` until ``--tls-client-ca`` does (``client_cert_mode``).
    """

    __slots__ = ("auth", "client_cert", "host", "path", "port", "sock", "text", "tls")

    def __init__(self, text: str, default_port: int) -> None:
        self.text = text
        self.auth: str | None = None
        self.client_cert: str | None = None
        self.path: str | None = None
        self.tls = False
        self.host = ""
        self.port = default_port
        self.sock: _socket.socket | None = None
        where, *options = text.split(",")
        for option in options:
            key, eq, value = option.partition("=")
            if key == "auth" and eq and value in AUTH_MODES:
                self.auth = value
            elif key == "client-cert" and eq and value in CLIENT_CERT_MODES:
                self.client_cert = value
            else:
                raise ValueError(
                    f"-l {text}: unknown {option}"
                    " (auth=none|optional|required, client-cert=none|optional|required)"
                )
        if where.startswith("unix:"):
            self.path = where[5:]
            if not self.path:
                raise ValueError(f"-l {text}: no path")
            return
        if where.startswith("tls://"):
            self.tls = True
            where = where[6:]
        if where.startswith("["):
            host, bracket, port = where[1:].partition("]")
            if not bracket or (port and not port.startswith(":")):
                raise ValueError(f"-l {text}: bad address")
            self.host = host
            port = port[1:]
        elif where.count(":") == 1:
            self.host, _, port = where.partition(":")
        else:
            self.host, port = where, ""
        if port:
            if not port.isdigit() or int(port) > 65535:
                raise ValueError(f"-l {text}: invalid port {port}")
            self.port = int(port)


def endpoints(config: Config) -> list[Endpoint]:
    return [Endpoint(text, config.port) for text in config.listen]


def auth_mode(endpoint: Endpoint, config: Config) -> str:
    """``auth=`` as given, else ``required`` with ``--auth`` and ``none`` without."""
    return endpoint.auth or ("required" if config.auth_file is not None else "none")


def client_cert_mode(endpoint: Endpoint, config: Config) -> str:
    """A tls:// listener's ``client-cert=``: as given, else ``required`` with
    ``--tls-client-ca`` (mTLS on every tls:// listener, as before the option existed) and
    ``none`` without. ValueError for what makes no sense: the option on a plaintext
    listener, a client certificate with no CA to check it, or an optional one on a
    listener without auth (where it could neither grant nor narrow anything)."""
    mode = endpoint.client_cert
    if mode is None:
        return "required" if endpoint.tls and config.tls_client_ca is not None else "none"
    if not endpoint.tls:
        raise ValueError(f"-l {endpoint.text}: client-cert= is for tls:// listeners")
    if mode != "none" and config.tls_client_ca is None:
        raise ValueError(f"-l {endpoint.text}: client-cert={mode} needs --tls-client-ca FILE")
    if mode == "optional" and auth_mode(endpoint, config) == "none":
        raise ValueError(
            f"-l {endpoint.text}: client-cert=optional needs auth=optional|required"
            " (a certificate stands for a token's rights; without auth it changes nothing)"
        )
    return mode


def bind(config: Config) -> list[Endpoint]:
    """Inherited systemd sockets if there are any, else new ones bound per ``-l``/``-p``."""
    wanted = endpoints(config)
    inherited = _systemd_sockets()
    if inherited:
        return _adopt(inherited, wanted)
    try:
        for endpoint in wanted:
            if endpoint.path is not None:
                endpoint.sock = _unix_socket(endpoint.path)
            else:
                endpoint.sock = _inet_socket(endpoint.host, endpoint.port)
    except StartupError:
        for endpoint in wanted:
            if endpoint.sock is not None:
                endpoint.sock.close()
        raise
    return wanted


def listen(bound: list[Endpoint]) -> None:
    for endpoint in bound:
        sock = endpoint.sock
        assert sock is not None
        if sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN):
            continue  # inherited, listening already
        try:
            sock.listen(BACKLOG)
        except OSError as exc:  # another socket bound the same port and listened first
            for other in bound:
                if other.sock is not None:
                    other.sock.close()
            raise StartupError(f"listen(): {exc.strerror}", 111) from exc


def tune_keepalive(
    sock: _socket.socket, keepalive: tuple[int, int, int], user_timeout: int
) -> None:
    """Keepalive and TCP_USER_TIMEOUT on a TCP listener: Linux copies them to every socket
    it accepts, so connections get them without a system call each. A worker that vanished
    while holding a job is then noticed in idle + interval * probes seconds (2 minutes by
    default), not the kernel's two hours, and its job goes back to ready."""
    if sock.family not in (_socket.AF_INET, _socket.AF_INET6):
        return
    idle, interval, probes = keepalive
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1 if idle else 0)
    if idle:
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPCNT, probes)
    if user_timeout:
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_USER_TIMEOUT, user_timeout * 1000)


def _warn(message: str) -> None:
    import logging  # not on the way to listening: only for these rare warnings

    logging.getLogger("beanq").warning(message)


def _systemd_sockets() -> list[tuple[_socket.socket, str]]:
    """Sockets passed by systemd (``LISTEN_FDS``), with their ``FileDescriptorName``."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    found = []
    for i in range(count):
        sock = _socket.socket(fileno=SD_LISTEN_FDS_START + i)
        if sock.type != _socket.SOCK_STREAM:
            raise StartupError("inherited fd is not a TCP or UNIX listening socket", 111)
        sock.setblocking(False)
        found.append((sock, names[i] if i < len(names) else ""))
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return found


def _adopt(inherited: list[tuple[_socket.socket, str]], wanted: list[Endpoint]) -> list[Endpoint]:
    """Inherited sockets replace the ``-l`` entries, whose addresses are then ignored: paired
    in order when there are as many ``-l`` as sockets (so ``-l tls://,auth=required`` says
    what the second socket is), else each a plaintext listener, or TLS if systemd names it
    ``tls`` (``FileDescriptorName=tls``)."""
    adopted = []
    for i, (sock, name) in enumerate(inherited):
        if len(wanted) == len(inherited):
            endpoint = wanted[i]
        else:
            endpoint = Endpoint("tls://" if name.startswith("tls") else "", 0)
        endpoint.sock = sock
        adopted.append(endpoint)
    return adopted


def _inet_socket(host: str, port: int) -> _socket.socket:
    try:
        infos = _socket.getaddrinfo(
            host or None, port, _socket.AF_UNSPEC, _socket.SOCK_STREAM, 0, _socket.AI_PASSIVE
        )
    except _socket.gaierror as exc:
        raise StartupError(f"getaddrinfo(): {exc.strerror}", 111) from exc
    last: OSError | None = None
    for family, type_, proto, _, addr in infos:
        sock = _socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            if not host and family == _socket.AF_INET6:
                sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        return sock
    raise StartupError(f"bind(): {last.strerror if last else 'no address'}", 111)


def _unix_socket(path: str) -> _socket.socket:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            _warn("removing existing local socket to replace it")
            os.unlink(path)
        else:
            raise StartupError("another file already exists in the given path", 111)
    except FileNotFoundError:
        pass
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"bind(): {exc.strerror}", 111) from exc
    return sock

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


def bind(config: Config) -> _socket.socket:
    """An inherited systemd socket if there is one, else a new one bound per ``-l``/``-p``."""
    inherited = _systemd_socket()
    if inherited is not None:
        return inherited
    if config.listen.startswith("unix:"):
        return _unix_socket(config.listen[5:])
    return _inet_socket(config.listen, config.port)


def listen(sock: _socket.socket) -> None:
    if sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN):
        return  # inherited, listening already
    try:
        sock.listen(BACKLOG)
    except OSError as exc:  # another socket bound the same port and listened first
        sock.close()
        raise StartupError(f"listen(): {exc.strerror}", 111) from exc


def _warn(message: str) -> None:
    import logging  # not on the way to listening: only for these rare warnings

    logging.getLogger("beanq").warning(message)


def _systemd_socket() -> _socket.socket | None:
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = int(os.environ.get("LISTEN_FDS", "0") or 0)
    if count < 1:
        return None
    if count > 1:
        _warn("inherited more than one listen socket; ignoring all but the first")
    sock = _socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.type != _socket.SOCK_STREAM:
        raise StartupError("inherited fd is not a TCP or UNIX listening socket", 111)
    sock.setblocking(False)
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return sock


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

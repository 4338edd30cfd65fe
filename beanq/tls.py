"""TLS for ``tls://`` listeners, inside the loop's own epoll set.

An accepted socket is wrapped in a non-blocking ``TlsSocket`` (stdlib ``ssl``), which the
loop reads and writes exactly like a plain socket: its ``recv`` runs the handshake until it
completes (never blocking: a handshake that needs more bytes says ``BlockingIOError``, as an
empty plain socket does), then returns every byte decrypted so far. So the loop keeps its
batching, a handshake never holds up other clients, and the plaintext path is untouched (no
flag, no branch: TLS lives in the socket object). The loop drops a client whose handshake
has not finished within ``--tls-handshake-timeout``.

Certificates are read again on SIGHUP into a new ``ssl.SSLContext``: new connections get it,
established ones keep theirs.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger("beanq")

_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
_CLOSED = (ssl.SSLZeroReturnError, ssl.SSLEOFError)
RECORD = 16384  # the most plaintext one TLS record carries


class TlsSocket(ssl.SSLSocket):
    """A server-side TLS socket that behaves like a non-blocking plain one for the loop."""

    handshaken = False
    on_subject: Callable[[str], None] | None = None

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        if not self.handshaken:
            try:
                # (SSLSocket.do_handshake would first ask getpeername and set the timeout
                # twice: three system calls an attempt, for nothing on a non-blocking socket)
                self._sslobj.do_handshake()  # type: ignore[attr-defined]
            except _WANT:
                raise BlockingIOError from None
            except ssl.SSLError as exc:
                log.info("TLS handshake failed: %s", exc.reason or exc)
                raise
            self.handshaken = True
            if self.on_subject is not None:
                subject = certificate_subject(self.getpeercert())
                if subject:
                    self.on_subject(subject)
        # One SSL read returns one record at most. OpenSSL reads no further than that record
        # (no read-ahead), so what is left stays in the kernel and epoll says so again: a
        # small command costs one read and no exception. A full record (big bodies) is
        # likely followed by more: read on while they come, in this wake-up.
        try:
            # (straight to the SSL object: SSLSocket.read's checks hold here, and the
            # frame costs as much as a tenth of a put)
            data: bytes = self._sslobj.read(buflen)  # type: ignore[attr-defined]
        except _WANT:
            raise BlockingIOError from None
        except _CLOSED:
            return b""
        if len(data) < RECORD:
            return data
        parts = [data]
        total = len(data)
        while total < buflen:
            try:
                data = self.read(buflen - total)
            except (*_WANT, *_CLOSED):
                break  # (the end, if it is one, comes again at the next read)
            if not data:
                break
            parts.append(data)
            total += len(data)
        pending = self.pending()
        if pending:  # a record read in part: take the rest, already decrypted
            parts.append(self.read(pending))
        return b"".join(parts)

    def send(self, data: bytes, flags: int = 0) -> int:  # type: ignore[override]
        if not self.handshaken:
            raise BlockingIOError
        try:
            sent: int = self._sslobj.write(data)  # type: ignore[attr-defined]
            return sent
        except _WANT:
            raise BlockingIOError from None

    def sendmsg(self, buffers: object, *args: object) -> int:  # type: ignore[override]
        return self.send(b"".join(buffers))  # type: ignore[arg-type]


def certificate_subject(cert: Mapping[str, Any] | None) -> str:
    """A client certificate's subject as ``CN=worker-1,O=Example`` (its attributes in order),
    which the token file names in ``subject=`` (see beanq.auth)."""
    if not cert:
        return ""
    parts = []
    short = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU"}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            parts.append(f"{short.get(key, key)}={value}")
    return ",".join(parts)


class TlsContext:
    """The TLS side of every ``tls://`` listener: one SSLContext, made again on reload."""

    def __init__(self, cert: str, key: str, client_ca: str | None = None) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self.context = self._make()

    def _make(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.sslsocket_class = TlsSocket
        # No TLS 1.3 session tickets: they would reach clients as bytes nobody asked for
        # (the bundled client takes those as a closed connection), and cost each handshake.
        context.num_tickets = 0
        try:
            context.load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                context.load_verify_locations(self.client_ca)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            from beanq.config import StartupError

            raise StartupError(f"TLS certificate: {exc}", 5) from exc
        return context

    def reload(self) -> None:
        self.context = self._make()
        log.info("TLS certificates reloaded")

    def wrap(self, sock: Any, on_subject: Callable[[str], None] | None) -> ssl.SSLSocket:
        """``sock``: an accepted socket.socket (the server owns sockets; this wraps them)."""
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        if on_subject is not None:
            wrapped.on_subject = on_subject  # type: ignore[attr-defined]
        return wrapped

    def handshaken(self, sock: object) -> bool:
        return isinstance(sock, TlsSocket) and sock.handshaken

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
    """A server-side TLS socket that behaves like a non-blocking plain one for the loop.

    An ``ssl.SSLSocket`` made the way ``ssl`` itself makes one, less what a server's
    non-blocking socket does not need: ``SSLContext.wrap_socket`` costs each connection
    half a dozen system calls (it checks the socket's type, asks its name and its peer's,
    sets blocking twice) and its Python set-up; this takes the accepted descriptor as it
    is, with one system call, and reads and writes straight through the C SSL object."""

    handshaken = False
    on_subject: Callable[[str], None] | None = None
    # (set as SSLSocket._create sets them, for the inherited methods: close, version, ...)
    _sslobj: Any
    _context: ssl.SSLContext
    _session: None
    _connected: bool
    do_handshake_on_connect: bool
    suppress_ragged_eofs: bool

    @classmethod
    def accepted(
        cls, sock: Any, context: ssl.SSLContext, on_subject: Callable[[str], None] | None
    ) -> TlsSocket:
        """``sock``: an accepted, non-blocking socket.socket, whose descriptor this takes."""
        self = cls.__new__(cls)
        # (what SSLSocket._create does: the socket part, then the SSL object)
        super(ssl.SSLSocket, self).__init__(sock.family, sock.type, sock.proto, sock.detach())
        self._context = context
        self.server_side = True
        self.server_hostname = None
        self.do_handshake_on_connect = False
        self.suppress_ragged_eofs = True
        self._session = None
        self._connected = True
        self.on_subject = on_subject
        # The SSL object is made while the new socket object still says blocking (so that it
        # leaves the descriptor's flags alone: it is non-blocking already), then the socket
        # object is told, for the SSL object's sake, which asks it at every call.
        self._sslobj = context._wrap_socket(self, True, None, owner=self)  # type: ignore[attr-defined]
        self.settimeout(0.0)
        return self

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        tls = self._sslobj
        if not self.handshaken:
            try:
                tls.do_handshake()
            except _WANT:
                raise BlockingIOError from None
            except ssl.SSLError as exc:
                log.info("TLS handshake failed: %s", exc.reason or exc)
                raise
            self.handshaken = True
            if self.on_subject is not None:
                subject = certificate_subject(tls.getpeercert())
                if subject:
                    self.on_subject(subject)
        # One SSL read returns one record at most. OpenSSL reads no further than that record
        # (no read-ahead), so what is left stays in the kernel and epoll says so again: a
        # small command costs one read and no exception. A full record (big bodies) is
        # likely followed by more: read on while they come, in this wake-up.
        try:
            data: bytes = tls.read(buflen)
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
                data = tls.read(buflen - total)
            except (*_WANT, *_CLOSED):
                break  # (the end, if it is one, comes again at the next read)
            if not data:
                break
            parts.append(data)
            total += len(data)
        pending = tls.pending()
        if pending:  # a record read in part: take the rest, already decrypted
            parts.append(tls.read(pending))
        return b"".join(parts)

    def send(self, data: bytes, flags: int = 0) -> int:  # type: ignore[override]
        if not self.handshaken:
            raise BlockingIOError
        try:
            sent: int = self._sslobj.write(data)
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


VERIFY = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


class TlsContext:
    """What the ``tls://`` listeners with one ``client-cert=`` mode do to their accepted
    sockets: one SSLContext, made once (never per connection) and again on reload."""

    def __init__(self, files: TlsFiles, client_cert: str) -> None:
        self.files = files
        self.client_cert = client_cert
        self.context = self.make()

    def make(self) -> ssl.SSLContext:
        files = self.files
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        # No TLS 1.3 session tickets: they would reach clients as bytes nobody asked for
        # (the bundled client takes those as a closed connection), and cost each handshake.
        context.num_tickets = 0
        # A client that hangs up without close_notify is a hang-up like any other (every
        # command is framed, so a cut cannot pass for a whole one): no alert written back
        # into a socket the peer closed.
        context.options |= ssl.OP_IGNORE_UNEXPECTED_EOF
        try:
            context.load_cert_chain(files.cert, files.key)
            if self.client_cert != "none":
                assert files.client_ca is not None  # (beanq.listener.client_cert_mode)
                context.load_verify_locations(files.client_ca)
                context.verify_mode = VERIFY[self.client_cert]
        except (OSError, ssl.SSLError) as exc:
            from beanq.config import StartupError

            raise StartupError(f"TLS certificate: {exc}", 5) from exc
        return context

    def wrap(self, sock: Any, on_subject: Callable[[str], None] | None) -> TlsSocket:
        """``sock``: an accepted socket.socket (the server owns sockets; this wraps them)."""
        return TlsSocket.accepted(sock, self.context, on_subject)

    def handshaken(self, sock: object) -> bool:
        return isinstance(sock, TlsSocket) and sock.handshaken


class TlsFiles:
    """``--tls-cert``, ``--tls-key``, ``--tls-client-ca``, and a ``TlsContext`` for each
    ``client-cert=`` mode the listeners use. SIGHUP reads the files again into new
    contexts for every mode, all or none: a file that cannot be read leaves every listener
    with what it had."""

    def __init__(self, cert: str, key: str, client_ca: str | None = None) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self.contexts: dict[str, TlsContext] = {}

    def context(self, client_cert: str) -> TlsContext:
        """The listeners with this ``client-cert=`` mode share one context."""
        made = self.contexts.get(client_cert)
        if made is None:
            made = self.contexts[client_cert] = TlsContext(self, client_cert)
        return made

    def reload(self) -> None:
        fresh = [(each, each.make()) for each in self.contexts.values()]
        for each, context in fresh:
            each.context = context
        log.info("TLS certificates reloaded")

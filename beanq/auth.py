"""Tokens, their rights, and the one gate every command of a connection on an ``auth=``
listener goes through.

The token file (``--auth FILE``, TOML, read again on SIGHUP)::

    [tokens.producer]                # the token's name: logged, never the token itself
    hash = "scrypt$12$8$1$<salt>$<key>"   # from `beanqctl auth new producer` (beanq.tokens)
    put = ["emails", "jobs-*"]       # tubes it may `use` and put into (glob patterns)
    reserve = ["emails"]             # tubes it may `watch` and reserve from
    admin = false                    # pause-tube, kick, kick-job, peeking, deleting jobs it
                                     # does not hold, beanq-flush/-move/-list, schedules
    subject = "CN=producer-1"        # optional: a tls:// client certificate with this
                                     # subject gets these rights without a token

A token is ``NAME.SECRET`` (``beanqctl auth new`` makes one and prints the entry): the name
picks the one entry to check, so a wrong token costs one hash at most, and a token is hashed
once per process (a verified token is remembered by its SHA-256 until the next reload).

The gate is a second handler table (``GATED``) in front of ``beanq.dispatch``'s: a
connection on a listener with auth gets it (``Authority.attach``), every other connection
keeps the plain table and pays nothing. Until ``beanq-auth`` succeeds on an auth=required
listener, every command gets UNAUTHORIZED and runs no handler; on auth=optional an
unauthenticated connection has every right, and ``beanq-auth`` narrows them to the token's.
A command outside the connection's rights gets UNAUTHORIZED and changes nothing.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
from collections.abc import Callable, Sequence

from beanq import protocol as p
from beanq.dispatch import HANDLERS, Connection
from beanq.tokens import verify_token

log = logging.getLogger("beanq")

FAILURES_FREE = 3  # failed beanq-auth per address before the delay starts
MAX_DELAY = 60.0  # seconds an address waits at most after repeated failures
MAX_TRACKED = 65536  # addresses with failures remembered, at most


# --- rights --------------------------------------------------------------------------------


class Rights:
    """What one token may do. Glob matches are remembered per tube name."""

    __slots__ = ("_put", "_reserve", "admin", "name", "put", "reserve")

    def __init__(self, name: str, put: Sequence[str], reserve: Sequence[str], admin: bool) -> None:
        self.name = name
        self.put = tuple(put)
        self.reserve = tuple(reserve)
        self.admin = admin
        self._put: dict[bytes, bool] = {}
        self._reserve: dict[bytes, bool] = {}

    def may_put(self, tube: bytes) -> bool:
        known = self._put.get(tube)
        if known is None:
            known = self._put[tube] = _matches(tube, self.put)
        return known

    def may_reserve(self, tube: bytes) -> bool:
        known = self._reserve.get(tube)
        if known is None:
            known = self._reserve[tube] = _matches(tube, self.reserve)
        return known


def _matches(tube: bytes, patterns: tuple[str, ...]) -> bool:
    name = tube.decode("latin-1")
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


EVERYTHING = Rights("(anonymous)", ["*"], ["*"], True)


class Entry:
    __slots__ = ("hash", "rights", "subject")

    def __init__(self, rights: Rights, hash: str | None, subject: str | None) -> None:
        self.rights = rights
        self.hash = hash
        self.subject = subject


class AuthFileError(Exception):
    pass


def parse(text: str) -> dict[str, Entry]:
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AuthFileError(str(exc)) from exc
    tokens = data.get("tokens", {})
    if not isinstance(tokens, dict):
        raise AuthFileError("[tokens.NAME] tables expected")
    entries = {}
    for name, table in tokens.items():
        if not isinstance(table, dict):
            raise AuthFileError(f"tokens.{name}: a table expected")
        unknown = set(table) - {"hash", "put", "reserve", "admin", "subject"}
        if unknown:
            raise AuthFileError(f"tokens.{name}: unknown keys {sorted(unknown)}")
        hash_ = table.get("hash")
        subject = table.get("subject")
        put = table.get("put", [])
        reserve = table.get("reserve", [])
        admin = table.get("admin", False)
        if hash_ is not None and not (isinstance(hash_, str) and hash_.startswith("scrypt$")):
            raise AuthFileError(f"tokens.{name}: hash must be scrypt$... (beanqctl auth new)")
        if hash_ is None and subject is None:
            raise AuthFileError(f"tokens.{name}: needs a hash or a subject")
        globs = (put, reserve)
        if not all(isinstance(x, list) and all(isinstance(g, str) for g in x) for x in globs):
            raise AuthFileError(f"tokens.{name}: put and reserve are lists of tube globs")
        if not isinstance(admin, bool) or not (subject is None or isinstance(subject, str)):
            raise AuthFileError(f"tokens.{name}: admin is true/false, subject a string")
        entries[name] = Entry(Rights(name, put, reserve, admin), hash_, subject)
    return entries


class Audit:
    """What the gates decided since the server started, counted for ``/metrics`` (``stats``
    keeps beanstalkd's fields, untouched): authentications by method and token name, failed
    ones by method and reason, refused commands by reason and command. Token names come from
    the auth file and commands from the protocol, so the keys are bounded; a token itself is
    never a key. One per token store, shared by its listeners and kept across reloads; only
    gated connections reach it, so a server without ``--auth`` counts nothing. The HTTP side
    reads copies through the three accessors and nothing else."""

    __slots__ = ("_failures", "_refused", "_successes")

    def __init__(self) -> None:
        self._successes: dict[tuple[str, str], int] = {}  # (method, token name): count
        # (method, reason): count, the usual ones from 0 so that a first failure is a rise
        self._failures: dict[tuple[str, str], int] = dict.fromkeys(
            [("token", "wrong_token"), ("token", "throttled"), ("certificate", "unknown")], 0
        )
        self._refused: dict[tuple[str, str], int] = {}  # (reason, command): count

    def succeeded(self, method: str, name: str) -> None:
        key = (method, name)
        self._successes[key] = self._successes.get(key, 0) + 1

    def failed(self, method: str, reason: str) -> None:
        key = (method, reason)
        self._failures[key] = self._failures.get(key, 0) + 1

    def refused(self, reason: str, command: str) -> None:
        key = (reason, command)
        self._refused[key] = self._refused.get(key, 0) + 1

    # --- read-only, for /metrics -----------------------------------------------------------

    def successes(self) -> dict[tuple[str, str], int]:
        """(method: ``token`` or ``certificate``, token name): authentications."""
        return dict(self._successes)

    def failures(self) -> dict[tuple[str, str], int]:
        """(method, reason: ``wrong_token``, ``throttled`` or ``unknown``): failures."""
        return dict(self._failures)

    def refusals(self) -> dict[tuple[str, str], int]:
        """(reason: ``unauthenticated`` or ``rights``, command): commands refused."""
        return dict(self._refused)


class TokenStore:
    """The token file's entries, the tokens verified so far, failures per address, and the
    audit counts."""

    def __init__(self, path: str, entries: dict[str, Entry]) -> None:
        self.path = path
        self.entries = entries
        self.subjects = {e.subject: e.rights for e in entries.values() if e.subject}
        self._verified: dict[bytes, Rights] = {}  # sha256(token): its rights
        self._failures: dict[str, tuple[int, float]] = {}  # address: (failures, wait until)
        self.audit = Audit()

    @classmethod
    def load(cls, path: str) -> TokenStore:
        from beanq.config import StartupError

        try:
            return cls(path, cls._read(path))
        except (OSError, AuthFileError, UnicodeDecodeError) as exc:
            raise StartupError(f"--auth {path}: {exc}", 5) from exc

    @staticmethod
    def _read(path: str) -> dict[str, Entry]:
        with open(path, encoding="utf-8") as file:
            return parse(file.read())

    def reload(self) -> None:
        """SIGHUP. Connections keep the rights they proved; new ones get the new file's."""
        try:
            entries = self._read(self.path)
        except (OSError, AuthFileError, UnicodeDecodeError) as exc:
            log.warning("--auth %s: %s; keeping the tokens loaded before", self.path, exc)
            return
        self.entries = entries
        self.subjects = {e.subject: e.rights for e in entries.values() if e.subject}
        self._verified.clear()
        log.info("--auth %s reloaded: %d tokens", self.path, len(entries))

    def check(self, token: bytes, peer: str, now: float) -> Rights | None:
        """The token's rights, or None (a counted failure; an address that failed often
        waits longer and longer, during which every attempt fails unchecked)."""
        failures, until = self._failures.get(peer, (0, 0.0))
        if now < until:
            self._fail(peer, failures, now)
            self.audit.failed("token", "throttled")
            return None
        digest = hashlib.sha256(token).digest()
        rights = self._verified.get(digest)
        if rights is None:
            name = token.partition(b".")[0].decode("latin-1")
            entry = self.entries.get(name)
            if entry is not None and entry.hash is not None and verify_token(token, entry.hash):
                rights = self._verified[digest] = entry.rights
        if rights is None:
            self._fail(peer, failures, now)
            self.audit.failed("token", "wrong_token")
            return None
        self._failures.pop(peer, None)
        self.audit.succeeded("token", rights.name)
        return rights

    def _fail(self, peer: str, failures: int, now: float) -> None:
        failures += 1
        delay = 0.0
        if failures > FAILURES_FREE:
            delay = min(MAX_DELAY, 2.0 ** (failures - FAILURES_FREE - 1))
        if len(self._failures) >= MAX_TRACKED:
            self._failures.clear()
        self._failures[peer] = (failures, now + delay)

    def delay(self, peer: str, now: float) -> float:
        """Seconds ``peer`` must wait before a token is checked again (tests, logs)."""
        return max(0.0, self._failures.get(peer, (0, 0.0))[1] - now)


# --- the gate ------------------------------------------------------------------------------


class Guard:
    """One gated connection's state: its address and the rights it has so far."""

    __slots__ = ("authority", "peer", "rights")

    def __init__(self, authority: Authority, peer: str) -> None:
        self.authority = authority
        self.peer = peer
        self.rights: Rights | None = None if authority.required else EVERYTHING


class Authority:
    """What a listener with auth=required|optional does to its connections (the loop's
    ``Gate``): give them the gated table and a guard."""

    def __init__(self, store: TokenStore, required: bool) -> None:
        self.store = store
        self.required = required

    def audit(self) -> Audit:
        """What the gates of this store counted (for ``/metrics``)."""
        return self.store.audit

    def attach(self, conn: Connection, peer: str) -> None:
        conn.handlers = GATED
        conn.guard = Guard(self, peer)

    def certified(self, conn: Connection, subject: str) -> None:
        """A TLS client certificate with ``subject`` (verified against --tls-client-ca)."""
        guard = conn.guard
        assert isinstance(guard, Guard)
        rights = self.store.subjects.get(subject)
        if rights is None:
            self.store.audit.failed("certificate", "unknown")
            log.info("auth: certificate %r from %s maps to no token", subject, guard.peer)
            return
        guard.rights = rights
        self.store.audit.succeeded("certificate", rights.name)
        log.info("auth: %s by certificate %r from %s", rights.name, subject, guard.peer)


Handler = Callable[[Connection, p.Event, float], None]
Check = Callable[[Rights, Connection, p.Event], bool]


def _admin(rights: Rights, conn: Connection, event: p.Event) -> bool:
    return rights.admin


def _anyone(rights: Rights, conn: Connection, event: p.Event) -> bool:
    return True


def _put(rights: Rights, conn: Connection, event: p.Event) -> bool:
    return rights.admin or rights.may_put(conn.session.use.name)


def _reserve(rights: Rights, conn: Connection, event: p.Event) -> bool:
    return rights.admin or all(rights.may_reserve(tube.name) for tube in conn.session.watch)


def _tube(rights: Rights, conn: Connection, event: p.Event) -> bool:
    assert isinstance(event, p.TubeCommand)
    if rights.admin or event.name in ("ignore", "stats-tube"):
        return True
    if event.name == "use":
        return rights.may_put(event.tube)
    return rights.may_reserve(event.tube)  # watch


def _job(rights: Rights, conn: Connection, event: p.Event) -> bool:
    """Jobs the connection holds are its own business; others' need admin, except
    reserve-job of a job in a tube it may reserve from."""
    assert isinstance(event, p.JobCommand)
    if rights.admin or event.name == "touch" or event.id in conn.session.reserved:
        return True
    if event.name == "reserve-job":
        job = conn.hub.engine.jobs.get(event.id)
        return job is None or rights.may_reserve(job.tube.name)
    return False


def _invalid(rights: Rights, conn: Connection, event: p.Event) -> bool:
    """An error reply changes nothing, except a put's, which uses up a job id."""
    assert isinstance(event, p.Invalid)
    return not (event.counted == "put" or event.producer) or _put(rights, conn, event)


def _simple(rights: Rights, conn: Connection, event: p.Event) -> bool:
    assert isinstance(event, p.Simple)
    return rights.admin or not event.name.startswith("peek")


CHECKS: dict[type, Check] = {
    p.Put: _put,
    p.PutUnique: _put,
    p.PutStarted: _put,
    p.Reserve: _reserve,
    p.ReserveBatch: _reserve,
    p.TubeCommand: _tube,
    p.JobCommand: _job,
    p.Release: _anyone,  # (the engine releases only jobs the connection holds)
    p.Bury: _anyone,  # (likewise)
    p.Simple: _simple,
    p.Capabilities: _anyone,
    p.Invalid: _invalid,
    p.Kick: _admin,
    p.PauseTube: _admin,
    p.Flush: _admin,
    p.Move: _admin,
    p.ListJobs: _admin,
}


def _auth(conn: Connection, event: p.Event, now: float) -> None:
    assert isinstance(event, p.Auth)
    guard = conn.guard
    assert isinstance(guard, Guard)
    rights = guard.authority.store.check(event.token, guard.peer, now)
    if rights is None:
        log.info("auth: failed from %s", guard.peer)
        conn._reply(p.UNAUTHORIZED)
        return
    guard.rights = rights
    log.info("auth: %s authenticated from %s", rights.name, guard.peer)
    conn._reply(p.AUTH_OK)


def _gated(kind: type, handler: Handler) -> Handler:
    check = CHECKS.get(kind, _admin)  # a command this module does not know: admin only

    def gate(conn: Connection, event: p.Event, now: float) -> None:
        guard = conn.guard
        assert isinstance(guard, Guard)
        rights = guard.rights
        if rights is not None and check(rights, conn, event):
            handler(conn, event, now)
            return
        if kind is p.PutStarted:
            return  # its put (or the error it ends in) is refused when it comes
        if isinstance(event, p.Simple) and event.name == "quit":
            conn.closing = True
            return
        guard.authority.store.audit.refused(
            "unauthenticated" if rights is None else "rights", _describe(event)
        )
        log.info(
            "auth: refused %s for %s from %s",
            _describe(event),
            rights.name if rights is not None else "(unauthenticated)",
            guard.peer,
        )
        conn._reply(p.UNAUTHORIZED)

    return gate


# The protocol's word for each event that carries none (for logs and the audit counts)
_WORDS: dict[type, str] = {
    p.Put: "put",
    p.PutUnique: "beanq-put-unique",
    p.Reserve: "reserve",  # (or reserve-with-timeout)
    p.ReserveBatch: "beanq-reserve-batch",
    p.Release: "release",
    p.Bury: "bury",
    p.Kick: "kick",
    p.PauseTube: "pause-tube",
    p.Flush: "beanq-flush",
    p.ListJobs: "beanq-list",
    p.Move: "beanq-move",
    p.Capabilities: "beanq-capabilities",
    p.ScheduleAdd: "beanq-schedule-add",
    p.ScheduleList: "beanq-schedule-list",
    p.Invalid: "put",  # (only a put's error reply is ever refused: see _invalid)
}


def _describe(event: p.Event) -> str:
    """The command's word: one of the protocol's, so a bounded set."""
    if isinstance(event, p.ScheduleCommand):
        return f"beanq-schedule-{event.word}"
    if isinstance(event, p.Reserve) and event.timeout is not None:
        return "reserve-with-timeout"
    name = getattr(event, "name", None)
    if isinstance(name, str):
        return name
    return _WORDS.get(type(event), type(event).__name__)


def _gated_table() -> dict[type, Handler]:
    table = {kind: _gated(kind, handler) for kind, handler in HANDLERS.items()}
    table[p.Auth] = _auth
    return table


GATED = _gated_table()

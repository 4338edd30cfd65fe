"""tls:// listeners: what TLS costs a put, and how many full handshakes a second beanq takes.

One beanq with a plaintext listener and a tls:// one beside it; put throughput at 50
connections over each, alternated over rounds in the same run (target: TLS at least 0.6 of
plaintext), then new TLS connections a second, each a full handshake (no session reuse: the
server sends no tickets) followed by one command, from four client processes (target: at
least 1,000 a second). The put clients are Python processes with non-blocking sockets, the
same for both sides, so the ratio is the server's TLS cost plus the client's (it
understates beanq's). Certificates are made by ``trustme`` (the dev extra): ECDSA P-256,
TLS 1.3, as docs/security.md recommends; the handshakes are measured again against a second
beanq with an RSA-2048 certificate, for comparison (an RSA signature costs the server about
ten times an ECDSA one).
"""

from __future__ import annotations

import multiprocessing
import selectors
import socket
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.procstat import CLK_TCK, cpu_ticks
from bench.servers import Server, ServerKind, free_port

CONNS = 50
PROCS = 2  # client processes for the puts (25 connections each)
# Client processes for the handshakes, each connecting one after the other: new connections
# come from many clients at once, and with two the server sleeps between most handshakes
# (2 processes: ~990 a second and ~610 us of server CPU each; 3: ~1,070 and ~560; 4: ~1,150
# and ~520, on the same server, alternated, 2026-12-07)
HANDSHAKE_PROCS = 4


def make_certs(where: Path, key_type: str = "ECDSA") -> tuple[Path, Path]:
    """(server chain and key, CA) for 127.0.0.1, with ``key_type`` keys (ECDSA: P-256; RSA:
    2048 bits)."""
    import trustme

    kind = trustme.KeyType[key_type]
    ca = trustme.CA(key_type=kind)
    server = where / f"server-{key_type}.pem"
    leaf = ca.issue_cert("127.0.0.1", key_type=kind)
    leaf.private_key_and_cert_chain_pem.write_to_path(str(server))
    ca_file = where / f"ca-{key_type}.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server, ca_file


def _context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    context.check_hostname = False  # (the certificate names 127.0.0.1 as an IP address)
    return context


PUT = b"put 0 0 60 100\r\n" + b"x" * 100 + b"\r\n"


def _put_worker(port: int, ca_file: str | None, conns: int, seconds: float, out: Any) -> None:
    """``conns`` connections each putting one job at a time for ``seconds``; puts done."""
    context = _context(ca_file) if ca_file else None
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(conns):
        sock: socket.socket = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if context is not None:
            sock = context.wrap_socket(sock)
        sock.setblocking(False)
        socks.append(sock)
        sel.register(sock, selectors.EVENT_READ)
    # The lightest calls on each side, so that the clients take as little of the machine
    # from the server as they can: the socket's own recv/send, or the SSL object's.
    ios = {}
    for sock in socks:
        tls = getattr(sock, "_sslobj", None)
        ios[sock.fileno()] = (tls.read, tls.write) if tls is not None else (sock.recv, sock.send)
    done = 0
    end = time.monotonic() + seconds
    for sock in socks:
        sock.send(PUT)
    while time.monotonic() < end:
        for key, _ in sel.select(0.1):
            read, write = ios[key.fd]
            try:
                data = read(4096)
            except (ssl.SSLWantReadError, BlockingIOError):
                continue
            done += data.count(b"INSERTED")
            write(PUT)
    for sock in socks:
        sock.close()
    out.put(done)


def _handshake_worker(port: int, ca_file: str, seconds: float, out: Any) -> None:
    """Connections one after the other, each a full handshake that checks the server's
    certificate, one command and its answer. As light as the put clients: the C SSL object
    over a plain socket (``ssl.SSLSocket`` adds some 50 us of Python a connection, and
    ``create_connection`` a name look-up), so that more of the two cores is the server's."""
    context = _context(ca_file)
    done = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # (else 40 ms a handshake)
        raw.connect(("127.0.0.1", port))
        tls = context._wrap_socket(raw, False, None, owner=raw)  # type: ignore[attr-defined]
        tls.do_handshake()
        tls.write(b"list-tube-used\r\n")
        if tls.read(100).startswith(b"USING"):
            done += 1
        raw.close()
    out.put(done)


def _spread(target: Any, args_for: list[tuple[Any, ...]], seconds: float) -> float:
    """Run ``target`` in one process per argument tuple; the sum of their counts a second."""
    queue: Any = multiprocessing.get_context("fork").Queue()
    procs = [
        multiprocessing.get_context("fork").Process(target=target, args=(*args, queue))
        for args in args_for
    ]
    for proc in procs:
        proc.start()
    total: float = sum(queue.get(timeout=seconds + 60) for _ in procs)
    for proc in procs:
        proc.join(30)
    return total / seconds


def put_rate(port: int, ca_file: str | None, seconds: float) -> float:
    share = CONNS // PROCS
    return _spread(_put_worker, [(port, ca_file, share, seconds)] * PROCS, seconds)


def handshake_rate(port: int, ca_file: str, seconds: float) -> float:
    return _spread(_handshake_worker, [(port, ca_file, seconds)] * HANDSHAKE_PROCS, seconds)


def _measured(pid: int, run: Any) -> tuple[float, float]:
    """(puts a second, the server's CPU microseconds a put) of ``run()``."""
    before = cpu_ticks(pid)
    started = time.monotonic()
    rate = run()
    elapsed = time.monotonic() - started
    cpu = (cpu_ticks(pid) - before) / CLK_TCK
    return rate, round(1e6 * cpu / max(1.0, rate * elapsed), 2)


def tls_cost(kind: ServerKind, rounds: int, seconds: float) -> dict[str, Any]:
    """Puts a second over each listener (and the server's CPU per put, which the clients'
    own TLS work on the same cores does not blur), alternated; then handshakes a second
    against the ECDSA server and an RSA one, alternated too."""
    out: dict[str, Any] = {"plain": [], "tls": [], "plain_cpu_us": [], "tls_cpu_us": []}
    hands: dict[str, list[tuple[float, float]]] = {"ECDSA": [], "RSA": []}
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        servers: dict[str, tuple[Server, int, Path]] = {}
        try:
            for key_type in hands:
                cert, ca_file = make_certs(Path(tmp), key_type)
                tls_port = free_port()
                flags = ("-l", f"tls://127.0.0.1:{tls_port}", "--tls-cert", str(cert))
                server = Server(kind, flags=(*flags, "--tls-key", str(cert)))
                servers[key_type] = (server, tls_port, ca_file)
                server.start()
            server, tls_port, ca_file = servers["ECDSA"]
            for _ in range(rounds):
                for side, port, ca in (("plain", server.port, None), ("tls", tls_port, ca_file)):
                    rate, cpu_us = _measured(
                        server.pid, lambda p=port, c=ca: put_rate(p, c and str(c), seconds)
                    )
                    out[side].append(round(rate))
                    out[f"{side}_cpu_us"].append(cpu_us)
            for _ in range(rounds):
                for key_type, (each, port, ca) in servers.items():
                    hands[key_type].append(
                        _measured(each.pid, lambda p=port, c=ca: handshake_rate(p, str(c), seconds))
                    )
        except Exception as e:
            out["error"] = f"{type(e).__name__}: {e}"
        finally:
            for each, _port, _ca in servers.values():
                each.stop()
    for key_type, runs in hands.items():
        if not runs:
            continue
        prefix = "" if key_type == "ECDSA" else "rsa_"
        rate = sorted(r for r, _ in runs)[len(runs) // 2]
        cpu_us = sorted(c for _, c in runs)[len(runs) // 2]
        out[f"{prefix}handshakes_per_s"] = round(rate)
        out[f"{prefix}handshakes_rounds"] = [round(r) for r, _ in runs]
        # the server's CPU a handshake (and one command): its capacity on one core,
        # whatever the clients' own handshakes cost on the same two cores
        out[f"{prefix}handshake_cpu_us"] = cpu_us
        out[f"{prefix}handshakes_per_core_s"] = round(1e6 / cpu_us) if cpu_us else None
    plain, tls = sorted(out["plain"]), sorted(out["tls"])
    if plain and tls:
        out["ratio"] = round(tls[len(tls) // 2] / plain[len(plain) // 2], 3)
        cpu_plain, cpu_tls = sorted(out["plain_cpu_us"]), sorted(out["tls_cpu_us"])
        # what the ratio would be if the server alone were the limit
        out["server_cpu_ratio"] = round(cpu_plain[len(plain) // 2] / cpu_tls[len(tls) // 2], 3)
    return out


def render(t: dict[str, Any]) -> str:
    rows = []
    if "ratio" in t:
        rows.append(
            f"put c50 over TLS {report.median(t['tls']):,.0f} ops/s, plaintext beside it"
            f" {report.median(t['plain']):,.0f}: ratio {t['ratio']:.3f} (target >= 0.6);"
            f" server CPU a put {report.median(t['tls_cpu_us'])} us against"
            f" {report.median(t['plain_cpu_us'])} us (ratio {t['server_cpu_ratio']:.3f})"
        )
    if "handshakes_per_s" in t:
        rows.append(
            f"full TLS handshakes: {t['handshakes_per_s']:,} a second (target >= 1,000);"
            f" server CPU {t.get('handshake_cpu_us')} us each:"
            f" {t.get('handshakes_per_core_s')} a second per core of the server's"
            " (ECDSA P-256, medians)"
        )
    if "rsa_handshakes_per_s" in t:
        rows.append(
            f"  with an RSA-2048 certificate instead: {t['rsa_handshakes_per_s']:,} a second;"
            f" server CPU {t.get('rsa_handshake_cpu_us')} us each:"
            f" {t.get('rsa_handshakes_per_core_s')} a second per core"
        )
    if "error" in t:
        rows.append(f"ERROR {t['error']}")
    return "\n".join(rows)

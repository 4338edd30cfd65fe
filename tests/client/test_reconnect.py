"""Reconnecting: a restarted server is noticed before a command is written, the used tube and
watch list come back, and a command whose reply was lost is reported, never sent twice."""

from __future__ import annotations

import pytest
import trio
from beanq_client import AsyncClient, BeanstalkConnectionError, Client

from tests.client.conftest import KINDS, fake_server
from tests.servers import free_port, spawn_beanq, spawn_beanstalkd


def spawn(kind: str, port: int):  # type: ignore[no-untyped-def]
    return (spawn_beanq if kind == "beanq" else spawn_beanstalkd)(port=port)


@pytest.mark.parametrize("kind", KINDS)
def test_sync_client_survives_a_server_restart(kind: str) -> None:
    port = free_port()
    c = Client(f"beanstalk://127.0.0.1:{port}/work", reconnect=True, timeout=5)
    with spawn(kind, port):
        c.watch("more")
        c.put(b"lost with the server")
    with pytest.raises(BeanstalkConnectionError) as info:
        c.stats()  # the server is gone: nothing could have been sent
    assert not info.value.sent
    with spawn(kind, port):
        # The old socket is closed by the peer: found before writing, so the put is safe.
        job_id = c.put(b"after restart")
        assert c.using() == "work"
        assert sorted(c.watching()) == ["more", "work"]
        assert c.peek(job_id).body == b"after restart"
        assert c.stats()["total-connections"] >= 1
    c.close()


@pytest.mark.parametrize("kind", KINDS)
def test_without_reconnect_a_restart_is_reported(kind: str) -> None:
    port = free_port()
    c = Client(("127.0.0.1", port), timeout=5)
    with spawn(kind, port):
        c.use("kept")
    with spawn(kind, port):
        with pytest.raises(BeanstalkConnectionError) as info:
            c.put(b"x")
        assert not info.value.sent
        c.connect()  # explicit reconnect restores the tube
        assert c.using() == "kept"
        assert c.stats_tube("kept")["current-jobs-ready"] == 0  # the put was never sent
    c.close()


def test_a_command_whose_reply_was_lost_is_not_resent() -> None:
    # The fake server reads the put, then hangs up without answering; it answers the next
    # connection's commands normally.
    with fake_server(
        b"USING jobs\r\n", None, b"USING jobs\r\n", b"OK 11\r\n---\n- jobs\n\r\n"
    ) as fake:
        c = Client(f"beanstalk://{fake.address[0]}:{fake.address[1]}", reconnect=True, timeout=5)
        c.use("jobs")
        with pytest.raises(BeanstalkConnectionError) as info:
            c.put(b"maybe inserted")
        assert info.value.sent
        assert c.tubes() == ["jobs"]
        assert fake.connections == 2
        assert fake.received == [
            b"use jobs",
            b"put 2147483648 0 120 14",
            b"use jobs",
            b"list-tubes",
        ]
        c.close()


async def test_async_client_survives_a_server_restart() -> None:
    port = free_port()
    c = AsyncClient(f"beanstalk://127.0.0.1:{port}/work", reconnect=True)
    with spawn_beanq(port=port):
        await c.watch("more")
        await c.put(b"first")
    with spawn_beanq(port=port):
        job_id = await c.put(b"after restart")
        assert await c.using() == "work"
        assert sorted(await c.watching()) == ["more", "work"]
        assert (await c.reserve(timeout=1)).id == job_id
    await c.close()


async def test_async_lost_reply_is_not_resent() -> None:
    with fake_server(None, b"OK 11\r\n---\n- jobs\n\r\n") as fake:
        c = AsyncClient(fake.address, reconnect=True)
        with pytest.raises(BeanstalkConnectionError) as info:
            await c.put(b"maybe")
        assert info.value.sent
        with trio.fail_after(5):
            assert await c.tubes() == ["jobs"]
        assert [line.split()[0] for line in fake.received] == [b"put", b"list-tubes"]
        await c.close()


async def test_async_connect_failure_is_not_sent() -> None:
    c = AsyncClient(("127.0.0.1", free_port()), connect_timeout=2)
    with pytest.raises(BeanstalkConnectionError) as info:
        await c.stats()
    assert not info.value.sent

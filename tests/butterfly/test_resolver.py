"""The resolver: endpoint lists applied to live ports (real sockets, in-process intermediaries)."""
from __future__ import annotations

import asyncio

import pytest

from fabric import InputPort, OutputPort
from fabric.runtime.resolver import Resolver, endpoint_changes, normalize
from tests.datapath.helpers import running_intermediary
from tests.waiting import async_wait_for


def test_changes_add_the_new_and_remove_the_gone():
    assert endpoint_changes(["tcp://h:1", "h:2"], ["h:2", "tcp://h:3"]) == (
        ["tcp://h:3"], ["tcp://h:1"])


def test_same_endpoints_in_another_spelling_change_nothing():
    assert endpoint_changes(["h:1"], ["tcp://h:1"]) == ([], [])


def test_an_empty_list_keeps_the_last_endpoints():
    assert endpoint_changes(["tcp://h:1"], []) == ([], [])


def test_normalize_adds_the_transport_only_when_missing():
    assert normalize("h:1") == "tcp://h:1"
    assert normalize("ipc:///tmp/x") == "ipc:///tmp/x"


class Updates:
    """An endpoint-list stream fed by the test (stands for the name service's watch)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    def push(self, endpoints: list[str]) -> None:
        self.queue.put_nowait(list(endpoints))

    def __aiter__(self):
        return self

    async def __anext__(self) -> list[str]:
        return await self.queue.get()


async def test_ports_follow_an_intermediary_that_moved_without_a_restart():
    channel = "resolve-move"
    got: list[tuple[int, str]] = []
    async with running_intermediary(channel) as first, running_intermediary(channel) as other:
        out_updates, in_updates = Updates(), Updates()
        for updates in (out_updates, in_updates):
            updates.push([first.endpoint])
        async with OutputPort(channel) as out, \
                InputPort(channel, handler=lambda m: got.append((m.payload, m.intermediary))) \
                as inp:
            changes = []
            resolvers = [Resolver(out, out_updates, on_change=changes.append).start(),
                         Resolver(inp, in_updates, on_change=changes.append).start()]
            for r in resolvers:
                await r.first(5)
            assert out.endpoints == inp.endpoints == [first.endpoint]
            for i in range(100):
                await out.send(i)
            await out.flush(10)
            assert {via for _, via in got} == {first.endpoint}

            # The intermediary "moves": the name now lists another endpoint only.
            for updates in (out_updates, in_updates):
                updates.push([other.endpoint])
            await async_wait_for(lambda: out.endpoints == inp.endpoints == [other.endpoint], 5,
                                 "both ports to switch to the moved intermediary")
            for i in range(100, 200):
                await out.send(i)
            await out.flush(10)
            assert {via for p, via in got if p >= 100} == {other.endpoint}
            assert sorted(p for p, _ in got) == list(range(200))
            assert [c.added for c in changes[-2:]] == [(other.endpoint,)] * 2
            assert [c.removed for c in changes[-2:]] == [(first.endpoint,)] * 2
            for r in resolvers:
                await r.close()


@pytest.mark.parametrize("endpoints", [[], ["tcp://127.0.0.1:1"]])
async def test_first_returns_once_the_first_list_is_applied(endpoints):
    updates = Updates()

    class Port:
        endpoints: list[str] = []

        def add_endpoint(self, e):
            self.endpoints = [*self.endpoints, e]

        def remove_endpoint(self, e):
            self.endpoints = [x for x in self.endpoints if x != e]

    port = Port()
    resolver = Resolver(port, updates).start()
    with pytest.raises(asyncio.TimeoutError):
        await resolver.first(0.05)
    updates.push(endpoints)
    await resolver.first(5)
    assert port.endpoints == endpoints
    await resolver.close()


async def test_a_failed_stream_is_made_again_and_followed(monkeypatch):
    monkeypatch.setattr("fabric.runtime.resolver.RETRY_S", 0.01)
    made = []

    async def stream():
        made.append(1)
        if len(made) == 1:
            raise OSError("name service unreachable")
        yield ["tcp://127.0.0.1:7"]
        await asyncio.Event().wait()

    class Port:
        endpoints: list[str] = []

        def add_endpoint(self, e):
            self.endpoints = [*self.endpoints, e]

        def remove_endpoint(self, e):
            self.endpoints = [x for x in self.endpoints if x != e]

    port = Port()
    resolver = Resolver(port, stream).start()
    await resolver.first(5)
    assert port.endpoints == ["tcp://127.0.0.1:7"] and len(made) == 2
    await resolver.close()

"""When a replica splits, without Ray: the deployment's class with its batch and its peers' handle faked.
A request that finds its replica idle is split (the first chunk searched here, the rest sent to the peers'
search_here); a request that arrives while another is in flight is not; a failed chunk leaves the replica
idle again. A direct-port request of several queries that finds its replica busy goes through the
deployment's router, and so does one large enough to split; a lone query stays."""

from __future__ import annotations

import asyncio

import pytest

from s3ray.config import load_config
from s3ray.retrieval.service import _retriever_class


class FakeMethod:
    def __init__(self, calls: list, fail: bool):
        self.calls, self.fail = calls, fail

    def remote(self, queries, k):
        self.calls.append(list(queries))

        async def answer():
            await asyncio.sleep(0.01)
            if self.fail:
                raise RuntimeError("peer died")
            return [[f"{q}@peer"] for q in queries]

        return answer()


class FakePeers:
    def __init__(self, fail: bool = False):
        self.calls: list[list[str]] = []
        self.search_here = FakeMethod(self.calls, fail)
        self.routed: list[list[str]] = []  # whole requests sent through the deployment's router
        self.search = FakeMethod(self.routed, fail)


def replica(peers: FakePeers):
    """The deployment's class, built without its __init__ (no searcher, no Serve context)."""
    cls = _retriever_class().func_or_class
    server = cls.__new__(cls)
    server.retriever = load_config("test", ["retriever.num_replicas=2", "retriever.split_min_queries=4"]).retriever
    server.in_flight = 0
    server.peers = peers

    async def search_batch(item):
        await asyncio.sleep(0.01)
        return [f"{item[0]}@here"]

    server.search_batch = search_batch
    return server


def test_an_idle_replica_splits_and_keeps_the_first_chunk():
    peers = FakePeers()
    results = asyncio.run(replica(peers).search(list("abcde"), 1))
    assert results == [["a@here"], ["b@here"], ["c@here"], ["d@peer"], ["e@peer"]]
    assert peers.calls == [["d", "e"]]


def test_a_request_that_finds_another_in_flight_is_not_split():
    peers = FakePeers()
    server = replica(peers)

    async def go():
        first = asyncio.ensure_future(server.search(list("abcd"), 1))
        await asyncio.sleep(0)  # the first is in flight
        second = await server.search(list("wxyz"), 1)
        return await first, second

    first, second = asyncio.run(go())
    assert peers.calls == [["c", "d"]]  # only the first request's chunk
    assert second == [[f"{q}@here"] for q in "wxyz"] and server.in_flight == 0


def test_a_failed_chunk_fails_the_request_and_the_replica_is_idle_again():
    server = replica(FakePeers(fail=True))
    with pytest.raises(RuntimeError, match="peer died"):
        asyncio.run(server.search(list("abcd"), 1))
    assert server.in_flight == 0


def test_a_direct_request_is_searched_here_when_idle_and_routed_when_busy_unless_it_is_one_query():
    peers = FakePeers()
    server = replica(peers)

    async def go():
        alone = await server.search_direct(list("ab"), 1)
        first = asyncio.ensure_future(server.search_direct(list("cd"), 1))
        await asyncio.sleep(0)  # the first is in flight
        second = await server.search_direct(list("xy"), 1)
        first = await first
        third = asyncio.ensure_future(server.search_direct(list("ef"), 1))
        await asyncio.sleep(0)  # the third is in flight
        lone = await server.search_direct(["z"], 1)  # busy, but one query: it joins this replica's batch
        return alone, first, second, await third, lone

    alone, first, second, third, lone = asyncio.run(go())
    assert alone == [["a@here"], ["b@here"]] and first == [["c@here"], ["d@here"]]
    assert second == [["x@peer"], ["y@peer"]] and third == [["e@here"], ["f@here"]] and lone == [["z@here"]]
    assert peers.routed == [["x", "y"]] and server.in_flight == 0


def test_a_direct_request_large_enough_to_split_goes_through_the_router_even_when_idle():
    """Searched here, its chunk's trip through the router could land on this same replica (the router
    never saw the direct request), serialising the halves; routed, the router counts it where it runs."""
    peers = FakePeers()
    server = replica(peers)
    assert asyncio.run(server.search_direct(list("abcd"), 1)) == [[f"{q}@peer"] for q in "abcd"]
    assert peers.routed == [list("abcd")] and peers.calls == [] and server.in_flight == 0

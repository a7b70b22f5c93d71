"""HandleRetriever's coalescing, with the Serve call replaced by a recording fake: concurrent searches
of one caller go out as one call, each gets its own queries' results at its own k, failures reach
every search of the failed call, and a call never exceeds max_queries."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from s3ray.retrieval.client import RetrievalError
from s3ray.retrieval.handle import HandleRetriever
from s3ray.types import Doc


class RecordingRetriever(HandleRetriever):
    """Answers query q with docs "q#0".."q#(k-1)" after a short delay, and records every call (and, in
    ``methods``, the deployment method it called)."""

    def __init__(self, max_queries: int = 1024, fail: bool = False, replicas: int = 1, split_min_queries: int = 0):
        super().__init__("retriever", max_queries=max_queries, replicas=replicas,
                         split_min_queries=split_min_queries)
        self.calls: list[tuple[list[str], int]] = []
        self.methods: list[str] = []
        self.fail = fail

    async def _call(self, method: str, queries: list[str], k: int) -> list[list[Doc]]:
        self.calls.append((list(queries), k))
        self.methods.append(method)
        await asyncio.sleep(0.01)
        if self.fail:
            raise RetrievalError("the replica died")
        return [[Doc(f"{q}#{i}", q, "text", float(-i)) for i in range(k)] for q in queries]


def test_concurrent_searches_make_one_call_and_get_their_own_results():
    retriever = RecordingRetriever()

    async def go():
        return await asyncio.gather(retriever.asearch(["a"], 3), retriever.asearch(["b", "c"], 5),
                                    retriever.asearch(["d"], 1))

    a, bc, d = asyncio.run(go())
    assert retriever.calls == [(["a", "b", "c", "d"], 5)]  # one call, at the largest k
    assert [x.id for x in a[0]] == ["a#0", "a#1", "a#2"]
    assert [[x.id for x in docs] for docs in bc] == [[f"b#{i}" for i in range(5)], [f"c#{i}" for i in range(5)]]
    assert [x.id for x in d[0]] == ["d#0"]


def test_searches_made_during_a_call_go_out_together_in_the_next():
    retriever = RecordingRetriever()

    async def go():
        first = asyncio.ensure_future(retriever.asearch(["a"], 2))
        await asyncio.sleep(0.002)  # the first call is in flight
        later = await asyncio.gather(*(retriever.asearch([q], 2) for q in "xyz"))
        return await first, later

    first, later = asyncio.run(go())
    assert retriever.calls == [(["a"], 2), (["x", "y", "z"], 2)]
    assert [docs[0][0].id for docs in later] == ["x#0", "y#0", "z#0"] and first[0][1].id == "a#1"


def test_a_failed_call_fails_each_of_its_searches_and_the_next_call_still_runs():
    retriever = RecordingRetriever(fail=True)

    async def go():
        return await asyncio.gather(retriever.asearch(["a"], 3), retriever.asearch(["b"], 3),
                                    return_exceptions=True)

    results = asyncio.run(go())
    assert all(isinstance(r, RetrievalError) for r in results)
    retriever.fail = False
    assert retriever.search(["c"], 1)[0][0].id == "c#0"


def test_a_call_holds_at_most_max_queries_unless_one_search_alone_is_larger():
    retriever = RecordingRetriever(max_queries=3)

    async def go():
        return await asyncio.gather(retriever.asearch(["a", "b"], 1), retriever.asearch(["c", "d"], 1),
                                    retriever.asearch(["e", "f", "g", "h"], 1))

    results = asyncio.run(go())
    assert [q for q, _ in retriever.calls] == [["a", "b"], ["c", "d"], ["e", "f", "g", "h"]]
    assert [[docs[0].id for docs in r] for r in results] == [["a#0", "b#0"], ["c#0", "d#0"],
                                                             ["e#0", "f#0", "g#0", "h#0"]]


def test_pickles_without_its_handle_and_queues():
    retriever = HandleRetriever("retriever", max_queries=7, replicas=2, split_min_queries=8)
    copy = pickle.loads(pickle.dumps(retriever))
    assert (copy.app_name, copy.max_queries, copy.url, copy._app.handle) == ("retriever", 7, "serve:retriever", None)
    assert (copy.replicas, copy.split_min_queries) == (2, 8)


def test_a_large_call_goes_out_as_one_chunk_per_replica_to_search_here():
    retriever = RecordingRetriever(replicas=2, split_min_queries=4)

    async def go():  # 3 + 2 coalesced queries: one call of 5, cut 3 / 2
        return await asyncio.gather(retriever.asearch(["a", "b", "c"], 2), retriever.asearch(["d", "e"], 1))

    abc, de = asyncio.run(go())
    assert retriever.calls == [(["a", "b", "c"], 2), (["d", "e"], 2)]
    assert retriever.methods == ["search_here", "search_here"]
    assert [[x.id for x in docs] for docs in abc] == [["a#0", "a#1"], ["b#0", "b#1"], ["c#0", "c#1"]]
    assert [[x.id for x in docs] for docs in de] == [["d#0"], ["e#0"]]


def test_a_small_call_or_one_replica_is_one_call_to_search():
    for retriever in (RecordingRetriever(replicas=2, split_min_queries=4), RecordingRetriever(replicas=1)):
        retriever.search(["a", "b", "c"], 1)
        assert retriever.calls == [(["a", "b", "c"], 1)] and retriever.methods == ["search"]


def test_a_failed_chunk_fails_the_search_with_a_retrieval_error():
    retriever = RecordingRetriever(replicas=2, split_min_queries=2, fail=True)
    with pytest.raises(RetrievalError):
        retriever.search(["a", "b"], 1)


def test_no_queries_no_call():
    retriever = RecordingRetriever()
    assert retriever.search([], 3) == [] and retriever.calls == []


@pytest.mark.parametrize("k", [1, 4])
def test_results_keep_query_order(k):
    retriever = RecordingRetriever()
    out = retriever.search(["q1", "q2", "q3"], k)
    assert [docs[0].title for docs in out] == ["q1", "q2", "q3"] and all(len(docs) == k for docs in out)

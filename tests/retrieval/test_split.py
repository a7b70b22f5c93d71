"""Cutting a many-query request into one chunk per replica and putting the results back: contiguous
chunks of near-equal size, every query once, results in query order, no split below the threshold or on
one replica, and a failed chunk fails the search."""

from __future__ import annotations

import asyncio

import pytest

from s3ray.retrieval.split import chunks, search_chunks


@pytest.mark.parametrize("n, replicas, sizes", [
    (32, 2, [16, 16]),
    (9, 2, [5, 4]),  # uneven: the first chunk is the longer
    (10, 4, [3, 3, 2, 2]),
    (3, 8, [1, 1, 1]),  # fewer queries than replicas: one chunk per query
])
def test_chunks_are_contiguous_near_equal_and_keep_every_query_in_order(n, replicas, sizes):
    queries = [f"q{i}" for i in range(n)]
    parts = chunks(queries, replicas, min_queries=2)
    assert [len(p) for p in parts] == sizes
    assert [q for p in parts for q in p] == queries


@pytest.mark.parametrize("n, replicas, min_queries", [
    (32, 1, 2),  # one replica: never split
    (7, 2, 8),  # below the threshold
    (1, 2, 0),  # a lone query cannot be cut
])
def test_no_split_is_one_chunk_of_everything(n, replicas, min_queries):
    queries = [f"q{i}" for i in range(n)]
    assert chunks(queries, replicas, min_queries) == [queries]


def test_the_threshold_itself_splits():
    assert len(chunks(list(range(8)), 2, min_queries=8)) == 2


def test_chunks_run_at_once_and_results_come_back_in_query_order():
    queries = [f"q{i}" for i in range(9)]

    async def go():
        last_started = asyncio.Event()

        async def search(i, chunk):  # the first chunk finishes only once the last one has started
            if i == 2:
                last_started.set()
            else:
                await asyncio.wait_for(last_started.wait(), timeout=5)
            return [f"{q}@{i}" for q in chunk]

        return await search_chunks(chunks(queries, 3, 2), search)

    assert asyncio.run(go()) == [f"q{j}@{j // 3}" for j in range(9)]


def test_a_failed_chunk_fails_the_search():
    async def search(i, chunk):
        if i == 1:
            raise RuntimeError("replica died")
        return list(chunk)

    with pytest.raises(RuntimeError, match="replica died"):
        asyncio.run(search_chunks(chunks(list(range(8)), 2, 2), search))


def test_a_chunk_that_never_answers_is_searched_here_after_the_timeout(caplog):
    """A lost chunk (another replica's answer that never comes) slows its request, never hangs it."""
    async def search(i, chunk):
        if i == 1:
            await asyncio.Event().wait()  # never answers
        return [f"{q}@{i}" for q in chunk]

    async def here(chunk):
        return [f"{q}@here" for q in chunk]

    async def go():
        return await search_chunks(chunks(list(range(6)), 3, 2), search, timeout_s=0.2, fallback=here)

    with caplog.at_level("WARNING"):
        assert asyncio.run(asyncio.wait_for(go(), 5)) == ["0@0", "1@0", "2@here", "3@here", "4@2", "5@2"]
    assert "had no answer after" in caplog.text
    with pytest.raises(ValueError, match="fallback"):
        asyncio.run(search_chunks([[1], [2]], search, timeout_s=1.0))

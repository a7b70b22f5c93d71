"""The prefix cache's bookkeeping: the longest shared start, its cap, replacement and eviction."""

from __future__ import annotations

import pytest

from s3ray.rollout.engine.prefix_cache import PrefixCache, common_prefix_length


def test_common_prefix_length_counts_the_shared_leading_tokens():
    import numpy as np

    assert common_prefix_length(np.array([1, 2, 3]), np.array([1, 2, 4, 5])) == 2
    assert common_prefix_length(np.array([1, 2]), np.array([1, 2, 3])) == 2
    assert common_prefix_length(np.array([7]), np.array([1])) == 0


def test_a_prompt_gets_the_entry_sharing_the_most_leading_tokens_up_to_the_limit():
    cache = PrefixCache(100)
    cache.add([1, 2, 3, 4], "a")
    cache.add([1, 2, 9], "b")
    assert cache.match([1, 2, 3, 4, 5, 6], limit=5) == ("a", 4)
    assert cache.match([1, 2, 9, 9], limit=3) == ("b", 3)
    assert cache.match([1, 2, 3, 4], limit=3) == ("a", 3)  # the caller keeps its last token to run
    assert cache.match([5, 6], limit=1) == (None, 0)
    assert cache.match([1, 2, 3], limit=0) == (None, 0)


def test_an_entry_replaces_the_ones_it_extends_and_a_held_start_adds_nothing():
    cache = PrefixCache(100)
    cache.add([1, 2, 3], "turn 0")
    cache.add([1, 2, 3, 4, 5], "turn 1")  # the episode's next turn: one entry, not two
    assert len(cache) == 1 and cache.tokens == 5
    cache.add([1, 2], "shorter")
    assert len(cache) == 1 and cache.match([1, 2, 3, 4, 5, 6], limit=9) == ("turn 1", 5)


def test_the_least_recently_used_entries_leave_past_the_token_budget():
    cache = PrefixCache(8)
    cache.add([1, 1, 1], "a")
    cache.add([2, 2, 2], "b")
    assert cache.match([1, 1, 1, 0], limit=3)[0] == "a"  # a is now the most recently used
    cache.add([3, 3, 3], "c")
    assert cache.tokens <= 8
    assert cache.match([2, 2, 2, 0], limit=3) == (None, 0)
    assert cache.match([1, 1, 1, 0], limit=3)[0] == "a" and cache.match([3, 3, 3, 0], limit=3)[0] == "c"
    cache.add(list(range(20)), "too long")
    assert cache.match(list(range(21)), limit=20) == (None, 0)
    cache.clear()
    assert len(cache) == 0 and cache.tokens == 0


def test_a_cache_needs_a_positive_budget():
    with pytest.raises(ValueError, match="max_tokens"):
        PrefixCache(0)

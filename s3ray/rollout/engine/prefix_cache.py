"""The KV of token sequences an engine has already run, for later prompts that start with them.

An s3 episode's next turn is its last prompt, the tokens it sampled and an observation
(:mod:`s3ray.rollout.runner`), and GRPO samples a question's first turn ``grpo_group_size`` times from
one prompt. Without a cache every turn runs its whole prompt forward again: on 2 CPU cores that was
most of a SmolLM2 rollout. With it, a prompt runs forward only from where the longest cached sequence
sharing its start ends.

The cache is plain bookkeeping: token ids in, the caller's KV (any object) out, with the length of the
match. It holds at most ``max_tokens`` tokens, evicting the least recently used entries. An entry that
another one extends is dropped, so an episode holds one entry however many turns it has. Entries are
valid for one set of weights only: the engine clears the cache when it loads new ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class PrefixCache:
    def __init__(self, max_tokens: int):
        if max_tokens < 1:
            raise ValueError(f"a prefix cache needs max_tokens >= 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self.tokens = 0
        self._entries: OrderedDict[int, tuple[np.ndarray, Any]] = OrderedDict()
        self._next_key = 0

    def __len__(self) -> int:
        return len(self._entries)

    def match(self, ids: Sequence[int], limit: int) -> tuple[Any, int]:
        """The KV of the cached entry sharing the most leading tokens with ``ids`` and how many it shares,
        at most ``limit`` (the caller keeps at least its last token to run); ``(None, 0)`` without one.
        Only the first n tokens' KV of the entry are valid for ``ids``."""
        query = np.asarray(ids, dtype=np.int64)
        best_key, best = None, 0
        for key, (tokens, _) in self._entries.items():
            n = min(common_prefix_length(query, tokens), limit)
            if n > best:
                best_key, best = key, n
        if best_key is None:
            return None, 0
        self._entries.move_to_end(best_key)
        return self._entries[best_key][1], best

    def add(self, ids: Sequence[int], kv: Any) -> None:
        """Keep ``kv``, the KV of exactly ``ids``. Entries it extends are dropped; an ``ids`` that an entry
        already extends adds nothing. Too long for the budget: not kept."""
        tokens = np.asarray(ids, dtype=np.int64)
        if not 0 < len(tokens) <= self.max_tokens:
            return
        for key, (other, _) in list(self._entries.items()):
            shared = common_prefix_length(tokens, other)
            if shared == len(tokens):  # already held, as this entry or the start of a longer one
                self._entries.move_to_end(key)
                return
            if shared == len(other):  # the new entry extends this one
                self._drop(key)
        self._entries[self._next_key] = (tokens, kv)
        self._next_key += 1
        self.tokens += len(tokens)
        while self.tokens > self.max_tokens:
            self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self.tokens = 0

    def _drop(self, key: int) -> None:
        tokens, _ = self._entries.pop(key)
        self.tokens -= len(tokens)

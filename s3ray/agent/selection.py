"""What the generator receives: the docs the searcher selected (s3 §2.5), as explicit rules.

An episode is a sequence of ``<information>`` blocks (block 0: the turn-0 naive-RAG docs; then one per
search) and of ``<important_info>`` selections, each recorded with the index of the block that
immediately preceded it. The context is built as the seed builds it:

1. Each selection pairs with its block, if no earlier selection already claimed that block (a second
   ``<important_info>`` after the same block is ignored). Ids count from 1 within the block; ids
   outside it are ignored. With ``select_cap`` set, only a selection's first ``select_cap`` valid ids
   count (the paper's prompt asks for "up to 3"; the seed never enforced it: ``enforce_select_cap=False``
   keeps the prompt's words and every id).
2. Blocks without a selection contribute all their docs (normally the turn-0 block, and the last
   block when the searcher stopped without selecting).
3. Order: selected docs first, in selection order, then the docs of unselected blocks; duplicates
   (same doc id, or same title and text) are kept once, at their first place.

Ablations (the paper's Table 4): ``use_initial_docs=False`` leaves block 0 out entirely;
``use_selection=False`` ignores selections, so every block contributes all its docs.
"""

from __future__ import annotations

from collections.abc import Sequence

from s3ray.config import AgentConfig
from s3ray.types import Doc, dedup_by_id_or_content

Selection = tuple[int, Sequence[int]]  # (index of the block just before the tag, doc ids from 1)


def pair_selections(num_blocks: int, selections: Sequence[Selection]) -> dict[int, list[int]]:
    """Block index -> the ids that claimed it (de-duplicated); the first selection after a block wins."""
    paired: dict[int, list[int]] = {}
    for block, ids in selections:
        if not 0 <= block < num_blocks:
            raise ValueError(f"selection names block {block}, but the episode has {num_blocks} blocks")
        if block in paired:
            continue
        paired[block] = list(dict.fromkeys(ids))
    return paired


def select_context(blocks: Sequence[Sequence[Doc]], selections: Sequence[Selection],
                   cfg: AgentConfig) -> list[Doc]:
    """The de-duplicated context of an episode (rules in the module docstring)."""
    first_block = 0 if cfg.use_initial_docs else 1
    paired = pair_selections(len(blocks), selections) if cfg.use_selection else {}
    selected: list[Doc] = []
    for block, ids in paired.items():  # dicts keep insertion order: selection order
        if block >= first_block:
            docs = blocks[block]
            valid = [i for i in ids if 1 <= i <= len(docs)]
            selected.extend(docs[i - 1] for i in (valid[:cfg.select_cap] if cfg.enforce_select_cap else valid))
    unselected = [doc for b in range(first_block, len(blocks)) if b not in paired for doc in blocks[b]]
    return dedup_by_id_or_content(selected + unselected)


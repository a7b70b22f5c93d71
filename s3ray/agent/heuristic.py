"""Rule-based searchers, the teachers of the tiny model's supervised warm start.

A teacher is a policy over the environment's state (:class:`s3ray.agent.environment.S3Environment`): it
reads the question and the episode's trace (its blocks, as the searcher read them, and its queries) and
writes the next turn's text. Neither one just repeats naive RAG: a search for the question's own words that then selects the
top results finds naive RAG's documents a second time, and a model warm-started on it learns to copy
naive RAG.

``bridge`` (HotpotQA and other multi-hop data):

1. the first search is the question itself, at ``search_k`` > k: it selects the new docs in rank order
   (the ones naive RAG's k cut off), at most ``select_cap``;
2. the next searches name the *entities the turn-0 docs name* ("who is Shirley Temple"): a bridge
   question names one entity and asks about a second one that only the first one's passage names.
   Candidates are the capitalised phrases in the texts of the turn-0 docs, best-ranked doc first, and
   within a doc multi-word names before single words, each in reading order; without the phrases the
   question already names and without the docs' own titles (their passages are already there). After
   such a search it selects the new docs whose title shares a word with the query;
3. it stops when its ``max_turns`` searches are spent or nothing is left to search.

``format`` (the learning check): it keeps the best-ranked turn-0 doc (``<important_info>[1]`` before
its query, which claims block 0), searches once, naming an entity of that doc, and keeps the top
result. Which entity: the ``draw``-th of a permutation of the doc's entities seeded by the question, so
that the episodes of one question with draws 0..n-1 name each entity equally often. A model trained on
them learns the tag format and the query form with every entity equally likely, not which entity to
name: that is left for RL to discover.

Deterministic and always well-formed, so warm-start episodes show the format the RL policy must keep.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Sequence
from typing import Literal

from s3ray.agent.observation import one_line
from s3ray.agent.trace import Trace
from s3ray.config import AgentConfig
from s3ray.types import Doc

Teacher = Literal["bridge", "format"]

STOPWORDS = frozenset(
    "a an the of in on at to for by with from and or but is are was were be been being what which who "
    "whom whose when where why how that this these those did do does has have had it its as than then "
    "there their they he she his her him not no yes same both also one two".split())
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)$")
# A capitalised word, optionally followed by more capitalised words (joined by "of", "the", "de", ...).
_ENTITY = re.compile(r"\b[A-Z][\w'\-.]*[\w'](?:\s+(?:(?:of|the|de|and|von|van|la|du)\s+)?[A-Z][\w'\-]*\w)*")


def keywords(text: str) -> list[str]:
    """Lower-cased content words in order of appearance, each once."""
    return list(dict.fromkeys(w for w in _WORD.findall(text.lower()) if w not in STOPWORDS))


def candidate_entities(docs: Sequence[Doc], question: str) -> list[str]:
    """Capitalised phrases of the docs' texts, in rank and reading order, each once, without the ones
    whose content words the question already holds and without the docs' titles."""
    asked = set(keywords(question))
    titles = {doc.title.strip().lower() for doc in docs}
    out: list[str] = []
    for text in (doc.text for doc in docs):
        found: list[str] = []
        for match in _ENTITY.finditer(text):
            phrase = match.group().rstrip(".")
            if " " not in phrase and _SENTENCE_START.search(text[:match.start()]):
                continue  # "Born", "After": a lone capitalised word opening a sentence is rarely a name
            words = keywords(phrase)
            if not words or all(w in asked for w in words) or phrase.lower() in titles:
                continue
            found.append(phrase)
        # Multi-word names first: "Shirley Temple" is a better query than "American".
        out += sorted(found, key=lambda phrase: " " not in phrase)
    return list(dict.fromkeys(out))


def complete_turn(ids: list[int] | None = None) -> str:
    return f"{_selection(ids)}<search_complete>True</search_complete>"


def entity_query(entity: str) -> str:
    """The query naming an entity. The name follows a word, not the JSON quote, so its tokens are the
    ones it has inside a passage (" Temple", not "Temple"): a model can copy it from the docs."""
    return f"who is {entity}"


def query_turn(query: str, ids: list[int] | None = None) -> str:
    """A search turn; after a search, the selection from the newest block and "not complete" first."""
    prefix = f"{_selection(ids)}<search_complete>False</search_complete>\n" if ids is not None else ""
    return f"{prefix}<query>{json.dumps({'query': query})}</query>"


def _selection(ids: list[int] | None) -> str:
    """The ``<important_info>`` tag; an empty list still claims its block, which then adds nothing
    (a block without a tag would give the generator every one of its docs)."""
    return "" if ids is None else f"<important_info>{json.dumps(ids)}</important_info>\n"


def select_new(block: Sequence[Doc], seen_titles: set[str], query: str | None,
               cap: int | None) -> list[int]:
    """1-based ids of the block's docs not seen before, in rank order; with a ``query``, only those
    whose title shares a word with it (the passage of the entity it names)."""
    wanted = set(keywords(query)) if query is not None else None
    chosen = [i for i, doc in enumerate(block, start=1)
              if doc.title.lower() not in seen_titles and (wanted is None or wanted & set(keywords(doc.title)))]
    return chosen[:cap]


def _rng(question: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big"))


def heuristic_turn(question: str, trace: Trace, cfg: AgentConfig, teacher: Teacher = "bridge",
                   draw: int = 0) -> str:
    """The next turn of an episode of ``question`` whose turns so far are ``trace``; ``draw`` picks the
    ``format`` teacher's entity (module docstring)."""
    if teacher not in ("bridge", "format"):
        raise ValueError(f"unknown warm-start teacher {teacher!r}; known: bridge, format")
    question = question.strip()
    blocks = [[one_line(doc) for doc in block] for block in trace.blocks]  # the docs as the searcher read them
    issued = trace.queries
    initial = blocks[0]
    if teacher == "format":  # one search, naming an entity of the best-ranked doc
        entities = candidate_entities(initial[:1], question)
        _rng(question).shuffle(entities)
        plan = [entity_query(entities[draw % len(entities)])] if entities and not issued else []
    else:  # the question itself (for the docs naive RAG's k cut off), then the entities it names
        plan = [question] + [entity_query(e) for e in candidate_entities(initial, question)]
    # format: keep the best-ranked turn-0 doc (a selection before the first query claims block 0)
    ids = [1] if teacher == "format" and initial and not issued else None
    if len(blocks) > 1 and issued:  # after a search: select from its results
        seen = {doc.title.lower() for block in blocks[:-1] for doc in block}
        if teacher == "format":
            ids = [1]
        else:
            ids = select_new(blocks[-1], seen, None if issued[-1] == question else issued[-1], cfg.select_cap)
    searches_left = cfg.max_turns + (1 if cfg.seed_extra_turn else 0) - (len(blocks) - 1)
    remaining = [q for q in plan if q not in issued]
    if searches_left > 0 and remaining:
        return query_turn(remaining[0], ids)
    return complete_turn(ids)

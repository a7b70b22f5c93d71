"""The CPU default generator: an extractive reader, not a language model.

No LLM is available offline on the CPU machines, so the default "generator" answers by extraction:

1. split each given document into sentences; a sentence longer than ``max_span_words`` words is cut
   into overlapping windows of that many words (stride half a window);
2. embed the question and every candidate (prefixed with its document's title, since sentences often
   refer to their subject by pronoun) with the bundled MiniLM sentence encoder;
3. answer with ``answer_spans`` candidates, each written ``Title: sentence`` and joined by `` | ``:
   the ``answer_spans - 1`` of highest cosine similarity (the first hop), then the best candidate of a
   *linked* document, one whose title the first-hop candidates name and that holds none of them (the
   second hop); without a linked document, the next best candidate. Ties go to the earlier document
   and sentence.

Why several title-prefixed sentences rather than the single best one: the answer to a multi-hop question
is often the title of the second passage (the bridge entity) or a phrase next to the best-matching
sentence. A one-sentence reader is right so rarely, whatever the context, that the context hardly
changes its accuracy.

Why the linked second hop (``link_titles``): a bridge question restates its first hop ("Where was the
music festival Billy McFarland was charged with wire fraud for supposed to take place?"), so the
sentences that match it best are the first hop's ("McFarland ... charged with wire fraud ... related to
the organization of the Fyre Festival"), while the answer is in the passage of the entity that sentence
names ("Fyre Festival: ... scheduled to take place on the Bahamian island of Great Exuma"), which
matches the question less than any of them. A reader ranking by similarity alone then answers from
whatever passages match the question's words best, and a passage a searcher adds rarely changes its
answer: on the demo's training questions that naive RAG fails, adding both gold passages to naive RAG's
gave the similarity-only reader 2.6 % GenAcc although the answer was in that context 99 % of the time.
Following the title link is how a reader crosses the bridge (HotpotQA's bridge entity is the second
passage's title); it reads naive RAG's context by the same rule. The reader remains a frozen,
deterministic function of (question, docs): scores are rounded before the arg-max, so batching never
flips a near-tie, and with no documents its answer is empty. It can neither reason nor say yes/no, so it
cannot act as the GenAcc judge. Its answers are longer than an LLM's, which the span check of GenAcc
rewards; compare numbers across generators with that in mind. Its settings (``generator.reader_*``) are
part of every run's recorded config and of the RAG cache's identity.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from s3ray.config import BUNDLED_ENCODER, GeneratorConfig, encoder_path
from s3ray.types import Doc

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
_QUALIFIER = re.compile(r"\s*\([^()]*\)\s*$")  # "Billy McFarland (entrepreneur)" -> "Billy McFarland"


def load_sentence_encoder(model: str, device: str = "cpu"):
    """A sentence-transformers model: the bundled MiniLM by name, or any local folder."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(encoder_path(model), device=device)


def split_candidates(text: str, max_words: int) -> list[str]:
    """Sentences of ``text``; long ones as overlapping windows of ``max_words`` words."""
    spans = []
    for sentence in _SENTENCE_END.split(" ".join(text.split())):
        words = sentence.split()
        if not words:
            continue
        if len(words) <= max_words:
            spans.append(" ".join(words))
            continue
        stride = max(1, max_words // 2)
        starts = list(range(0, len(words) - max_words + 1, stride))
        if starts[-1] + max_words < len(words):
            starts.append(len(words) - max_words)
        spans += [" ".join(words[s:s + max_words]) for s in starts]
    return spans


def title_mentions(titles: Sequence[str], text: str) -> list[int]:
    """Indices of the titles (without a parenthesised qualifier, at least 3 characters) that ``text``
    names as whole words, case-insensitively."""
    lowered = text.lower()
    found = []
    for i, title in enumerate(titles):
        name = _QUALIFIER.sub("", title).strip().lower()
        if len(name) >= 3 and re.search(rf"(?<!\w){re.escape(name)}(?!\w)", lowered):
            found.append(i)
    return found


def pick_spans(scores: np.ndarray, span_docs: Sequence[int], span_texts: Sequence[str],
               titles: Sequence[str], answer_spans: int, link_titles: bool) -> list[int]:
    """Indices of the answer's candidates, in answer order (the module docstring's step 3)."""
    order = [int(i) for i in np.argsort(-scores, kind="stable")]  # stable: ties keep doc order
    if not link_titles or answer_spans < 2:
        return order[:answer_spans]
    first_hop = order[:answer_spans - 1]
    first_docs = {span_docs[i] for i in first_hop}
    linked = set(title_mentions(titles, " ".join(span_texts[i] for i in first_hop))) - first_docs
    second_hop = [i for i in order if span_docs[i] in linked][:1]
    picked = first_hop + second_hop
    return picked + [i for i in order if i not in picked][:answer_spans - len(picked)]


class ExtractiveReader:
    def __init__(self, model: str = BUNDLED_ENCODER, max_span_words: int = 24, answer_spans: int = 3,
                 encoder=None, cache_entries: int = 0, link_titles: bool = True):
        if max_span_words < 1 or answer_spans < 1:
            raise ValueError("max_span_words and answer_spans must be >= 1")
        if cache_entries < 0:
            raise ValueError(f"cache_entries must be >= 0, got {cache_entries}")
        self.max_span_words = max_span_words
        self.answer_spans = answer_spans
        self.link_titles = link_titles
        self.encoder = encoder if encoder is not None else load_sentence_encoder(model)
        # Text -> unit vector, least recently used first. The same passages come back again and again
        # (a GRPO group's samples share their turn-0 docs, IRCoT re-reads every doc it gathered at each
        # step, the evaluation re-reads the contexts inference just read), and encoding them is
        # nearly all of the reader's time.
        self.cache_entries = cache_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()  # the service answers batches in worker threads

    @classmethod
    def from_config(cls, gen: GeneratorConfig, cache_entries: int | None = None) -> ExtractiveReader:
        """The frozen generator of a run's ``generator`` config section (``generator.reader_*``);
        ``cache_entries`` overrides the cache size only (it never changes an answer)."""
        return cls(gen.model, gen.reader_max_span_words, gen.reader_answer_spans,
                   cache_entries=gen.reader_cache_entries if cache_entries is None else cache_entries,
                   link_titles=gen.reader_link_titles)

    def answer(self, question: str, docs: Sequence[Doc]) -> str:
        return self.answer_many([(question, docs)])[0]

    def answer_many(self, items: Sequence[tuple[str, Sequence[Doc]]]) -> list[str]:
        """One answer per (question, docs); all texts of the batch go through one encoder call."""
        texts: list[str] = []
        parsed = []  # per item: (titles, doc index of each candidate, candidate texts)
        for question, docs in items:
            texts.append(question)
            span_docs, span_texts = [], []
            for j, doc in enumerate(docs):
                for span in split_candidates(doc.text, self.max_span_words):
                    span_docs.append(j)
                    span_texts.append(span)
                    texts.append(f"{doc.title}. {span}" if doc.title else span)
            parsed.append(([doc.title for doc in docs], span_docs, span_texts))
        if not texts:
            return []
        vectors = self._encode(texts)
        answers, row = [], 0
        for titles, span_docs, span_texts in parsed:
            question_vec, span_vecs = vectors[row], vectors[row + 1:row + 1 + len(span_texts)]
            row += 1 + len(span_texts)
            if not span_texts:
                answers.append("")
                continue
            scores = np.round(span_vecs @ question_vec, 4)
            picked = pick_spans(scores, span_docs, span_texts, titles, self.answer_spans, self.link_titles)
            answers.append(" | ".join(f"{titles[span_docs[i]]}: {span_texts[i]}" if titles[span_docs[i]]
                                      else span_texts[i] for i in picked))
        return answers

    def _encode(self, texts: list[str]) -> np.ndarray:
        """Unit vectors of ``texts``; with a cache, only the texts not seen recently go to the encoder."""
        if not self.cache_entries:
            return self._encode_now(texts)
        with self._cache_lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
            if missing:
                self._cache.update(zip(missing, self._encode_now(missing), strict=True))
            vectors = []
            for text in texts:
                self._cache.move_to_end(text)
                vectors.append(self._cache[text])
            while len(self._cache) > self.cache_entries:
                self._cache.popitem(last=False)
            return np.stack(vectors)

    def _encode_now(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                   show_progress_bar=False)

"""The CPU default generator: an extractive reader, not a language model.

No LLM is available offline on the CPU machines, so the default "generator" answers by extraction:

1. split each given document into sentences; a sentence longer than ``max_span_words`` words is cut
   into overlapping windows of that many words (stride half a window);
2. embed the question and every candidate (prefixed with its document's title, since sentences often
   refer to their subject by pronoun) with the bundled MiniLM sentence encoder;
3. answer with the ``answer_spans`` candidates of highest cosine similarity, best first, each written
   ``Title: sentence`` and joined by `` | `` (ties go to the earlier document and sentence).

Why several title-prefixed sentences rather than the single best one: the answer to a multi-hop question
is often the title of the second passage (the bridge entity) or a phrase next to the best-matching
sentence. A one-sentence reader is right so rarely, whatever the context, that the context hardly
changes its accuracy; this one is right in about half the cases where the context holds the answer, so
better search shows in GenAcc (on the bundled dev set, span GenAcc is about 15 points higher with the
two gold passages than with naive RAG's top 3). It is still a frozen, deterministic function of
(question, docs): scores are rounded before the arg-max, so batching never flips a near-tie, and with
no documents its answer is empty. It can neither reason nor say yes/no, so it cannot act as the GenAcc
judge. Its answers are longer than an LLM's, which the span check of GenAcc rewards; compare numbers
across generators with that in mind. Its settings (``generator.reader_*``) are part of every run's
recorded config.
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


class ExtractiveReader:
    def __init__(self, model: str = BUNDLED_ENCODER, max_span_words: int = 24, answer_spans: int = 3,
                 encoder=None, cache_entries: int = 0):
        if max_span_words < 1 or answer_spans < 1:
            raise ValueError("max_span_words and answer_spans must be >= 1")
        if cache_entries < 0:
            raise ValueError(f"cache_entries must be >= 0, got {cache_entries}")
        self.max_span_words = max_span_words
        self.answer_spans = answer_spans
        self.encoder = encoder if encoder is not None else load_sentence_encoder(model)
        # Text -> unit vector, least recently used first. The same passages come back again and again
        # (a GRPO group's samples share their turn-0 docs, IRCoT re-reads every doc it gathered at each
        # step, the evaluation re-reads the contexts inference just read), and encoding them is
        # nearly all of the reader's time.
        self.cache_entries = cache_entries
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()  # the service answers batches in worker threads

    @classmethod
    def from_config(cls, gen: GeneratorConfig) -> ExtractiveReader:
        """The frozen generator of a run's ``generator`` config section (``generator.reader_*``)."""
        return cls(gen.model, gen.reader_max_span_words, gen.reader_answer_spans,
                   cache_entries=gen.reader_cache_entries)

    def answer(self, question: str, docs: Sequence[Doc]) -> str:
        return self.answer_many([(question, docs)])[0]

    def answer_many(self, items: Sequence[tuple[str, Sequence[Doc]]]) -> list[str]:
        """One answer per (question, docs); all texts of the batch go through one encoder call."""
        texts: list[str] = []
        spans: list[list[str]] = []
        for question, docs in items:
            texts.append(question)
            item_spans = []
            for doc in docs:
                for span in split_candidates(doc.text, self.max_span_words):
                    item_spans.append(f"{doc.title}: {span}" if doc.title else span)
                    texts.append(f"{doc.title}. {span}" if doc.title else span)
            spans.append(item_spans)
        if not texts:
            return []
        vectors = self._encode(texts)
        answers, row = [], 0
        for item_spans in spans:
            question_vec, span_vecs = vectors[row], vectors[row + 1:row + 1 + len(item_spans)]
            row += 1 + len(item_spans)
            if not item_spans:
                answers.append("")
                continue
            scores = np.round(span_vecs @ question_vec, 4)
            best = np.argsort(-scores, kind="stable")[:self.answer_spans]  # stable: ties keep doc order
            answers.append(" | ".join(item_spans[i] for i in best))
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

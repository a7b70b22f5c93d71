"""The extractive reader: candidates, the right span for an easy case, determinism, answer size."""

import numpy as np
import pytest

from s3ray.generation.reader import ExtractiveReader, pick_spans, split_candidates, title_mentions
from s3ray.types import Doc


@pytest.fixture(scope="module")
def reader():
    return ExtractiveReader(max_span_words=12, answer_spans=1)


def test_split_candidates_sentences_and_windows():
    assert split_candidates("One two. Three four! Five?", 12) == ["One two.", "Three four!", "Five?"]
    words = " ".join(f"w{i}" for i in range(10))
    windows = split_candidates(words, 4)
    assert windows == ["w0 w1 w2 w3", "w2 w3 w4 w5", "w4 w5 w6 w7", "w6 w7 w8 w9"]
    assert all(len(w.split()) <= 4 for w in split_candidates(words + " w10", 4))
    assert split_candidates("w0 w1 w2 w3 w4", 4)[-1] == "w1 w2 w3 w4"  # the tail is covered


DOCS = [
    Doc("1", "Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower. It was designed by the "
        "engineering company of Gustave Eiffel. The tower is 330 metres tall."),
    Doc("2", "Mount Everest", "Mount Everest is Earth's highest mountain above sea level. It lies in the "
        "Mahalangur Himal sub-range of the Himalayas."),
    Doc("3", "Amazon River", "The Amazon River in South America is the largest river by discharge volume."),
]


def test_picks_the_sentence_with_the_answer(reader):
    assert "330 metres" in reader.answer("How tall is the Eiffel Tower?", DOCS)
    assert "Himalayas" in reader.answer("In which mountain range does Mount Everest lie?", DOCS)
    assert "South America" in reader.answer("On which continent is the Amazon River?", DOCS)


def test_deterministic_and_batch_independent(reader):
    items = [("How tall is the Eiffel Tower?", DOCS), ("Who designed the Eiffel Tower?", DOCS[::-1]),
             ("Where is the Amazon?", DOCS[2:])]
    batched = reader.answer_many(items)
    assert batched == reader.answer_many(items)
    assert batched == [reader.answer(q, d) for q, d in items]
    assert all(len(a.partition(": ")[2].split()) <= 12 for a in batched)


def test_answers_only_from_the_docs(reader):
    assert reader.answer("How tall is the Eiffel Tower?", []) == ""
    answer = reader.answer("Who designed it?", DOCS)
    title, _, span = answer.partition(": ")
    assert any(title == d.title and span in " ".join(d.text.split()) for d in DOCS)


def test_answers_with_the_best_spans_first_each_with_its_title(reader):
    three = ExtractiveReader(max_span_words=12, answer_spans=3, encoder=reader.encoder)
    question = "Who designed the Eiffel Tower?"
    answer = three.answer(question, DOCS)
    spans = answer.split(" | ")
    assert len(spans) == 3 and spans[0] == reader.answer(question, DOCS)
    assert all(": " in s for s in spans)
    assert len(set(spans)) == 3
    # Fewer candidates than answer_spans: every candidate, once.
    assert three.answer(question, [Doc("5", "Paris", "Paris is in France.")]) == "Paris: Paris is in France."


def test_accuracy_depends_on_the_context(reader):
    """The bridge passage turns a wrong answer into a right one: the context, not the reader, decides."""
    three = ExtractiveReader(max_span_words=24, answer_spans=3, encoder=reader.encoder)
    question = "Where was the engineer who designed the Eiffel Tower born?"
    bridge = Doc("4", "Gustave Eiffel", "Alexandre Gustave Eiffel was a French civil engineer. He was born "
                 "in Dijon, in the Cote-d'Or.")
    assert "Dijon" not in three.answer(question, DOCS[1:])
    assert "Dijon" in three.answer(question, DOCS[1:] + [bridge])


def test_title_mentions_whole_names_without_the_qualifier():
    titles = ["Billy McFarland (entrepreneur)", "Rome", "Fyre Festival", "UK"]
    assert title_mentions(titles, "Billy McFarland founded the Fyre Festival.") == [0, 2]
    assert title_mentions(titles, "Romeo met the fyre festival crowd") == [2]  # whole words, any case
    assert title_mentions(titles, "He moved to the UK.") == []  # names under 3 characters never link


def test_the_last_span_comes_from_the_passage_the_first_hop_names():
    titles = ["Billy McFarland", "Wire fraud", "Fyre Festival"]
    span_docs = [0, 1, 1, 2, 2]
    texts = ["McFarland organised the Fyre Festival.", "Wire fraud is a crime.", "McFarland was charged.",
             "It was held on Great Exuma.", "It was a luxury festival."]
    scores = np.array([0.9, 0.8, 0.7, 0.3, 0.4])
    assert pick_spans(scores, span_docs, texts, titles, 3, link_titles=True) == [0, 1, 4]
    assert pick_spans(scores, span_docs, texts, titles, 3, link_titles=False) == [0, 1, 2]
    # No linked passage (or a link to a first-hop passage only): the next best candidate.
    assert pick_spans(scores, span_docs, ["a", "b", "c", "d", "e"], titles, 3, link_titles=True) == [0, 1, 2]
    assert pick_spans(scores, [0, 0, 1, 1, 1], texts, titles[:2], 3, link_titles=True) == [0, 1, 2]
    assert pick_spans(scores, span_docs, texts, titles, 1, link_titles=True) == [0]


def test_linking_crosses_the_bridge_that_similarity_misses(reader):
    """A bridge question restates its first hop, so similarity alone answers from the passages that
    match its words; the linked passage holds the answer."""
    question = "Where was the music festival Billy McFarland was charged with wire fraud for supposed to take place?"
    docs = [Doc("1", "Billy McFarland (entrepreneur)", "Billy McFarland is an American entrepreneur. He was "
                "charged with wire fraud in Manhattan federal court related to the organization of the Fyre "
                "Festival."),
            Doc("2", "Wire fraud", "Wire fraud charges were brought against the entrepreneur Billy McFarland. "
                "Wire fraud is a federal crime in the United States."),
            Doc("3", "Fyre Festival", "The festival was scheduled to take place on the Bahamian island of Great "
                "Exuma.")]
    linking = ExtractiveReader(max_span_words=24, answer_spans=3, encoder=reader.encoder)
    similarity_only = ExtractiveReader(max_span_words=24, answer_spans=3, encoder=reader.encoder,
                                       link_titles=False)
    assert "Great Exuma" not in similarity_only.answer(question, docs)
    assert "Great Exuma" in linking.answer(question, docs)
    assert "Great Exuma" not in linking.answer(question, docs[:2])  # the context still decides


class CountingEncoder:
    """The real encoder, counting the texts it is asked to encode."""

    def __init__(self, encoder):
        self.encoder, self.texts = encoder, 0

    def encode(self, texts, **kwargs):
        self.texts += len(texts)
        return self.encoder.encode(texts, **kwargs)


def test_cache_encodes_each_text_once_and_changes_no_answer(reader):
    items = [("How tall is the Eiffel Tower?", DOCS), ("Who designed the Eiffel Tower?", DOCS[::-1])]
    counting = CountingEncoder(reader.encoder)
    cached = ExtractiveReader(max_span_words=12, answer_spans=3, encoder=counting, cache_entries=100)
    plain = ExtractiveReader(max_span_words=12, answer_spans=3, encoder=reader.encoder)
    first = cached.answer_many(items)
    distinct = counting.texts
    assert first == plain.answer_many(items)
    assert cached.answer_many(items[::-1]) == first[::-1]  # served from the cache, same answers
    assert counting.texts == distinct
    cached.answer("Where is the Amazon?", DOCS[2:])  # only the new question is encoded
    assert counting.texts == distinct + 1


def test_cache_keeps_at_most_its_size(reader):
    counting = CountingEncoder(reader.encoder)
    small = ExtractiveReader(max_span_words=12, answer_spans=1, encoder=counting, cache_entries=3)
    small.answer("How tall is the Eiffel Tower?", DOCS)
    assert len(small._cache) == 3
    before = counting.texts
    small.answer("How tall is the Eiffel Tower?", DOCS)  # the evicted texts are encoded again
    assert counting.texts > before
    with pytest.raises(ValueError, match="cache_entries"):
        ExtractiveReader(encoder=reader.encoder, cache_entries=-1)

"""Answer metrics: SQuAD normalisation, EM, F1, span match, multiple choice."""

import pytest

from s3ray.scoring.metrics import exact_match, named_key, normalize_answer, span_match, span_tokens, token_f1


@pytest.mark.parametrize("raw, normalized", [
    ("The Beatles", "beatles"),
    ("  A   tale of  two cities. ", "tale of two cities"),
    ("Lincoln’s “Gettysburg” Address", "lincolns gettysburg address"),  # unicode punctuation
    ("Lincoln's", "lincolns"),
    ("AN apple, THE pear", "apple pear"),
    ("theatre and another", "theatre and another"),  # articles only as whole words
    ("Jean-Luc", "jeanluc"),  # SQuAD deletes punctuation without a space
    ("1,000,000", "1000000"),
    ("", ""),
])
def test_normalize_answer(raw, normalized):
    assert normalize_answer(raw) == normalized


def test_exact_match_after_normalisation():
    assert exact_match("the Beatles!", ["Beatles", "Fab Four"]) == 1.0
    assert exact_match("Beatles band", ["Beatles"]) == 0.0


def test_token_f1():
    assert token_f1("the Eiffel Tower", ["Eiffel Tower"]) == 1.0
    # pred {eiffel, tower, paris} vs gold {eiffel, tower}: p = 2/3, r = 1
    assert token_f1("Eiffel Tower, Paris", ["Eiffel Tower"]) == pytest.approx(0.8)
    assert token_f1("London", ["Eiffel Tower"]) == 0.0
    assert token_f1("Paris", ["London", "Paris"]) == 1.0  # best over golds


def test_span_match_is_token_sequence_containment():
    assert span_match("The band first played in Tulsa, Oklahoma.", ["tulsa"])
    assert span_match("It was Barack Obama's win", ["Barack Obama"]) is False  # obamas != obama
    assert span_match("Obama Barack", ["Barack Obama"]) is False  # order matters
    assert span_match("Tulsan people", ["Tulsa"]) is False  # whole tokens only, not substrings
    assert span_match("the anything", ["The"]) is False  # a gold that normalises to nothing never matches
    assert span_match("In 1,000 years", ["1000"])


def test_span_match_tokenises_like_pyserini_has_answers():
    assert span_match("It cost £5 million.", ["5 million"])  # the symbol is a token of its own
    assert span_match("It was 20°C", ["20"])  # "°" is a symbol: SQuAD normalisation keeps it
    assert span_match("Café Nero", ["Cafe\u0301 nero"])  # NFD: composed and decomposed é agree
    assert not span_match("£5 million", ["£50 million"])
    assert span_tokens("£5 Mil\u00e9\tx") == ["£", "5", "mile\u0301", "x"]


def test_golds_must_be_a_list():
    with pytest.raises(ValueError):
        span_match("x", "x")
    with pytest.raises(ValueError):
        exact_match("x", [])


@pytest.mark.parametrize("prediction, key", [
    ("B", "B"), ("(B)", "B"), ("B.", "B"), ("B: Insulin", "B"), ("B) Insulin", "B"), ("(C) Glucagon", "C"),
    ("The answer is D", "D"), ("Answer: (A)", "A"),
    ("a protein kinase", None), ("A cell divides", None), ("Insulin", None), ("Bob", None),
])
def test_named_key(prediction, key):
    assert named_key(prediction) == key


def test_multiple_choice_scoring():
    golds = ["B: Insulin"]
    assert span_match("B", golds) and exact_match("B", golds) == 1.0 and token_f1("(B)", golds) == 1.0
    assert span_match("It is insulin, made by beta cells.", golds)  # option text, no key named
    assert exact_match("insulin", golds) == 1.0
    assert not span_match("A", golds)
    assert not span_match("A: Insulin", golds)  # names the wrong key: wrong whatever the text says
    assert not span_match("glucagon", golds)
    # Lower-case "a" is an article, not option A: the text decides.
    assert span_match("a hormone called insulin", golds)
    assert span_match("a: Insulin", golds)  # "a" is not a key, text matches


def test_free_form_gold_that_looks_like_nothing_special():
    assert span_match("It is Paris", ["paris: city of light", "Paris"])  # lower-case: not a choice gold

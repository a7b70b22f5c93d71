"""Answer metrics: SQuAD-style normalisation, exact match, token F1 and span match.

``span_match`` is the first half of s3's GenAcc: a normalised gold answer occurs as a contiguous token
sequence inside the normalised prediction, tokenised as Pyserini's ``has_answers`` (regex=False, the
DrQA ``SimpleTokenizer``; read in castorini/pyserini ``pyserini/eval/evaluate_dpr_retrieval.py``)
tokenises: NFD-normalised, lower-cased, a run of letters, digits and combining marks is one token and
every other visible character (a symbol such as "£" or "%", which SQuAD normalisation keeps) is a token
of its own. So "£5 million" contains "5 million". One difference: a gold that normalises to nothing
matches nothing here (Pyserini's loop would find the empty sequence in every text).

Normalisation (``normalize_answer``) is SQuAD's: lower-case, delete punctuation, drop the articles
"a", "an", "the", collapse whitespace. One deliberate extension: Unicode punctuation (curly quotes,
en/em dashes, ...) is deleted like ASCII punctuation, so "Lincoln’s" and "Lincoln's" agree.

Multiple choice (MIRAGE: options in the question, gold ``"<key>: <option text>"`` with one upper-case
letter key A-J). For such a gold, a prediction is correct when

1. it *names a key* and that key is the gold key. A prediction names key K when it is only the key
   ("B", "(B)", "B."), starts with the key and a delimiter ("B: text", "B) text", "(B) text",
   "B. text"), or says "answer is B" / "answer: (B)". Keys are matched case-sensitively, so the
   article "a" in "a protein kinase" never reads as option A. Naming another key is wrong, whatever
   else the prediction says.
2. it names no key and matches the gold's option text (or the whole "key: text" gold) by the metric's
   ordinary rule (EM, F1 or span).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCT = set(string.punctuation)
_MC_GOLD = re.compile(r"^\s*([A-J])\s*:\s*(.+?)\s*$", re.DOTALL)


def _is_punct(ch: str) -> bool:
    return ch in _ASCII_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(text: str) -> str:
    """lower -> delete punctuation -> drop articles -> collapse whitespace (SQuAD)."""
    text = "".join(ch for ch in text.lower() if not _is_punct(ch))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def parse_choice(gold: str) -> tuple[str, str] | None:
    """``"B: Insulin"`` -> ("B", "Insulin"); None for a free-form gold."""
    m = _MC_GOLD.match(gold)
    return (m.group(1), m.group(2)) if m else None


def _key_patterns(key: str) -> list[re.Pattern]:
    k = re.escape(key)
    return [re.compile(rf"^\s*\(?{k}\)?[.:)]?\s*$"),  # "B", "(B)", "B."
            re.compile(rf"^\s*\(?{k}[.:)]\s"),  # "B: text", "B) text", "(B) text", "B. text"
            re.compile(rf"(?i:\banswer\b(?:\s+is)?\s*:?)\s*\(?{k}\b")]  # "the answer is B", "Answer: (B)"


def named_key(prediction: str) -> str | None:
    """The option key the prediction names (see the module docstring), or None."""
    for key in "ABCDEFGHIJ":
        if any(p.search(prediction) for p in _key_patterns(key)):
            return key
    return None


def _match(prediction: str, golds: Sequence[str], free_form_score) -> float:
    """Best score over golds, choice golds judged by key first (module docstring)."""
    best = 0.0
    key = None
    if any(parse_choice(g) for g in golds):
        key = named_key(prediction)
    for gold in golds:
        choice = parse_choice(gold)
        if choice is None:
            best = max(best, free_form_score(prediction, gold))
        elif key is not None:
            best = max(best, float(key == choice[0]))
        else:
            best = max(best, free_form_score(prediction, choice[1]), free_form_score(prediction, gold))
    return best


def _em(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def _f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def span_tokens(text: str) -> list[str]:
    """Pyserini's ``has_answers`` tokens of ``text`` (module docstring)."""
    tokens: list[str] = []
    word: list[str] = []
    for ch in unicodedata.normalize("NFD", text):
        kind = unicodedata.category(ch)[0]
        if kind in "LNM":  # letter, number, mark
            word.append(ch)
            continue
        if word:
            tokens.append("".join(word).lower())
            word = []
        if kind not in "ZC":  # separators and control characters split; anything else is one token
            tokens.append(ch.lower())
    if word:
        tokens.append("".join(word).lower())
    return tokens


def _contains(prediction: str, gold: str) -> float:
    pred, ref = span_tokens(normalize_answer(prediction)), span_tokens(normalize_answer(gold))
    if not ref:  # a gold that normalises to nothing ("the", "?") cannot be found as a span
        return 0.0
    n = len(ref)
    return float(any(pred[i:i + n] == ref for i in range(len(pred) - n + 1)))


def _check_golds(golds: Sequence[str]) -> None:
    if isinstance(golds, str) or not golds:
        raise ValueError(f"golds must be a non-empty list of strings, got {golds!r}")


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised gold."""
    _check_golds(golds)
    return _match(prediction, golds, _em)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """Best SQuAD token F1 over the golds."""
    _check_golds(golds)
    return _match(prediction, golds, _f1)


def span_match(prediction: str, golds: Sequence[str]) -> bool:
    """True if a normalised gold occurs as a token sequence in the normalised prediction."""
    _check_golds(golds)
    return _match(prediction, golds, _contains) == 1.0

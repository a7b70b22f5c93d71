"""Boolean BM25 queries (``(A OR B) AND C NOT D``) for DeepRetrieval, as plain functions.

bm25s ranks a bag of words and knows no operators. Two ways to send a Boolean rewrite to it:

- :func:`bag_of_words`: drop the operators, parentheses and quotes and rank the remaining terms. This is
  what the s3 repo's BM25 server actually did: Pyserini's ``LuceneSearcher.search(q, k)`` builds a
  ``BagOfWordsQueryGenerator`` query (Anserini ``SimpleSearcher``), whose English analyzer drops
  ``and``/``or``/``not`` as stopwords and the punctuation as non-tokens.
- :func:`parse` + :func:`matches`: evaluate the expression as a filter. Precedence NOT > AND > OR;
  two operands side by side without an operator are ANDed; a double-quoted phrase is its words in
  order; terms are compared lower-cased on word tokens. The ranking is BM25's over the query's terms;
  the filter keeps, in that order, the candidates whose text satisfies the expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r'\(|\)|"[^"]*"|[^\s()"]+')
_WORD = re.compile(r"\w+")
OPERATORS = ("AND", "OR", "NOT")


@dataclass(frozen=True)
class Term:
    words: tuple[str, ...]  # one word, or a quoted phrase's words in order


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


Node = Term | Not | And | Or


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def bag_of_words(query: str) -> str:
    """The query's words without operators, parentheses or quotes (what Pyserini ranked)."""
    return " ".join(w for w in _WORD.findall(query) if w not in OPERATORS)


class QuerySyntaxError(ValueError):
    pass


def parse(query: str) -> Node:
    """The expression tree of a Boolean query; raises :class:`QuerySyntaxError` on unbalanced parentheses,
    a dangling operator or no term at all. Operators are upper-case words, as Lucene's syntax has them."""
    tokens = _TOKEN.findall(query)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def parse_or() -> Node:
        operands = [parse_and()]
        while peek() == "OR":
            take()
            operands.append(parse_and())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def parse_and() -> Node:
        operands = [parse_not()]
        while peek() not in (None, ")", "OR"):
            if peek() == "AND":
                take()
            operands.append(parse_not())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def parse_not() -> Node:
        if peek() == "NOT":
            take()
            return Not(parse_not())
        return parse_atom()

    def parse_atom() -> Node:
        token = peek()
        if token is None or token in (")", *OPERATORS):
            raise QuerySyntaxError(f"expected a term or '(' at token {pos} of {query!r}")
        take()
        if token == "(":
            node = parse_or()
            if peek() != ")":
                raise QuerySyntaxError(f"unbalanced parentheses in {query!r}")
            take()
            return node
        found = tuple(words(token))
        if not found:
            raise QuerySyntaxError(f"term {token!r} of {query!r} has no word")
        return Term(found)

    tree = parse_or()
    if peek() is not None:
        raise QuerySyntaxError(f"unexpected {peek()!r} in {query!r}")
    return tree


def _contains(doc_words: list[str], phrase: tuple[str, ...]) -> bool:
    if len(phrase) == 1:
        return phrase[0] in doc_words
    n = len(phrase)
    return any(tuple(doc_words[i:i + n]) == phrase for i in range(len(doc_words) - n + 1))


def matches(node: Node, text: str) -> bool:
    """Whether ``text`` satisfies the expression."""
    doc_words = words(text)

    def test(n: Node) -> bool:
        if isinstance(n, Term):
            return _contains(doc_words, n.words)
        if isinstance(n, Not):
            return not test(n.operand)
        if isinstance(n, And):
            return all(test(o) for o in n.operands)
        return any(test(o) for o in n.operands)

    return test(node)


def positive_terms(node: Node) -> list[str]:
    """The words BM25 ranks by: every term not under a NOT, in order, each once."""
    out: list[str] = []

    def walk(n: Node, negated: bool) -> None:
        if isinstance(n, Term):
            if not negated:
                out.extend(w for w in n.words if w not in out)
        elif isinstance(n, Not):
            walk(n.operand, not negated)
        else:
            for o in n.operands:
                walk(o, negated)

    walk(node, False)
    return out

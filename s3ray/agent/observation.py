"""Observations the environment appends to an episode: search results and the invalid-turn nudge.

Truncation is per document (s3 §10.8): each document's text is cut to ``max_doc_tokens`` tokens, so
the block's closing ``</information>`` tag always survives, however long the results are.
"""

from __future__ import annotations

from collections.abc import Sequence

from s3ray.types import Doc

# Shown after a turn with neither a query nor a completed search. As in s3, the nudge ends by opening a
# <query>: the searcher's invalid turn ended with its end-of-message token, and the opened tag makes
# its next tokens a query body (the parser reads "...</query>" without an opening tag as one), the
# continuation the released s3 model was trained on. It names no complete tag itself, so the
# nudge's own text never parses as an action. Before the search-disabled final turn no query is
# opened: FINAL_TURN_NOTE follows instead.
INVALID_TURN_NOTE = "\n\nMy previous output had no valid action.\n"
NUDGE = (INVALID_TURN_NOTE + "The information so far is not enough, so I will write a brand-new search query "
         'as JSON, {"query": "..."}:\n<query>\n')

# Appended to the observation before the final selection turn, where search is disabled: the searcher
# is told so, and what is still useful to write (a selection from the newest block).
FINAL_TURN_NOTE = (
    "No searches are left. If the newest search results hold useful documents, list their ids in "
    "<important_info> and </important_info>, then write <search_complete>True</search_complete>.\n\n"
)


def truncate_tokens(text: str, max_tokens: int | None, tokenizer) -> str:
    """``text`` cut to its first ``max_tokens`` tokens (unchanged when it fits or no limit is set)."""
    if max_tokens is None or tokenizer is None:
        return text
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return text
    return tokenizer.decode(ids[:max_tokens], skip_special_tokens=True).rstrip() + " ..."


def one_line(doc: Doc) -> Doc:
    """The doc with its title and text on one line each (whitespace runs become one space), as the
    searcher reads it: newlines would break the ``Doc i`` layout."""
    return Doc(doc.id, " ".join(doc.title.split()), " ".join(doc.text.split()), doc.score)


def render_information(docs: Sequence[Doc], start_index: int = 1, max_doc_tokens: int | None = None,
                       tokenizer=None) -> str:
    """``<information>`` block with one ``Doc i (Title: T) text`` line per doc, each doc truncated."""
    if max_doc_tokens is not None and tokenizer is None:
        raise ValueError("truncating documents to max_doc_tokens needs the tokenizer")
    lines = []
    for i, doc in enumerate(docs, start=start_index):
        line = one_line(doc)
        lines.append(Doc(line.id, line.title, truncate_tokens(line.text, max_doc_tokens, tokenizer)).render(i))
    body = "\n".join(lines)
    return f"\n\n<information>\n{body}\n</information>\n\n"

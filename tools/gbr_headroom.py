"""How much can any searcher gain beyond naive RAG here? (`make headroom`, after `s3ray index`.)

Gain Beyond RAG is paid only on the training questions naive RAG gets wrong (the paper's filter). This
asks the frozen generator about those questions with the contexts a *perfect* searcher could hand it,
built from the datasets' gold passages (``supporting_passage_ids``, as HotpotQA and the generated
bridge world carry them):

- ``naive``        naive RAG's top ``agent.initial_k`` (what the RAG cache holds);
- ``gold``         the gold passages alone (a searcher that finds both hops and drops naive RAG's docs);
- ``naive+gold``   naive RAG's docs, then the gold passages (a searcher that keeps the turn-0 docs, as
                   s3's context does unless the searcher drops them, and adds the perfect hits).

Per split: GenAcc on every question, and on the questions naive RAG fails (with yes/no questions
dropped, as the training filter drops them): the mean GBR reward each context would earn there. When
even ``naive+gold`` earns little there, no search policy that keeps naive RAG's docs can raise the
reward, whatever RL does: the generator, not the searcher, is the bottleneck.

Beside GenAcc, how often a golden answer occurs in the context's own text (the span check GenAcc uses,
applied to the titles and texts): what the generator *could* answer from, whatever it does with it.
``searched`` adds the context a searcher really gets from one search for the question itself: the top
``agent.search_k`` (naive RAG's docs and the ones its cut-off left out). A large gap between the answer
being in a context and GenAcc on it measures the reader, not the search.

The generator is the configured extractive reader, run in-process with the run's settings
(``generator.backend=reader``); the retriever is the run's own index (``load_searcher``).

    python tools/gbr_headroom.py --config demo_cpu [key=value ...] [--out headroom.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from s3ray.config import S3Config, load_config
from s3ray.data.qa import load_datasets
from s3ray.generation.reader import ExtractiveReader
from s3ray.retrieval.corpus import iter_corpus
from s3ray.retrieval.searchers import load_searcher
from s3ray.reward.cache import is_yes_no
from s3ray.scoring.metrics import span_match
from s3ray.types import Doc, Question, dedup_by_id_or_content

CONTEXTS = ("naive", "gold", "naive+gold")
RECALL_CONTEXTS = ("naive", "searched", "gold", "naive+gold")


def gold_ids(question: Question) -> list[str]:
    ids = question.meta.get("supporting_passage_ids")
    if not ids:
        raise ValueError(f"question {question.id} has no supporting_passage_ids: the headroom needs gold passages")
    return [str(i) for i in ids]


def fetch_docs(cfg: S3Config, wanted: set[str]) -> dict[str, Doc]:
    """The corpus rows with the wanted ids (one pass over the corpus file)."""
    corpus = cfg.corpus
    found = {}
    for row in iter_corpus(corpus.path, corpus.layout, corpus.file_format, corpus.on_bad_row):
        if row["id"] in wanted:
            found[row["id"]] = Doc(row["id"], row["title"], row["text"])
    missing = wanted - found.keys()
    if missing:
        raise ValueError(f"{len(missing)} gold passages are not in {corpus.path}, e.g. {sorted(missing)[:3]}")
    return found


def genacc(reader: ExtractiveReader, questions: list[Question], contexts: list[list[Doc]]) -> np.ndarray:
    answers = reader.answer_many([(q.question, docs) for q, docs in zip(questions, contexts, strict=True)])
    return np.array([span_match(a, q.golden_answers) for a, q in zip(answers, questions, strict=True)], float)


def answer_in_context(questions: list[Question], contexts: list[list[Doc]]) -> np.ndarray:
    """1 where a golden answer occurs as a span in the context's titles and texts."""
    texts = [" ".join(f"{d.title} {d.text}" for d in docs) for docs in contexts]
    return np.array([span_match(t, q.golden_answers) for t, q in zip(texts, questions, strict=True)], float)


def perfect_contexts(naive: list[list[Doc]], gold: list[list[Doc]]) -> dict[str, list[list[Doc]]]:
    """Each context of the module docstring, per question; ``naive+gold`` de-duplicated, as s3's is."""
    both = [dedup_by_id_or_content(n + g) for n, g in zip(naive, gold, strict=True)]
    return {"naive": naive, "gold": gold, "naive+gold": both}


def headroom(cfg: S3Config, questions: list[Question], searcher, reader: ExtractiveReader,
             gold_docs: dict[str, Doc]) -> dict:
    """GenAcc (%) of each context on every question and on the ones naive RAG fails."""
    k = cfg.agent.initial_k
    searched = searcher.search([q.question for q in questions], max(k, cfg.agent.search_k))
    naive = [docs[:k] for docs in searched]
    gold = [[gold_docs[i] for i in gold_ids(q)] for q in questions]
    contexts = perfect_contexts(naive, gold)
    acc = {name: genacc(reader, questions, docs) for name, docs in contexts.items()}
    present = {name: answer_in_context(questions, docs) for name, docs in {**contexts, "searched": searched}.items()}
    failed = (acc["naive"] == 0) & np.array([not is_yes_no(q) for q in questions])

    def percent(values: dict[str, np.ndarray], names, mask=None) -> dict:
        if mask is not None and not mask.any():
            return dict.fromkeys(names)
        return {n: round(100 * (values[n] if mask is None else values[n][mask]).mean(), 1) for n in names}

    return {"questions": len(questions), "naive_failed": int(failed.sum()),
            "genacc": percent(acc, CONTEXTS), "genacc_on_naive_failed": percent(acc, CONTEXTS, failed),
            "answer_in_context": percent(present, RECALL_CONTEXTS),
            "answer_in_context_on_naive_failed": percent(present, RECALL_CONTEXTS, failed)}


def markdown(results: dict[str, dict]) -> str:
    lines = ["| split | questions | naive fails | " + " | ".join(f"{c}: all" for c in CONTEXTS) + " | "
             + " | ".join(f"{c}: on naive's failures" for c in CONTEXTS[1:]) + " |",
             "|---" * (3 + 2 * len(CONTEXTS) - 1) + "|"]
    for split, r in results.items():
        lines.append(f"| {split} | {r['questions']} | {r['naive_failed']} | "
                     + " | ".join(str(r["genacc"][c]) for c in CONTEXTS) + " | "
                     + " | ".join(str(r["genacc_on_naive_failed"][c]) for c in CONTEXTS[1:]) + " |")
    lines += ["", "Answer in the context's text (%), on naive RAG's failures:", "",
              "| split | " + " | ".join(RECALL_CONTEXTS) + " |", "|---" * (1 + len(RECALL_CONTEXTS)) + "|"]
    for split, r in results.items():
        lines.append(f"| {split} | "
                     + " | ".join(str(r["answer_in_context_on_naive_failed"][c]) for c in RECALL_CONTEXTS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="demo_cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON here")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.generator.backend != "reader":
        raise SystemExit(f"generator.backend={cfg.generator.backend}: this tool runs the extractive reader "
                         "in-process; deploy the generator and score contexts with `s3ray evaluate` instead")
    splits = {"train": load_datasets(cfg.data.train), "dev": load_datasets(cfg.data.dev)}
    if cfg.inference.limit is not None:
        splits["dev"] = splits["dev"][:cfg.inference.limit]  # the questions the demo evaluates
    gold_docs = fetch_docs(cfg, {i for qs in splits.values() for q in qs for i in gold_ids(q)})
    searcher = load_searcher(cfg)
    reader = ExtractiveReader.from_config(cfg.generator)
    results = {}
    for split, questions in splits.items():
        print(f"{split}: {len(questions)} questions …", file=sys.stderr, flush=True)
        results[split] = headroom(cfg, questions, searcher, reader, gold_docs)
    print(markdown(results))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

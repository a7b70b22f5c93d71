"""Whom the searcher's first query names, on the learning check's dev questions (after `s3ray infer`).

In the generated bridge world the one search that answers names the company's founder, an entity of the
company's passage. Counting what each gatherer's first query names (``s3ray.data.bridge.query_target``)
says what a trained searcher learned and what it still misses: naming the partner or the city means it
read the right passage and picked the wrong entity; naming someone from elsewhere means it did not read
the right passage at all.

    python tools/bridge_queries.py --config learning_check_smollm2 [key=value ...] [--gatherers s3 s3_teacher]

Prints a markdown table (one row per gatherer, counts per target) and one JSON object per gatherer.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from s3ray.config import load_config
from s3ray.data.bridge import QUERY_TARGETS, query_target
from s3ray.retrieval.corpus import iter_corpus


def first_query(row: dict) -> str | None:
    """The first query the retriever ran in a saved context's episode; None when it ran none."""
    queries = row.get("trace", {}).get("queries")
    if queries is None:
        raise ValueError(f"context of {row.get('question_id')!r} records no queries (saved by an older "
                         "s3ray: run `s3ray infer` again)")
    return queries[0] if queries else None


def count_targets(contexts: Path, questions: dict[str, dict], passages: dict[str, dict]) -> Counter:
    counts: Counter = Counter()
    for line in contexts.read_text().splitlines():
        row = json.loads(line)
        question = questions[row["question_id"]]
        company_id, founder_id = question["supporting_passage_ids"]
        company, founder = passages[company_id], passages[founder_id]
        query = first_query(row)
        counts[query_target(query, company["title"], founder["title"], company["text"])] += 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="learning_check_smollm2")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--gatherers", nargs="+", default=["s3_teacher", "s3"])
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    dev = next((d for d in cfg.data.dev if d.name == "bridge"), None)
    if dev is None:
        print("the config has no bridge dev set (run it with a learning_check preset)", file=sys.stderr)
        return 2
    questions = {q["id"]: q for q in map(json.loads, Path(dev.path).read_text().splitlines())}
    passages = {row["id"]: row for row in iter_corpus(cfg.corpus.path)}
    print("| gatherer | " + " | ".join(QUERY_TARGETS) + " |")
    print("|---" * (len(QUERY_TARGETS) + 1) + "|")
    results = []
    for gatherer in args.gatherers:
        contexts = cfg.inference.dir / gatherer / f"{dev.name}.jsonl"
        if not contexts.is_file():
            print(f"no contexts for {gatherer} at {contexts} (run `s3ray infer` first)", file=sys.stderr)
            return 2
        counts = count_targets(contexts, questions, passages)
        print(f"| {gatherer} | " + " | ".join(str(counts[t]) for t in QUERY_TARGETS) + " |")
        results.append({"gatherer": gatherer, **{t: counts[t] for t in QUERY_TARGETS}})
    for result in results:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Loaders for QA files, each returning :class:`~s3ray.types.Question` items with stable unique ids.

Formats (``DatasetSpec.format``):

- ``flashrag``: JSONL rows ``{"id", "question", "golden_answers": [...]}`` (FlashRAG, our bundled
  HotpotQA). Extra fields go to ``meta``.
- ``s3_parquet``: the s3 / Search-R1 training parquet: ``data_source``, ``prompt`` (chat messages),
  ``reward_model.ground_truth.target`` (golds), ``extra_info.{split,index}``. The question is the
  ``question`` column, else ``reward_model.ground_truth.question``, else the ``<question>`` block (s3) or
  the ``Question:`` line (Search-R1) of the prompt.
- ``mirage``: MIRAGE's ``benchmark.json``, ``{dataset: {qid: {"question", "options": {key: text},
  "answer": key}}}``. The question gets an ``Options:`` block of ``"A: text"`` lines and the gold is
  ``"<key>: <text>"`` (s3's MIRAGE format); ``meta["query"]`` keeps the question without options
  (retrieval queries strip them).

Selection (``DatasetSpec``): ``limit`` keeps the first N questions; ``dedup_questions`` drops repeated
question texts (s3 does so for PopQA, comparing ``strip()``-ed texts with a ``?`` appended); ``sample``
keeps a seeded random sample of at most N, the rows ``pandas.DataFrame.sample(n=N, random_state=seed)``
picks (s3's ``test_s3_sampled.py``: 3000 per source, seed 42), returned in file order. ``subset`` loads
one dataset of a MIRAGE ``benchmark.json``.

Ids: FlashRAG's ids restart per dataset ("train_0") and Search-R1's ``extra_info.index`` per source,
so every id is ``<spec.name>-<raw id>``, unless the raw id already starts with ``<spec.name>-`` (the
bundled ``hotpotqa-<id>``). Raw ids are ``<id>`` (flashrag), ``<data_source>-<split>-<index>``
(s3_parquet) and ``<dataset>-<qid>`` (mirage). ``source`` is the dataset the question came from: the
spec name, the parquet's ``data_source``, or the MIRAGE dataset.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from s3ray.config import DatasetSpec
from s3ray.types import Question

log = logging.getLogger(__name__)

_S3_QUESTION = re.compile(r"<question>\s*(.*?)\s*</question>", re.DOTALL)
_R1_QUESTION = re.compile(r"Question:\s*(.+?)\s*(?:\n|$)")


def question_id(spec: DatasetSpec, raw_id: str) -> str:
    prefix = f"{spec.name}-"
    return raw_id if raw_id.startswith(prefix) else prefix + raw_id


def _golds(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    golds = tuple(str(v) for v in (list(value) if value is not None else []))
    if not golds or not all(g.strip() for g in golds):
        raise ValueError(f"{where}: golden answers missing or empty: {value!r}")
    return golds


def _flashrag(spec: DatasetSpec) -> Iterable[Question]:
    with open(spec.path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{spec.path}:{line_no}"
            try:
                row = json.loads(line)
                raw_id, text = str(row.pop("id")), row.pop("question")
                golds = row.pop("golden_answers")
            except (json.JSONDecodeError, KeyError) as err:
                raise ValueError(f"{where}: not a FlashRAG row with id, question, golden_answers ({err})") from err
            yield Question(question_id(spec, raw_id), text, _golds(golds, where), spec.name, meta=row)


def _prompt_question(prompt: Any) -> str | None:
    contents = [m["content"] for m in prompt if m.get("role") == "user"] if prompt is not None else []
    for content in contents:
        for pattern in (_S3_QUESTION, _R1_QUESTION):
            found = pattern.findall(content)
            if found:
                return found[-1]  # s3's template describes a <question> block before the real one
    return None


def _s3_parquet(spec: DatasetSpec) -> Iterable[Question]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(spec.path).to_pylist()):
        where = f"{spec.path} row {i}"
        truth = (row.get("reward_model") or {}).get("ground_truth") or {}
        extra = row.get("extra_info") or {}
        source = row.get("data_source")
        text = row.get("question") or truth.get("question") or _prompt_question(row.get("prompt"))
        if not source or not text or "index" not in extra:
            raise ValueError(f"{where}: needs data_source, extra_info.index and a question "
                             "(question column, ground_truth.question or the prompt)")
        raw_id = f"{source}-{extra.get('split', 'na')}-{extra['index']}"
        golds = _golds(truth.get("target", row.get("golden_answers")), where)
        meta = {"split": extra.get("split"), "index": extra["index"]}
        yield Question(question_id(spec, raw_id), text.strip(), golds, source, meta=meta)


def _mirage(spec: DatasetSpec) -> Iterable[Question]:
    data = json.loads(Path(spec.path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{spec.path}: MIRAGE benchmark JSON is a mapping dataset -> qid -> item")
    if spec.subset is not None:
        if spec.subset not in data:
            raise ValueError(f"dataset {spec.name!r}: subset {spec.subset!r} is not in {spec.path} "
                             f"(it holds {sorted(data)})")
        data = {spec.subset: data[spec.subset]}
    for dataset, items in data.items():
        for qid, item in items.items():
            where = f"{spec.path}: {dataset}/{qid}"
            try:
                options, key = item["options"], item["answer"]
                gold_text = options[key]
            except (KeyError, TypeError) as err:
                raise ValueError(f"{where}: needs question, options and an answer key among them ({err})") from err
            lines = "\n".join(f"{k}: {v}" for k, v in options.items())
            text = f"{item['question'].strip()}\nOptions:\n{lines}"
            meta = {"query": item["question"].strip(), "options": dict(options), "answer_key": key}
            yield Question(question_id(spec, f"{dataset}-{qid}"), text, (f"{key}: {gold_text}",), dataset,
                           meta=meta)


_LOADERS = {"flashrag": _flashrag, "s3_parquet": _s3_parquet, "mirage": _mirage}


def seeded_sample(n_rows: int, size: int, seed: int) -> list[int]:
    """Row indices, ascending, of the sample ``pandas.DataFrame.sample(n=size, random_state=seed)`` takes
    from ``n_rows`` rows (all rows when there are no more than ``size``): pandas draws
    ``numpy.random.RandomState(seed).choice(n_rows, size, replace=False)``, the permutation's first ``size``."""
    if n_rows <= size:
        return list(range(n_rows))
    import numpy as np

    return sorted(int(i) for i in np.random.RandomState(seed).permutation(n_rows)[:size])


def _question_key(text: str) -> str:
    text = text.strip()
    return text if text.endswith("?") else text + "?"


def load_questions(spec: DatasetSpec) -> list[Question]:
    """The questions of one dataset file, after ``limit``, ``dedup_questions`` and ``sample``."""
    if not Path(spec.path).exists():
        raise FileNotFoundError(f"dataset {spec.name!r}: {spec.path} does not exist")
    questions = []
    for q in _LOADERS[spec.format](spec):
        if spec.limit is not None and len(questions) >= spec.limit:
            break
        questions.append(q)
    if spec.dedup_questions:
        first: dict[str, Question] = {}
        for q in questions:
            first.setdefault(_question_key(q.question), q)
        questions = list(first.values())
    if spec.sample is not None:
        questions = [questions[i] for i in seeded_sample(len(questions), spec.sample, spec.sample_seed)]
    log.info("dataset %s: %d questions from %s", spec.name, len(questions), spec.path)
    return questions


def load_datasets(specs: Sequence[DatasetSpec]) -> list[Question]:
    """All questions of all specs, in order; raises if two questions share an id."""
    questions = [q for spec in specs for q in load_questions(spec)]
    counts = Counter(q.id for q in questions)
    duplicates = [qid for qid, n in counts.items() if n > 1]
    if duplicates:
        raise ValueError(f"{len(duplicates)} duplicate question ids across {[s.name for s in specs]}, "
                         f"e.g. {duplicates[:3]}: give the datasets distinct names")
    return questions

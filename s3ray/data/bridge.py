"""A generated multi-hop world where the right search behaviour is known: the learning check.

Every question is a bridge question, "In which city was the founder of <Company> born?":

- the company's passage (title: the company) names its founder among other entities (its
  headquarters city, a partner company, a product), in a shuffled sentence order;
- the founder's passage (title: the founder) says where the founder was born, and never names the
  company.

Naive RAG retrieves the company's passage (and passages of its partners), never the founder's, so it
cannot answer by construction: the birth city appears only in the founder's passage. A searcher that
reads the company's passage and queries the founder's name finds it. Which name to query is the one
thing the searcher must learn; every candidate name it could copy from the initial docs is equally
well-formed.

Names are made of syllables, unique in the world, and the world is fully determined by the seed.
Files are written in the layouts the rest of s3ray reads: a ``contents`` JSONL corpus and FlashRAG
question files with ``supporting_passage_ids``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

_ONSETS = ("b", "br", "d", "dr", "f", "g", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v",
           "z", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "or", "en", "ar")
_CODAS = ("", "n", "l", "r", "x", "s", "th", "nd", "k")
_FIELDS = ("physics", "music", "law", "medicine", "history", "botany", "chemistry", "poetry")
_JOBS = ("engineer", "painter", "chemist", "teacher", "pilot", "writer", "architect", "sailor")
QUESTION = "In which city was the founder of {company} born?"


@dataclass(frozen=True)
class BridgeWorld:
    corpus: list[dict]  # {"id", "contents"}
    questions: list[dict]  # FlashRAG rows with supporting_passage_ids


def _names(rng: random.Random, count: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        syllables = rng.choice((2, 2, 3))
        name = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables))
        name = (name + rng.choice(_CODAS)).capitalize()
        if name not in taken and 5 <= len(name) <= 10:
            taken.add(name)
            out.append(name)
    return out


def _passage(pid: str, title: str, sentences: list[str]) -> dict:
    return {"id": pid, "contents": f'"{title}"\n' + " ".join(sentences)}


def make_world(num_companies: int = 300, num_cities: int = 40, extra_people: int = 300,
               seed: int = 0) -> BridgeWorld:
    """Companies with founders, the founders' passages, and passages of people who founded nothing."""
    if num_companies < 4 or num_cities < 4:
        raise ValueError("a bridge world needs at least 4 companies and 4 cities")
    rng = random.Random(seed)
    taken: set[str] = set()
    companies = _names(rng, num_companies, taken)
    founders = _names(rng, num_companies, taken)
    others = _names(rng, extra_people, taken)
    products = _names(rng, num_companies, taken)
    cities = _names(rng, num_cities, taken)
    corpus: list[dict] = []
    questions: list[dict] = []
    birth = {person: rng.choice(cities) for person in founders + others}
    for i, (company, founder, product) in enumerate(zip(companies, founders, products, strict=True)):
        hq = rng.choice([c for c in cities if c != birth[founder]])
        partner = companies[(i + 1 + rng.randrange(num_companies - 1)) % num_companies]
        facts = [f"{company} was founded by {founder}.", f"It is headquartered in {hq}.",
                 f"{company} works with {partner}.", f"Its best known product is the {product}."]
        rng.shuffle(facts)
        company_id, founder_id = f"bw-c{i:05d}", f"bw-f{i:05d}"
        corpus.append(_passage(company_id, company, [f"{company} is a company."] + facts))
        corpus.append(_passage(founder_id, founder, [
            f"{founder} is a {rng.choice(_JOBS)}.", f"{founder} was born in {birth[founder]}.",
            f"{founder} studied {rng.choice(_FIELDS)}."]))
        questions.append({"id": f"bridge-{i:05d}", "question": QUESTION.format(company=company),
                          "golden_answers": [birth[founder]], "type": "bridge",
                          "supporting_passage_ids": [company_id, founder_id]})
    for j, person in enumerate(others):
        corpus.append(_passage(f"bw-p{j:05d}", person, [
            f"{person} is a {rng.choice(_JOBS)}.", f"{person} was born in {birth[person]}.",
            f"{person} studied {rng.choice(_FIELDS)}."]))
    rng.shuffle(corpus)
    return BridgeWorld(corpus, questions)


def write_world(out_dir: Path, dev_fraction: float = 0.25, **kwargs) -> dict[str, Path]:
    """Write ``corpus.jsonl``, ``train.jsonl`` and ``dev.jsonl`` under ``out_dir`` (idempotent: the
    same arguments always write the same files). Dev questions ask about companies no training
    question names."""
    world = make_world(**kwargs)
    n_dev = max(1, int(len(world.questions) * dev_fraction))
    splits = {"corpus": world.corpus, "train": world.questions[n_dev:], "dev": world.questions[:n_dev]}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, rows in splits.items():
        path = out_dir / f"{name}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(path)
        paths[name] = path
    return paths

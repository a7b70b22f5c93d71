"""A generated multi-hop world where the right search behaviour is known: the learning check.

Every question is a bridge question, "In which city was the founder of <Company> born?":

- the company's passage (title: the company) is one sentence naming its founder among other
  entities (its headquarters city, a partner company, a product: ``company_facts`` of them), in a
  shuffled order or (``shuffle_facts=False``) always in that order;
- the founder's passage (title: the founder) says where the founder was born, and never names a
  company; passages of people who founded nothing read the same. With ``num_founders`` below the
  number of companies, founders found several companies each: a searcher meets their names often,
  and must still read which one the company's passage names.

One-sentence company passages keep the generator (the extractive reader answers with its best few
sentences) from filling its answer with sentences about the company alone. People's passages all read
alike ("X was born in the city of Y"), so naive RAG's top 3 usually holds people who are not the founder
and whose birth sentences crowd the reader's answer: the context that answers is the company's passage
and the founder's, without the rest, which s3's selection can express (``<important_info>`` before the
first query selects from the turn-0 docs).

Naive RAG retrieves the company's passage (and other people's), never the founder's, so it cannot
answer by construction: the company's passage never names the founder's birth city. A searcher that
reads the company's passage and queries the founder's name finds it. Which name to query is the one
thing the searcher must learn; every candidate name it could copy from the initial docs is equally
well-formed.

Names are made of syllables, each names one thing, and the world is fully determined by the seed.
Files are written in the layouts the rest of s3ray reads: a ``contents`` JSONL corpus and FlashRAG
question files with ``supporting_passage_ids``. ``s3ray generate-bridge`` writes them (the first stage of
the ``learning_check`` preset); the sizes are ``bridge_world.*`` in the config.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

_ONSETS = ("b", "br", "d", "dr", "f", "g", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v",
           "z", "th")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "or", "en", "ar")
_CODAS = ("", "n", "l", "r", "x", "s", "th", "nd", "k")
_FIELDS = ("physics", "music", "law", "medicine", "history", "botany", "chemistry", "poetry")
_JOBS = ("engineer", "painter", "chemist", "teacher", "pilot", "writer", "architect", "sailor")
QUESTION = "In which city was the founder of {company} born?"
# Whom a searcher's query names, best first: the founder (the search that answers), the company itself,
# another entity of the company's passage (its city, partner or product), a name from elsewhere.
QUERY_TARGETS = ("founder", "company", "other fact", "elsewhere", "no search")


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


def _person(pid: str, name: str, city: str, rng: random.Random) -> dict:
    return _passage(pid, name, [f"{name} was born in the city of {city}.",
                                f"{name} worked as a {rng.choice(_JOBS)} and studied {rng.choice(_FIELDS)}."])


def make_world(num_companies: int = 300, num_cities: int = 40, extra_people: int = 300,
               num_founders: int | None = None, company_facts: int = 4, shuffle_facts: bool = True,
               seed: int = 0) -> BridgeWorld:
    """Companies with founders, the founders' passages, and passages of people who founded nothing.
    ``num_founders`` below ``num_companies``: founders found several companies each. A company's
    passage states its first ``company_facts`` facts (founder, city, partner, product), in a shuffled
    order unless ``shuffle_facts`` is false."""
    num_founders = num_companies if num_founders is None else num_founders
    if num_companies < 4 or num_cities < 4 or not 2 <= num_founders <= num_companies:
        raise ValueError("a bridge world needs at least 4 companies, 4 cities and 2 to num_companies founders")
    if not 2 <= company_facts <= 4:
        raise ValueError(f"company_facts must be 2 to 4 (the founder and 1 to 3 other facts), got {company_facts}")
    rng = random.Random(seed)
    taken: set[str] = set()
    companies = _names(rng, num_companies, taken)
    people = _names(rng, num_founders, taken)
    founders = [people[i % num_founders] for i in range(num_companies)]
    rng.shuffle(founders)
    others = _names(rng, extra_people, taken)
    products = _names(rng, num_companies, taken)
    cities = _names(rng, num_cities, taken)
    corpus: list[dict] = []
    questions: list[dict] = []
    birth = {person: rng.choice(cities) for person in people + others}
    founder_ids = {person: f"bw-f{j:05d}" for j, person in enumerate(people)}
    for person, pid in founder_ids.items():
        corpus.append(_person(pid, person, birth[person], rng))
    for i, (company, founder, product) in enumerate(zip(companies, founders, products, strict=True)):
        hq = rng.choice([c for c in cities if c != birth[founder]])
        partner = companies[(i + 1 + rng.randrange(num_companies - 1)) % num_companies]
        clauses = [f"founded by {founder}", f"headquartered in {hq}", f"working with {partner}",
                   f"known for the {product}"][:company_facts]
        if shuffle_facts:
            rng.shuffle(clauses)
        company_id, founder_id = f"bw-c{i:05d}", founder_ids[founder]
        corpus.append(_passage(company_id, company, [f"{company} is a company {', '.join(clauses)}."]))
        questions.append({"id": f"bridge-{i:05d}", "question": QUESTION.format(company=company),
                          "golden_answers": [birth[founder]], "type": "bridge",
                          "supporting_passage_ids": [company_id, founder_id]})
    for j, person in enumerate(others):
        corpus.append(_person(f"bw-p{j:05d}", person, birth[person], rng))
    rng.shuffle(corpus)
    return BridgeWorld(corpus, questions)


def write_world(corpus_path: Path, train_path: Path, dev_path: Path, dev_fraction: float = 0.25,
                **world_kwargs) -> BridgeWorld:
    """Write the corpus and the train and dev questions (JSONL). Idempotent: the same arguments always
    write the same files. Dev questions ask about companies no training question names."""
    if not 0.0 < dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    world = make_world(**world_kwargs)
    n_dev = max(1, int(len(world.questions) * dev_fraction))
    for path, rows in ((corpus_path, world.corpus), (train_path, world.questions[n_dev:]),
                       (dev_path, world.questions[:n_dev])):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        tmp.replace(path)
    return world


def query_target(query: str | None, company: str, founder: str, company_passage: str) -> str:
    """Which of ``QUERY_TARGETS`` a query for "the founder of <company>" names. What a trained searcher
    has learned shows here: a query naming the company's partner was read from the right passage but
    picked the wrong entity; one naming a name from elsewhere did not read the right passage at all."""
    if not query or not query.strip():
        return "no search"
    words = set(re.findall(r"[a-z]+", query.lower()))
    if founder.lower() in words:
        return "founder"
    if company.lower() in words:
        return "company"
    facts = {name.lower() for name in re.findall(r"[A-Z][a-z]+", company_passage)}
    return "other fact" if words & facts else "elsewhere"


def generate(cfg) -> None:
    """``s3ray generate-bridge``: the learning check's world, written where the config reads its corpus
    (``corpus.path``) and its first train and dev sets."""
    import logging

    if not cfg.data.train or not cfg.data.dev:
        raise ValueError("generate-bridge needs one train and one dev set in the config to write to")
    w = cfg.bridge_world
    world = write_world(cfg.corpus.path, cfg.data.train[0].path, cfg.data.dev[0].path,
                        dev_fraction=w.dev_fraction, num_companies=w.num_companies,
                        num_cities=w.num_cities, extra_people=w.extra_people, num_founders=w.num_founders,
                        company_facts=w.company_facts, shuffle_facts=w.shuffle_facts, seed=w.seed)
    logging.getLogger(__name__).info("bridge world: %d passages, %d questions -> %s", len(world.corpus),
                                     len(world.questions), cfg.corpus.path.parent)

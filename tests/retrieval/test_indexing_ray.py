"""build_index end to end on a tiny corpus with known answers: dense and BM25 search, the three FAISS
kinds, reuse, resume after an interruption, and refusal of a mismatched corpus or encoder."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from s3ray.config import load_config
from s3ray.retrieval.indexing import build_index, shard_path
from s3ray.retrieval.manifest import MANIFEST, read_manifest
from s3ray.retrieval.searchers import load_searcher

pytestmark = pytest.mark.ray

PASSAGES = {
    "eiffel": ("Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris."),
    "photo": ("Photosynthesis", "Photosynthesis is how plants use sunlight, water and carbon dioxide to make "
                                "glucose and release oxygen."),
    "peni": ("Penicillin", "Penicillin was the first antibiotic, discovered by Alexander Fleming in 1928."),
    "everest": ("Mount Everest", "Mount Everest in the Himalayas is Earth's highest mountain above sea level."),
    "saturn": ("Saturn", "Saturn is the sixth planet from the Sun, famous for its bright rings of ice."),
    "jazz": ("Jazz", "Jazz is a music genre that originated in New Orleans, with swing and improvisation."),
    "reef": ("Great Barrier Reef", "The Great Barrier Reef off Queensland, Australia, is the largest coral reef."),
}
QUESTIONS = {  # question -> the passage that answers it
    "Which wrought-iron tower stands in Paris?": "eiffel",
    "How do plants turn sunlight into food?": "photo",
    "Who discovered the first antibiotic?": "peni",
    "What is the highest mountain on Earth?": "everest",
    "Which planet has rings of ice?": "saturn",
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, session_cfg, ray_cluster):
    """A config over the tiny corpus, 3 passages per shard (3 shards), sharing the session's MLflow store."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": key, "contents": f'"{title}"\n{text}'}) + "\n"
                              for key, (title, text) in PASSAGES.items()))
    base = [f"paths.work_dir={root / 'work'}", f"corpus.path={corpus}", "index.shard_rows=3",
            f"tracking.tracking_uri={session_cfg.tracking.tracking_uri}"]

    def make(*overrides: str):
        return load_config("test", base + list(overrides))

    build_index(make())
    return make


def top1(searcher, k: int = 3) -> list[str]:
    return [docs[0].id for docs in searcher.search(list(QUESTIONS), k)]


def test_layout_and_manifest(tiny):
    cfg = tiny()
    manifest = read_manifest(cfg.index.dir)
    assert manifest["rows"] == len(PASSAGES) and manifest["dim"] == 384 and manifest["bm25"] is True
    assert manifest["index"] == {"kind": "flat"} and manifest["encoder"]["model"] == cfg.encoder.model
    assert manifest["corpus"]["sha256"] and manifest["corpus"]["layout"] == "contents"
    assert [shard_path(cfg.index.dir, s).exists() for s in range(4)] == [True, True, True, False]


def test_dense_and_bm25_find_the_known_answers(tiny):
    dense = load_searcher(tiny())
    assert top1(dense) == list(QUESTIONS.values())
    results = dense.search(["Which planet has rings of ice?"], 3)[0]
    assert [d.title for d in results][0] == "Saturn" and len(results) == 3
    assert results[0].score >= results[1].score >= results[2].score
    assert dense.search(["anything"], 100)[0][-1].id in PASSAGES  # k above the row count: all rows
    bm25 = load_searcher(tiny("retriever.backend=bm25"))
    assert top1(bm25)[2:] == ["peni", "everest", "saturn"]  # lexical matches; the first two are paraphrases
    sharded = load_searcher(tiny("retriever.index_shards=3"))
    assert [[d.id for d in r] for r in sharded.search(list(QUESTIONS), 4)] == \
        [[d.id for d in r] for r in dense.search(list(QUESTIONS), 4)]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_other_kinds_reuse_the_shards(tiny, kind):
    cfg = tiny(f"index.kind={kind}", "index.ivf_nlist=2", "index.ivf_nprobe=2")
    before = shard_path(cfg.index.dir, 0).stat().st_mtime_ns
    build_index(cfg)  # only the FAISS index is rebuilt: no embedding
    assert shard_path(cfg.index.dir, 0).stat().st_mtime_ns == before
    assert read_manifest(cfg.index.dir)["index"]["kind"] == kind
    assert top1(load_searcher(cfg)) == list(QUESTIONS.values())
    with pytest.raises(ValueError, match="index: built as"):
        load_searcher(tiny())  # the dir now holds the other kind
    build_index(tiny())  # back to flat for the other tests


def test_mismatched_encoder_or_corpus_is_refused(tiny, tmp_path):
    with pytest.raises(ValueError, match="encoder.model: index built with"):
        load_searcher(tiny("encoder.model=/some/other/encoder"))
    cfg = tiny()
    changed = tmp_path / "corpus.jsonl"
    changed.write_text(cfg.corpus.path.read_text().replace("Paris", "Lyon"))
    with pytest.raises(ValueError, match="differs from the corpus the index was built from"):
        load_searcher(tiny(f"corpus.path={changed}"))
    same = tmp_path / "copy.jsonl"
    same.write_bytes(cfg.corpus.path.read_bytes())  # another path, same bytes: accepted
    assert load_searcher(tiny(f"corpus.path={same}")).rows == len(PASSAGES)


def test_complete_index_is_reused_and_an_interrupted_one_resumes(tiny):
    cfg = tiny()
    index_dir = cfg.index.dir
    mtimes = {s: shard_path(index_dir, s).stat().st_mtime_ns for s in range(3)}
    manifest_mtime = (index_dir / MANIFEST).stat().st_mtime_ns
    build_index(cfg)  # complete and matching: nothing happens
    assert (index_dir / MANIFEST).stat().st_mtime_ns == manifest_mtime
    # An interruption during embedding: no manifest yet, shard 1 not written.
    os.remove(index_dir / MANIFEST)
    os.remove(shard_path(index_dir, 1))
    build_index(cfg)
    assert shard_path(index_dir, 1).exists()
    assert shard_path(index_dir, 1).stat().st_mtime_ns > mtimes[1]
    assert {s: shard_path(index_dir, s).stat().st_mtime_ns for s in (0, 2)} == {0: mtimes[0], 2: mtimes[2]}
    assert top1(load_searcher(cfg)) == list(QUESTIONS.values())


def test_a_corpus_limit_indexes_the_first_passages_and_is_part_of_the_identity(tiny, tmp_path):
    limited = tiny("corpus.limit=4", f"index.dir={tmp_path / 'index'}")
    build_index(limited)
    manifest = read_manifest(limited.index.dir)
    assert manifest["rows"] == 4 and manifest["corpus"]["limit"] == 4
    assert {d.id for d in load_searcher(limited).search(["tower"], 10)[0]} == set(list(PASSAGES)[:4])
    whole = tiny(f"index.dir={tmp_path / 'index'}")
    with pytest.raises(ValueError, match="corpus.limit: index built from the first 4 passages"):
        load_searcher(whole)
    build_index(whole)  # the limit is part of the shards' identity: nothing of the 4-passage build is reused
    assert read_manifest(whole.index.dir)["rows"] == len(PASSAGES) == load_searcher(whole).rows


def test_both_embed_actors_take_blocks_of_a_small_corpus(tiny, tmp_path, caplog):
    """An actor takes its next block only when it is free: with two actors and a corpus of one shard, both
    embed. With Ray Data's default of several blocks in flight per actor, the actor ready first took every
    block and the pool dropped the other unused."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"p{i}", "contents": f'"Topic {i}"\n' + " ".join(
        f"Sentence {j} of passage {i} names the number {i * j} and the colour of tile {j}." for j in range(6))})
        + "\n" for i in range(256)))
    cfg = tiny(f"corpus.path={corpus}", f"index.dir={tmp_path / 'index'}", "index.embed_actors=2",
               "index.shard_rows=256")
    with caplog.at_level(logging.INFO, logger="s3ray.retrieval.indexing"):
        build_index(cfg)
    used = [re.search(r"by (\d+) actor\(s\): ([\d /]+)", r.getMessage()) for r in caplog.records]
    used = [m for m in used if m]
    assert len(used) == 1, caplog.text
    counts = [int(n) for n in used[0].group(2).split(" / ")]
    assert int(used[0].group(1)) == 2 and sum(counts) == 256 and min(counts) > 0, used[0].group(0)

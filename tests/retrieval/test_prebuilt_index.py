"""The index stage adopts a prebuilt FAISS flat index with its corpus (Search-R1's / s3's e5_Flat.index over
wiki-18): no embedding, the file linked in, dense search answering through it; a mismatch is refused."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from s3ray.config import load_config
from s3ray.retrieval.indexing import build_index, passage_text
from s3ray.retrieval.manifest import FAISS_FILE, read_manifest
from s3ray.retrieval.searchers import load_searcher
from tests.retrieval.test_indexing_ray import PASSAGES, QUESTIONS


@pytest.fixture(scope="module")
def prebuilt(tmp_path_factory):
    """A corpus and a flat IP index built outside s3ray over it (row i = corpus row i), as Search-R1 does."""
    from s3ray.retrieval.encoder import encode, load_encoder

    root = tmp_path_factory.mktemp("prebuilt")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": key, "contents": passage_text(title, text)}) + "\n"
                              for key, (title, text) in PASSAGES.items()))
    cfg = load_config("test", [f"corpus.path={corpus}"])
    vectors = encode(load_encoder(cfg.encoder), [passage_text(t, x) for t, x in PASSAGES.values()],
                     cfg.encoder.passage_prefix, cfg.encoder)
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    path = root / "e5_Flat.index"
    faiss.write_index(index, str(path))
    return root, corpus, path


def config(root, corpus, path, *overrides):
    return load_config("test", [f"paths.work_dir={root / 'work'}", f"corpus.path={corpus}",
                                f"index.prebuilt={path}", *overrides])


def test_adopted_index_serves_dense_and_bm25_search_and_is_reused(prebuilt):
    root, corpus, path = prebuilt
    cfg = config(root, corpus, path)
    index_dir = build_index(cfg)
    assert (index_dir / FAISS_FILE).stat().st_ino == path.stat().st_ino  # linked, not copied
    manifest = read_manifest(index_dir)
    assert manifest["rows"] == len(PASSAGES) and manifest["index"]["prebuilt"] == str(path)
    for backend in ("dense", "bm25"):
        searcher = load_searcher(config(root, corpus, path, f"retriever.backend={backend}"))
        assert [docs[0].id for docs in searcher.search(list(QUESTIONS), 3)] == list(QUESTIONS.values())
    before = (index_dir / "docs.parquet").stat().st_mtime_ns
    build_index(cfg)
    assert (index_dir / "docs.parquet").stat().st_mtime_ns == before  # complete: nothing redone


def test_an_index_of_another_size_or_kind_is_refused(prebuilt, tmp_path):
    root, corpus, _ = prebuilt
    short = faiss.IndexFlatIP(8)
    short.add(np.zeros((3, 8), dtype=np.float32))
    faiss.write_index(short, str(tmp_path / "short.index"))
    with pytest.raises(ValueError, match="holds 3 vectors and the corpus 7 passages"):
        build_index(config(tmp_path, corpus, tmp_path / "short.index"))
    l2 = faiss.IndexFlatL2(8)
    l2.add(np.zeros((len(PASSAGES), 8), dtype=np.float32))
    faiss.write_index(l2, str(tmp_path / "l2.index"))
    with pytest.raises(ValueError, match="only a flat inner-product index"):
        build_index(config(tmp_path, corpus, tmp_path / "l2.index"))
    with pytest.raises(ValueError, match="adopts a flat index"):
        config(tmp_path, corpus, tmp_path / "l2.index", "index.kind=hnsw")

"""In-process search over a built index: ``load_searcher(cfg).search(queries, k) -> list[list[Doc]]``.

``retriever.backend`` picks dense (encoder + FAISS) or BM25. Both map result rows to passages through the
doc store. The index's manifest must match the config (same encoder, same corpus), otherwise loading
fails with the differences spelled out: a silent mismatch would return confidently wrong passages.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

import numpy as np

from s3ray.config import S3Config
from s3ray.retrieval.indexing import gpu_index
from s3ray.retrieval.manifest import BM25_DIR, DOCS_FILE, FAISS_FILE, mismatches, read_manifest
from s3ray.types import Doc

log = logging.getLogger(__name__)


class Searcher(Protocol):
    rows: int

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]: ...


class DocStore:
    """``docs.parquet`` held as Arrow columns (compact); rows are fetched by FAISS / BM25 id."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.table = pq.read_table(path, columns=["id", "title", "text"])

    def __len__(self) -> int:
        return self.table.num_rows

    def docs(self, rows: np.ndarray, scores: np.ndarray) -> list[list[Doc]]:
        """One list per query; negative rows (FAISS's "no result") are dropped."""
        import pyarrow as pa

        flat = [int(r) for r in rows.ravel() if r >= 0]
        taken = self.table.take(pa.array(flat, type=pa.int64())).to_pylist() if flat else []
        out, i = [], 0
        for query_rows, query_scores in zip(rows, scores, strict=True):
            hits = []
            for row, score in zip(query_rows, query_scores, strict=True):
                if row < 0:
                    continue
                hits.append(Doc(id=taken[i]["id"], title=taken[i]["title"], text=taken[i]["text"],
                                score=float(score)))
                i += 1
            out.append(hits)
        return out


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-sub-index (scores [n, k_i], global rows [n, k_i]) into the overall top-k by score."""
    scores = np.concatenate([s for s, _ in parts], axis=1)
    rows = np.concatenate([r for _, r in parts], axis=1)
    scores = np.where(rows < 0, -np.inf, scores)  # FAISS pads missing results with row -1
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)


class ShardedFlatIndex:
    """``retriever.index_shards`` flat sub-indexes over contiguous row ranges, searched in parallel."""

    def __init__(self, index, shards: int):
        import faiss

        vectors = index.reconstruct_n(0, index.ntotal)
        bounds = np.linspace(0, len(vectors), shards + 1).astype(int)
        self.offsets = bounds[:-1]
        self.parts = []
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            part = faiss.IndexFlatIP(vectors.shape[1])
            part.add(vectors[start:end])
            self.parts.append(part)
        self.pool = ThreadPoolExecutor(max_workers=shards)  # FAISS releases the GIL while searching

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        def one(i: int) -> tuple[np.ndarray, np.ndarray]:
            scores, rows = self.parts[i].search(vectors, k)
            return scores, np.where(rows < 0, -1, rows + self.offsets[i])

        return merge_topk(list(self.pool.map(one, range(len(self.parts)))), k)


class DenseSearcher:
    """Encoder + FAISS. ``encode`` is exposed so a service can batch encoding separately if it wants."""

    def __init__(self, cfg: S3Config, index_dir: Path):
        import faiss

        from s3ray.retrieval.encoder import load_encoder

        self.enc = cfg.encoder
        self.model = load_encoder(cfg.encoder)
        index = faiss.read_index(str(index_dir / FAISS_FILE))
        if cfg.index.kind == "ivf":
            index.nprobe = cfg.index.ivf_nprobe
        elif cfg.index.kind == "hnsw":
            index.hnsw.efSearch = cfg.index.hnsw_ef_search
        # A GPU FAISS index must not be searched from two threads at once; CPU indexes may be.
        self._lock: contextlib.AbstractContextManager = contextlib.nullcontext()
        if cfg.index.use_gpu_faiss:
            if cfg.retriever.index_shards > 1:
                raise ValueError("retriever.index_shards splits a CPU index; on GPUs use index.gpu_shard")
            index = gpu_index(index, cfg.index)
            self._lock = threading.Lock()
        if cfg.retriever.index_shards > 1:
            if cfg.index.kind != "flat":
                raise ValueError("retriever.index_shards > 1 needs index.kind=flat")
            index = ShardedFlatIndex(index, cfg.retriever.index_shards)
        self.index = index
        self.store = DocStore(index_dir / DOCS_FILE)
        self.rows = len(self.store)

    def encode(self, queries: Sequence[str]) -> np.ndarray:
        from s3ray.retrieval.encoder import encode

        return encode(self.model, queries, self.enc.query_prefix, self.enc)

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        if not queries:
            return []
        vectors = self.encode(queries)
        with self._lock:
            scores, rows = self.index.search(vectors, min(k, self.rows))
        return self.store.docs(rows, scores)


class BM25Searcher:
    def __init__(self, index_dir: Path):
        from s3ray.retrieval.bm25 import BM25Index

        self.index = BM25Index(index_dir / BM25_DIR)
        self.store = DocStore(index_dir / DOCS_FILE)
        self.rows = len(self.store)

    def search(self, queries: Sequence[str], k: int) -> list[list[Doc]]:
        if not queries:
            return []
        rows, scores = self.index.search(queries, k)
        return self.store.docs(rows, scores)


def load_searcher(cfg: S3Config) -> Searcher:
    """The searcher of ``cfg.retriever.backend`` over ``cfg.index.dir``, after checking its manifest."""
    index_dir = Path(cfg.index.dir)
    manifest = read_manifest(index_dir)
    if manifest is None:
        raise FileNotFoundError(f"no complete index in {index_dir} (no manifest.json): run `s3ray index` first")
    dense = cfg.retriever.backend == "dense"
    problems = mismatches(manifest, cfg, check_index=dense)
    if problems:
        raise ValueError(f"the index in {index_dir} does not match the config; rebuild it with `s3ray index` "
                         "or fix the config:\n  " + "\n  ".join(problems))
    if not dense and not manifest.get("bm25"):
        raise ValueError(f"retriever.backend=bm25 but {index_dir} has no BM25 index (index.bm25=false)")
    log.info("retriever: %s search over %d passages in %s", cfg.retriever.backend, manifest["rows"], index_dir)
    return DenseSearcher(cfg, index_dir) if dense else BM25Searcher(index_dir)

"""``manifest.json``: what an index was built from, so a build can be reused and a mismatch refused.

The corpus is identified by its sha256. Hashing a multi-GB file is slow, so the manifest also keeps the
file's size and mtime: when both still match, the stored checksum is trusted without re-reading.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from s3ray.config import S3Config
from s3ray.retrieval.corpus import corpus_checksum

MANIFEST = "manifest.json"
FAISS_FILE = "faiss.index"
DOCS_FILE = "docs.parquet"
BM25_DIR = "bm25"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write then rename: a reader (or a crashed build) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_manifest(index_dir: Path) -> dict[str, Any] | None:
    path = Path(index_dir) / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def corpus_fingerprint(path: Path, known: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{path, size, mtime_ns, sha256}``; reuses ``known["sha256"]`` when size and mtime are unchanged."""
    stat = os.stat(path)
    if known and known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns:
        sha = known["sha256"]
    else:
        sha = corpus_checksum(path)
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}


def encoder_identity(cfg: S3Config) -> dict[str, Any]:
    """The encoder settings that change the vectors: a change means re-embedding."""
    enc = cfg.encoder
    return {"model": enc.model, "query_prefix": enc.query_prefix, "passage_prefix": enc.passage_prefix,
            "max_length": enc.max_length, "normalize": enc.normalize}


def index_identity(cfg: S3Config) -> dict[str, Any]:
    """The FAISS build settings of the configured kind (search-time knobs like nprobe are not in it)."""
    idx = cfg.index
    params: dict[str, Any] = {"ivf": {"nlist": idx.ivf_nlist, "train_sample": idx.ivf_train_sample},
                              "hnsw": {"m": idx.hnsw_m}}.get(idx.kind, {})
    prebuilt = {"prebuilt": str(idx.prebuilt)} if idx.prebuilt is not None else {}
    return {"kind": idx.kind, **params, **prebuilt}


def new_manifest(cfg: S3Config, corpus: dict[str, Any], rows: int, dim: int, skipped: int,
                 bm25: bool) -> dict[str, Any]:
    return {"encoder": encoder_identity(cfg), "index": index_identity(cfg), "dim": dim, "rows": rows,
            "skipped_rows": skipped, "corpus": {**corpus, "layout": cfg.corpus.layout,
                                                "file_format": cfg.corpus.file_format,
                                                "limit": cfg.corpus.limit},
            "bm25": bm25, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def mismatches(manifest: dict[str, Any], cfg: S3Config, *, check_index: bool) -> list[str]:
    """Human-readable differences between an index's manifest and the config (empty: it matches)."""
    problems = []
    built_enc, want_enc = manifest["encoder"], encoder_identity(cfg)
    for key, want in want_enc.items():
        if built_enc.get(key) != want:
            problems.append(f"encoder.{key}: index built with {built_enc.get(key)!r}, config has {want!r}")
    built_corpus = manifest["corpus"]
    if built_corpus.get("layout") != cfg.corpus.layout:
        problems.append(f"corpus.layout: index built with {built_corpus.get('layout')!r}, "
                        f"config has {cfg.corpus.layout!r}")
    if built_corpus.get("limit") != cfg.corpus.limit:
        problems.append(f"corpus.limit: index built from the first {built_corpus.get('limit')} passages, "
                        f"config has {cfg.corpus.limit}")
    if not Path(cfg.corpus.path).exists():
        problems.append(f"corpus.path: {cfg.corpus.path} does not exist")
    elif corpus_fingerprint(Path(cfg.corpus.path), built_corpus)["sha256"] != built_corpus["sha256"]:
        problems.append(f"corpus: {cfg.corpus.path} differs from the corpus the index was built from "
                        f"({built_corpus['path']}, sha256 {built_corpus['sha256'][:12]}...)")
    if check_index and manifest["index"] != index_identity(cfg):
        problems.append(f"index: built as {manifest['index']}, config asks for {index_identity(cfg)}")
    return problems

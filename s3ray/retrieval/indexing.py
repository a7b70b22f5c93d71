"""``build_index(cfg)``: corpus -> doc store, embeddings (Ray Data), FAISS + BM25 indexes, manifest.

Layout of ``index.dir``::

    docs.parquet            row, shard, id, title, text in corpus order (row i = FAISS / BM25 id i)
    shards/shard-00000.npy  float32 embeddings of rows [0, shard_rows), and .ids.npy their doc ids
    shards/meta.json        what the shards were computed from (a change invalidates them)
    faiss.index, bm25/      the search indexes
    manifest.json           written last: its presence means the index is complete

The corpus is parsed by one sequential pass in the driver: it is cheap next to embedding, and only a
sequential pass can name the line of a malformed row and keep corpus order. Embedding is the heavy part:
Ray Data reads the doc store, keeps only the shards not yet on disk, and runs the encoder in an actor
pool (one 1-thread actor per core by default: :mod:`s3ray.resources` says why). Each finished
shard is written atomically, so an interrupted build resumes where it stopped. BM25 reads only the doc
store, so a driver thread builds it while the actors start and encode.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from s3ray.config import EncoderConfig, IndexConfig, S3Config
from s3ray.progress import ProgressLog
from s3ray.retrieval.bm25 import build_bm25
from s3ray.retrieval.corpus import BadRows, iter_corpus
from s3ray.retrieval.manifest import (
    BM25_DIR,
    DOCS_FILE,
    FAISS_FILE,
    MANIFEST,
    corpus_fingerprint,
    encoder_identity,
    mismatches,
    new_manifest,
    read_manifest,
    write_json_atomic,
)

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
# Embedding blocks: at least this many per actor (so the work balances), of at least this many rows (so
# the encoder's length-sorted batches still pad little).
BLOCKS_PER_ACTOR = 4
MIN_BLOCK_ROWS = 64


def passage_text(title: str, text: str) -> str:
    """What gets embedded: the wiki-18 ``contents`` form, as Search-R1's e5 index did."""
    return f'"{title}"\n{text}'


class EmbedPassages:
    """Ray Data actor: loads the encoder once, then embeds batches of doc-store rows."""

    def __init__(self, encoder: EncoderConfig, torch_threads: int):
        import ray

        from s3ray.cluster import set_torch_threads
        from s3ray.retrieval.encoder import load_encoder

        set_torch_threads(torch_threads)
        self.enc = encoder
        self.model = load_encoder(self.enc)
        self.actor_id = ray.get_runtime_context().get_actor_id()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from s3ray.retrieval.encoder import encode

        texts = [passage_text(t, x) for t, x in zip(batch["title"], batch["text"], strict=True)]
        return {"row": batch["row"], "shard": batch["shard"], "id": batch["id"],
                "embedding": encode(self.model, texts, self.enc.passage_prefix, self.enc),
                # Which actor, so the pool's use is logged; bytes, 32 a row (a str column takes 128).
                "embedder": np.full(len(texts), self.actor_id.encode())}


def gpu_index(index, idx: IndexConfig):
    """``index`` cloned to every GPU FAISS sees, its vectors stored in fp16 (half the memory of fp32:
    wiki-18's 21M x 768 e5 vectors take ~32 GB instead of ~65 GB), one full copy per GPU or, with
    ``idx.gpu_shard``, split across them. ``GpuMultipleClonerOptions`` (``useFloat16``, ``shard``) and
    ``index_cpu_to_all_gpus(index, co)`` are faiss's own (faiss/python/gpu_wrappers.py).

    Raises when no GPU is visible, instead of silently searching on the CPU: a CPU-only faiss build
    (faiss-cpu, also when installed next to faiss-gpu-cu12) or a replica given no GPUs."""
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "GpuMultipleClonerOptions") else 0
    if gpus == 0:
        raise RuntimeError("index.use_gpu_faiss is set but FAISS sees no GPU: install the `gpu` extra "
                           "(faiss-gpu-cu12, without faiss-cpu) and give the retriever GPUs "
                           "(retriever.num_gpus), or set index.use_gpu_faiss=false")
    if idx.kind == "hnsw":
        raise ValueError("FAISS has no GPU HNSW index: use index.kind=flat or ivf with index.use_gpu_faiss")
    options = faiss.GpuMultipleClonerOptions()
    options.useFloat16 = True
    options.shard = idx.gpu_shard
    log.info("FAISS index on %d GPU(s), fp16, %s", gpus, "sharded" if idx.gpu_shard else "one copy each")
    return faiss.index_cpu_to_all_gpus(index, co=options)


def build_faiss(vectors: np.ndarray, idx: IndexConfig, seed: int = 0):
    """A FAISS inner-product index of ``idx.kind`` over ``vectors`` (row i gets id i)."""
    import faiss

    rows, dim = vectors.shape
    if idx.kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif idx.kind == "ivf":
        sample = vectors
        if rows > idx.ivf_train_sample:
            sample = vectors[np.random.default_rng(seed).choice(rows, idx.ivf_train_sample, replace=False)]
        nlist = max(1, min(idx.ivf_nlist, len(sample)))  # k-means needs at least one point per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        index.nprobe = idx.ivf_nprobe
    elif idx.kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, idx.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efSearch = idx.hnsw_ef_search
    else:
        raise ValueError(f"unknown index.kind {idx.kind!r}")
    index.add(vectors)
    return index


def shard_path(index_dir: Path, shard: int) -> Path:
    return index_dir / SHARDS_DIR / f"shard-{shard:05d}.npy"


def _ids_path(index_dir: Path, shard: int) -> Path:
    return index_dir / SHARDS_DIR / f"shard-{shard:05d}.ids.npy"


def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def write_docstore(cfg: S3Config, path: Path) -> tuple[int, int]:
    """Parse the corpus into ``docs.parquet`` (one row group per shard); returns (rows, skipped)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("row", pa.int64()), ("shard", pa.int32()), ("id", pa.string()),
                        ("title", pa.string()), ("text", pa.string())])
    shard_rows, bad, rows = cfg.index.shard_rows, BadRows(), 0
    buffer: list[dict[str, str]] = []
    tmp = path.with_name(path.name + ".tmp")

    def flush(writer) -> None:
        start = rows - len(buffer)
        columns = {"row": list(range(start, rows)), "shard": [r // shard_rows for r in range(start, rows)]}
        for key in ("id", "title", "text"):
            columns[key] = [doc[key] for doc in buffer]
        writer.write_table(pa.table(columns, schema=schema))
        buffer.clear()

    corpus = cfg.corpus
    with pq.ParquetWriter(tmp, schema) as writer:
        for doc in iter_corpus(corpus.path, corpus.layout, corpus.file_format, corpus.on_bad_row, bad):
            if corpus.limit is not None and rows == corpus.limit:
                break
            buffer.append(doc)
            rows += 1
            if len(buffer) == shard_rows:
                flush(writer)
        if buffer:
            flush(writer)
    if rows == 0:
        tmp.unlink()
        raise ValueError(f"corpus {corpus.path} has no valid rows")
    os.replace(tmp, path)
    return rows, bad.count


def _prepare_shards(cfg: S3Config, index_dir: Path, corpus: dict[str, Any]) -> dict[str, Any]:
    """Reuse the doc store and finished shards if they came from this corpus and encoder; else restart."""
    meta_path = index_dir / SHARDS_DIR / "meta.json"
    identity = {"corpus_sha256": corpus["sha256"], "layout": cfg.corpus.layout,
                "file_format": cfg.corpus.file_format, "on_bad_row": cfg.corpus.on_bad_row,
                "limit": cfg.corpus.limit,
                "encoder": encoder_identity(cfg), "shard_rows": cfg.index.shard_rows}
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta is not None and meta["identity"] == identity and (index_dir / DOCS_FILE).exists():
        return meta
    shutil.rmtree(index_dir / SHARDS_DIR, ignore_errors=True)
    (index_dir / SHARDS_DIR).mkdir(parents=True)
    rows, skipped = write_docstore(cfg, index_dir / DOCS_FILE)
    meta = {"identity": identity, "rows": rows, "skipped_rows": skipped}
    write_json_atomic(meta_path, meta)
    return meta


def _shard_sizes(rows: int, shard_rows: int) -> list[int]:
    return [min(shard_rows, rows - start) for start in range(0, rows, shard_rows)]


def _embed_shards(cfg: S3Config, index_dir: Path, todo: list[int], sizes: list[int]) -> dict[bytes, int]:
    """Embed the shards in ``todo`` with a Ray Data actor pool; write each as soon as it is complete.
    Returns the passages each actor (by Ray actor id) embedded."""
    import ray
    from ray.data.expressions import col

    from s3ray.cluster import init_ray
    from s3ray.resources import describe, ray_cores, resolve_resources

    init_ray(cfg)
    cfg, choices = resolve_resources(cfg, ray_cores())
    log.info("index resources: %s", describe(choices, "index"))
    ds = ray.data.read_parquet(str(index_dir / DOCS_FILE), columns=["row", "shard", "id", "title", "text"])
    if len(todo) < len(sizes):
        ds = ds.filter(expr=col("shard").is_in(todo))
    # Blocks of at most a shard, several per actor, and one block in flight per actor (below): an actor
    # takes its next block only when it is free, so one that starts late or runs on a busier core takes
    # fewer. With Ray Data's default (several in flight), the first actor ready took every block of a
    # small corpus and the pool dropped the others unused: a 1,000-passage build ran on one of its two
    # actors. A shard may span two blocks: its rows are gathered below.
    actors, rows = cfg.index.embed_actors, sum(sizes[s] for s in todo)
    blocks = max(actors * BLOCKS_PER_ACTOR, -(-rows // cfg.index.shard_rows))
    block_rows = min(cfg.index.shard_rows, max(MIN_BLOCK_ROWS, -(-rows // blocks)))
    ds = ds.repartition(target_num_rows_per_block=block_rows)
    ds = ds.map_batches(
        EmbedPassages, fn_constructor_kwargs={"encoder": cfg.encoder,
                                              "torch_threads": cfg.index.embed_torch_threads},
        # A whole block per call: the encoder sorts a call's passages by length, so its own batches
        # (encoder.batch_size) pad little, as a single-process encode of the whole corpus does.
        batch_size=None, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.index.embed_actors, max_tasks_in_flight_per_actor=1),
        num_cpus=cfg.index.embed_num_cpus, num_gpus=cfg.index.embed_num_gpus)
    # Blocks may arrive out of order: gather rows per shard, write a shard once all its rows are in.
    pending: dict[int, list[dict[str, np.ndarray]]] = {}
    done, embedded, per_actor = 0, 0, Counter()
    progress = ProgressLog(log, "index", rows, "passage", cfg.tracking.progress_every_s)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        embedded += len(batch["row"])
        actor_ids, counts = np.unique(batch["embedder"], return_counts=True)
        per_actor.update(dict(zip(actor_ids.tolist(), counts.tolist(), strict=True)))
        for shard in np.unique(batch["shard"]).tolist():
            mask = batch["shard"] == shard
            parts = pending.setdefault(shard, [])
            parts.append({key: batch[key][mask] for key in ("row", "id", "embedding")})
            if sum(len(p["row"]) for p in parts) < sizes[shard]:
                continue
            rows = np.concatenate([p["row"] for p in parts])
            order = np.argsort(rows)
            ids = np.concatenate([p["id"] for p in parts])[order].astype(str)
            _save_npy_atomic(_ids_path(index_dir, shard), ids)
            # The vectors file is written last: its presence marks the shard as finished.
            vectors = np.concatenate([p["embedding"] for p in parts])[order].astype(np.float32)
            _save_npy_atomic(shard_path(index_dir, shard), vectors)
            del pending[shard]
            done += 1
        progress.update(embedded, f"{done}/{len(todo)} shards written")
    if pending:
        raise RuntimeError(f"embedding ended with incomplete shards {sorted(pending)}")
    return dict(per_actor)


def _assemble(cfg: S3Config, index_dir: Path, rows: int, n_shards: int) -> int:
    """FAISS over all shards; returns the embedding dimension."""
    import faiss
    import pyarrow.parquet as pq

    docs = pq.read_table(index_dir / DOCS_FILE, columns=["id"])
    vectors = np.concatenate([np.load(shard_path(index_dir, s)) for s in range(n_shards)])
    ids = np.concatenate([np.load(_ids_path(index_dir, s)) for s in range(n_shards)])
    if len(vectors) != rows or ids.tolist() != docs.column("id").to_pylist():
        raise RuntimeError(f"shards in {index_dir / SHARDS_DIR} do not match the doc store; delete them")
    log.info("index: building %s FAISS index over %d x %d vectors", cfg.index.kind, *vectors.shape)
    tmp = index_dir / (FAISS_FILE + ".tmp")
    faiss.write_index(build_faiss(vectors, cfg.index), str(tmp))
    os.replace(tmp, index_dir / FAISS_FILE)
    return int(vectors.shape[1])


def _build_bm25(index_dir: Path) -> None:
    """BM25 over the doc store's passages."""
    import pyarrow.parquet as pq

    docs = pq.read_table(index_dir / DOCS_FILE, columns=["title", "text"])
    log.info("index: building BM25 over %d passages", docs.num_rows)
    texts = [f"{t} {x}" for t, x in zip(docs.column("title").to_pylist(), docs.column("text").to_pylist(),
                                        strict=True)]
    build_bm25(texts, index_dir / BM25_DIR)


def check_prebuilt(path: Path, rows: int) -> int:
    """The dimension of the prebuilt flat index at ``path``, after checking it can serve a corpus of
    ``rows`` passages. Memory-mapped: only the header is read, not the (wiki-18: 65 GB) vectors."""
    import faiss

    if not Path(path).is_file():
        raise FileNotFoundError(f"index.prebuilt={path} is not a file")
    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    if not isinstance(index, faiss.IndexFlat) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"index.prebuilt={path} is a {type(index).__name__} with metric {index.metric_type}; "
                         "only a flat inner-product index can be adopted")
    if index.ntotal != rows:
        raise ValueError(f"index.prebuilt={path} holds {index.ntotal} vectors and the corpus {rows} passages: "
                         "row i of the index must be passage i of corpus.path (no corpus.limit, no skipped rows)")
    return int(index.d)


def _link(source: Path, target: Path) -> None:
    """``target`` names ``source``: a hard link on the same file system, else a symbolic one."""
    tmp = target.with_name(target.name + ".tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        os.symlink(Path(source).resolve(), tmp)
    os.replace(tmp, target)


def adopt_prebuilt(cfg: S3Config, index_dir: Path, corpus: dict[str, Any]) -> dict[str, Any]:
    """Doc store from the corpus, ``index.prebuilt`` as the FAISS index, BM25 if configured; the manifest."""
    rows, skipped = write_docstore(cfg, index_dir / DOCS_FILE)
    if skipped:
        raise ValueError(f"corpus {cfg.corpus.path}: {skipped} rows skipped as malformed would shift every "
                         "later row against index.prebuilt; use corpus.on_bad_row=error and fix the corpus")
    dim = check_prebuilt(cfg.index.prebuilt, rows)
    _link(Path(cfg.index.prebuilt), index_dir / FAISS_FILE)
    if cfg.index.bm25:
        _build_bm25(index_dir)
    log.info("index: adopted %s (%d x %d) for %s", cfg.index.prebuilt, rows, dim, cfg.corpus.path)
    return new_manifest(cfg, corpus, rows, dim, skipped, bm25=cfg.index.bm25)


def _complete(index_dir: Path, manifest: dict[str, Any] | None, cfg: S3Config) -> bool:
    if manifest is None or (cfg.index.bm25 and not manifest.get("bm25")):
        return False
    files = [index_dir / FAISS_FILE, index_dir / DOCS_FILE] + ([index_dir / BM25_DIR] if cfg.index.bm25 else [])
    return all(f.exists() for f in files) and not mismatches(manifest, cfg, check_index=True)


def build_index(cfg: S3Config) -> Path:
    """Build (or resume, or reuse) the index of ``cfg.corpus`` in ``cfg.index.dir``; returns the dir."""
    index_dir = Path(cfg.index.dir)
    index_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(index_dir)
    if _complete(index_dir, manifest, cfg):
        log.info("index: %s is complete and matches the config; nothing to do", index_dir)
        return index_dir
    (index_dir / MANIFEST).unlink(missing_ok=True)  # from here on the dir is "in progress"
    corpus = corpus_fingerprint(Path(cfg.corpus.path), manifest["corpus"] if manifest else None)
    if cfg.index.prebuilt is not None:
        write_json_atomic(index_dir / MANIFEST, adopt_prebuilt(cfg, index_dir, corpus))
        return index_dir
    meta = _prepare_shards(cfg, index_dir, corpus)
    rows = meta["rows"]
    sizes = _shard_sizes(rows, cfg.index.shard_rows)
    todo = [s for s in range(len(sizes)) if not shard_path(index_dir, s).exists()]
    log.info("index: %d passages in %d shards; %d to embed, %d already done", rows, len(sizes), len(todo),
             len(sizes) - len(todo))
    from s3ray.tracking import start_run

    # BM25 needs only the doc store: built in a driver thread from here on, while MLflow and the embed
    # actors start and encode, not after them.
    with ThreadPoolExecutor(1) as side:
        bm25 = side.submit(_build_bm25, index_dir) if cfg.index.bm25 else None
        with start_run(cfg, "index"):
            import mlflow

            started = time.perf_counter()
            if todo:
                per_actor = _embed_shards(cfg, index_dir, todo, sizes)
                embedded = sum(sizes[s] for s in todo)
                seconds = time.perf_counter() - started
                mlflow.log_metrics({"index.embedded_passages": embedded, "index.embed_seconds": seconds,
                                    "index.passages_per_s": embedded / seconds,
                                    "index.embed_actors_used": len(per_actor)})
                log.info("index: embedded %d passages in %.1f s (%.0f passages/s) by %d actor(s): %s", embedded,
                         seconds, embedded / seconds, len(per_actor), " / ".join(map(str, per_actor.values())))
            dim = _assemble(cfg, index_dir, rows, len(sizes))
            if bm25 is not None:
                bm25.result()
            mlflow.log_metrics({"index.rows": rows, "index.skipped_rows": meta["skipped_rows"],
                                "index.build_seconds": time.perf_counter() - started})
    write_json_atomic(index_dir / MANIFEST,
                      new_manifest(cfg, corpus, rows, dim, meta["skipped_rows"], bm25=cfg.index.bm25))
    log.info("index: %s ready (%d passages, %s)", index_dir, rows, cfg.index.kind)
    return index_dir

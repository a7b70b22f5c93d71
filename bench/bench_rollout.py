"""Rollout throughput on the CPU default: episodes per second of the rollout pool with 1 and 2 actors.

Starts its own services in a temporary work dir: a dense index over a slice of the bundled HotpotQA
corpus (the gold passages of the first dev questions plus distractors), the retriever and the default
extractive-reader generator on a free port, and the locally built tiny searcher. Each pool runs one
warm-up batch, then the timed batch: ``QUESTIONS`` dev questions, one sampled episode each, with the
default agent settings (``max_turns`` 3 + the final selection turn, ``max_turn_tokens`` 500). Rewards
are off: the figure is the rollout itself (engine turns and retrieval calls), not the generator.

Prints one JSON object per figure: ``rollout.episodes_per_s.actors1`` and ``...actors2`` (with the
one-actor figure as its baseline and the ratio), medians of ``ROUNDS`` alternating runs.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import figure, free_port

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QUESTIONS = 16
ROUNDS = 2
WARMUP_QUESTIONS = 2
DISTRACTORS = 2000


def corpus_slice(corpus: Path, dev: Path, out: Path, questions: int) -> Path:
    """The gold passages of the first dev questions plus the first ``DISTRACTORS`` other passages."""
    wanted: set[str] = set()
    with open(dev, encoding="utf-8") as f:
        for _, line in zip(range(questions), f, strict=False):
            wanted.update(json.loads(line)["supporting_passage_ids"])
    kept = 0
    with open(corpus, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
        for line in src:
            row_id = json.loads(line)["id"]
            if row_id in wanted or kept < DISTRACTORS:
                dst.write(line)
                kept += row_id not in wanted
    return out


def episodes_per_s(cfg, model_dir: Path, questions: list[dict]) -> float:
    import ray

    from s3ray.rollout.pool import create_pool

    pool = create_pool(cfg, model_dir)
    try:
        ray.get(pool.ready.remote())
        ray.get(pool.run.remote(questions[QUESTIONS:], with_reward=False))  # warm-up: the rest
        t0 = time.perf_counter()
        episodes = ray.get(pool.run.remote(questions[:QUESTIONS], with_reward=False))
        seconds = time.perf_counter() - t0
    finally:
        ray.kill(pool)
    print(f"# {cfg.rollout.num_actors} actor(s): {len(episodes)} episodes in {seconds:.1f}s, "
          f"{sum(len(e.turns) for e in episodes) / len(episodes):.2f} turns and "
          f"{sum(sum(e.action_mask) for e in episodes) / len(episodes):.0f} generated tokens per episode",
          file=sys.stderr, flush=True)
    return len(episodes) / seconds


def main() -> int:
    import ray

    from s3ray.cluster import init_ray
    from s3ray.config import load_config
    from s3ray.data.qa import load_questions
    from s3ray.generation.service import deploy as deploy_generator
    from s3ray.retrieval.indexing import build_index
    from s3ray.retrieval.service import deploy as deploy_retriever
    from s3ray.train.tinylm import ensure_tiny_model

    with tempfile.TemporaryDirectory(prefix="s3ray-bench-rollout-") as tmp:
        work = Path(tmp)
        probe = load_config(None, [f"paths.work_dir={work}"])
        hotpot = probe.paths.data_dir / "hotpotqa"
        corpus = corpus_slice(hotpot / "corpus.jsonl", hotpot / "dev.jsonl", work / "corpus.jsonl",
                              QUESTIONS + WARMUP_QUESTIONS)
        # Logical CPUs: two rollout actors and both services must fit, whatever the core count. One torch
        # thread per actor in both pools: the ratio is what a second actor adds, not a thread count.
        base = [f"paths.work_dir={work}", f"corpus.path={corpus}", f"serve.port={free_port()}",
                "cluster.num_cpus=8", "rollout.torch_threads_per_actor=1"]
        cfg = load_config(None, base)
        init_ray(cfg)
        try:
            build_index(cfg)
            deploy_retriever(cfg)
            deploy_generator(cfg)
            model_dir = ensure_tiny_model(cfg.policy_model_dir, cfg.corpus.path, cfg.policy.tiny)
            spec = cfg.data.dev[0].model_copy(update={"limit": QUESTIONS + WARMUP_QUESTIONS})
            questions = list(load_questions(spec))
            rates: dict[int, list[float]] = {1: [], 2: []}
            for _ in range(ROUNDS):  # alternately: the machine's load drifts
                for n in rates:
                    cfg_n = load_config(None, base + [f"rollout.num_actors={n}"])
                    rates[n].append(episodes_per_s(cfg_n, model_dir, questions))
        finally:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"# episodes/s: one actor {rates[1]}, two actors {rates[2]}", file=sys.stderr, flush=True)
    figure("rollout.episodes_per_s.actors1", one, "episodes/s")
    figure("rollout.episodes_per_s.actors2", two, "episodes/s", one)
    return 0


if __name__ == "__main__":
    sys.exit(main())

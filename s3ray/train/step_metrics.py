"""What one training step logs: the episodes' batch means and the step's timers."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from s3ray.agent.episode import Episode


def episode_metrics(episodes: list[Episode]) -> dict[str, float]:
    """Batch means of what the episodes did (rank 0, whole batch)."""
    def mean(values) -> float:
        values = [float(v) for v in values]
        return sum(values) / max(len(values), 1)

    return {
        "reward": mean(e.reward for e in episodes),
        "genacc": mean(e.acc_s3 for e in episodes),
        "rag_acc": mean(e.acc_rag for e in episodes),
        "turns": mean(len(e.turns) for e in episodes),
        "docs_selected": mean(len(e.context) for e in episodes),
        "invalid_action_rate": (sum(e.invalid_turns for e in episodes)
                                / max(sum(len(e.turns) for e in episodes), 1)),
        "response_tokens": mean(len(e.response_ids) for e in episodes),
        "action_tokens": mean(sum(e.action_mask) for e in episodes),
        "episodes": float(len(episodes)),
    }


class StepClock:
    """The wall-clock sections of one step and the throughput figures derived from them."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def metrics(self, train_tokens: float, rollout_tokens: float) -> dict[str, float]:
        step_s = time.perf_counter() - self.start
        rollout_s, update_s = self.seconds.get("rollout", 0.0), self.seconds.get("update", 0.0)
        return {"step_s": step_s, "rollout_wait_s": rollout_s, "rollout_wait_share": rollout_s / step_s,
                "update_s": update_s, "weight_sync_s": self.seconds.get("publish", 0.0),
                "train_tokens_per_s": train_tokens / max(update_s, 1e-9),
                "rollout_tokens_per_s": rollout_tokens / max(rollout_s, 1e-9)}


EPISODE_COLUMNS = ("pick", "question", "queries", "selected_titles", "context_docs", "context_chars", "genacc",
                   "rag_acc", "reward")


def episode_table(episodes: list[Episode], size: int) -> dict[str, list]:
    """Up to ``size`` episodes as MLflow table columns: the best and the worst by reward first (a collapse
    shows as the two converging), then the batch's first others. ``queries``: each search turn's query;
    ``selected_titles``: the context's docs the searcher added beyond naive RAG's turn-0 docs."""
    if size < 1 or not episodes:
        return {name: [] for name in EPISODE_COLUMNS}
    ranked = sorted(range(len(episodes)), key=lambda i: float(episodes[i].reward or 0.0))
    picks = {ranked[-1]: "best"}
    picks.setdefault(ranked[0], "worst")
    for i in range(len(episodes)):
        if len(picks) >= size:
            break
        picks.setdefault(i, "sample")
    columns: dict[str, list] = {name: [] for name in EPISODE_COLUMNS}
    for i, pick in list(picks.items())[:size]:
        ep = episodes[i]
        initial = {d.id for d in ep.initial_docs}
        row = {"pick": pick, "question": ep.question, "queries": " | ".join(ep.queries),
               "selected_titles": " | ".join(d.title for d in ep.context if d.id not in initial),
               "context_docs": len(ep.context), "context_chars": sum(len(d.text) for d in ep.context),
               "genacc": ep.acc_s3, "rag_acc": ep.acc_rag, "reward": ep.reward}
        for name in EPISODE_COLUMNS:
            columns[name].append(row[name])
    return columns

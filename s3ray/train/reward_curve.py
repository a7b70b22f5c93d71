"""The training run's curves (reward, GenAcc with s3's and naive RAG's context, the dev metrics) as one
PNG, drawn by rank 0 at the end of training from the MLflow metric history."""

from __future__ import annotations

from pathlib import Path

REWARD_CURVE_LABELS = {"reward": "reward (GBR)", "genacc": "GenAcc (s3 context)", "rag_acc": "GenAcc (naive RAG)",
                       "dev_gbr": "dev GBR", "dev_genacc": "dev GenAcc (s3 context)"}


def reward_curve(series: dict[str, list[tuple[int, float]]], path: Path) -> Path | None:
    """The training curves (``name -> [(step, value)]``, names from :data:`REWARD_CURVE_LABELS`) as a
    PNG; None when there is no reward yet."""
    if not series.get("reward"):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, points in series.items():
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], marker="o", label=REWARD_CURVE_LABELS[name])
    ax.set_xlabel("training step")
    ax.set_ylabel("batch mean")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

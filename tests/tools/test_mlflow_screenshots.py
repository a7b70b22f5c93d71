"""tools/mlflow_screenshots.py: what a demo training run must show, checked by the REST API and in the pages
headless Chromium renders."""

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "mlflow_screenshots", Path(__file__).resolve().parents[2] / "tools" / "mlflow_screenshots.py")
shots = importlib.util.module_from_spec(_spec)
sys.modules["mlflow_screenshots"] = shots  # its dataclass looks its module up there
_spec.loader.exec_module(shots)

STEPS = [1, 2, 3, 4]


def complete_run(checkpoint_dir: Path) -> "shots.RunContents":
    return shots.RunContents(
        metric_steps={"reward": STEPS, "genacc": STEPS, "dev_genacc": [2, 4]},
        artifacts=["config.yaml", "reward_curve.png", *(f"episodes/step_{s:06d}.json" for s in STEPS)],
        tags={"s3ray.stage": "train", "s3ray.checkpoint.step_000002": str(checkpoint_dir)})


def test_a_complete_run_misses_nothing(tmp_path):
    assert shots.missing_items(complete_run(tmp_path)) == []


def test_each_missing_piece_is_named(tmp_path):
    run = complete_run(tmp_path)
    run.metric_steps["dev_genacc"] = [4]  # dev accuracy at one step only
    run.artifacts = [a for a in run.artifacts if a not in ("episodes/step_000003.json", "reward_curve.png")]
    run.tags["s3ray.checkpoint.step_000004"] = str(tmp_path / "gone")
    assert shots.missing_items(run) == [
        "metric dev_genacc: logged at 1 steps, want >= 2",
        "episode table of step 3: no artifact episodes/step_000003.json",
        "artifact reward_curve.png",
        f"checkpoint s3ray.checkpoint.step_000004: folder {tmp_path / 'gone'} does not exist"]
    run.tags = {"s3ray.stage": "train"}
    assert "checkpoint links: no s3ray.checkpoint.* tag" in shots.missing_items(run)


def tiny_train_run(root: Path) -> str:
    """A store holding one train run shaped as the demo's: curves, an episode table per step, the reward
    curve plot, a linked checkpoint folder. Returns its tracking URI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("s3ray", artifact_location=(root / "mlartifacts").as_uri())
    run_id = client.create_run(exp, run_name="tiny-train", tags={"s3ray.stage": "train"}).info.run_id
    for step in STEPS:
        client.log_metric(run_id, "reward", 0.1 * step, step=step)
        client.log_table(run_id, {"question": ["q1", "q2"], "acc_rag": [0.0, 1.0], "reward": [0.1 * step, 0.0]},
                         f"episodes/step_{step:06d}.json")
        if step % 2 == 0:
            client.log_metric(run_id, "dev_genacc", 0.3 + 0.05 * step, step=step)
    plot = root / "reward_curve.png"
    plt.plot(STEPS, [0.1 * s for s in STEPS])
    plt.savefig(plot)
    client.log_artifact(run_id, str(plot))
    (root / "step_000002").mkdir()
    client.set_tag(run_id, "s3ray.checkpoint.step_000002", str(root / "step_000002"))
    client.set_terminated(run_id)
    return uri


@pytest.mark.slow
def test_the_pages_of_a_train_run_show_its_curves_table_and_plot(tmp_path):
    chromium = shutil.which("chromium")
    if chromium is None:
        if os.environ.get("S3RAY_REQUIRE_CHROMIUM"):
            pytest.fail("S3RAY_REQUIRE_CHROMIUM is set but no chromium is on PATH (apt-get install chromium)")
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    uri = tiny_train_run(tmp_path)
    out = tmp_path / "shots"
    assert shots.look(uri, "s3ray", out, chromium, budget_ms=120000) == []
    for name in ("overview.png", "model_metrics.png", "episodes.png", "reward_curve.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 20_000


def test_visible_text_is_what_a_reader_sees():
    dom = ("<html><head><style>.a{color:red}</style><script>var x = '<b>';</script></head>"
           "<body><div>Model  metrics</div><span>reward</span><script>ignored()</script><p> No data </p></body></html>")
    assert shots.visible_text(dom) == "Model metrics reward No data"

"""Look at a finished training run in the MLflow UI as a person would, and check that it shows what it should.

Serves the run's tracking store with ``mlflow server`` on a free loopback port, opens the latest ``train``
run's pages in headless Chromium (Debian's ``chromium`` package) and saves a screenshot of each:

- ``overview.png``       the run: its parameters, metrics and tags (one per kept checkpoint);
- ``model_metrics.png``  MLflow's charts: the training reward and the dev GenAcc / GBR per step;
- ``episodes.png``       the last step's episode table (the artifact viewer, as a table);
- ``reward_curve.png``   the run's reward-curve plot (reward with dev accuracy).

It checks, through MLflow's REST API, what the issue's "done when" asks of a demo run: the reward and the
dev GenAcc at several steps, an episode table for every step, the reward-curve plot, and checkpoints the
run links (``s3ray.checkpoint.*`` tags naming folders that exist); and, in each page's rendered DOM, that
the page shows it (the metric charts' names, the table's columns, the plot). Exit status 1 names what is
missing; the screenshots are written either way.

    python tools/mlflow_screenshots.py --config demo_cpu [key=value ...] --out shots/
    python tools/mlflow_screenshots.py --tracking-uri sqlite:////abs/path/mlflow.db --out shots/

The SPA loads its data after the page: Chromium's ``--virtual-time-budget`` lets it run until its
requests settle (virtual time does not advance while they are pending) before the screenshot; a page
whose DOM still lacks what it should show is taken again with twice the budget, and if it still lacks
it, its visible text is quoted in the failure and its DOM saved beside the screenshot.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

EPISODES_DIR = "episodes"
REWARD_CURVE = "reward_curve.png"
CHECKPOINT_TAG = "s3ray.checkpoint."
CURVES = ("reward", "dev_genacc")  # each at several steps
MIN_STEPS = 2
WIDTH, HEIGHT = 1600, 1000
CHART_ROW_PX = 320  # the metrics page lays charts out 3 a row: the window holds them all (they render in view)
ATTEMPTS = 3
TEXT_SHOWN = 600  # characters of a failing page's text quoted in the failure


@dataclass
class RunContents:
    """What the REST API says a run holds."""

    metric_steps: dict[str, list[int]]  # metric -> the steps it was logged at
    artifacts: list[str]  # artifact paths (root and episodes/)
    tags: dict[str, str]


def missing_items(run: RunContents) -> list[str]:
    """What a demo training run should show but this one lacks (empty: all there)."""
    missing = []
    for name in CURVES:
        steps = run.metric_steps.get(name, [])
        if len(steps) < MIN_STEPS:
            missing.append(f"metric {name}: logged at {len(steps)} steps, want >= {MIN_STEPS}")
    tables = set(run.artifacts)
    for step in run.metric_steps.get("reward", []):
        if episode_table(step) not in tables:
            missing.append(f"episode table of step {step}: no artifact {episode_table(step)}")
    if REWARD_CURVE not in tables:
        missing.append(f"artifact {REWARD_CURVE}")
    checkpoints = {k: v for k, v in run.tags.items() if k.startswith(CHECKPOINT_TAG)}
    if not checkpoints:
        missing.append(f"checkpoint links: no {CHECKPOINT_TAG}* tag")
    missing += [f"checkpoint {k}: folder {v} does not exist" for k, v in checkpoints.items() if not Path(v).is_dir()]
    return missing


def episode_table(step: int) -> str:
    return f"{EPISODES_DIR}/step_{step:06d}.json"  # as s3ray.train.trainer names them


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tracking_uri: str, port: int, log_path: Path, timeout_s: float = 180.0) -> subprocess.Popen:
    """``mlflow server`` on the store, once ``/health`` answers."""
    log = log_path.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {proc.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(1.0)
    proc.terminate()
    raise RuntimeError(f"mlflow server did not answer /health in {timeout_s:.0f} s; see {log_path}")


def run_contents(client, run_id: str) -> RunContents:
    run = client.get_run(run_id)
    steps = {name: sorted(m.step for m in client.get_metric_history(run_id, name)) for name in run.data.metrics}
    artifacts = [f.path for f in client.list_artifacts(run_id)]
    artifacts += [f.path for f in client.list_artifacts(run_id, EPISODES_DIR)]
    return RunContents(steps, artifacts, dict(run.data.tags))


def latest_train_run(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no MLflow experiment {experiment!r} in this store")
    runs = client.search_runs([exp.experiment_id], "tags.`s3ray.stage` = 'train'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise SystemExit(f"experiment {experiment!r} has no train run")
    return runs[0]


def screenshot(chromium: str, url: str, png: Path, budget_ms: int, height: int = HEIGHT) -> str:
    """Save ``url`` as ``png`` once the page settled; returns its rendered DOM."""
    png.unlink(missing_ok=True)  # an earlier run's screenshot must not pass for this one
    with tempfile.TemporaryDirectory(prefix="s3ray-chromium-") as profile:
        out = subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             # Without it about half the metrics pages were captured with an empty chart grid, at any
             # budget (measured: 9 of 18; with it 40 of 40, idle and under load).
             "--run-all-compositor-stages-before-draw",
             "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={WIDTH},{height}",
             f"--virtual-time-budget={budget_ms}", f"--screenshot={png}", "--dump-dom", url],
            capture_output=True, text=True, timeout=budget_ms / 1000 + 120, check=True)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {url}: {out.stderr[-2000:]}")
    return out.stdout


def visible_text(dom: str) -> str:
    """The text a person would read on a rendered page: tags, scripts and styles dropped, spaces collapsed."""
    texts: list[str] = []

    class Text(HTMLParser):
        skip = 0

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("script", "style")

        def handle_endtag(self, tag):
            self.skip -= tag in ("script", "style") and self.skip > 0

        def handle_data(self, data):
            if not self.skip and data.strip():
                texts.append(data.strip())

    Text().feed(dom)
    return " ".join(" ".join(texts).split())


def table_columns(client, run_id: str, path: str) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())["columns"]


def look(tracking_uri: str, experiment: str, out: Path, chromium: str, budget_ms: int) -> list[str]:
    """Screenshots of the latest train run into ``out``; returns what is missing."""
    from mlflow.tracking import MlflowClient

    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = start_server(tracking_uri, port, out / "mlflow_server.log")
    try:
        base = f"http://127.0.0.1:{port}"
        client = MlflowClient(tracking_uri=base)  # the REST API the UI reads
        run = latest_train_run(client, experiment)
        run_id = run.info.run_id
        contents = run_contents(client, run_id)
        missing = missing_items(contents)
        page = f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}"
        # (screenshot, page, window height, texts its DOM must hold: a chart's title is its own element)
        chart_rows = -(-len(contents.metric_steps) // 3)
        pages = [("overview.png", f"{page}/overview", HEIGHT, [run.info.run_name]),
                 ("model_metrics.png", f"{page}/model-metrics", HEIGHT + chart_rows * CHART_ROW_PX,
                  [f">{name}<" for name in CURVES])]
        tables = sorted(p for p in contents.artifacts if p.startswith(f"{EPISODES_DIR}/"))
        if tables:
            pages.append(("episodes.png", f"{page}/artifacts/{tables[-1]}", HEIGHT,
                          [tables[-1], *table_columns(client, run_id, tables[-1])]))
        if REWARD_CURVE in contents.artifacts:
            pages.append(("reward_curve.png", f"{page}/artifacts/{REWARD_CURVE}", HEIGHT, ["<img", REWARD_CURVE]))
        for name, url, height, texts in pages:
            for attempt in range(ATTEMPTS):  # a loaded machine may leave charts loading when the budget ends
                dom = screenshot(chromium, url, out / name, budget_ms * 2 ** attempt, height)
                lacking = [t for t in texts if t not in dom]
                if not lacking:
                    break
            if lacking:  # what it showed instead, for a failure read only in a CI log
                dom_path = (out / name).with_suffix(".html")
                dom_path.write_text(dom)
                shown = visible_text(dom)[:TEXT_SHOWN]
                missing += [f"{name}: the page does not show {t!r} ({url}); it shows: {shown!r} "
                            f"(DOM in {dom_path})" for t in lacking]
            print(f"{out / name}: {url}", flush=True)
        return missing
    finally:
        server.terminate()
        server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=None, help="a preset (its tracking store and experiment)")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--tracking-uri", default=None, help="the store (default: the config's)")
    parser.add_argument("--experiment", default=None, help="the experiment (default: the config's)")
    parser.add_argument("--out", type=Path, required=True, help="the folder for the screenshots")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--budget-ms", type=int, default=120000, help="virtual time a page gets to render")
    args = parser.parse_args(argv)
    tracking_uri, experiment = args.tracking_uri, args.experiment
    if tracking_uri is None or experiment is None:
        from s3ray.config import load_config

        cfg = load_config(args.config, args.overrides)
        tracking_uri, experiment = tracking_uri or cfg.tracking.tracking_uri, experiment or cfg.tracking.experiment
    missing = look(tracking_uri, experiment, args.out, args.chromium, args.budget_ms)
    for item in missing:
        print(f"MISSING: {item}", file=sys.stderr)
    print("all shown" if not missing else f"{len(missing)} missing", flush=True)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())

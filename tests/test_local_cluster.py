"""`s3ray demo`'s own Ray head node (s3ray.demo.LocalCluster) on a machine where another one starts too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port

from s3ray.config import load_config
from s3ray.demo import LocalCluster, auth_headers

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_clusters_started_at_once_each_get_their_own_dashboard(tmp_path):
    """Two demos started in the same second once both took the configured dashboard port as free; one
    `ray start` lost it, and that demo submitted its jobs to the other's cluster."""
    port = free_port()
    cfg = load_config("test", [f"cluster.dashboard_port={port}", "cluster.num_cpus=1",
                               "cluster.object_store_mb=100"])
    barrier = threading.Barrier(2)
    clusters: list[LocalCluster | None] = [None, None]
    errors: list[BaseException] = []

    def start(i: int) -> None:
        barrier.wait()
        try:
            clusters[i] = LocalCluster.start(cfg, tmp_path / f"head{i}.log")
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(400)
    try:
        assert not errors, errors
        urls = [c.dashboard_url for c in clusters]
        assert f"http://127.0.0.1:{port}" in urls and len(set(urls)) == 2, urls
        # Each dashboard is its own cluster's: two Ray sessions, both head processes still up.
        sessions = {httpx.get(f"{url}/api/version", headers=auth_headers(), timeout=30).json()["session_name"]
                    for url in urls}
        assert len(sessions) == 2, sessions
        assert all(c.process.poll() is None for c in clusters)
    finally:
        for cluster in clusters:
            if cluster is not None:
                cluster.stop()


def demo_process(tmp_path, session_cfg, data_dir, dashboard_port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(S3RAY_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "s3ray.cli", "demo", "--config", "test", f"paths.work_dir={tmp_path / 'work'}",
           f"corpus.path={session_cfg.corpus.path}", f"cluster.dashboard_port={dashboard_port}",
           "demo.stages=[index]"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)


def test_a_demo_stopped_by_sigterm_stops_its_cluster(tmp_path, session_cfg, data_dir):
    """`kill <demo>` (SIGTERM, as `timeout` or a scheduler sends) once left the demo's Ray head running:
    it lives in its own session, and only the demo's cleanup stops it. The signal here comes the moment the
    dashboard line is read: it once beat the demo's handler (CI: the demo died of the signal itself)."""
    proc = demo_process(tmp_path, session_cfg, data_dir, free_port())
    url, seen = None, []
    for line in proc.stdout:  # "Ray dashboard: http://127.0.0.1:PORT (token: ...)" once the head is up
        seen.append(line)
        if line.startswith("Ray dashboard: "):
            url = line.split()[2]
            break
    assert url is not None, "".join(seen[-30:])
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, rest[-3000:]
    assert "stopping the local Ray cluster" in rest
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/api/version", timeout=5)


def test_a_demo_stopped_by_sigterm_while_its_cluster_starts_leaves_no_head(tmp_path, session_cfg, data_dir):
    """A SIGTERM while `ray start` is still coming up: the head must not go on to serve a dashboard nobody
    will stop."""
    port = free_port()
    proc = demo_process(tmp_path, session_cfg, data_dir, port)
    head_log = tmp_path / "work" / "logs" / "ray_head.log"  # opened just before `ray start` is launched
    deadline = time.monotonic() + 120
    while not head_log.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert head_log.exists(), proc.communicate(timeout=60)[0][-3000:]
    time.sleep(1.0)  # `ray start` is running; its dashboard takes seconds more
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, rest[-3000:]
    assert "Ray dashboard: " not in rest, "the signal came after the start; this test wants it during"
    deadline = time.monotonic() + 30  # an orphaned head would bring its dashboard up within this
    while time.monotonic() < deadline:
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/api/version", timeout=2)
        time.sleep(1.0)

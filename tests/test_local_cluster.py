"""`s3ray demo`'s own Ray head node (s3ray.demo.LocalCluster) on a machine where another one starts too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
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


def test_a_demo_stopped_by_sigterm_stops_its_cluster(tmp_path, session_cfg, data_dir):
    """`kill <demo>` (SIGTERM, as `timeout` or a scheduler sends) once left the demo's Ray head running:
    it lives in its own session, and only the demo's cleanup stops it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(S3RAY_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "s3ray.cli", "demo", "--config", "test", f"paths.work_dir={tmp_path / 'work'}",
           f"corpus.path={session_cfg.corpus.path}", f"cluster.dashboard_port={free_port()}",
           "demo.stages=[index]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
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

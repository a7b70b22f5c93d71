"""The README's commands: each CPU Serve YAML under Ray Serve's own CLI (`serve run`) on a local cluster,
answering at its endpoint; and `s3ray serve-retriever` stopping on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import free_port

from s3ray.demo import LocalCluster
from s3ray.generation import prompts
from s3ray.types import Doc

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = Path(sys.executable).with_name("ray")
SERVE_BIN = Path(sys.executable).with_name("serve")

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def wait_for(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(1)
    pytest.fail(f"{url} did not answer in {timeout_s:.0f}s:\n{log.read_text()[-4000:]}")


def sigint_as_in_a_terminal() -> None:
    """Popen's ``preexec_fn``: the child gets SIGINT's default action, as a command typed in a terminal.

    A shell without job control starts its background commands (``nohup ... &``) with SIGINT ignored, and
    children inherit that; Python then installs no KeyboardInterrupt handler, and `serve run` sleeps
    through Ctrl-C (measured: CI launched that way failed both `serve run` tests on the cleanup wait).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(proc: subprocess.Popen, timeout_s: float) -> float:
    """Ctrl-C the process group; seconds until it exited (killed, and a failure, after ``timeout_s``)."""
    started = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"still running {timeout_s:.0f}s after SIGINT")
    return time.monotonic() - started


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, session_cfg, data_dir):
    """A `ray start` head node of the test's own (as a user's), its workers importing this checkout."""
    env_before = dict(os.environ)
    os.environ.update(S3RAY_DATA_DIR=str(data_dir), PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    try:
        head = LocalCluster.start(session_cfg, tmp_path_factory.mktemp("head") / "ray_head.log")
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    yield head
    head.stop()


@pytest.fixture(scope="module")
def http_port():
    """One proxy port for both YAMLs: Serve's proxy keeps the port it started with for as long as Serve
    runs on the cluster, so a second `serve run` with another port would be unreachable if the first
    one's shutdown left Serve up."""
    return free_port()


@pytest.mark.parametrize("name", ["retriever", "generator_reader"])
def test_serve_run_starts_the_cpu_yaml(name, cluster, session_cfg, index_dir, tmp_path, http_port):
    config = yaml.safe_load((REPO / "serve_configs" / f"{name}.yaml").read_text())
    port = http_port
    config["http_options"]["port"] = port  # the YAML's 8000 may be taken on a shared machine
    [app] = config["applications"]
    # This machine's paths on top of the YAML's own settings (the test's small corpus and its index).
    app["args"]["config"] = "test"
    app["args"]["overrides"] += [f"paths.work_dir={session_cfg.paths.work_dir}",
                                 f"corpus.path={session_cfg.corpus.path}", f"serve.port={port}"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / "serve_run.log"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(SERVE_BIN), "run", "--address", cluster.address, str(path)], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
                                preexec_fn=sigint_as_in_a_terminal)
    base = f"http://127.0.0.1:{port}"
    try:
        if name == "retriever":
            wait_for(f"{base}/retrieve/health", proc, log)
            hits = httpx.post(f"{base}/retrieve", json={"queries": ["Tinted Windows band"], "topk": 2},
                              timeout=60).json()["result"]
            assert len(hits) == 1 and len(hits[0]) == 2 and set(hits[0][0]) == {"id", "contents"}
        else:
            wait_for(f"{base}/v1/models", proc, log)
            docs = [Doc("1", "Eiffel Tower", "The tower is 330 metres tall."),
                    Doc("2", "Amazon", "The Amazon River is in South America.")]
            body = httpx.post(f"{base}/v1/chat/completions", timeout=60, json={
                "messages": prompts.answer_messages("How tall is the Eiffel Tower?", docs)}).json()
            assert "330 metres" in body["choices"][0]["message"]["content"]
    finally:
        # `serve run` shuts its apps down on Ctrl-C, leaving the cluster to the next YAML.
        interrupt(proc, timeout_s=60)  # `serve run` shuts its apps down in ~4 s (measured under load too)


def test_s3ray_serve_retriever_stops_on_ctrl_c(session_cfg, index_dir, tmp_path, data_dir):
    """`s3ray serve-retriever` on its own local cluster: Ctrl-C stops it within 10 s, and it says so."""
    port = free_port()
    log = tmp_path / "serve_retriever.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(S3RAY_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "s3ray.cli", "serve-retriever", "--config", "test",
           f"paths.work_dir={session_cfg.paths.work_dir}", f"corpus.path={session_cfg.corpus.path}",
           f"serve.port={port}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                start_new_session=True, preexec_fn=sigint_as_in_a_terminal)
    try:
        wait_for(f"http://127.0.0.1:{port}/retrieve/health", proc, log)
        deadline = time.monotonic() + 60  # the "(Ctrl-C to stop)" line follows the health check
        while "Ctrl-C to stop" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        seconds = interrupt(proc, timeout_s=30)
    output = log.read_text()
    print(f"serve-retriever stopped {seconds:.1f} s after SIGINT")
    assert seconds < 10, f"took {seconds:.1f}s to stop:\n{output[-3000:]}"
    assert proc.returncode == 0, output[-3000:]
    assert "SIGINT: stopping the local cluster" in output and "stopped in" in output

"""`make demo`'s failure paths. The demo end to end, as the first command on a new machine, runs in
tests/test_learning_check.py (the learning check is a whole demo: every stage, then a re-run)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from s3ray import demo
from s3ray.config import load_config
from s3ray.demo import run_demo


class Submitted(Exception):
    pass


def test_ray_address_names_where_jobs_go(tmp_path, monkeypatch):
    """RAY_ADDRESS=http://head:8265 (as `ray job submit` reads it) is where the demo submits, and no local
    cluster starts."""
    import ray.job_submission

    addresses = []

    def fake_client(address, headers=None):
        addresses.append(address)
        raise Submitted

    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", fake_client)
    monkeypatch.setattr(demo.LocalCluster, "start", lambda *a, **k: pytest.fail("started a local cluster"))
    cfg = load_config("demo_ci", [f"paths.work_dir={tmp_path}", "cluster.dashboard_host=10.9.9.9"])
    for address, expected in [("http://head.example:8265/", "http://head.example:8265"),
                              ("head.example:6379", "http://head.example:8265"),
                              ("auto", "http://10.9.9.9:8265")]:
        monkeypatch.setenv("RAY_ADDRESS", address)
        with pytest.raises(Submitted):
            run_demo(cfg)
        assert addresses[-1] == expected


def test_auth_token_is_created_where_ray_reads_it(tmp_path, monkeypatch):
    """A fresh home has no ~/.ray/auth_token, and `ray start` does not make one: the demo does, with Ray's
    own `ray get-auth-token --generate`, and a second call keeps it."""
    from pathlib import Path

    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    ray_bin = str(Path(sys.executable).with_name("ray"))
    token = tmp_path / ".ray" / "auth_token"
    assert f"created {token}" in demo.ensure_auth_token(ray_bin)
    first = token.read_text()
    assert len(first.strip()) >= 16
    assert demo.ensure_auth_token(ray_bin) == f"token: {token}" and token.read_text() == first
    printed = subprocess.run([ray_bin, "get-auth-token"], capture_output=True, text=True, check=True)
    assert printed.stdout.strip() == first.strip()  # the file Ray itself reads
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    with pytest.raises(FileNotFoundError, match="RAY_AUTH_TOKEN_PATH"):
        demo.ensure_auth_token(ray_bin)


def test_missing_inputs_are_named_before_a_cluster_starts(tmp_path, capsys):
    cfg = load_config("demo_ci", [f"paths.work_dir={tmp_path}", f"corpus.path={tmp_path}/missing.jsonl"])
    assert run_demo(cfg) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl" in err and "paths.data_dir" in err
    assert not (tmp_path / "logs" / "ray_head.log").exists()  # no cluster was started for it
    generated = load_config("learning_check", [f"paths.work_dir={tmp_path}", f"paths.data_dir={tmp_path}/data"])
    assert demo.missing_inputs(generated) == []  # its generate stage writes them


@pytest.mark.ray
def test_a_failed_stage_is_named_and_fails_the_demo(tmp_path, capsys):
    corpus = tmp_path / "broken.jsonl"
    corpus.write_text("this line is not JSON\n")
    cfg = load_config("demo_ci", [f"paths.work_dir={tmp_path}", f"corpus.path={corpus}",
                                  "demo.stages=[index]", "cluster.num_cpus=2"])
    assert run_demo(cfg) == 1
    captured = capsys.readouterr()
    assert "stage 'index'" in captured.err and "FAILED" in captured.err
    # The job's own log, streamed line by line under the stage's prefix: the job's traceback is there.
    assert any(line.startswith("[index] ") and "Error" in line for line in captured.out.splitlines())


@pytest.mark.ray
def test_a_stage_past_its_timeout_is_stopped_and_the_knob_named(tmp_path, capsys):
    cfg = load_config("demo_ci", [f"paths.work_dir={tmp_path}", "demo.stages=[index]", "demo.stage_timeout_s=1",
                                  "cluster.num_cpus=2"])
    assert run_demo(cfg) == 1
    err = capsys.readouterr().err
    assert "stage 'index'" in err and "TIMEOUT" in err
    assert "demo.stage_timeout_s=1" in err  # the user learns which setting to raise


class SlowStreamJob:
    """A job's client as Ray's behaves: the status turns terminal when the job ends, while the log
    stream delivers part of the log and closes only seconds later (or breaks)."""

    def __init__(self, log: str, streamed: int, stream_error: bool = False):
        self.log, self.streamed, self.stream_error = log, streamed, stream_error
        self.polls = 0

    def get_job_status(self, job_id):
        from ray.job_submission import JobStatus

        self.polls += 1
        return JobStatus.SUCCEEDED if self.polls >= 3 else JobStatus.RUNNING

    def get_job_logs(self, job_id):
        return self.log

    async def tail_job_logs(self, job_id):
        yield self.log[:self.streamed // 2]
        yield self.log[self.streamed // 2:self.streamed]
        if self.stream_error:
            raise ConnectionError("websocket closed")
        await asyncio.sleep(30)  # Ray's stream: closes well after the job's end
        yield self.log[self.streamed:]


@pytest.mark.parametrize("stream_error", [False, True])
def test_a_finished_stage_is_seen_by_its_status_and_its_whole_log_printed_once(capsys, monkeypatch, stream_error):
    monkeypatch.setattr(demo, "JOB_STATUS_POLL_S", 0.05)
    log = "".join(f"line {i}\n" for i in range(40)) + "last line without a newline"
    job = SlowStreamJob(log, streamed=123, stream_error=stream_error)  # 123: the stream stops mid-line
    started = time.monotonic()
    status = asyncio.run(demo._follow_job(job, "job-1", demo.StageLog("train")))
    assert time.monotonic() - started < 5  # not the stream's 30 s
    assert str(status) == "SUCCEEDED"
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"[train] {line}" for line in log.split("\n")]

"""`make demo`: the whole s3 loop on a local Ray cluster, each stage a Ray job of its own.

index -> deploy (retriever + generator Serve apps) -> precompute (naive-RAG cache) -> train -> infer
-> evaluate. The demo starts a local head node with the dashboard on 127.0.0.1, submits each stage
with `JobSubmissionClient` (exactly what `ray job submit` does), stops at the first failed stage and
names it, prints where to look, and tears the cluster down unless `demo.keep_running=true`.
Re-running reuses finished stages: a stage whose resolved config is unchanged is skipped, and every
stage resumes its own partial work.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import yaml

from s3ray.cluster import worker_env
from s3ray.config import REPO_ROOT, S3Config
from s3ray.ports import free_ports, port_is_free

# demo stage -> the `s3ray` stage its job runs; "deploy" always runs, since Serve apps live and die with the
# cluster.
JOB_STAGES = {
    "generate": "generate-bridge",
    "index": "index",
    "deploy": "deploy",
    "precompute": "precompute",
    "train": "train",
    "infer": "infer",
    "evaluate": "evaluate",
}
ALWAYS_RUN = {"deploy"}
JOB_STATUS_POLL_S = 0.5  # how soon a finished stage is seen finished
# Ray 2.60 token authentication: the local cluster always uses it. `ray start` does not create a token
# (only a local `ray.init()` does), so the demo makes one the way Ray documents, `ray get-auth-token
# --generate`, which writes ~/.ray/auth_token; the Jobs client of this process sends it itself.
AUTH_MODE_ENV = "RAY_AUTH_MODE"


def auth_token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))


def ensure_auth_token(ray_bin: str) -> str:
    """Make sure Ray finds a token (RAY_AUTH_TOKEN, else the token file); say where it is."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "token: from $RAY_AUTH_TOKEN"
    path = auth_token_path()
    if path.exists():
        return f"token: {path}"
    if "RAY_AUTH_TOKEN_PATH" in os.environ:  # Ray would read only that file, and it generates elsewhere
        raise FileNotFoundError(f"RAY_AUTH_TOKEN_PATH names {path}, which does not exist; unset it, or "
                                "create the token with `ray get-auth-token --generate` and move it there")
    subprocess.run([ray_bin, "get-auth-token", "--generate"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, env={**os.environ, AUTH_MODE_ENV: "token"})
    if not path.exists():
        raise FileNotFoundError(f"`ray get-auth-token --generate` left no token at {path}")
    return f"token: created {path} (`ray get-auth-token` prints it; the dashboard asks for it)"


def jobs_address(cfg: S3Config, address: str) -> str:
    """The dashboard URL that takes job submissions on an existing cluster named by ``address``.

    ``http(s)://head:8265`` is that URL already (how Ray's own ``ray job submit`` reads RAY_ADDRESS);
    a GCS address ``head:6379`` gives its host with ``cluster.dashboard_port``; ``auto`` gives
    ``cluster.dashboard_host``.
    """
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    host = address.rsplit(":", 1)[0] if ":" in address else cfg.cluster.dashboard_host
    return f"http://{host}:{cfg.cluster.dashboard_port}"


def auth_headers() -> dict[str, str]:
    """The Authorization header for the cluster's dashboard (RAY_AUTH_TOKEN, else the token file)."""
    path = auth_token_path()
    token = os.environ.get("RAY_AUTH_TOKEN") or (path.read_text().strip() if path.exists() else "")
    return {"Authorization": f"Bearer {token}"} if token else {}


@contextmanager
def _cluster_start_lock() -> Iterator[None]:
    """Held from choosing a cluster's ports until its dashboard answers, by every s3ray process of this
    user on the machine. Without it, two demos started in the same second both found the dashboard port
    free; one `ray start` lost it, and that demo's readiness check accepted the other's dashboard and
    submitted its jobs to the other's cluster."""
    import fcntl
    import tempfile

    path = Path(tempfile.gettempdir()) / f"s3ray-cluster-start-{os.getuid()}.lock"
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another s3ray process to start its Ray cluster ({path}) ...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass
class LocalCluster:
    """A Ray head node owned by this process: started with `ray start --head --block`, stopped by
    signalling its process group, so nothing else on a shared machine is touched."""

    process: subprocess.Popen
    address: str
    dashboard_url: str

    @classmethod
    def start(cls, cfg: S3Config, log_path: Path) -> LocalCluster:
        with _cluster_start_lock():
            return cls._start(cfg, log_path)

    @classmethod
    def _start(cls, cfg: S3Config, log_path: Path) -> LocalCluster:
        host = cfg.cluster.dashboard_host
        dash_port = cfg.cluster.dashboard_port
        ports = iter(free_ports(7))
        if not port_is_free(host, dash_port):
            dash_port = next(ports)
        gcs_port = cfg.demo.ray_port or next(ports)
        ray_bin = str(Path(sys.executable).with_name("ray"))
        print(ensure_auth_token(ray_bin), flush=True)
        cmd = [
            ray_bin, "start", "--head", "--block", "--disable-usage-stats",
            f"--port={gcs_port}", f"--num-cpus={cfg.cluster.num_cpus or os.cpu_count()}",
            "--include-dashboard=true", f"--dashboard-host={host}", f"--dashboard-port={dash_port}",
            # Ports whose defaults are fixed would collide with any other Ray cluster on the machine.
            f"--ray-client-server-port={next(ports)}", f"--dashboard-agent-listen-port={next(ports)}",
            f"--dashboard-agent-grpc-port={next(ports)}", f"--runtime-env-agent-port={next(ports)}",
            f"--metrics-export-port={next(ports)}",
        ]
        if cfg.cluster.object_store_mb:
            cmd.append(f"--object-store-memory={cfg.cluster.object_store_mb * 1024 * 1024}")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", AUTH_MODE_ENV: "token",
               "RAY_worker_niceness": str(cfg.cluster.worker_niceness)}
        env.pop("RAY_ADDRESS", None)
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        cluster = cls(process, f"127.0.0.1:{gcs_port}", f"http://{host}:{dash_port}")
        try:
            cluster._wait_ready(log_path)
        except BaseException:  # a SIGTERM (as SystemExit) or Ctrl-C while it starts: no head left behind
            cluster.stop()
            raise
        return cluster

    def _wait_ready(self, log_path: Path, timeout_s: float = 180) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"`ray start` exited with {self.process.returncode}; "
                                   f"{_log_tail(log_path)}")
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=2):
                    return
            except urllib.error.HTTPError:
                return  # it answers: with token auth on, 401 to a request without the token
            except OSError:
                time.sleep(1)
        self.stop()
        raise TimeoutError(f"the Ray dashboard did not come up at {self.dashboard_url} in {timeout_s}s; "
                           f"{_log_tail(log_path)}")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait_s)
                return
            except subprocess.TimeoutExpired:
                continue


def _exit_on_sigterm(signum, _frame) -> None:
    print(f"{signal.Signals(signum).name}: stopping ...", file=sys.stderr, flush=True)
    raise SystemExit(128 + signum)


def _log_tail(path: Path, lines: int = 30) -> str:
    """The end of a log, for an error message that must be readable where only the message is seen (CI)."""
    try:
        tail = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"no log at {path}"
    return f"last lines of {path}:\n" + "\n".join(tail)


def _stage_hash(cfg_dict: dict, stage: str) -> str:
    relevant = {k: v for k, v in cfg_dict.items() if k not in ("demo", "cluster")}
    return hashlib.sha256(json.dumps([stage, relevant], sort_keys=True).encode()).hexdigest()[:16]


def _run_job(client, stage: str, cfg_path: Path, env_vars: dict, timeout_s: int) -> tuple[str, float]:
    """Submit one stage as a Ray job, print its logs while it runs, return (final status, seconds)."""
    from ray.job_submission import JobStatus

    entrypoint = f"{sys.executable} -m s3ray {JOB_STAGES[stage]} --config {cfg_path}"
    runtime_env = {"working_dir": str(REPO_ROOT), "env_vars": env_vars,
                   "excludes": [".venv", "runs", ".git", "*.db", "mlartifacts"]}
    start = time.time()
    job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env,
                               submission_id=f"s3ray-{stage}-{int(start)}")
    try:
        status = asyncio.run(asyncio.wait_for(_follow_job(client, job_id, StageLog(stage)), timeout_s))
    except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
        client.stop_job(job_id)
        return "TIMEOUT", time.time() - start
    return str(JobStatus(status)), time.time() - start


class StageLog:
    """A job's log text as it arrives, printed line by line with the stage as prefix; chunks may split a
    line. ``received`` counts the characters taken, an offset into the job's log file."""

    def __init__(self, stage: str):
        self.stage, self.received, self.pending = stage, 0, ""

    def feed(self, text: str) -> None:
        self.received += len(text)
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            print(f"[{self.stage}] {line}", flush=True)

    def close(self) -> None:
        if self.pending:
            print(f"[{self.stage}] {self.pending}", flush=True)
            self.pending = ""


async def _follow_job(client, job_id: str, log: StageLog):
    """Print the job's log while it runs and return its terminal status.

    The lines come from Ray's log stream (``tail_job_logs``: a websocket, so a running job's log is not
    fetched again and again). The job's end comes from its status, polled: the stream closes seconds
    after the job ends (measured: a 1-s job was seen finished after 6.1 s through the stream, 1.1 s
    through its status; ~5 s for each of a demo's stages). Once the job has ended its log file is
    complete: it is fetched once, and the part the stream had not delivered is printed."""

    async def stream() -> None:
        async for chunk in client.tail_job_logs(job_id):
            log.feed(chunk)

    tail = asyncio.create_task(stream())
    try:
        while not (status := await asyncio.to_thread(client.get_job_status, job_id)).is_terminal():
            await asyncio.sleep(JOB_STATUS_POLL_S)
    finally:
        tail.cancel()
        with suppress(asyncio.CancelledError, Exception):  # a broken stream loses nothing: the rest
            await tail                                      # is read from the log file below
    log.feed((await asyncio.to_thread(client.get_job_logs, job_id))[log.received:])
    log.close()
    return status


def _summary(cfg: S3Config, cluster_url: str, timings: dict[str, float]) -> str:
    table = cfg.evaluation.dir / "table.md"
    curve = cfg.train.reward_curve_path
    lines = ["", "=" * 72, "s3ray demo finished", "=" * 72]
    lines += [f"  {stage:<11} {seconds:7.1f} s" for stage, seconds in timings.items()]
    lines += [f"  {'total':<11} {sum(timings.values()):7.1f} s", ""]
    lines.append(f"Ray dashboard:  {cluster_url}" + (f" (login token in {auth_token_path()})"
                                                      if cfg.demo.keep_running else " (stopped)"))
    lines.append(f"MLflow:         mlflow ui --backend-store-uri {cfg.tracking.tracking_uri} --port 5000")
    lines.append(f"Reports:        {cfg.evaluation.dir}")
    lines.append(f"Reward curve:   {curve}" + ("" if curve.exists() else " (missing)"))
    lines.append("")
    lines.append(table.read_text() if table.exists() else f"(no result table at {table})")
    return "\n".join(lines)


def missing_inputs(cfg: S3Config) -> list[Path]:
    """The corpus and question files the demo reads, where none of its stages writes them (``generate``
    writes the learning check's world)."""
    if "generate" in cfg.demo.stages:
        return []
    paths = [Path(cfg.corpus.path), *(Path(spec.path) for spec in (*cfg.data.train, *cfg.data.dev))]
    return [path for path in paths if not path.exists()]


def run_demo(cfg: S3Config) -> int:
    from ray.job_submission import JobSubmissionClient

    work = cfg.paths.work_dir
    work.mkdir(parents=True, exist_ok=True)
    cfg_dict = cfg.to_dict()
    cfg_path = work / "resolved_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    markers = work / ".stages"
    markers.mkdir(exist_ok=True)
    unknown = [s for s in cfg.demo.stages if s not in JOB_STAGES]
    if unknown:
        print(f"s3ray demo: unknown stages {unknown}; known: {list(JOB_STAGES)}", file=sys.stderr)
        return 2
    missing = missing_inputs(cfg)
    if missing:  # before a cluster starts: the first stage would fail on it minutes later
        print(f"s3ray demo: missing input files: {', '.join(map(str, missing))}. The data folder is "
              f"{cfg.paths.data_dir} (by default ../shared/data beside the checkout); set "
              "paths.data_dir=... or S3RAY_DATA_DIR.", file=sys.stderr)
        return 2

    external = cfg.cluster.address or os.environ.get("RAY_ADDRESS")
    cluster = None
    env_vars = worker_env(cfg)
    timings: dict[str, float] = {}
    failed = None
    # SIGTERM's default action would skip the `finally` below, and the cluster (in its own session, so
    # that stopping it touches nothing else) would outlive the demo; as SystemExit it is stopped. The
    # handler goes in before the cluster starts: a SIGTERM right after the dashboard line once came first.
    sigterm_before = (signal.signal(signal.SIGTERM, _exit_on_sigterm)
                      if threading.current_thread() is threading.main_thread() else None)
    try:
        if external:  # jobs go to the existing cluster's dashboard (the Jobs API lives there)
            dashboard_url = jobs_address(cfg, external)
            print(f"submitting to the Ray cluster at {dashboard_url}", flush=True)
        else:
            print("starting a local Ray cluster ...", flush=True)
            cluster = LocalCluster.start(cfg, work / "logs" / "ray_head.log")
            dashboard_url = cluster.dashboard_url
            print(f"Ray dashboard: {dashboard_url} (token: {auth_token_path()})", flush=True)
        client = JobSubmissionClient(dashboard_url, headers=auth_headers())
        for stage in cfg.demo.stages:
            marker = markers / f"{stage}.done"
            digest = _stage_hash(cfg_dict, stage)
            if stage not in ALWAYS_RUN and marker.exists() and marker.read_text() == digest:
                print(f"== {stage}: finished in an earlier run with this config; reused", flush=True)
                timings[stage] = 0.0
                continue
            print(f"== {stage}: submitting Ray job", flush=True)
            status, seconds = _run_job(client, stage, cfg_path, env_vars, cfg.demo.stage_timeout_s)
            timings[stage] = seconds
            if status != "SUCCEEDED":
                failed = (stage, status)
                break
            marker.write_text(digest)
    finally:
        if cluster is not None and not cfg.demo.keep_running:
            print("stopping the local Ray cluster ...", flush=True)
            cluster.stop()
        if sigterm_before is not None:
            signal.signal(signal.SIGTERM, sigterm_before)
    if failed:
        print(f"\ns3ray demo: stage '{failed[0]}' ended with status {failed[1]}; "
              f"its log is above (and in the dashboard's Jobs view).", file=sys.stderr)
        if failed[1] == "TIMEOUT":  # a long training is stopped, not lost: say how to go on
            print(f"It ran past demo.stage_timeout_s={cfg.demo.stage_timeout_s}; run the demo again with a "
                  f"larger one: a train stage resumes from its last checkpoint.", file=sys.stderr)
        return 1
    print(_summary(cfg, dashboard_url, timings), flush=True)
    return 0

"""One job entrypoint: ``python -m s3ray <stage>`` is the ``s3ray`` command, and the demo's jobs use it."""

import subprocess
import sys

import yaml

from s3ray.cli import STAGES
from s3ray.demo import JOB_STAGES


def test_python_m_s3ray_runs_the_cli_with_its_overrides():
    out = subprocess.run([sys.executable, "-m", "s3ray", "config", "--config", "test", "train.steps=7"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert yaml.safe_load(out.stdout)["train"]["steps"] == 7


def test_python_m_s3ray_rejects_an_unknown_stage():
    out = subprocess.run([sys.executable, "-m", "s3ray", "no-such-stage"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_every_demo_job_runs_a_cli_stage():
    assert set(JOB_STAGES.values()) <= set(STAGES)

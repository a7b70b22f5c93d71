"""Progress lines: done/total, rate and ETA in one style, and logged at a bounded rate."""

from __future__ import annotations

import logging

from s3ray.progress import ProgressLog, progress_line


def test_line_has_counts_rate_elapsed_and_eta():
    # 3 of 10 steps in 30 s: 10 s a step, so 7 more take 70 s.
    assert progress_line("train", 3, 10, 30.0, "step") == \
        "train: 3/10 steps | 10.00s/step | elapsed 00:30 | ETA 01:10"
    # Fast units: a rate per second, 60 left at 4/s.
    assert progress_line("precompute", 40, 100, 10.0, "question", note="2 failed") == \
        "precompute: 40/100 questions | 4.00question/s | elapsed 00:10 | ETA 00:15 | 2 failed"
    # Nothing done yet: no rate, no ETA.
    assert progress_line("rollout batch", 0, 16, 0.0, "episode").endswith("| ?episode/s | elapsed 00:00 | ETA ?")


def test_a_resumed_stage_rates_only_its_own_units():
    # Resumed at step 5: 2 steps in 30 s is 15 s a step, 3 left.
    assert progress_line("train", 7, 10, 30.0, "step", initial=5) == \
        "train: 7/10 steps | 15.00s/step | elapsed 00:30 | ETA 00:45"


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_logs_first_update_then_at_most_every_interval_and_always_the_end(caplog):
    clock = FakeClock()
    progress = ProgressLog(logging.getLogger("s3ray.test"), "infer s3/hotpotqa", 10, "question", every_s=15.0,
                           clock=clock)
    logged = []
    with caplog.at_level(logging.INFO, logger="s3ray.test"):
        for done, at in [(1, 2.0), (2, 10.0), (3, 16.9), (4, 18.0), (5, 20.0), (10, 21.0)]:
            clock.now = 100.0 + at
            if progress.update(done):
                logged.append(done)
    assert logged == [1, 4, 10]  # 2 and 3: within 15 s of 1's line; 5 within 15 s of 4's; 10 is the end
    assert [r.getMessage() for r in caplog.records] == [
        "infer s3/hotpotqa: 1/10 questions | 2.00s/question | elapsed 00:02 | ETA 00:18",
        "infer s3/hotpotqa: 4/10 questions | 4.50s/question | elapsed 00:18 | ETA 00:27",
        "infer s3/hotpotqa: 10/10 questions | 2.10s/question | elapsed 00:21 | ETA 00:00",
    ]

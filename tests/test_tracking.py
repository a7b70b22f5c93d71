"""The metric history behind the reward curve: a resumed run's redone steps replace the ones it redid."""

from __future__ import annotations

from mlflow.entities import Metric

from s3ray.tracking import latest_per_step


def test_a_redone_step_keeps_the_value_logged_last():
    first_try = [Metric("reward", v, timestamp=1000 + s, step=s) for s, v in [(1, 0.1), (2, 0.2), (3, 0.9)]]
    resumed = [Metric("reward", v, timestamp=2000 + s, step=s) for s, v in [(3, 0.3), (4, 0.4)]]  # from step 2
    assert latest_per_step(resumed + first_try) == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]


def test_a_plain_history_is_sorted_by_step():
    history = [Metric("reward", v, timestamp=5, step=s) for s, v in [(2, 0.5), (1, 0.25)]]
    assert latest_per_step(history) == [(1, 0.25), (2, 0.5)]

"""The warm start's supervised fit on a tiny random LM: it lowers the action-token NLL and reports its
progress while it runs."""

from __future__ import annotations

import logging

import torch

from s3ray.config import PolicyConfig, WarmStartConfig
from s3ray.train.policy import load_policy
from s3ray.train.warm_start import action_token_nll, supervised_epochs
from tests.train.test_update_mechanics import random_episodes


def test_the_fit_lowers_the_nll_and_logs_its_progress_per_batch(random_lm_dir, caplog):
    torch.manual_seed(0)
    model = load_policy(random_lm_dir, PolicyConfig())
    episodes = random_episodes(6)
    with torch.no_grad():
        before = action_token_nll(model, episodes).item()
    ws = WarmStartConfig(epochs=3, batch_size=4, lr=1e-2)
    with caplog.at_level(logging.INFO, logger="s3ray.train.warm_start"):
        losses = supervised_epochs(model, episodes, ws, progress_every_s=0)
    with torch.no_grad():
        after = action_token_nll(model, episodes).item()
    assert len(losses) == 3 and after < before
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warm start:")]
    # two batches (4 + 2 episodes) per epoch, each logged with the episodes fitted so far
    assert [line.split(" |")[0] for line in lines] == [f"warm start: {n}/18 episodes" for n in (4, 6, 10, 12, 16, 18)]
    assert "epoch 3/3, action-token NLL" in lines[-1]

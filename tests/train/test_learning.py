"""The proof that the gradients point the right way: the project's own update code (collation, old/ref
log-probs, critic, GAE or GRPO advantages, clipped PPO epochs) on a tiny random LM learns a bandit.

The task: after a prompt, the searcher writes one token, then the environment appends an observation
token (masked out). Reward 1 if the written token is in a target set of 8 out of 64 tokens, else 0; a
random policy scores about 1/8.
"""

from __future__ import annotations

import pytest
import torch

from s3ray.agent.episode import Episode
from s3ray.config import PolicyConfig, TrainConfig
from s3ray.train.batch import collate_episodes
from s3ray.train.policy import Critic, load_policy, load_reference
from s3ray.train.update import Learner, num_minibatches, ppo_epochs, prepare_batch

TARGETS = set(range(40, 48))
OBSERVATION_TOKEN = 63
PROMPTS = {"q0": [1, 2, 3], "q1": [4, 5], "q2": [6, 7, 8, 9], "q3": [10, 11]}
STEPS = 30


@torch.no_grad()
def sample_episodes(model, questions, temperature, generator):
    episodes = []
    for qid in questions:
        prompt = PROMPTS[qid]
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1] / temperature
        logp = torch.log_softmax(logits, -1)
        token = int(torch.multinomial(logp.exp(), 1, generator=generator))
        episodes.append(Episode(question_id=qid, question="", golden_answers=[], source="bandit", prompt_ids=prompt,
                                response_ids=[token, OBSERVATION_TOKEN], action_mask=[1, 0],
                                logprobs=[float(logp[token]), 0.0], temperature=temperature,
                                reward=float(token in TARGETS)))
    return episodes


def run_bandit(model_dir, algorithm: str) -> list[float]:
    torch.manual_seed(0)
    cfg = TrainConfig(algorithm=algorithm, actor_lr=3e-3, critic_lr=3e-3, batch_size=8, grpo_group_size=4,
                      mini_batch_size=16, micro_batch_size=16, kl_coef=0.001, entropy_coef=0.0)
    policy_cfg = PolicyConfig()
    actor = load_policy(model_dir, policy_cfg)
    critic = Critic.from_pretrained(model_dir, policy_cfg) if algorithm == "ppo" else None
    learner = Learner(actor=actor, reference=load_reference(model_dir, policy_cfg, torch.device("cpu")),
                      actor_optim=torch.optim.AdamW(actor.parameters(), lr=cfg.actor_lr),
                      critic=critic,
                      critic_optim=torch.optim.AdamW(critic.parameters(), lr=cfg.critic_lr) if critic else None)
    generator = torch.Generator().manual_seed(1)
    samples = cfg.grpo_group_size if algorithm == "grpo" else 1
    questions = [qid for qid in sorted(PROMPTS) for _ in range(samples)] * (32 // (len(PROMPTS) * samples))
    rewards = []
    for _ in range(STEPS):
        episodes = sample_episodes(actor, questions, temperature=1.0, generator=generator)
        rewards.append(sum(e.reward for e in episodes) / len(episodes))
        prepared, metrics = prepare_batch(collate_episodes(episodes, pad_id=0), learner, cfg)
        # The samples were drawn from the current policy: the trainer must agree with their log-probs.
        assert metrics["logprob_gap"] < 1e-4
        ppo_epochs(prepared, learner, cfg, num_minibatches(len(episodes), cfg), generator=generator)
    return rewards


@pytest.mark.parametrize("algorithm", ["ppo", "grpo"])
def test_mean_reward_rises_on_a_bandit(random_lm_dir, algorithm):
    rewards = run_bandit(random_lm_dir, algorithm)
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert first < 0.35, rewards  # the untrained policy is near chance (1/8)
    assert last > first + 0.4, rewards
    assert last > 0.6, rewards

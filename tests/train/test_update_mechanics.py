"""The update's mechanics on a tiny random LM: the gradient does not depend on how a mini-batch is cut
into micro-batches, the critic's update reduces its value error, and chunked log-probs equal unchunked ones
in value and gradient."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import torch

from s3ray.agent.episode import Episode
from s3ray.config import PolicyConfig, TrainConfig
from s3ray.train import losses
from s3ray.train.batch import collate_episodes
from s3ray.train.policy import load_policy, token_logprobs
from s3ray.train.update import accumulate_gradients, build_learner, group_order, ppo_epochs, prepare_batch

CPU = torch.device("cpu")


def random_episodes(n: int, seed: int = 0) -> list[Episode]:
    """Episodes of different prompt and response lengths, with observation tokens between actions."""
    rng = random.Random(seed)
    episodes = []
    for i in range(n):
        r = rng.randint(1, 9)
        episodes.append(Episode(question_id=f"q{i}", question="", golden_answers=[], source="random",
                                prompt_ids=[rng.randrange(1, 60) for _ in range(rng.randint(2, 6))],
                                response_ids=[rng.randrange(1, 60) for _ in range(r)],
                                action_mask=[1] + [int(rng.random() < 0.7) for _ in range(r - 1)],
                                logprobs=[0.0] * r, temperature=1.0, reward=rng.random()))
    return episodes


def mini_batch_gradients(model_dir, micro_batch_size: int) -> dict[str, torch.Tensor]:
    cfg = TrainConfig(micro_batch_size=micro_batch_size, mini_batch_size=30, batch_size=30, entropy_coef=0.01)
    learner = build_learner(model_dir, PolicyConfig(), cfg, CPU)
    prepared, _ = prepare_batch(collate_episodes(random_episodes(30), pad_id=0), learner, cfg)
    accumulate_gradients(prepared, torch.randperm(30, generator=torch.Generator().manual_seed(0)), learner, cfg)
    return {f"{role}.{n}": p.grad.clone() for role, model in (("actor", learner.actor), ("critic", learner.critic))
            for n, p in model.named_parameters() if p.grad is not None}


def test_micro_batch_size_does_not_change_the_gradient(random_lm_dir):
    whole, halves = mini_batch_gradients(random_lm_dir, 30), mini_batch_gradients(random_lm_dir, 15)
    assert whole.keys() == halves.keys()
    assert any(g.abs().sum() > 0 for k, g in whole.items() if k.startswith("actor"))
    assert any(g.abs().sum() > 0 for k, g in whole.items() if k.startswith("critic"))
    for name, grad in whole.items():
        torch.testing.assert_close(halves[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_the_update_reduces_the_value_error(random_lm_dir):
    cfg = TrainConfig(batch_size=8, mini_batch_size=8, micro_batch_size=4, critic_lr=1e-3, actor_lr=0.0)
    learner = build_learner(random_lm_dir, PolicyConfig(), cfg, CPU)
    batch = collate_episodes(random_episodes(8, seed=1), pad_id=0)

    def value_error() -> float:
        prepared, _ = prepare_batch(batch, learner, cfg)  # gamma = lam = 1: returns do not depend on V
        err = (prepared.values_old - prepared.returns) ** 2
        return float((err * prepared.value_mask).sum() / prepared.value_mask.sum())

    errors = [value_error()]
    for _ in range(10):
        prepared, _ = prepare_batch(batch, learner, cfg)
        ppo_epochs(prepared, learner, cfg, num_minibatches=1)
        errors.append(value_error())
    assert errors[-1] < 0.5 * errors[0], errors


def test_chunked_logprobs_equal_unchunked_in_value_and_gradient(random_lm_dir):
    model = load_policy(random_lm_dir, PolicyConfig())
    batch = collate_episodes(random_episodes(6, seed=2), pad_id=0)
    temperature = torch.linspace(0.5, 1.5, 6)
    results = []
    for chunk in (None, 7):  # 7 scored positions at a time: several chunks per row
        model.zero_grad()
        logp, entropy = token_logprobs(model, batch, temperature, with_entropy=True, chunk_tokens=chunk)
        ((logp * batch.action_mask).sum() + entropy.sum()).backward()
        results.append((logp.detach(), entropy.detach(), [p.grad.clone() for p in model.parameters()]))
    (logp_a, ent_a, grads_a), (logp_b, ent_b, grads_b) = results
    assert (logp_a != 0).any()
    torch.testing.assert_close(logp_b, logp_a)
    torch.testing.assert_close(ent_b, ent_a)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a)
    with torch.no_grad():  # without autograd the head is not checkpointed; the numbers stay the same
        logp_c, _ = token_logprobs(model, batch, temperature, chunk_tokens=7)
    torch.testing.assert_close(logp_c, logp_a)


def test_grpo_equal_rewards_teach_nothing_but_the_kl_term_pulls_back_to_the_reference(random_lm_dir):
    """A group whose rewards are equal has advantage 0 whatever the KL says (folded into the return, the
    KL was all that differed, and the group normalisation blew it up to unit advantages); the KL to the
    reference is a loss term instead, and it pulls a drifted actor back."""
    cfg = TrainConfig(algorithm="grpo", grpo_group_size=4, batch_size=2, mini_batch_size=8, micro_batch_size=8,
                      kl_coef=1.0, actor_lr=1e-2, entropy_coef=0.0)
    learner = build_learner(random_lm_dir, PolicyConfig(), cfg, CPU)
    with torch.no_grad():  # the actor has drifted from the reference
        generator = torch.Generator().manual_seed(0)
        for p in learner.actor.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    episodes = random_episodes(8, seed=3)
    for i, ep in enumerate(episodes):
        ep.question_id, ep.sample_index, ep.reward = f"g{i // 4}", i % 4, 0.0
    batch = collate_episodes(episodes, pad_id=0)

    def kl_to_reference() -> float:
        with torch.no_grad():
            logp = token_logprobs(learner.actor, batch)[0]
            ref = token_logprobs(learner.reference, batch)[0]
        return float((losses.kl_k3(logp, ref) * batch.action_mask).sum() / batch.action_mask.sum())

    before = kl_to_reference()
    for _ in range(5):
        prepared, _ = prepare_batch(batch, learner, cfg)
        assert prepared.advantages.abs().max() == 0
        ppo_epochs(prepared, learner, cfg, num_minibatches=1)
    assert before > 0 and kl_to_reference() < 0.5 * before


def test_the_update_order_keeps_each_group_together_and_shuffles_the_rest():
    """Mini- and micro-batches cut from this order hold whole GRPO groups (which then share their whole
    prompt in one forward), in an order that changes with the generator."""
    group_ids = [q for q in "abcd" for _ in range(4)]
    random.Random(0).shuffle(group_ids)  # rows need not arrive grouped
    orders = [group_order(group_ids, torch.Generator().manual_seed(s)).tolist() for s in range(6)]
    for order in orders:
        assert sorted(order) == list(range(len(group_ids)))
        runs = [group_ids[r] for r in order]
        assert all(len(set(runs[i:i + 4])) == 1 for i in range(0, 16, 4))  # contiguous groups of 4
    assert len({tuple(o) for o in orders}) > 1
    assert len({tuple(group_ids[r] for r in o[::4]) for o in orders}) > 1  # the groups' order varies too


def grpo_groups(num_groups: int, flat_groups: set[int], seed: int) -> list[Episode]:
    """Groups of 4 with random rewards, except ``flat_groups``, whose episodes all score 0.5 (advantage 0)."""
    episodes = random_episodes(4 * num_groups, seed=seed)
    for i, ep in enumerate(episodes):
        ep.question_id, ep.sample_index = f"g{i // 4}", i % 4
        if i // 4 in flat_groups:
            ep.reward = 0.5
    return episodes


def test_episodes_without_advantage_are_skipped_and_the_weights_move_as_if_they_had_run(random_lm_dir, monkeypatch):
    """GRPO without an entropy bonus or a KL term: the update runs only the episodes whose advantage is not
    0 (and one row of a mini-batch that has none, for Adam's step), and ends at the same weights as the
    update that runs every episode; a step of no signal between two of signal still moves them
    (momentum)."""
    from s3ray.train import update

    cfg = TrainConfig(algorithm="grpo", grpo_group_size=4, batch_size=4, mini_batch_size=8, micro_batch_size=2,
                      kl_coef=0.0, entropy_coef=0.0, actor_lr=1e-2, logp_old="rollout")
    batches = [collate_episodes(grpo_groups(4, flat, seed), pad_id=0)
               for flat, seed in (({1}, 4), ({0, 1, 2, 3}, 5), ({2}, 6))]

    def train() -> tuple[list[dict[str, torch.Tensor]], int]:
        torch.manual_seed(0)
        learner = build_learner(random_lm_dir, PolicyConfig(), cfg, CPU)
        rows_run = 0
        real = update.token_logprobs

        def counting(model, batch, *args, **kwargs):
            nonlocal rows_run
            rows_run += len(batch)
            return real(model, batch, *args, **kwargs)

        monkeypatch.setattr(update, "token_logprobs", counting)
        weights = []
        for batch in batches:
            prepared, _ = prepare_batch(batch, learner, cfg)
            ppo_epochs(prepared, learner, cfg, num_minibatches=2, generator=torch.Generator().manual_seed(1))
            weights.append({n: p.detach().clone() for n, p in learner.actor.named_parameters()})
        monkeypatch.undo()
        return weights, rows_run

    skipping, rows_skipping = train()
    monkeypatch.setattr(update, "rows_with_gradient", lambda prepared, rows, learner, cfg: rows)
    every_row, rows_every = train()
    # 12 of 16 rows carry signal, then none (one row per mini-batch of 8 runs), then 12.
    assert (rows_skipping, rows_every) == (12 + 2 + 12, 3 * 16)
    moved = [any(not torch.equal(a[n], b[n]) for n in a) for a, b in itertools.pairwise(every_row)]
    assert all(moved)  # the step without signal too
    for step, (a, b) in enumerate(zip(skipping, every_row, strict=True)):
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=f"step {step + 1} {name}")


def test_an_extra_loss_term_keeps_the_episodes_without_advantage_in_the_update(random_lm_dir):
    """GRPO's KL to the reference has a gradient on every episode, whatever its advantage: the update
    asks the algorithm, and runs every row while the term is there."""
    from s3ray.train.update import rows_with_gradient

    cfg = TrainConfig(algorithm="grpo", grpo_group_size=4, batch_size=4, mini_batch_size=16, kl_coef=0.01,
                      entropy_coef=0.0, logp_old="rollout")
    learner = build_learner(random_lm_dir, PolicyConfig(), cfg, CPU)
    prepared, _ = prepare_batch(collate_episodes(grpo_groups(4, {0, 1, 2, 3}, 5), pad_id=0), learner, cfg)
    rows = torch.arange(16)
    assert prepared.logp_ref is not None
    assert torch.equal(rows_with_gradient(prepared, rows, learner, cfg), rows)
    without_kl = replace(prepared, logp_ref=None)  # what the update prepares with kl_coef 0
    assert len(rows_with_gradient(without_kl, rows, learner, cfg.model_copy(update={"kl_coef": 0.0}))) == 1

"""Collation (token alignment, masks, padding) and the trainer's log-probs against a direct computation."""

from __future__ import annotations

import pytest
import torch

from s3ray.agent.episode import Episode
from s3ray.config import PolicyConfig
from s3ray.train.batch import collate_episodes
from s3ray.train.policy import (
    MIN_SHARED_PREFIX,
    Critic,
    export_pretrained,
    hf_state_dict,
    load_policy,
    shared_prefix_length,
    token_logprobs,
)


def episode(qid, prompt, response, mask, logprobs, reward=1.0, temperature=0.6):
    return Episode(question_id=qid, question="", golden_answers=[], source="test", prompt_ids=prompt,
                   response_ids=response, action_mask=mask, logprobs=logprobs, temperature=temperature,
                   reward=reward)


def two_episodes():
    return [episode("q1", [5, 6, 7], [8, 9, 10, 11], [1, 1, 0, 1], [-0.1, -0.2, 0.0, -0.4], reward=0.5),
            episode("q2", [5, 6], [12, 13], [1, 1], [-0.3, -0.5], reward=-1.0, temperature=1.0)]


def test_collate_aligns_masks_to_predicting_positions():
    batch = collate_episodes(two_episodes(), pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 10, 11], [5, 6, 12, 13, 0, 0, 0]]
    assert batch.attention_mask.tolist() == [[1] * 7, [1, 1, 1, 1, 0, 0, 0]]
    # Position t predicts token t+1: response token j of q1 (at 3 + j) is predicted from 2 + j.
    assert batch.action_mask.tolist() == [[0, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 0]]
    assert batch.response_mask.tolist() == [[0, 0, 1, 1, 1, 1], [0, 1, 1, 0, 0, 0]]
    assert torch.allclose(batch.rollout_logprobs[0], torch.tensor([0, 0, -0.1, -0.2, 0, -0.4]))
    assert batch.last_action_index.tolist() == [5, 2]
    assert batch.scores.tolist() == [0.5, -1.0]
    assert batch.group_ids == ["q1", "q2"]
    assert batch.num_action_tokens == 5


def test_select_trims_padding():
    batch = collate_episodes(two_episodes(), pad_id=0).select([1])
    assert batch.input_ids.tolist() == [[5, 6, 12, 13]]
    assert batch.action_mask.tolist() == [[0, 1, 1]]
    assert batch.group_ids == ["q2"]


@pytest.mark.parametrize("field,value,match", [
    ("logprobs", [-0.1], "lengths"),
    ("action_mask", [0, 0, 0, 0], "no searcher token"),
    ("prompt_ids", [], "empty prompt"),
])
def test_collate_rejects_bad_episodes(field, value, match):
    bad = two_episodes()
    setattr(bad[0], field, value)
    with pytest.raises(ValueError, match=match):
        collate_episodes(bad, pad_id=0)


def test_token_logprobs_match_a_direct_computation(random_lm_dir):
    model = load_policy(random_lm_dir, PolicyConfig()).eval()
    batch = collate_episodes(two_episodes(), pad_id=0)
    logp, entropy = token_logprobs(model, batch, batch.temperature, with_entropy=True)
    with torch.no_grad():
        for row, ep in enumerate(two_episodes()):
            ids = torch.tensor([ep.prompt_ids + ep.response_ids])
            logits = model(input_ids=ids).logits[0, :-1] / ep.temperature
            want = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
            p = len(ep.prompt_ids) - 1
            action = torch.tensor(ep.action_mask, dtype=torch.bool)
            got = logp[row, p:p + len(ep.response_ids)]
            assert torch.allclose(got[action], want[p:][action], atol=1e-5)
            assert (got[~action] == 0).all()  # observation tokens are not scored
    action = batch.action_mask > 0
    assert (entropy[action] > 0).all() and (entropy[~action] == 0).all() and (logp[~action] == 0).all()


def test_shared_prefix_length_counts_the_unpadded_columns_every_row_has():
    ids = torch.arange(100).repeat(3, 1)
    ids[1, 50], ids[2, 70] = -1, -1
    mask = torch.ones_like(ids)
    assert shared_prefix_length(ids, mask, limit=99) == 50
    assert shared_prefix_length(ids, mask, limit=40) == 40  # never past the first scored position
    mask[2, 45:] = 0  # a padded row: its padding is not a token
    assert shared_prefix_length(ids, mask, limit=99) == 45
    assert shared_prefix_length(ids[:1], mask[:1], limit=99) == 0  # one row: nothing to share
    assert shared_prefix_length(ids, mask, limit=MIN_SHARED_PREFIX - 1) == 0  # too short to pay off


def prefixed_episodes(prefix_len=40):
    """Three episodes with one long shared prompt opening (as every s3 prompt has), then their own tokens."""
    head = [int(t) for t in torch.randint(1, 50, (prefix_len,), generator=torch.Generator().manual_seed(1))]
    return [episode("q1", head + [7, 8], [9, 10, 11, 12], [1, 1, 0, 1], [0.0] * 4, temperature=0.6),
            episode("q2", head + [3], [12, 13], [1, 1], [0.0] * 2, temperature=1.0),
            episode("q3", head + [7, 8, 21], [4, 5, 6], [0, 1, 1], [0.0] * 3, temperature=0.8)]


def test_a_shared_prefix_runs_once_and_gives_each_rows_logprobs_and_gradients(random_lm_dir):
    model = load_policy(random_lm_dir, PolicyConfig()).eval()
    episodes = prefixed_episodes()
    batch = collate_episodes(episodes, pad_id=0)
    embedded = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: embedded.append(i[0].numel()))
    logp, entropy = token_logprobs(model, batch, batch.temperature, with_entropy=True)
    hook.remove()
    width = batch.input_ids.shape[1]
    assert embedded == [40, 3 * (width - 40)]  # the shared 40 tokens once, then each row's own
    (logp.sum() + entropy.sum()).backward()
    shared_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    for row, ep in enumerate(episodes):  # one row at a time: nothing shared
        alone = collate_episodes([ep], pad_id=0)
        lp, ent = token_logprobs(model, alone, alone.temperature, with_entropy=True)
        n = lp.shape[1]
        assert torch.allclose(lp[0], logp[row, :n], atol=1e-5) and (logp[row, n:] == 0).all()
        assert torch.allclose(ent[0], entropy[row, :n], atol=1e-5)
        (lp.sum() + ent.sum()).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, shared_grads[name], atol=1e-5), name


def _shard(rank: int) -> list:
    episodes = prefixed_episodes()
    return [episodes[0], episodes[2]] if rank == 0 else [episodes[1], episodes[2]]


def _ddp_shared_prefix_grads(rank: int, world: int, model_dir: str, out: str) -> None:
    from pathlib import Path

    model = torch.nn.parallel.DistributedDataParallel(load_policy(Path(model_dir), PolicyConfig()).eval())
    batch = collate_episodes(_shard(rank), pad_id=0)
    token_logprobs(model, batch, batch.temperature)[0].sum().backward()  # two forwards, one backward
    if rank == 0:
        torch.save({n: p.grad for n, p in model.module.named_parameters()}, out)


def test_a_shared_prefix_under_ddp_gives_the_averaged_gradient(random_lm_dir, tmp_path):
    from .conftest import run_ranks

    run_ranks(_ddp_shared_prefix_grads, 2, str(random_lm_dir), str(tmp_path / "grads.pt"))
    ddp = torch.load(tmp_path / "grads.pt")
    model = load_policy(random_lm_dir, PolicyConfig()).eval()
    for rank in range(2):
        for ep in _shard(rank):  # one row at a time: nothing shared, nothing reduced
            alone = collate_episodes([ep], pad_id=0)
            (token_logprobs(model, alone, alone.temperature)[0].sum() / 2).backward()  # DDP averages 2 ranks
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, ddp[name], atol=1e-5), name


def test_no_shared_prefix_under_gradient_checkpointing_in_training(random_lm_dir):
    model = load_policy(random_lm_dir, PolicyConfig(gradient_checkpointing=True)).train()
    batch = collate_episodes(prefixed_episodes(), pad_id=0)
    embedded = []
    hook = model.get_input_embeddings().register_forward_hook(lambda m, i, o: embedded.append(i[0].numel()))
    token_logprobs(model, batch, batch.temperature)[0].sum().backward()
    hook.remove()
    # transformers' checkpointed layers drop a passed cache: every row runs whole (embedded again in backward)
    assert embedded[0] == batch.input_ids.numel()


def test_critic_values_start_at_zero_and_learn(random_lm_dir):
    critic = Critic.from_pretrained(random_lm_dir, PolicyConfig())
    batch = collate_episodes(two_episodes(), pad_id=0)
    values = critic(batch.input_ids, batch.attention_mask)
    assert values.shape == batch.action_mask.shape and values.abs().max() == 0
    opt = torch.optim.Adam(critic.parameters(), lr=1e-2)
    for _ in range(20):
        loss = ((critic(batch.input_ids, batch.attention_mask) - 1.0) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1


def test_lora_policy_publishes_and_exports_merged_weights(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = PolicyConfig(lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0})
    model = load_policy(tiny_model_dir, cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():  # make the adapters non-trivial, so merging changes the weights
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    state = hf_state_dict(model)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert set(state) == set(base.state_dict())
    q = next(k for k in state if k.endswith("q_proj.weight"))
    assert not torch.allclose(state[q], base.state_dict()[q])

    out = export_pretrained(state, tiny_model_dir, tmp_path / "export")
    exported = AutoModelForCausalLM.from_pretrained(out)
    assert torch.allclose(exported.state_dict()[q], state[q])
    assert (out / "tokenizer.json").exists()
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.allclose(exported(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4)

"""Collation (token alignment, masks, padding) and the trainer's log-probs against a direct computation."""

from __future__ import annotations

import pytest
import torch

from s3ray.agent.episode import Episode
from s3ray.config import PolicyConfig
from s3ray.train.batch import collate_episodes
from s3ray.train.policy import Critic, export_pretrained, hf_state_dict, load_policy, token_logprobs


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

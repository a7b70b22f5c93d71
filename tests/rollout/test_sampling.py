"""The HF engine's sampler (``sample_tokens``): each row's rule (greedy, the whole distribution, a
nucleus), the frequencies it draws with, and the paths it takes to get there (top tokens or a full sort)."""

from __future__ import annotations

import pytest
import torch

from s3ray.rollout.engine.hf import NUCLEUS_TOPK, sample_tokens

DRAWS = 20_000


def draw_counts(logits: torch.Tensor, top_p: float, temperature: float = 1.0, seed: int = 0) -> torch.Tensor:
    """How often each token of a one-row distribution is drawn in DRAWS rows sampled at once."""
    rows = logits.expand(DRAWS, -1)
    tokens, _ = sample_tokens(rows, torch.full((DRAWS,), temperature), torch.full((DRAWS,), top_p),
                              torch.zeros(DRAWS, dtype=torch.bool), torch.Generator().manual_seed(seed))
    return torch.bincount(tokens, minlength=logits.shape[-1]).double()


def assert_frequencies(counts: torch.Tensor, probs: torch.Tensor) -> None:
    """Each token's share within 5 standard errors of its probability."""
    expected = probs.double() * DRAWS
    sigma = (expected * (1 - probs.double())).sqrt().clamp(min=1.0)
    assert ((counts - expected).abs() <= 5 * sigma).all(), (counts, expected)


def test_without_a_nucleus_every_token_is_drawn_as_often_as_its_probability():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    counts = draw_counts(logits, top_p=1.0, temperature=0.7)
    assert_frequencies(counts, torch.softmax(logits / 0.7, dim=-1))
    assert counts[-1] > 0  # the tail is reachable: top_p=1 cuts nothing


def test_a_nucleus_keeps_the_tokens_whose_mass_reaches_top_p_renormalised():
    logits = torch.tensor([0.0, 3.0, -2.0, 2.0, 1.0, -5.0])
    probs = torch.softmax(logits, dim=-1)  # sorted: token 1 (0.63), 3 (0.23), 4 (0.09), 0, 2, 5
    counts = draw_counts(logits, top_p=0.8)
    # 0.63 < 0.8, 0.63 + 0.23 crosses it: tokens 1 and 3 (the crossing one included), nothing else
    kept = torch.zeros_like(probs)
    kept[[1, 3]] = probs[[1, 3]]
    assert_frequencies(counts, kept / kept.sum())


def test_a_nucleus_beyond_the_top_tokens_is_cut_from_a_full_sort():
    vocab = NUCLEUS_TOPK * 4
    logits = torch.zeros(vocab)  # uniform: the top NUCLEUS_TOPK tokens hold a quarter of the mass
    logits[7] = 1.0
    counts = draw_counts(logits, top_p=0.9)
    probs = torch.softmax(logits, dim=-1)
    assert counts[7] > 0 and (counts > 0).sum() > NUCLEUS_TOPK  # more tokens than the top ones were drawn
    assert counts.sum() == DRAWS and abs(counts[7] / DRAWS - probs[7] / 0.9) < 5 * (probs[7] / DRAWS) ** 0.5


def test_each_row_keeps_its_own_rule_in_one_batch():
    logits = torch.tensor([[1.0, 3.0, 2.9, -9.0]] * 3)
    generator = torch.Generator().manual_seed(1)
    seen = {0: set(), 1: set(), 2: set()}
    for _ in range(300):
        tokens, logp = sample_tokens(logits, torch.tensor([1.0, 1.0, 1.0]), torch.tensor([1.0, 0.4, 1.0]),
                                     torch.tensor([False, False, True]), generator)
        for row, token in enumerate(tokens.tolist()):
            seen[row].add(token)
        assert logp.tolist() == pytest.approx(torch.log_softmax(logits, -1)[torch.arange(3), tokens].tolist())
    assert seen[0] == {0, 1, 2}  # the whole distribution (token 3 has p ~ 1e-6)
    assert seen[1] == {1}  # token 1 alone holds 0.49 of the mass: a top_p=0.4 nucleus of one
    assert seen[2] == {1}  # greedy: the argmax


def test_impossible_tokens_are_never_drawn_and_draws_are_seeded():
    logits = torch.tensor([float("-inf"), 0.0, float("-inf"), 0.0, float("-inf")])
    counts = draw_counts(logits, top_p=1.0)
    assert counts[[0, 2, 4]].sum() == 0 and counts[1] > 0 and counts[3] > 0
    logits = torch.randn(4, 50)
    args = (torch.ones(4), torch.full((4,), 0.9), torch.zeros(4, dtype=torch.bool))
    first, _ = sample_tokens(logits, *args, torch.Generator().manual_seed(5))
    second, _ = sample_tokens(logits, *args, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)

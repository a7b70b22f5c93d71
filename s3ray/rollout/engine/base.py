"""The engine interface: token ids in, sampled token ids and their logprobs out.

Every engine speaks token ids so that an episode's record is exactly what the policy saw and wrote
(nothing is re-encoded from text). ``Generation.logprobs[i]`` is ``log_softmax(logits / T)[token_i]``
over the full vocabulary, with T the sampling temperature (1 when greedy): the quantity the trainer
recomputes (``Episode.temperature``). Top-p only narrows which tokens can be drawn; the recorded logprob
stays the full-distribution one, so rollout and trainer logprobs agree on the same weights. One
documented exception: with top_p < 1, vLLM reports the nucleus-renormalised logprob, higher by at most
-log(top_p) (:mod:`s3ray.rollout.engine.vllm`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

FinishReason = Literal["eos", "stop", "length"]  # eos token / stop string / max_tokens


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 500
    stop: tuple[str, ...] = ()  # a sequence ends once its decoded text contains one; its tokens are kept
    greedy: bool = False

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if not self.greedy and self.temperature <= 0:
            raise ValueError("sampling needs temperature > 0; use greedy=True for argmax decoding")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    @property
    def logprob_temperature(self) -> float:
        """The T of the recorded logprobs: log_softmax(logits / T)."""
        return 1.0 if self.greedy else self.temperature


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: FinishReason


class EngineDied(RuntimeError):
    """The engine's own process is gone (vLLM's engine core): no call on this engine can succeed again,
    so the rollout actor holding it ends and is restarted (:mod:`s3ray.rollout.actor`)."""


class RolloutEngine(Protocol):
    version: int  # the policy version of the loaded weights

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation: ...

    async def load_state_dict(self, state: dict[str, Any], version: int) -> None: ...


def stop_window(stop: tuple[str, ...]) -> int:
    """Tokens to decode to see a stop string that the newest token completed: every token is at least
    one byte, so a stop string spans at most its byte length in tokens (plus one partial token)."""
    return max((len(s.encode()) for s in stop), default=0) + 1


def hit_stop(tokenizer, token_ids: list[int], stop: tuple[str, ...]) -> bool:
    """Does the decoded tail of ``token_ids`` contain a stop string? Called after every new token,
    so a stop string is found at the token that completes it."""
    if not stop:
        return False
    tail = tokenizer.decode(token_ids[-stop_window(stop):], skip_special_tokens=False)
    return any(s in tail for s in stop)

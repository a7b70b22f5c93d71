"""What writes the searcher's turns in an episode: the token ids so far and the environment's state in,
the turn's token ids and their logprobs out (:class:`Policy`).

- :class:`EnginePolicy`: the model, through a rollout engine; it reads only the token ids.
- :class:`TeacherPolicy`: the warm start's rule-based teacher (:func:`s3ray.agent.heuristic.heuristic_turn`);
  it reads only the environment's state (question and trace), and its turn's text becomes token ids
  with logprob 0. A completing turn ends with the EOS token, as a model's would, so the warm-started
  model learns to stop there; a query turn ends at ``</query>``.
"""

from __future__ import annotations

from typing import Protocol

from s3ray.agent.environment import S3Environment
from s3ray.agent.heuristic import Teacher, heuristic_turn
from s3ray.config import AgentConfig
from s3ray.rollout.engine import FinishReason, Generation, RolloutEngine, SamplingParams


class Policy(Protocol):
    version: int  # the policy version its turns come from (recorded in the episode)

    async def act(self, token_ids: list[int], env: S3Environment, sampling: SamplingParams) -> Generation: ...


class EnginePolicy:
    def __init__(self, engine: RolloutEngine):
        self.engine = engine

    @property
    def version(self) -> int:
        return self.engine.version

    async def act(self, token_ids: list[int], env: S3Environment, sampling: SamplingParams) -> Generation:
        return await self.engine.generate(token_ids, sampling)


class TeacherPolicy:
    """The n-th episode it starts from the same question and turn-0 docs gets draw n (the ``format``
    teacher's entity, chosen at the first turn): several samples of a question name different entities,
    as samples of a model would."""

    version = 0  # no weights

    def __init__(self, tokenizer, agent_cfg: AgentConfig, teacher: Teacher = "bridge"):
        self.tokenizer = tokenizer
        self.agent_cfg = agent_cfg
        self.teacher = teacher
        self._draws: dict[tuple[str, tuple[str, ...]], int] = {}  # question and turn-0 doc ids -> episodes

    async def act(self, token_ids: list[int], env: S3Environment, sampling: SamplingParams) -> Generation:
        draw = 0
        if not env.trace.turns:  # an episode's first turn
            start = (env.question, tuple(doc.id for doc in env.trace.initial_docs))
            draw = self._draws[start] = self._draws.get(start, -1) + 1
        text = heuristic_turn(env.question, env.trace, self.agent_cfg, self.teacher, draw=draw)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        finish: FinishReason = "stop" if any(s in text for s in sampling.stop) else "eos"
        if finish == "eos" and self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        if len(ids) > sampling.max_tokens:
            ids, finish = ids[:sampling.max_tokens], "length"
        return Generation(ids, [0.0] * len(ids), finish)

"""The rule-based warm-start searcher behind the engine interface."""

from __future__ import annotations

from typing import Any

from s3ray.rollout.engine.base import FinishReason, Generation, SamplingParams


class HeuristicEngine:
    """:func:`s3ray.agent.heuristic.heuristic_turn` behind the engine interface.

    It decodes what it is fed (prompt and episode so far), writes the heuristic's next turn and returns
    that text's token ids with logprob 0. A completing turn ends with the EOS token, as a model's would,
    so the warm-started model learns to stop there; a query turn ends at ``</query>``.

    The n-th episode this engine starts from the same prompt gets draw n (the ``format`` teacher's
    entity, chosen at the first turn): several samples of a question name different entities, as
    samples of a model would.
    """

    def __init__(self, tokenizer, agent_cfg, teacher: str = "bridge"):
        self.tokenizer = tokenizer
        self.agent_cfg = agent_cfg
        self.teacher = teacher
        self.version = 0
        self._draws: dict[str, int] = {}  # question and turn-0 results -> episodes started from them

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> Generation:
        from s3ray.agent.heuristic import heuristic_turn
        from s3ray.agent.prompt import SENTINEL

        text = self.tokenizer.decode(prompt_ids, skip_special_tokens=False)
        start, _, turns = text.partition(SENTINEL)[2].partition("</information>")
        draw = 0
        if not any(tag in turns for tag in ("<query>", "<important_info>", "<search_complete>")):
            draw = self._draws[start] = self._draws.get(start, -1) + 1  # an episode's first turn
        text = heuristic_turn(text, self.agent_cfg, self.teacher, draw=draw)
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        finish: FinishReason = "stop" if any(s in text for s in sampling.stop) else "eos"
        if finish == "eos" and self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        if len(ids) > sampling.max_tokens:
            ids, finish = ids[:sampling.max_tokens], "length"
        return Generation(ids, [0.0] * len(ids), finish)

    async def load_state_dict(self, state: dict[str, Any], version: int) -> None:
        raise TypeError("the heuristic searcher has no weights")

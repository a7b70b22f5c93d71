"""GenAcc = span OR judge, which path decided, and concurrency of judge calls."""

import asyncio

import pytest

from s3ray.config import load_config
from s3ray.scoring.genacc import GenAccScorer


class ScriptedJudge:
    """A judge endpoint stand-in: replies from a script, records prompts, counts concurrent calls."""

    model = "scripted-judge"

    def __init__(self, replies):
        self.replies = list(replies)
        self.prompts = []
        self.in_flight = self.max_in_flight = 0

    async def achat(self, messages, max_tokens=None, temperature=0.0):
        self.prompts.append(messages)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return self.replies.pop(0)


def test_span_only_without_judge():
    scorer = GenAccScorer(None)
    hit = asyncio.run(scorer.score("q?", "It was in Tulsa.", ["Tulsa"]))
    assert (hit.genacc, hit.span, hit.judge, hit.decided_by) == (1.0, True, None, "span")
    assert hit.em == 0.0 and 0 < hit.f1 < 1
    miss = asyncio.run(scorer.score("q?", "Oklahoma", ["Tulsa"]))
    assert (miss.genacc, miss.span, miss.judge, miss.decided_by) == (0.0, False, None, "none")


def test_judge_decides_only_when_span_fails():
    judge = ScriptedJudge(["Yes.", "no"])
    scorer = GenAccScorer(judge)
    scores = asyncio.run(scorer.score_many([("q1?", "in Tulsa", ["Tulsa"]),  # span: judge not asked
                                            ("q2?", "the USA", ["United States"]),
                                            ("q3?", "France", ["Germany"])]))
    assert [s.decided_by for s in scores] == ["span", "judge", "none"]
    assert [s.genacc for s in scores] == [1.0, 1.0, 0.0]
    assert [s.judge for s in scores] == [None, True, False]
    assert len(judge.prompts) == 2 and "United States" in judge.prompts[0][0]["content"]
    assert judge.max_in_flight == 2  # the two judge calls ran concurrently


def test_unclear_judge_reply_is_asked_again_then_wrong():
    judge = ScriptedJudge(["maybe", "hmm"])
    score = asyncio.run(GenAccScorer(judge).score("q?", "x", ["y"]))
    assert score.genacc == 0.0 and score.judge is False and len(judge.prompts) == 2


def test_from_config(tmp_path):
    cfg = load_config(None, [f"paths.work_dir={tmp_path}"])
    assert GenAccScorer.from_config(cfg).judge_client is None
    cfg = load_config(None, [f"paths.work_dir={tmp_path}", "judge.enabled=true"])
    with pytest.raises(ValueError, match="reader cannot"):
        GenAccScorer.from_config(cfg)
    cfg = load_config(None, [f"paths.work_dir={tmp_path}", "judge.enabled=true",
                             "judge.generator={backend: openai, model: m, base_url: 'http://127.0.0.1:9/v1'}"])
    scorer = GenAccScorer.from_config(cfg)
    assert scorer.judge_client.model == "m" and scorer.judge_max_tokens == 10 and scorer.judge_style == "contains"
    lenient = GenAccScorer.from_config(load_config(None, [f"paths.work_dir={tmp_path}", "judge.enabled=true",
                                                          "judge.generator={backend: openai, model: m, "
                                                          "base_url: 'http://127.0.0.1:9/v1'}",
                                                          "judge.style=lenient"]))
    judge = ScriptedJudge(["yes"])
    lenient.judge_client = judge
    asyncio.run(lenient.score("Which city?", "x", ["y"]))
    assert "Which city?" in judge.prompts[0][0]["content"]  # the lenient wording shows the question

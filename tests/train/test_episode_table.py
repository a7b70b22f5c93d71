"""The per-step episode table: best and worst first, then the batch's first others."""

from s3ray.agent.episode import Episode
from s3ray.agent.trace import Trace, Turn
from s3ray.train.step_metrics import EPISODE_COLUMNS, episode_table
from s3ray.types import Doc

NAIVE = [Doc("n1", "Naive One", "abc"), Doc("n2", "Naive Two", "de")]


def episode(i: int, reward: float, added: list[Doc]) -> Episode:
    return Episode(question_id=f"q{i}", question=f"question {i}", golden_answers=["a"], source="t", prompt_ids=[1],
                   trace=Trace(initial_docs=NAIVE, turns=[Turn(text="", action="search", query=f"query {i}{s}")
                                                          for s in "ab"]),
                   context=[*NAIVE, *added],
                   acc_s3=max(reward, 0.0), acc_rag=0.0, reward=reward)


def test_best_and_worst_lead_then_the_first_others():
    episodes = [episode(0, 0.0, []), episode(1, -1.0, []), episode(2, 1.0, [Doc("x", "Extra", "fghij")]),
                episode(3, 0.5, []), episode(4, 0.0, [])]
    table = episode_table(episodes, 4)
    assert list(table) == list(EPISODE_COLUMNS)
    assert table["pick"] == ["best", "worst", "sample", "sample"]
    assert table["question"] == ["question 2", "question 1", "question 0", "question 3"]
    assert table["reward"] == [1.0, -1.0, 0.0, 0.5]
    assert table["queries"][0] == "query 2a | query 2b"
    assert table["selected_titles"] == ["Extra", "", "", ""]  # naive RAG's docs are not the searcher's
    assert table["context_docs"][0] == 3 and table["context_chars"][0] == len("abc") + len("de") + len("fghij")
    assert table["rag_acc"] == [0.0] * 4


def test_small_sizes_and_empty_batches():
    one = [episode(0, 0.3, [])]
    assert episode_table(one, 5)["pick"] == ["best"]  # the best is also the worst: one row
    assert episode_table([episode(0, 0.0, []), episode(1, 1.0, [])], 1)["pick"] == ["best"]
    assert episode_table([], 3) == {name: [] for name in EPISODE_COLUMNS} == episode_table(one, 0)


def test_dev_evaluation_steps_and_metrics():
    from s3ray.train.trainer import dev_metrics, is_eval_step

    assert [s for s in range(1, 8) if is_eval_step(s, 3, 7)] == [3, 6, 7]  # and always the last step
    assert not any(is_eval_step(s, 0, 7) for s in range(1, 8))
    assert dev_metrics([episode(0, 1.0, []), episode(1, -1.0, []), episode(2, 0.0, [])]) == {
        "dev_genacc": 1 / 3, "dev_gbr": 0.0}

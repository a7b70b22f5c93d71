"""The seeded data order of training steps: distinct questions per step, epochs cover everything,
and a step's batch depends only on the step (what resume relies on)."""

from __future__ import annotations

import pytest

from s3ray.train.trainer import step_question_indices


def test_steps_hold_distinct_questions_and_an_epoch_covers_each_at_most_once():
    n, batch = 10, 4
    for step in range(1, 30):
        idx = step_question_indices(n, step, batch, seed=42)
        assert len(idx) == batch and len(set(idx)) == batch and all(0 <= i < n for i in idx)
    epoch0 = step_question_indices(n, 1, batch, 42) + step_question_indices(n, 2, batch, 42)
    assert len(set(epoch0)) == 8  # two full batches per epoch; the 2-question tail is skipped
    assert step_question_indices(n, 3, batch, 42) != step_question_indices(n, 1, batch, 42)  # new permutation


def test_order_is_a_pure_function_of_step_and_seed():
    assert step_question_indices(50, 7, 8, 1) == step_question_indices(50, 7, 8, 1)
    assert step_question_indices(50, 7, 8, 1) != step_question_indices(50, 7, 8, 2)


def test_a_batch_larger_than_the_data_is_refused():
    with pytest.raises(ValueError, match="larger than the 3 training questions"):
        step_question_indices(3, 1, 4, 0)


def test_rl_trains_on_questions_the_warm_start_did_not_see_when_a_batch_is_left():
    from s3ray.config import load_config
    from s3ray.train.warm_start import warm_start_questions
    from s3ray.types import Question

    questions = [Question(f"q{i}", f"question {i}?", ("a",), "test") for i in range(20)]
    cfg = load_config("test", ["train.warm_start.num_questions=12", "train.batch_size=8"])
    warm, rl = warm_start_questions(questions, cfg)
    assert len(warm) == 12 and len(rl) == 8 and not {q.id for q in warm} & {q.id for q in rl}
    assert warm_start_questions(questions, cfg) == (warm, rl)  # seeded
    cfg = load_config("test", ["train.warm_start.num_questions=16", "train.batch_size=8"])
    warm, rl = warm_start_questions(questions, cfg)
    assert len(warm) == 16 and rl == questions  # 4 left, fewer than a batch: RL uses them all


def test_a_warm_start_on_answered_questions_leaves_every_filtered_question_to_rl():
    from s3ray.config import load_config
    from s3ray.train.warm_start import warm_start_questions
    from s3ray.types import Question

    filtered = [Question(f"q{i}", f"question {i}?", ("a",), "test") for i in range(10)]
    answered = [Question(f"a{i}", f"answered {i}?", ("a",), "test") for i in range(30)]
    cfg = load_config("test", ["train.warm_start.questions=answered", "train.warm_start.num_questions=12",
                               "train.batch_size=8"])
    warm, rl = warm_start_questions(filtered, cfg, answered)
    assert rl == filtered
    assert len(warm) == 12 and {q.id for q in warm} < {q.id for q in answered}
    assert warm_start_questions(filtered, cfg, answered) == (warm, rl)  # seeded
    with pytest.raises(ValueError, match="no such training question"):
        warm_start_questions(filtered, cfg, [])


def test_a_warm_start_on_all_questions_draws_from_both_sets_and_leaves_every_filtered_question_to_rl():
    from s3ray.config import load_config
    from s3ray.train.warm_start import warm_start_questions
    from s3ray.types import Question

    filtered = [Question(f"q{i}", f"question {i}?", ("a",), "test") for i in range(10)]
    answered = [Question(f"a{i}", f"answered {i}?", ("a",), "test") for i in range(30)]
    cfg = load_config("test", ["train.warm_start.questions=all", "train.warm_start.num_questions=100"])
    warm, rl = warm_start_questions(filtered, cfg, answered)
    assert rl == filtered
    assert sorted(q.id for q in warm) == sorted(q.id for q in filtered + answered)
    cfg = load_config("test", ["train.warm_start.questions=all", "train.warm_start.num_questions=20"])
    warm, _ = warm_start_questions(filtered, cfg, answered)
    assert len(warm) == 20 and warm_start_questions(filtered, cfg, answered)[0] == warm  # seeded


def test_the_answered_set_is_what_the_training_filter_drops_for_naive_rag():
    from s3ray.config import load_config
    from s3ray.reward import cache as rag_cache
    from s3ray.reward.record import RagRecord
    from s3ray.types import Question

    questions = [Question("right", "who?", ("Ada",), "test"), Question("wrong", "what?", ("Bob",), "test"),
                 Question("yes", "is it?", ("yes",), "test")]
    cache = rag_cache.RagCache({q.id: RagRecord(q.id, "test", q.question, list(q.golden_answers), [], "Ada",
                                                float(q.id != "wrong"), q.id != "wrong", None, 0.0, 0.0, "span",
                                                "reader", "dense", 3, "none") for q in questions}, None)
    cfg = load_config("test")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rag_cache.RagCache, "for_config", classmethod(lambda cls, cfg: cache))
        mp.setattr("s3ray.data.qa.load_datasets", lambda specs: questions)
        filtered, answered = rag_cache.training_sets(cfg)
        assert [q.id for q in filtered] == ["wrong"] and [q.id for q in answered] == ["right"]
        kept, answered = rag_cache.training_sets(load_config("test", ["rag_cache.drop_answered=false"]))
        assert [q.id for q in kept] == ["right", "wrong"] and answered == []

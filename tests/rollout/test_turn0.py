"""The turn-0 retrieval of an episode: MIRAGE questions without their options; 12 docs in training when
agent.train_initial_k says so (s3's training prompts), 3 otherwise."""

from s3ray.config import load_config
from s3ray.rollout.actor import turn0_request
from s3ray.types import Question


def test_turn0_queries_and_k(tmp_path):
    mirage = Question("m1", "Which?\nOptions:\nA: x", ("A: x",), "mmlu", meta={"query": "Which?"})
    plain = Question("h1", "Who?", ("y",), "hotpotqa")
    cfg = load_config("test", [f"paths.work_dir={tmp_path}"])
    assert turn0_request(cfg, [mirage, plain], with_reward=True) == (["Which?", "Who?"], 3)
    cfg = load_config("test", [f"paths.work_dir={tmp_path}", "agent.train_initial_k=12",
                               "inference.query_without_options=false"])
    assert turn0_request(cfg, [mirage], with_reward=True) == (["Which?\nOptions:\nA: x"], 12)
    assert turn0_request(cfg, [mirage], with_reward=False)[1] == 3

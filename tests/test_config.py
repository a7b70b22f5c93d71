"""The config tree: presets, overrides, derived paths, and errors for bad input."""

from pathlib import Path

import pytest
import yaml

from s3ray.cli import main, parse_config
from s3ray.config import CONFIG_DIR, config_from_dict, load_config, parse_override


def test_every_preset_loads():
    presets = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"demo_cpu", "s3_8_3_3", "test"} <= set(presets)
    for name in presets:
        cfg = load_config(name)
        assert cfg.name == name or name == "demo_ci"


def test_overrides_are_typed_and_nested(tmp_path):
    cfg = load_config("demo_cpu", [f"paths.work_dir={tmp_path}", "train.steps=7", "agent.select_cap=null",
                                   "rollout.temperature=0.9", "judge.enabled=true"])
    assert cfg.train.steps == 7 and cfg.agent.select_cap is None
    assert cfg.rollout.temperature == pytest.approx(0.9) and cfg.judge.enabled is True


def test_paths_and_urls_derive_from_work_dir_and_serve(tmp_path):
    cfg = load_config(None, [f"paths.work_dir={tmp_path}", "serve.port=9123"])
    assert cfg.index.dir == tmp_path / "index"
    assert cfg.train.dir == tmp_path / "train"
    assert cfg.retriever.url == "http://127.0.0.1:9123/retrieve"
    assert cfg.generator.base_url == "http://127.0.0.1:9123/v1"
    assert cfg.tracking.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    explicit = load_config(None, [f"paths.work_dir={tmp_path}", "index.dir=/elsewhere/idx"])
    assert explicit.index.dir == Path("/elsewhere/idx")


def test_agent_presets_set_the_paper_triples():
    cfg = load_config(None, ["agent.preset=3-3-4"])
    assert (cfg.agent.search_k, cfg.agent.select_cap, cfg.agent.max_turns) == (3, 3, 4)
    with pytest.raises(ValueError, match="unknown agent preset"):
        load_config(None, ["agent.preset=9-9-9"])


def test_turn0_docs_must_be_the_naive_rag_baseline(tmp_path):
    with pytest.raises(ValueError, match=r"agent.initial_k \(5\) must equal rag_cache.topk \(3\)"):
        load_config(None, [f"paths.work_dir={tmp_path}", "agent.initial_k=5"])
    cfg = load_config(None, [f"paths.work_dir={tmp_path}", "agent.initial_k=5", "rag_cache.topk=5"])
    assert cfg.agent.initial_k == cfg.rag_cache.topk == 5
    paper = load_config("s3_8_3_3").agent
    assert paper.seed_extra_turn and paper.max_turns == 3  # s3's trainer runs max_turns + 1 search turns


def test_unknown_keys_and_bad_values_are_errors():
    with pytest.raises(ValueError, match="trian"):
        load_config(None, ["trian.steps=3"])
    with pytest.raises(ValueError):
        load_config(None, ["train.steps=many"])
    with pytest.raises(ValueError, match="key.sub=value"):
        parse_override("train.steps")
    with pytest.raises(FileNotFoundError, match="presets"):
        load_config("no_such_preset")


def test_openai_backend_needs_a_base_url():
    with pytest.raises(ValueError, match="base_url"):
        load_config(None, ["generator.backend=openai"])
    cfg = load_config(None, ["generator.backend=openai", "generator.base_url=https://api.example/v1"])
    assert cfg.generator.base_url == "https://api.example/v1"


def test_yaml_inheritance_and_roundtrip(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": "demo_cpu", "name": "child", "train": {"steps": 3}}))
    cfg = load_config(str(child))
    demo = load_config("demo_cpu")
    assert cfg.train.steps == 3 and cfg.train.batch_size == demo.train.batch_size
    assert config_from_dict(cfg.to_dict()) == cfg
    params = cfg.flat_params()
    assert params["train.steps"] == "3" and params["name"] == "child"


def test_a_list_of_bases_merges_left_to_right_and_the_file_wins(tmp_path):
    world = tmp_path / "world.yaml"
    world.write_text(yaml.safe_dump({"base": "demo_cpu", "train": {"steps": 3, "batch_size": 5},
                                     "rollout": {"temperature": 0.5}}))
    levers = tmp_path / "levers.yaml"
    levers.write_text(yaml.safe_dump({"train": {"batch_size": 7, "kl_coef": 0.0}}))
    child = tmp_path / "child.yaml"
    child.write_text(yaml.safe_dump({"base": [str(world), str(levers)], "train": {"kl_coef": 0.25}}))
    cfg = load_config(str(child))
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.kl_coef) == (3, 7, 0.25)
    assert cfg.rollout.temperature == 0.5 and cfg.corpus == load_config("demo_cpu").corpus
    levers.write_text(yaml.safe_dump({"base": [str(child)]}))
    with pytest.raises(ValueError, match="cycle"):
        load_config(str(child))


def test_the_smollm2_presets_share_its_levers():
    for preset in ("demo_smollm2", "learning_check_smollm2"):
        cfg = load_config(preset)
        assert (cfg.policy.model, cfg.policy.dtype, cfg.train.logp_old) == (
            "bundled:smollm2-135m-instruct", "auto", "rollout"), preset
        assert cfg.demo.stage_timeout_s >= 7200, preset  # a SmolLM2 train stage runs for hours on 2 cores
    assert load_config("learning_check_smollm2").bridge_world.company_facts == 4  # its world stays its own


def test_cli_config_prints_resolved_yaml_and_rejects_bad_override(capsys):
    assert main(["config", "--config", "demo_cpu", "train.steps=5"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["steps"] == 5
    assert main(["config", "train.nope=1"]) == 2
    assert "nope" in capsys.readouterr().err
    stage, cfg = parse_config(["train", "--config", "test"])
    assert stage == "train" and cfg.name == "test"


def test_relative_data_paths_resolve_under_data_dir(tmp_path):
    cfg = load_config("demo_ci", [f"paths.data_dir={tmp_path}"])
    assert cfg.data.train[0].path == tmp_path / "hotpotqa" / "train.jsonl"
    assert cfg.corpus.path == tmp_path / "hotpotqa" / "corpus.jsonl"


def test_override_text_that_looks_like_a_mapping_stays_a_string():
    assert parse_override("encoder.query_prefix=query: ") == (["encoder", "query_prefix"], "query: ")
    assert parse_override("a.b={x: 1}") == (["a", "b"], {"x": 1})
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("a.b=x: [") == (["a", "b"], "x: [")
    cfg = load_config("test", ["encoder.query_prefix=query: ", "encoder.passage_prefix=passage: "])
    assert (cfg.encoder.query_prefix, cfg.encoder.passage_prefix) == ("query: ", "passage: ")


@pytest.mark.parametrize("overrides,match", [
    (["train.num_workers=4", "train.batch_size=6"], "divisible"),
    (["train.algorithm=grpo", "train.grpo_group_size=1"], "grpo_group_size >= 2"),
    (["train.algorithm=dr_grpo", "train.grpo_group_size=1"], "grpo_group_size >= 2"),
    (["train.micro_batch_size=0"], "greater than or equal to 1"),
    (["train.use_gpu=true", "train.strategy=fsdp", "train.num_workers=1", "train.fsdp_cpu_offload=true"],
     "fsdp_cpu_offload needs train.num_workers >= 2"),
])
def test_train_shapes_are_checked_when_the_config_is_built(overrides, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, overrides)


def test_low_precision_compute_is_accepted_under_fsdp_and_ddp():
    # Both keep fp32 master weights (FSDP's MixedPrecision, autocast under ddp: tests/train/test_cpu_levers.py).
    for strategy in ("fsdp", "ddp"):
        assert load_config(None, ["policy.dtype=bfloat16", f"train.strategy={strategy}"]).policy.dtype == "bfloat16"


def test_train_paths_come_from_the_config(tmp_path):
    cfg = load_config(None, [f"paths.work_dir={tmp_path}"])
    assert cfg.train.export_dir == tmp_path / "train" / "export"
    assert cfg.train.reward_curve_path == tmp_path / "train" / "reward_curve.png"


def test_s3_8_3_3_reproduces_the_released_runs_training_choices():
    """Where s3ray's defaults differ from s3's released run, the preset sets the original's."""
    cfg = load_config("s3_8_3_3")
    a, t = cfg.agent, cfg.train
    assert (a.search_k, a.select_cap, a.max_turns, a.seed_extra_turn, a.initial_k) == (8, 3, 3, True, 3)
    assert (a.reward, a.enforce_select_cap, a.train_initial_k, a.answer_prompt) == ("seed", False, 12, "s3")
    assert cfg.judge.style == "s3"
    assert (t.lr_warmup, t.actor_warmup_steps, t.critic_warmup_steps, t.value_head_init,
            t.critic_sees_observations) == ("verl", 0, 15, "normal", True)
    assert (t.steps, t.batch_size, t.actor_lr, t.critic_lr, t.kl_coef) == (20, 120, 1e-6, 1e-5, 0.001)
    assert [(s.name, s.sample, s.sample_seed) for s in cfg.data.dev] == [("nq", 3000, 42), ("hotpotqa", 3000, 42)]

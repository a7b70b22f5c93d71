"""A tiny causal LM and tokenizer built locally, for the CPU default and the tests.

No model hub is reachable from our machines, so the embedded default cannot download a searcher.
Instead we train a byte-level BPE tokenizer on the corpus, give it a Qwen-style chat template and the
s3 tags as single tokens, and initialise a small Qwen2 model with random weights. The result is a real
Hugging Face model folder (``save_pretrained``), loadable by transformers and, on GPU, by vLLM.
It knows nothing until trained: see the warm start in ``s3ray.train``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from s3ray.config import TinyModelConfig

# The s3 tags become single tokens, so a stop on "</query>" is a stop on one id.
S3_TAGS = (
    "<question>", "</question>", "<information>", "</information>", "<query>", "</query>",
    "<important_info>", "</important_info>", "<search_complete>", "</search_complete>",
    "<think>", "</think>", "<answer>", "</answer>", "<search>", "</search>",
)
EOS = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_DONE_MARKER = "s3ray_tiny.json"


def corpus_texts(corpus_path: Path, limit: int = 20_000) -> Iterator[str]:
    """Raw text lines of a JSONL corpus (either layout), enough to train a tokenizer."""
    with open(corpus_path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            row = json.loads(line)
            yield row.get("contents") or f"{row.get('title', '')}\n{row.get('text', '')}"


def searcher_format_texts(repeats: int = 200) -> list[str]:
    """The words of the searcher's own prompt and turns (instructions, a rendered doc, a query, a
    selection, the nudges), repeated so BPE merges them: a tokenizer trained on the corpus alone
    spells "query" or "Title" letter by letter when the corpus is not English prose (the learning
    check's generated world), which makes every prompt several times longer."""
    from s3ray.agent.observation import FINAL_TURN_NOTE, NUDGE
    from s3ray.agent.prompt import build_searcher_prompt
    from s3ray.config import AgentConfig
    from s3ray.types import Doc

    prompt = build_searcher_prompt("Which city?", [Doc("0", "Title", "Text.")], AgentConfig())
    turns = ('<query>{"query": "who is"}</query> <important_info>[1, 2, 3]</important_info> '
             "<search_complete>False</search_complete> <search_complete>True</search_complete>")
    return [prompt, turns, NUDGE, FINAL_TURN_NOTE] * repeats


def build_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE tokenizer with a chat template and the s3 tags as added tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS,
                                   additional_special_tokens=[IM_START, IM_END])
    fast.add_tokens(list(S3_TAGS))
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(cfg: TinyModelConfig, vocab_size: int, eos_id: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(cfg.seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )
    return Qwen2ForCausalLM(config)


def ensure_tiny_model(out_dir: Path, corpus_path: Path, cfg: TinyModelConfig) -> Path:
    """Build the tiny searcher once at ``out_dir`` (atomic: concurrent callers never see half a folder)."""
    out_dir = Path(out_dir)
    if (out_dir / _DONE_MARKER).exists():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out_dir.parent))
    try:
        texts = [*corpus_texts(corpus_path), *searcher_format_texts()]
        tokenizer = build_tokenizer(texts, cfg.vocab_size)
        model = build_model(cfg, vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id)
        model.generation_config.eos_token_id = [tokenizer.eos_token_id,
                                                tokenizer.convert_tokens_to_ids(IM_END)]
        model.generation_config.pad_token_id = tokenizer.eos_token_id
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / _DONE_MARKER).write_text(json.dumps(cfg.model_dump() | {"corpus": str(corpus_path)}))
        try:
            os.rename(tmp, out_dir)
        except OSError:  # another process finished first; theirs is as good as ours
            if not (out_dir / _DONE_MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir

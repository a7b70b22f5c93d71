"""A tiny causal LM and tokenizer built locally, for the CPU default and the tests.

No model hub is reachable from our machines, so the embedded default cannot download a searcher.
Instead we train a byte-level BPE tokenizer on the corpus, give it a Qwen-style chat template and the
s3 tags as single tokens, and initialise a small Qwen2 model with random weights. The result is a real
Hugging Face model folder (``save_pretrained``), loadable by transformers and, on GPU, by vLLM.
It knows nothing until trained: see the warm start in ``s3ray.train``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from s3ray.config import TinyModelConfig
from s3ray.model_folders import build_once

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
log = logging.getLogger(__name__)


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


COPY_CUE = '<query>{"query": "who is'  # how a query naming an entity begins (agent/heuristic.py)


def copy_examples(texts: Iterable[str], tokenizer, context_tokens: int = 64) -> list[tuple[list[int], list[list[int]]]]:
    """(passage ids + the query cue, the token ids of each capitalised word of the passage): what a model
    that can name an entity from its context may write next. A lone first word is left out (a sentence
    opener, like the subject the passage is about)."""
    cue = tokenizer.encode(COPY_CUE, add_special_tokens=False)
    out = []
    for text in texts:
        ids = tokenizer.encode(" ".join(text.split()), add_special_tokens=False)[:context_tokens]
        names = capitalised_words(ids[1:], tokenizer)
        if names:
            out.append((ids + cue, names))
    return out


def capitalised_words(ids: list[int], tokenizer) -> list[list[int]]:
    """The distinct capitalised words of ``ids`` as token runs: a piece starting a capitalised word
    (" Temple", or a bare " " before "T" where the vocabulary has no " T") and the letters that continue
    it without a space (a generated name such as " Druparvorx" is several pieces, and most first pieces
    start many names)."""
    pieces = [tokenizer.decode([t]) for t in ids]
    words: list[list[int]] = []
    current: list[int] | None = None
    for i, (t, piece) in enumerate(zip(ids, pieces, strict=True)):
        head = piece[1:] or (pieces[i + 1] if piece == " " and i + 1 < len(pieces) else "")
        if piece.startswith(" ") and head[:1].isupper():
            current = [t]
            words.append(current)
        elif current is not None and piece.isalpha():
            current.append(t)
        else:
            current = None
    return [list(w) for w in dict.fromkeys(tuple(w) for w in words)]


def pretrain_copying(model, examples: list[tuple[list[int], list[list[int]]]], steps: int, lr: float = 3e-3,
                     batch_size: int = 32, seed: int = 0) -> list[float]:
    """What a real LLM brings from pretraining and a from-scratch tiny model lacks: copying a name from
    its context. After the cue, the first piece is scored against the uniform distribution over the
    passage's names' first pieces, and the rest of one drawn name against its own pieces: it teaches
    *how* to copy a whole name, never *which* name a task needs (the learning check leaves that to RL).
    Returns the mean loss per name piece of each step."""
    import random

    import torch

    if not examples:
        raise ValueError("no copy examples: the corpus has no capitalised words")
    rng = random.Random(seed)
    optim = torch.optim.AdamW(model.parameters(), lr=lr)
    pad = model.config.pad_token_id
    losses = []
    model.train()
    for _ in range(steps):
        batch = [(ids, names, rng.choice(names)) for ids, names in rng.sample(examples, min(batch_size, len(examples)))]
        width = max(len(ids) + len(name) - 1 for ids, _, name in batch)
        input_ids = torch.full((len(batch), width), pad)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        first = torch.zeros((len(batch), model.config.vocab_size))  # the uniform target over first pieces
        rest = torch.full((len(batch), width), -100)  # at t: the drawn name's piece t predicts (-100: none)
        cue_end = torch.zeros(len(batch), dtype=torch.long)
        for row, (ids, names, name) in enumerate(batch):
            seq = ids + name[:-1]  # right-padded: the cue ends at len(ids) - 1, the name follows it
            input_ids[row, :len(seq)] = torch.tensor(seq)
            attention[row, :len(seq)] = 1
            firsts = sorted({n[0] for n in names})
            first[row, firsts] = 1.0 / len(firsts)
            cue_end[row] = len(ids) - 1
            rest[row, len(ids): len(ids) + len(name) - 1] = torch.tensor(name[1:], dtype=torch.long)
        # The vocabulary projection only where a loss reads it (the cue's end, the name's pieces): at every
        # position it was most of a step.
        hidden = model.base_model(input_ids=input_ids, attention_mask=attention).last_hidden_state
        head = model.get_output_embeddings()
        scored = rest != -100
        first_logp = torch.log_softmax(head(hidden[torch.arange(len(batch)), cue_end]).float(), -1)
        first_loss = -(first * first_logp).sum()
        rest_logp = torch.log_softmax(head(hidden[scored]).float(), -1)
        rest_loss = torch.nn.functional.nll_loss(rest_logp, rest[scored], reduction="sum")
        loss = (first_loss + rest_loss) / (len(batch) + scored.sum())
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        losses.append(loss.item())
    model.eval()
    return losses


def ensure_tiny_model(out_dir: Path, corpus_path: Path, cfg: TinyModelConfig) -> Path:
    """Build the tiny searcher once at ``out_dir`` (atomic: :func:`s3ray.model_folders.build_once`)."""
    def build(tmp: Path) -> dict:
        corpus = list(corpus_texts(corpus_path))  # read once: the tokenizer and the copy examples
        texts = [*corpus, *searcher_format_texts()]
        tokenizer = build_tokenizer(texts, cfg.vocab_size)
        model = build_model(cfg, vocab_size=len(tokenizer), eos_id=tokenizer.eos_token_id)
        model.generation_config.eos_token_id = [tokenizer.eos_token_id,
                                                tokenizer.convert_tokens_to_ids(IM_END)]
        model.generation_config.pad_token_id = tokenizer.eos_token_id
        if cfg.copy_pretrain_steps:
            examples = copy_examples(corpus, tokenizer)
            losses = pretrain_copying(model, examples, cfg.copy_pretrain_steps, seed=cfg.seed)
            log.info("tiny model: %d copy-pretraining steps, loss %.3f -> %.3f", len(losses),
                     losses[0], sum(losses[-20:]) / len(losses[-20:]))
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        return cfg.model_dump() | {"corpus": str(corpus_path)}

    return build_once(out_dir, _DONE_MARKER, build)

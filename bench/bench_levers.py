"""What each CPU lever saves on one GRPO update of the bundled searcher (SmolLM2-135M-Instruct), in one
process (no Ray): 8 HotpotQA-shaped episodes (two groups of four; the s3 prompt with three turn-0 docs, a
query, eight 64-token docs, a selection). The baseline is the same update in fp32 with every parameter
trained, ``logp_old`` recomputed and a reference model; the levers are added one at a time:

    train.update_s.smollm2.<lever>   seconds for old/ref log-probs and one PPO epoch (lower is better)
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from itertools import islice
from pathlib import Path

from common import figure

GRPO = {"algorithm": "grpo", "grpo_group_size": 4, "batch_size": 2, "mini_batch_size": 8, "micro_batch_size": 4,
        "actor_lr": 1e-5, "entropy_coef": 0.0, "kl_coef": 0.001}
TOP6 = {"dtype": "bfloat16", "trainable_layers": 6}
LEVERS = [  # (name, policy overrides, train overrides), each adding to the one before
    ("fp32", {}, {}),
    ("bf16", {"dtype": "bfloat16"}, {}),
    ("bf16_top6", TOP6, {}),
    ("bf16_top6_rollout_logp", TOP6, {"logp_old": "rollout"}),
    ("bf16_top6_rollout_logp_no_ref", TOP6, {"logp_old": "rollout", "kl_coef": 0.0}),
    ("bf16_lora16_rollout_logp_no_ref", {"dtype": "bfloat16", "lora": {"enabled": True}},
     {"logp_old": "rollout", "kl_coef": 0.0}),
]


def demo_shaped_batch(tokenizer):
    from s3ray.agent.episode import Episode
    from s3ray.agent.observation import render_information
    from s3ray.agent.prompt import encode_prompt, searcher_messages
    from s3ray.config import AgentConfig, load_config
    from s3ray.train.batch import collate_episodes
    from s3ray.types import Doc

    hotpot = load_config(None).paths.data_dir / "hotpotqa"
    with open(hotpot / "corpus.jsonl", encoding="utf-8") as f:
        docs = [Doc(r["id"], r["contents"].split("\n", 1)[0], r["contents"].split("\n", 1)[-1])
                for r in map(json.loads, islice(f, 60))]
    with open(hotpot / "train.jsonl", encoding="utf-8") as f:
        questions = [json.loads(line)["question"] for line in islice(f, 2)]
    rng = random.Random(0)
    episodes = []
    for g, question in enumerate(questions):
        prompt = encode_prompt(tokenizer, searcher_messages(question, docs[3 * g:3 * g + 3], AgentConfig()))
        for s in range(4):
            ep = Episode(question_id=f"q{g}", question=question, golden_answers=[], source="bench", prompt_ids=prompt,
                         temperature=0.8, sample_index=s, reward=float(rng.random() < 0.5))
            for text, action in (('<query>{"query": "' + question[:60] + '"}</query>', True),
                                 (render_information(docs[20 + 8 * s:28 + 8 * s], max_doc_tokens=64,
                                                     tokenizer=tokenizer), False),
                                 ("<important_info>[1, 3]</important_info><search_complete>True</search_complete>",
                                  True)):
                ids = tokenizer.encode(text, add_special_tokens=False)
                ep.append(ids, action=action, logprobs=[-1.0] * len(ids) if action else None)
            episodes.append(ep)
    return collate_episodes(episodes, pad_id=tokenizer.pad_token_id)


def main() -> None:
    import torch
    from transformers import AutoTokenizer

    from s3ray.bundled_models import ensure_bundled_model
    from s3ray.config import PolicyConfig, TrainConfig
    from s3ray.train.update import build_learner, ppo_epochs, prepare_batch

    with tempfile.TemporaryDirectory(prefix="s3ray-bench-levers-") as tmp:
        model_dir = ensure_bundled_model("bundled:smollm2-135m-instruct", Path(tmp))
        batch = demo_shaped_batch(AutoTokenizer.from_pretrained(str(model_dir)))
        baseline = None
        for name, policy, train in LEVERS:
            cfg = TrainConfig(**(GRPO | train))
            learner = build_learner(model_dir, PolicyConfig(**policy), cfg, torch.device("cpu"))
            t0 = time.perf_counter()
            prepared, _ = prepare_batch(batch, learner, cfg)
            ppo_epochs(prepared, learner, cfg, num_minibatches=1)
            seconds = time.perf_counter() - t0
            baseline = baseline or seconds
            figure(f"train.update_s.smollm2.{name}", seconds, "s", None if name == "fp32" else baseline,
                   lower_is_better=True)


if __name__ == "__main__":
    main()

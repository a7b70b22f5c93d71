"""The ``s3ray`` command line: one entry per stage, all sharing one config tree.

    s3ray <stage> [--config PRESET_OR_YAML] [key.sub=value ...]

Each stage is a plain function ``fn(cfg) -> None`` in its package; ``python -m s3ray`` is this same
command, so ``ray job submit -- python -m s3ray train --config demo_cpu`` and ``s3ray train --config
demo_cpu`` run the same code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import yaml

from s3ray.config import S3Config, load_config
from s3ray.progress import show_info_logs
from s3ray.serving import SERVE_APPS, serve_yaml

# stage name -> (module:function, one-line help). Imported lazily: `s3ray --help` must not load torch.
STAGES: dict[str, tuple[str, str]] = {
    "generate-bridge": ("s3ray.data.bridge:generate", "write the learning check's generated multi-hop world"),
    "index": ("s3ray.retrieval.indexing:build_index", "embed and index the corpus with Ray Data"),
    "serve-retriever": ("s3ray.retrieval.service:serve_forever", "run the retriever Serve app"),
    "serve-generator": ("s3ray.generation.service:serve_forever", "run the generator Serve app"),
    "deploy": ("s3ray.deploy:deploy_services", "deploy retriever and generator, then return"),
    "precompute": ("s3ray.ragcache.precompute:precompute", "precompute the naive-RAG cache"),
    "import-rag-cache": ("s3ray.ragcache.s3_import:import_rag_cache",
                         "read s3's rag_cache.json (rag_cache.import_path) into the naive-RAG cache"),
    "memory-plan": ("s3ray.train.memory_plan:print_memory_plan", "print the trainer's per-rank GPU memory plan"),
    "train": ("s3ray.train.trainer:train", "train the searcher with PPO/GRPO on Ray Train"),
    "infer": ("s3ray.inference.run:gather_contexts", "gather contexts with s3 and the baselines"),
    "evaluate": ("s3ray.evaluation.evaluate:evaluate", "score contexts with the frozen generator"),
    "demo": ("s3ray.demo:run_demo", "the whole loop on the embedded default"),
}


def _resolve(target: str):
    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s3ray", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True)
    for name, (_, help_text) in {**STAGES, "config": ("", "print the resolved config"),
                                 "serve-config": ("", "print a `serve run` YAML that names the preset"),
                                 "export": ("", "write a kept training checkpoint as a Hugging Face folder")
                                 }.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", "-c", default=None, help="preset name (s3ray/configs) or YAML path")
        p.add_argument("overrides", nargs="*", help="key.sub=value overrides")
        if name == "serve-config":
            p.add_argument("--app", action="append", choices=list(SERVE_APPS),
                           help="an app to include (repeatable; default: all)")
        if name == "export":
            p.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the last kept)")
            p.add_argument("--out", default=None, help="the folder to write (default: train.dir/export_step_N)")
    return parser


def parse_config(argv: list[str]) -> tuple[str, S3Config]:
    args = build_parser().parse_args(argv)
    return args.stage, load_config(args.config, args.overrides)


def main(argv: list[str] | None = None) -> int:
    show_info_logs()
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        stage, cfg = args.stage, load_config(args.config, args.overrides)
        if stage == "serve-config":
            print(serve_yaml(args.config, args.overrides, args.app or list(SERVE_APPS)), end="")
            return 0
        if stage == "export":
            from s3ray.train.checkpoint import export_step

            print(export_step(cfg, args.step, Path(args.out) if args.out else None))
            return 0
    except (ValueError, FileNotFoundError) as err:  # bad preset or override: say so, no traceback
        print(f"s3ray: {err}", file=sys.stderr)
        return 2
    if stage == "config":
        from s3ray.resources import resolve_resources, usable_cores

        cores = usable_cores(cfg.cluster.num_cpus)
        resolved, choices = resolve_resources(cfg, cores)
        print(f"# resolved on {cores} core(s) (the cores this machine gives, at most cluster.num_cpus):")
        print("".join(f"#   {c.key}: {c.value}  ({c.why})\n" for c in choices), end="")
        print(yaml.safe_dump(resolved.to_dict(), sort_keys=False))
        return 0
    result = _resolve(STAGES[stage][0])(cfg)
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())

"""Check that every vLLM name and parameter s3ray uses exists in vLLM 0.29.0 (`make check-vllm-api`).

The calls are those of ``s3ray/rollout/engine/vllm.py`` (VLLMEngine) and ``s3ray/rollout/weight_sync.py``
(NcclSync). Two ways to look, the same list of checks:

- vllm importable (a GPU machine with the `gpu` extra): the live objects, by ``inspect``;
- otherwise the source of the released wheel, read with ``ast`` without importing it (it needs CUDA
  torch): ``--wheel PATH``, or ``pip download vllm==0.29.0 --no-deps`` into a temporary folder.

Exit status 0 when every check passes; otherwise one line per failure.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

VERSION = "0.29.0"


@dataclass(frozen=True)
class Check:
    module: str  # dotted module
    name: str  # class (or class.method) in it; "" for the module itself
    kind: str  # "params": a callable's parameters; "fields": a class's fields; "exports": module names;
    #            "literal": the values of a Literal alias
    names: tuple[str, ...]


CHECKS = [
    # VLLMEngine.__init__
    Check("vllm", "", "exports", ("AsyncEngineArgs", "SamplingParams")),
    Check("vllm.engine.arg_utils", "EngineArgs", "fields",
          ("model", "seed", "dtype", "gpu_memory_utilization", "max_model_len", "logprobs_mode",
           "enable_prefix_caching", "weight_transfer_config")),
    Check("vllm.config", "", "exports", ("WeightTransferConfig",)),
    Check("vllm.config.weight_transfer", "WeightTransferConfig", "fields", ("backend",)),
    Check("vllm.config.model", "LogprobsMode", "literal", ("processed_logprobs",)),
    Check("vllm.v1.engine.async_llm", "AsyncLLM.from_engine_args", "params", ("engine_args",)),
    # VLLMEngine.generate
    Check("vllm.v1.engine.async_llm", "AsyncLLM.generate", "params", ("prompt", "sampling_params", "request_id")),
    Check("vllm.sampling_params", "SamplingParams", "fields",
          ("temperature", "top_p", "max_tokens", "stop", "include_stop_str_in_output", "logprobs",
           "skip_special_tokens")),
    Check("vllm.inputs", "", "exports", ("TokensPrompt",)),
    Check("vllm.v1.engine.exceptions", "", "exports", ("EngineDeadError",)),
    Check("vllm.inputs.llm", "TokensPrompt", "fields", ("prompt_token_ids",)),
    Check("vllm.outputs", "CompletionOutput", "fields", ("token_ids", "logprobs", "finish_reason", "stop_reason")),
    # VLLMEngine.load_state_dict / weight_transfer / shutdown
    Check("vllm.v1.engine.async_llm", "AsyncLLM.collective_rpc", "params", ("method", "timeout", "args", "kwargs")),
    Check("vllm.v1.engine.async_llm", "AsyncLLM.reset_prefix_cache", "params", ()),
    Check("vllm.v1.engine.async_llm", "AsyncLLM.init_weight_transfer_engine", "params", ("request",)),
    Check("vllm.v1.engine.async_llm", "AsyncLLM.start_weight_update", "params", ()),
    Check("vllm.v1.engine.async_llm", "AsyncLLM.update_weights", "params", ("request",)),
    Check("vllm.v1.engine.async_llm", "AsyncLLM.finish_weight_update", "params", ("weight_version",)),
    Check("vllm.v1.engine.async_llm", "AsyncLLM.shutdown", "params", ()),
    Check("vllm.v1.worker.gpu_worker", "Worker.reload_weights", "params", ()),
    Check("vllm.v1.worker.gpu_model_runner", "GPUModelRunner.reload_weights", "params",
          ("weights_iterator", "weights_path", "is_checkpoint_format")),
    Check("vllm.distributed.weight_transfer.base", "WeightTransferInitRequest", "fields", ("init_info",)),
    Check("vllm.distributed.weight_transfer.base", "WeightTransferUpdateRequest", "fields", ("update_info",)),
    # NcclSync (trainer side) and the pool's per-engine init info
    Check("vllm.distributed.weight_transfer.base", "ParamMeta", "fields", ("name", "dtype", "shape")),
    Check("vllm.distributed.weight_transfer.base", "TrainerInitInfo", "fields", ("rank",)),
    # StateSource subclasses WeightSource: the two abstract methods it defines, the defaults it inherits
    Check("vllm.distributed.weight_transfer.base", "WeightSource.metadata", "params", ()),
    Check("vllm.distributed.weight_transfer.base", "WeightSource.__iter__", "params", ()),
    Check("vllm.distributed.weight_transfer.base", "WeightSource.held_names", "params", ()),
    Check("vllm.distributed.weight_transfer.base", "WeightSource.groups", "params", ()),
    Check("vllm.distributed.weight_transfer.base", "WeightSource.iter_groups", "params", ()),
    Check("vllm.distributed.weight_transfer.nccl_engine", "NCCLTrainerInitInfo", "fields",
          ("master_address", "master_port", "world_size", "packed")),
    Check("vllm.distributed.weight_transfer.nccl_engine", "NCCLTrainerWeightTransferEngine.trainer_init", "params",
          ("init_info", "client", "source")),
    Check("vllm.distributed.weight_transfer.nccl_engine", "NCCLTrainerWeightTransferEngine.send_weights",
          "params", ()),
    Check("vllm.distributed.weight_transfer.nccl_engine", "NCCLTrainerWeightTransferEngine.shutdown", "params", ()),
    Check("vllm.distributed.weight_transfer.nccl_common", "NCCLWeightTransferInitInfo", "fields",
          ("master_address", "master_port", "rank_offset", "world_size")),
]


# --------------------------------------------------------------------------------------------
# Live objects
# --------------------------------------------------------------------------------------------
def live_names(check: Check) -> set[str]:
    module = importlib.import_module(check.module)
    if check.kind == "exports":
        return {n for n in check.names if hasattr(module, n)}
    obj = module
    for part in check.name.split("."):
        obj = getattr(obj, part)
    if check.kind == "params":
        return set(inspect.signature(obj).parameters)
    if check.kind == "literal":
        return set(getattr(obj, "__args__", ()))
    names = set(getattr(obj, "__struct_fields__", ()))  # msgspec structs
    for klass in getattr(obj, "__mro__", ()):
        names |= set(getattr(klass, "__annotations__", {}))
    try:
        names |= set(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        pass
    return names


# --------------------------------------------------------------------------------------------
# Source, without importing
# --------------------------------------------------------------------------------------------
class Source:
    def __init__(self, root: Path):
        self.root = root  # the folder holding the `vllm` package
        self._trees: dict[str, ast.Module] = {}

    def tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            base = self.root / module.replace(".", "/")
            path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
            self._trees[module] = ast.parse(path.read_text(encoding="utf-8"))
        return self._trees[module]

    def klass(self, module: str, name: str) -> ast.ClassDef:
        for node in self.tree(module).body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return node
        raise LookupError(f"no class {name} in {module}")

    def names(self, check: Check) -> set[str]:
        tree = self.tree(check.module)
        if check.kind == "exports":  # imported, defined, or a key of a lazy-import map
            names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                     for a in n.names}
            names |= {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
            return names | {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
        if check.kind == "literal":
            for node in tree.body:
                if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == check.name for t in node.targets):
                    return {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
            raise LookupError(f"no alias {check.name} in {check.module}")
        class_name, _, method = check.name.partition(".")
        klass = self.klass(check.module, class_name)
        if check.kind == "params":
            for node in klass.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == method:
                    a = node.args
                    return {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs} - {"self", "cls"}
            raise LookupError(f"no method {check.name} in {check.module}")
        fields = set()
        for base in [klass, *self._local_bases(check.module, klass)]:
            fields |= {n.target.id for n in base.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
        return fields

    def _local_bases(self, module: str, klass: ast.ClassDef) -> list[ast.ClassDef]:
        out = []
        for base in klass.bases:
            name = getattr(base, "id", None)
            try:
                found = self.klass(module, name) if name else None
            except LookupError:
                found = None
            if found is not None:
                out += [found, *self._local_bases(module, found)]
        return out


def unpack_wheel(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(into, [n for n in z.namelist() if n.startswith("vllm/") and n.endswith(".py")])
    return into


def download_wheel(into: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", f"vllm=={VERSION}", "--no-deps", "--quiet",
                    "-d", str(into)], check=True)
    return next(into.glob("vllm-*.whl"))


# --------------------------------------------------------------------------------------------
def run(names_of) -> list[str]:
    failures = []
    for check in CHECKS:
        where = f"{check.module}{'.' + check.name if check.name else ''}"
        try:
            found = names_of(check)
        except Exception as exc:  # a missing module, class or method is a failure, named here
            failures.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        missing = [n for n in check.names if n not in found]
        if missing:
            failures.append(f"{where}: missing {check.kind} {missing}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a vllm wheel to read instead of the installed package")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.wheel is None:
            try:
                import vllm
            except ImportError:
                vllm = None
            if vllm is not None:
                print(f"checking the installed vllm {vllm.__version__} (live objects)")
                if vllm.__version__ != VERSION:
                    print(f"warning: s3ray pins vllm {VERSION}")
                failures = run(live_names)
            else:
                args.wheel = download_wheel(Path(tmp))
        if args.wheel is not None:
            print(f"checking {args.wheel.name} (source, not imported)")
            failures = run(Source(unpack_wheel(args.wheel, Path(tmp) / "src")).names)
    for line in failures:
        print("FAIL", line)
    print(f"{len(CHECKS) - len(failures)}/{len(CHECKS)} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

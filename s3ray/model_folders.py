"""Model folders built once, atomically: the tiny model and the converted bundled models."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def build_once(out_dir: Path, marker: str, build: Callable[[Path], dict[str, Any]]) -> Path:
    """``out_dir``, built by ``build(tmp)`` into a temporary folder beside it unless ``out_dir/marker``
    exists. ``build`` returns what ``marker`` records (written last, then the folder is renamed into place):
    an interrupted build leaves nothing behind, concurrent builders never see half a folder, and a folder
    without its marker (an older unfinished one) is replaced."""
    out_dir = Path(out_dir)
    if (out_dir / marker).exists():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        (tmp / marker).write_text(json.dumps(build(tmp), indent=2))
        if out_dir.exists() and not (out_dir / marker).exists():
            shutil.rmtree(out_dir)
        try:
            os.rename(tmp, out_dir)
        except OSError:  # another process finished first; theirs is as good as ours
            if not (out_dir / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir

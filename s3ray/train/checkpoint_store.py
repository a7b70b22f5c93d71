"""The checkpoints folder: which ``step_NNNNNN`` folders are complete, which one a resume takes, which ones
pruning removes. Plain files, no torch.

A checkpoint is complete once its marker (``state.json``, the step's meta) exists: rank 0 writes it last,
atomically, after every rank's shards are on disk. A folder without it was cut off mid-write (a kill, a
crash) and is never read. Resume scans this folder for the newest complete step (not Ray Train's own list,
which a kill can leave naming a folder already pruned), and pruning runs only after a newer checkpoint is
complete, removing a folder's marker before its files, so the folder a resume would take is never half gone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

MARKER = "state.json"
_PREFIX = "step_"


def step_folder(root: Path, step: int) -> Path:
    return root / f"{_PREFIX}{step:06d}"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def _step_folders(root: Path) -> dict[int, Path]:
    return {int(p.name.removeprefix(_PREFIX)): p for p in root.glob(f"{_PREFIX}*")
            if p.is_dir() and p.name.removeprefix(_PREFIX).isdigit()}


def complete_steps(root: Path) -> list[int]:
    """The steps under ``root`` whose checkpoints are complete, in order."""
    return sorted(step for step, folder in _step_folders(root).items() if is_complete(folder))


def newest_complete(root: Path) -> Path | None:
    """The folder a resume starts from: the newest complete checkpoint under ``root``, or None."""
    steps = complete_steps(root)
    return step_folder(root, steps[-1]) if steps else None


def mark_complete(folder: Path, meta: dict[str, Any]) -> None:
    """Write the marker: to a temporary name first, so a kill mid-write never leaves a partial one."""
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder / MARKER)


def read_meta(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MARKER).read_text())


def prune(root: Path, keep: int) -> list[int]:
    """Keep the newest ``keep`` complete checkpoints; remove older complete ones and every incomplete folder
    older than the newest complete one (a newer incomplete one may be being written). Returns the removed
    steps. Each folder loses its marker first: a kill mid-removal leaves an incomplete folder, not a
    complete-looking one with missing shards."""
    folders = _step_folders(root)
    complete = complete_steps(root)
    if not complete:
        return []
    kept = set(complete[-keep:])
    removed = [step for step in sorted(folders) if step < complete[-1] and step not in kept]
    for step in removed:
        (folders[step] / MARKER).unlink(missing_ok=True)
        shutil.rmtree(folders[step])
    return removed

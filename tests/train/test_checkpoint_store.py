"""The checkpoints folder (s3ray.train.checkpoint_store): a folder without its marker (a kill mid-write) is
never resumed, and pruning never removes the folder a resume would take."""

from __future__ import annotations

from s3ray.train.checkpoint_store import (
    MARKER,
    complete_steps,
    mark_complete,
    newest_complete,
    prune,
    read_meta,
    step_folder,
)


def write_checkpoint(root, step: int, complete: bool = True):
    folder = step_folder(root, step)
    (folder / "shards").mkdir(parents=True)
    (folder / "shards" / "__0_0.distcp").write_bytes(b"weights")
    if complete:
        mark_complete(folder, {"step": step})
    return folder


def test_a_folder_killed_mid_write_is_skipped_by_resume(tmp_path):
    assert newest_complete(tmp_path) is None and complete_steps(tmp_path / "absent") == []
    write_checkpoint(tmp_path, 2)
    write_checkpoint(tmp_path, 4)
    write_checkpoint(tmp_path, 6, complete=False)  # shards on disk, the marker never written
    (tmp_path / "step_000008").mkdir()  # killed before any file
    (tmp_path / "step_000005.tmp").mkdir()  # not a step folder
    assert complete_steps(tmp_path) == [2, 4]
    assert newest_complete(tmp_path) == step_folder(tmp_path, 4)
    assert read_meta(newest_complete(tmp_path)) == {"step": 4}


def test_the_marker_is_written_whole_or_not_at_all(tmp_path):
    folder = write_checkpoint(tmp_path, 3)
    assert {p.name for p in folder.iterdir()} == {MARKER, "shards"}  # no temporary file left


def test_prune_keeps_the_newest_complete_and_what_may_still_be_written(tmp_path):
    for step in (1, 2, 3):
        write_checkpoint(tmp_path, step)
    write_checkpoint(tmp_path, 4, complete=False)  # being written now: the newest complete is still 3
    assert prune(tmp_path, keep=2) == [1]
    assert complete_steps(tmp_path) == [2, 3] and step_folder(tmp_path, 4).is_dir()

    write_checkpoint(tmp_path, 5, complete=False)  # an older attempt's leftover below a newer complete one
    mark_complete(step_folder(tmp_path, 4), {"step": 4})
    write_checkpoint(tmp_path, 6)
    assert prune(tmp_path, keep=1) == [2, 3, 4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000006"]


def test_prune_with_nothing_complete_removes_nothing(tmp_path):
    write_checkpoint(tmp_path, 1, complete=False)
    assert prune(tmp_path, keep=1) == [] and step_folder(tmp_path, 1).is_dir()

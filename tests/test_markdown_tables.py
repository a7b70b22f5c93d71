"""The repo's Markdown tables render: GitHub shows a table only when its delimiter row has as many cells
as its header, and it drops the cells of a longer body row. Three README tables were once shown as plain
text because a measured column had been added to the header alone."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DELIMITER = re.compile(r"\|(\s*:?-+:?\s*\|)+")


def cells(row: str) -> int:
    # Pipes inside code spans or escaped as \| do not split cells.
    return re.sub(r"`[^`]*`|\\\|", "", row.strip()).count("|") - 1


def table_errors(text: str) -> list[str]:
    errors = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if i == 0 or not DELIMITER.fullmatch(line.strip()):
            continue
        width = cells(lines[i - 1])
        if cells(line) != width:
            errors.append(f"line {i + 1}: a delimiter of {cells(line)} cells under a header of {width}")
        for j in range(i + 1, len(lines)):
            if not lines[j].strip().startswith("|"):
                break
            if cells(lines[j]) != width:
                errors.append(f"line {j + 1}: a row of {cells(lines[j])} cells in a table of {width}")
    return errors


def test_table_errors_finds_a_short_delimiter_and_a_long_row():
    assert table_errors("| a | b |\n|---|---|\n| 1 | `x|y` |\n") == []
    assert table_errors("| a | b | c |\n|---|---|\n| 1 | 2 | 3 |\n") == [
        "line 2: a delimiter of 2 cells under a header of 3"]
    assert table_errors("| a | b |\n|---|---|\n| 1 | 2 | 3 |\n") == ["line 3: a row of 3 cells in a table of 2"]


MARKDOWN = ["README.md", "pipelines/README.md", *(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/*.md"))]


@pytest.mark.parametrize("path", sorted(MARKDOWN))
def test_markdown_tables_have_one_width(path):
    assert table_errors((ROOT / path).read_text()) == []

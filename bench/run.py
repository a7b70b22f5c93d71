"""`make bench`: run every bench/bench_*.py in turn; each prints one JSON object per figure on stdout.

Only the figures reach stdout: anything else a script's stdout carries (Ray forwards its raylet's and
workers' log lines to the driver's stdout, e.g. at Serve's shutdown) goes to stderr, so stdout stays one
JSON object per line.

    python bench/run.py [NAME ...]     # e.g. `python bench/run.py retrieval` runs bench_retrieval.py only
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def is_figure(line: str) -> bool:
    """Whether a line of a bench's stdout is a figure: a JSON object with a name, a value and a unit."""
    try:
        row = json.loads(line)
    except ValueError:
        return False
    return isinstance(row, dict) and {"name", "value", "unit"} <= row.keys()


def main(argv: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in argv]
    failed = []
    for script in scripts:
        print(f"# {script.name}", file=sys.stderr, flush=True)
        with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as proc:
            for line in proc.stdout:
                print(line, end="", file=sys.stdout if is_figure(line) else sys.stderr, flush=True)
        if proc.returncode != 0:
            failed.append(script.name)
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

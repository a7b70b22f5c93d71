"""`make bench`'s runner keeps stdout to figures: a bench whose stdout also carries other lines (Ray
forwards its raylet's log lines there) still gives one JSON object per line on stdout."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_only_figures_reach_stdout(tmp_path):
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "run.py").write_text((REPO / "bench" / "run.py").read_text())
    (bench / "bench_noisy.py").write_text(
        "import json\n"
        "print(json.dumps({'name': 'a', 'value': 1.0, 'unit': 'x', 'baseline': 2.0, 'ratio': 0.5}))\n"
        "print('(raylet) Task ServeController.listen_for_change failed.')\n"
        "print(json.dumps(['not', 'a', 'figure']))\n"
        "print(json.dumps({'name': 'b', 'value': 3.0, 'unit': 'y'}))\n")
    done = subprocess.run([sys.executable, str(bench / "run.py")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert [json.loads(line)["name"] for line in done.stdout.splitlines()] == ["a", "b"]
    assert "(raylet) Task ServeController" in done.stderr and '["not", "a", "figure"]' in done.stderr

"""The result tables and the bar chart, built from per-question evaluation records.

A record is one scored answer: ``gatherer``, ``dataset``, ``genacc``, ``em``, ``f1``,
``decided_by`` (span | judge | none), ``num_docs`` and ``context_words``. Every figure is a plain
mean over the records of one (gatherer, dataset) cell; an average column is the macro average over its
datasets (as the paper reports: one over the general-QA sets, one over the medical sets), given only when
the gatherer has every one of them. Without named averages there is one, "average", over all datasets.

Context size is counted in whitespace-separated words of the docs' titles and texts: the same count
whatever the generator backend (the embedded extractive reader has no tokenizer of its own).
"""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MISSING = "—"


@dataclass(frozen=True)
class Cell:
    """Means over the questions of one (gatherer, dataset); rates in [0, 1]."""

    n: int
    genacc: float
    em: float
    f1: float
    by_span: float
    by_judge: float
    docs: float
    words: float


@dataclass
class Report:
    gatherers: list[str]
    datasets: list[str]
    cells: dict[tuple[str, str], Cell]
    markdown: str = ""
    files: list[Path] = field(default_factory=list)
    averages: dict[str, list[str]] = field(default_factory=dict)  # column name -> its datasets

    def average_columns(self) -> dict[str, list[str]]:
        return self.averages or {"average": list(self.datasets)}

    def average(self, gatherer: str, metric: str, column: str = "average") -> float | None:
        datasets = self.average_columns()[column]
        values = [getattr(self.cells[(gatherer, d)], metric) for d in datasets if (gatherer, d) in self.cells]
        return statistics.fmean(values) if values and len(values) == len(datasets) else None

    def metrics(self) -> dict[str, float]:
        """Flat MLflow metrics: ``<metric>.<gatherer>.<dataset|average>``."""
        out = {}
        for (gatherer, dataset), cell in self.cells.items():
            for metric in ("genacc", "em", "f1", "by_span", "by_judge", "docs", "words"):
                out[f"{metric}.{gatherer}.{dataset}"] = getattr(cell, metric)
        for gatherer in self.gatherers:
            for metric in ("genacc", "em", "f1"):
                for column in self.average_columns():
                    if (avg := self.average(gatherer, metric, column)) is not None:
                        out[f"{metric}.{gatherer}.{column}"] = avg
        return out


def mean(values) -> float:
    return statistics.fmean(float(v) for v in values)


def summarize(records: list[dict[str, Any]]) -> dict[tuple[str, str], Cell]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in records:
        groups[(row["gatherer"], row["dataset"])].append(row)
    cells = {}
    for key, rows in groups.items():
        cells[key] = Cell(n=len(rows), genacc=mean(r["genacc"] for r in rows), em=mean(r["em"] for r in rows),
                          f1=mean(r["f1"] for r in rows),
                          by_span=mean(r["decided_by"] == "span" for r in rows),
                          by_judge=mean(r["decided_by"] == "judge" for r in rows),
                          docs=mean(r["num_docs"] for r in rows), words=mean(r["context_words"] for r in rows))
    return cells


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{100 * value:.1f}"


def metric_table(report: Report, metric: str) -> tuple[list[str], list[list[str]]]:
    """Rows = gatherers, columns = datasets + the average columns; values in %."""
    columns = list(report.average_columns())
    header = ["gatherer", *report.datasets, *columns]
    rows = []
    for g in report.gatherers:
        cells = [_pct(getattr(report.cells[(g, d)], metric)) if (g, d) in report.cells else MISSING
                 for d in report.datasets]
        rows.append([g, *cells, *(_pct(report.average(g, metric, c)) for c in columns)])
    return header, rows


def split_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """How each cell's GenAcc splits into answers found by the span match and by the judge alone."""
    header = ["gatherer", "dataset", "n", "genacc", "by span", "by judge only", "em", "f1"]
    rows = [[g, d, str(c.n), _pct(c.genacc), _pct(c.by_span), _pct(c.by_judge), _pct(c.em), _pct(c.f1)]
            for g in report.gatherers for d in report.datasets if (c := report.cells.get((g, d)))]
    return header, rows


def context_table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["gatherer", "dataset", "n", "docs / question", "words / question"]
    rows = [[g, d, str(c.n), f"{c.docs:.2f}", f"{c.words:.1f}"]
            for g in report.gatherers for d in report.datasets if (c := report.cells.get((g, d)))]
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(out_dir: Path, stem: str, header: list[str], rows: list[list[str]]) -> list[Path]:
    md, csv_path = out_dir / f"{stem}.md", out_dir / f"{stem}.csv"
    md.write_text(to_markdown(header, rows), encoding="utf-8")
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return [md, csv_path]


def bar_chart(report: Report, path: Path, title: str) -> Path:
    """Grouped bars: one group per dataset (and the average), one bar per gatherer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*report.datasets, *report.average_columns()]
    width = 0.8 / max(len(report.gatherers), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * max(len(report.gatherers), 2) * 0.5), 4.0))
    for i, g in enumerate(report.gatherers):
        values = [report.cells[(g, d)].genacc if (g, d) in report.cells else None for d in report.datasets]
        values += [report.average(g, "genacc", c) for c in report.average_columns()]
        xs = [j + (i - (len(report.gatherers) - 1) / 2) * width for j in range(len(groups))]
        ax.bar(xs, [100 * v if v is not None else 0.0 for v in values], width, label=g)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("GenAcc (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))  # never over the bars
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def build_report(records: list[dict[str, Any]], out_dir: Path, gatherers: list[str], datasets: list[str],
                 title: str = "GenAcc by gatherer", averages: dict[str, list[str]] | None = None) -> Report:
    """Write table/em/f1/span_judge/context_size (.md + .csv), genacc.png and report.md to ``out_dir``."""
    if not records:
        raise ValueError("no evaluation records to report")
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = summarize(records)
    present = {g for g, _ in cells}
    unknown = sorted({d for names in (averages or {}).values() for d in names} - set(datasets))
    if unknown:
        raise ValueError(f"evaluation.averages names datasets {unknown} that are not dev datasets {datasets}")
    report = Report(gatherers=[g for g in gatherers if g in present],
                    datasets=[d for d in datasets if any((g, d) in cells for g in present)], cells=cells,
                    averages={name: list(names) for name, names in (averages or {}).items()})
    stray = sorted(present - set(report.gatherers))
    if stray:
        raise ValueError(f"records of gatherers {stray} that are not in the gatherer list {gatherers}")
    sections = [("table", "GenAcc (%)", metric_table(report, "genacc")),
                ("em", "Exact match (%)", metric_table(report, "em")),
                ("f1", "Token F1 (%)", metric_table(report, "f1")),
                ("span_judge", "GenAcc split: span match vs. judge only (%)", split_table(report)),
                ("context_size", "Context size (words = whitespace tokens of the docs)", context_table(report))]
    parts = [f"# {title}\n"]
    for stem, heading, (header, rows) in sections:
        report.files += write_table(out_dir, stem, header, rows)
        parts.append(f"## {heading}\n\n{to_markdown(header, rows)}")
    report.files.append(bar_chart(report, out_dir / "genacc.png", title))
    parts.append("![GenAcc](genacc.png)\n")
    report.markdown = "\n".join(parts)
    (out_dir / "report.md").write_text(report.markdown, encoding="utf-8")
    report.files.append(out_dir / "report.md")
    return report

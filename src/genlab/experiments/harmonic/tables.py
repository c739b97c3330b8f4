"""Summaries over seeds, trend verdicts and the tables beside the paper and the 2022 reproduction."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genlab.experiments import provenance
from genlab.experiments.harmonic.plan import (
    ESTIMATORS,
    LABELS,
    NETWORK,
    SWEEPS,
    SYMBOL,
    TITLES,
    Plan,
    comparable,
    data_title,
)
from genlab.experiments.harmonic_reference import PAPER, REPRO_2022


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1, as the 2022 report's tables); std is nan for one value."""
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else math.nan)


def trend_verdict(constants: Mapping[float, float]) -> str:
    """``"holds"`` when the constant falls strictly as the swept std grows, else ``"does not hold"``."""
    if len(constants) < 2 or any(not math.isfinite(v) for v in constants.values()):
        return "does not hold"
    ordered = [constants[k] for k in sorted(constants)]
    return "holds" if all(a > b for a, b in zip(ordered, ordered[1:])) else "does not hold"


def summarise(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (dataset, sweep, value): mean +- std of each estimator, with the published numbers."""
    groups: dict[tuple[str, str, float], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["sweep"], float(r["value"])), []).append(r)
    rows = []
    for (name, sweep, value), rs in groups.items():
        row: dict[str, Any] = {
            "dataset": name,
            "stand_in": rs[0]["stand_in"],
            "sweep": sweep,
            "network": NETWORK[sweep],
            "value": value,
            "n_seeds": len(rs),
        }
        for est in ESTIMATORS:
            row[f"{est}_mean"], row[f"{est}_std"] = mean_std([float(r[est]) for r in rs])
        for label, table in (("paper", PAPER), ("repro2022", REPRO_2022)):
            row[f"{label}_mean"], row[f"{label}_std"] = table.get((name, sweep, value), (math.nan, math.nan))
        rows.append(row)
    return rows


def constants_figure(rows: Sequence[Mapping[str, Any]]):
    """Each sweep's LipSDP mean (with the seeds' std) between the lower and the product bound, per data set;
    the published rows only in the panels of a run on their data."""
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    fig, axes = plt.subplots(len(names), 2, figsize=(7.5, 3.2 * len(names) + 0.6), squeeze=False)
    for i, name in enumerate(names):
        for j, sweep in enumerate(SWEEPS):
            ax = axes[i, j]
            sel = sorted((r for r in rows if r["dataset"] == name and r["sweep"] == sweep), key=lambda r: r["value"])
            xs = [float(r["value"]) for r in sel]
            ax.errorbar(
                xs,
                [float(r["lipsdp_mean"]) for r in sel],
                yerr=[np.nan_to_num(float(r["lipsdp_std"])) for r in sel],
                marker="o",
                capsize=3,
                label="this run: LipSDP",
            )
            ax.fill_between(
                xs,
                [float(r["lower_mean"]) for r in sel],
                [float(r["product_mean"]) for r in sel],
                alpha=0.2,
                label="this run: lower to product bound",
            )
            if sel and comparable(name, sel[0]["stand_in"]):
                ax.plot(xs, [PAPER[(name, sweep, x)][0] for x in xs], "s--", label="paper")
                ax.plot(xs, [REPRO_2022[(name, sweep, x)][0] for x in xs], "^:", label="2022 reproduction")
            ax.set_yscale("log")
            ax.set_xlabel(SYMBOL[sweep])
            ax.set_ylabel(f"{NETWORK[sweep]} Lipschitz constant")
            ax.set_title(
                f"{data_title(name, sel[0]['stand_in']) if sel else name}:\n{NETWORK[sweep]} vs {SYMBOL[sweep]}"
            )
            ax.grid(alpha=0.3, which="both")
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=2, fontsize=9)
    fig.tight_layout(rect=(0, 0.12 / len(names), 1, 1))
    return fig


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a CSV file the runner wrote (runs, lipschitz, attack, defects), numbers as numbers."""
    import csv

    def value(text: str) -> Any:
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def trends(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The verdict on each predicted trend, per dataset and source of numbers (the published ones only
    for a run on their data; ``—`` otherwise)."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for sweep in SWEEPS:
            sel = [r for r in rows if r["dataset"] == name and r["sweep"] == sweep]
            if not sel:
                continue
            entry = {
                "dataset": name,
                "data": data_title(name, sel[0]["stand_in"]),
                "trend": f"{NETWORK[sweep]} constant falls as {sweep} grows",
            }
            for col in (*ESTIMATORS, "paper", "repro2022"):
                published = col in ("paper", "repro2022")
                entry[col] = (
                    "—"
                    if published and not comparable(name, sel[0]["stand_in"])
                    else trend_verdict({float(r["value"]): float(r[f"{col}_mean"]) for r in sel})
                )
            out.append(entry)
    return out


def fmt(mean: float, std: float) -> str:
    """``mean ± std`` with three significant digits; ``—`` for a missing number."""
    if not math.isfinite(mean):
        return "—"
    m = f"{mean:.3g}" if abs(mean) < 1e4 else f"{mean:.0f}"
    return m if not math.isfinite(std) else f"{m} ± {std:.2g}" if abs(std) < 1e4 else f"{m} ± {std:.0f}"


def _table(*args, **kwargs):
    from genlab.plotting import Table  # imported late: plotting brings matplotlib, which the CLI rarely needs

    return Table(*args, **kwargs)


_COLUMNS = [(s, v) for s in SWEEPS for v in SWEEPS[s]]
_HEADER = [f"{NETWORK[s][:3]}, {SYMBOL[s]} = {v}" for s, v in _COLUMNS]
_PUBLISHED = (("paper", "paper", PAPER), ("repro2022", "2022 reproduction", REPRO_2022))


def constants_tables(rows: Sequence[Mapping[str, Any]], plan: Plan) -> list:
    """One :class:`genlab.plotting.Table` per dataset: each estimator's mean ± std, beside the published
    rows when the run measured the paper's data (else those stand apart: :func:`published_table`)."""
    tables = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        by = {(r["sweep"], float(r["value"])): r for r in rows if r["dataset"] == name}
        some = next(iter(by.values()))
        labels = [(e, f"this run: {LABELS[e]}") for e in ESTIMATORS]
        if comparable(name, some["stand_in"]):
            labels += [(key, label) for key, label, _ in _PUBLISHED]
        body = [
            [label, *(fmt(by[c][f"{key}_mean"], by[c][f"{key}_std"]) if c in by else "—" for c in _COLUMNS)]
            for key, label in labels
        ]
        tables.append(
            _table(
                ["numbers", *_HEADER],
                body,
                title=f"Lipschitz constants, {data_title(name, some['stand_in'])}: "
                f"{plan.profile} profile, mean ± std over {some['n_seeds']} seeds",
            )
        )
    return tables


def published_table(name: str):
    """The paper's and the 2022 report's constants for one of their data sets, to read apart from a run."""
    body = [
        [label, *(fmt(*table.get((name, s, v), (math.nan, math.nan))) for s, v in _COLUMNS)]
        for _, label, table in _PUBLISHED
    ]
    return _table(
        ["numbers", *_HEADER],
        body,
        title=f"Published constants on {TITLES[name]} (other data than this run's: context, not a target)",
    )


def trends_table(verdicts: Sequence[Mapping[str, str]]):
    """The verdict on each predicted trend for every estimator and both published rows."""
    sources = [*ESTIMATORS, "paper", "repro2022"]
    body = [
        [
            v.get("data") or TITLES[v["dataset"]],
            v["trend"].replace("sigma_enc", "σ_enc").replace("sigma_n", "σ_N"),
            *(v[c] for c in sources),
        ]
        for v in verdicts
    ]
    return _table(
        ["data", "trend", *(LABELS[e] for e in ESTIMATORS), "paper", "2022 reproduction"],
        body,
        title="Predicted trends: does the constant fall as the swept standard deviation grows?",
        notes=["— : the paper and the 2022 report measured other data; their verdicts are not this run's."]
        if any(v["paper"] == "—" for v in verdicts)
        else [],
    )


def cost_table(runs: Sequence[Mapping[str, Any]]):
    """Median time of each estimator per network half, and how far each upper bound sits above LipSDP."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["dataset"], r["network"]), []).append(r)
    body = []
    for (name, network), rs in groups.items():
        times = [f"{np.median([float(r[f'{e}_s']) for r in rs]):.3g}" for e in ESTIMATORS]
        ratios = [f"{np.median([float(r[e]) / float(r['lipsdp']) for r in rs]):.3g}" for e in ("eclipse", "product")]
        body.append([data_title(name, rs[0]["stand_in"]), network, *times, *ratios])
    return _table(
        ["data", "network", *(f"{LABELS[e]} (s)" for e in ESTIMATORS), "ECLipsE-Fast / LipSDP", "product / LipSDP"],
        body,
        title="Cost and tightness of the estimators",
        notes=["Median over the networks of each row; bound ratios are per network, then the median."],
    )


def lipschitz_tables(plan: Plan, runs: Sequence[Mapping[str, Any]]) -> list:
    """Every table of a grid, as :class:`genlab.plotting.Table`: constants per dataset, trends, cost."""
    rows = summarise(runs)
    return [*constants_tables(rows, plan), trends_table(trends(rows)), cost_table(runs)]


def _markdown_section(table, level: str = "##") -> list[str]:
    lines = [f"{level} {table.title}", "", table.markdown()]
    return lines + [*table.notes, ""] if table.notes else lines


def lipschitz_markdown(
    rows: Sequence[Mapping[str, Any]],
    verdicts: Sequence[Mapping[str, str]],
    plan: Plan,
    runs: Sequence[Mapping[str, Any]],
) -> str:
    """The grid's tables as one Markdown file (results/harmonic/<profile>/lipschitz.md)."""
    lines = [f"# Lipschitz constants ({plan.profile} profile)", ""]
    lines += [f"- {n}" for n in plan.notes] + ([""] if plan.notes else [])
    for table in [*constants_tables(rows, plan), trends_table(verdicts)]:
        lines += _markdown_section(table)
    return "\n".join([*lines, *cost_markdown(runs)]).rstrip("\n") + "\n"


def cost_markdown(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """The cost table as Markdown lines."""
    return _markdown_section(cost_table(runs))


def write_tables(plan: Plan, runs: Sequence[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """Write runs.csv, lipschitz.csv, trends.csv, lipschitz.md and constants.png under ``out_dir``."""
    rows = summarise(runs)
    verdicts = trends(rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "lipschitz.md"
    md.write_text(lipschitz_markdown(rows, verdicts, plan, runs))
    import matplotlib.pyplot as plt

    from genlab.plotting import figure_png

    fig = constants_figure(rows)  # closed below: inside a notebook it is written, not shown
    figure_png(fig, out_dir / "constants.png", dpi=100)
    plt.close(fig)
    return [
        provenance.write_csv(out_dir / "runs.csv", runs),
        provenance.write_csv(out_dir / "lipschitz.csv", rows),
        provenance.write_csv(out_dir / "trends.csv", verdicts),
        md,
        out_dir / "constants.png",
    ]

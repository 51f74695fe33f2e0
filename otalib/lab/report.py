"""The report of a run: chart PNGs and a summary table (CSV and Markdown)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from otalib.errors import LabError
from otalib.fileio import atomic_writer
from otalib.lab.analytic import compare_with_prediction
from otalib.lab.charts import (
    facet,
    failure_table,
    outcome_counts,
    plot_device_phases,
    plot_outcomes,
    plot_time_cdf,
    plot_time_vs_size,
    plot_timeline,
)
from otalib.lab.outcome_charts import (
    plot_completion_check,
    plot_failure_probability,
    plot_time_vs_fault_rate,
    rate_kinds,
)
from otalib.lab.palette import format_size, sorted_outcomes
from otalib.lab.schema import OUTCOMES, outcome_kinds
from otalib.lab.stats import device_phase_columns, time_to_new_version
from otalib.lab.store import load_run, read_fault_events, write_file, writing
from otalib.vocabulary import OutcomeKind

#: Grouping of the summary table (the size first: under drops a bigger image fails more often).
SUMMARY_BY = ["size", "mode", "link", "fault"]

#: The charts drawn one panel per link: file name -> chart.
LINK_CHARTS: dict[str, Callable[..., Any]] = {
    "time_vs_size.png": plot_time_vs_size,
    "outcomes.png": plot_outcomes,
    "time_cdf.png": plot_time_cdf,
}


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per size × mode × link × fault: trials, outcome counts, failure and bricked rates (95% Wilson CI), times.

    ``rejected_as`` names the device errors of the rejected trials (``VerificationFailed×4``);
    ``failure_rate`` counts every outcome but ``updated``, ``bricked_rate`` the bricked boards only.
    Times are publish start → new version on the console (s), over updated trials only; the
    throughput is the median of the updated trials' PUBLISH → PUBCOMP rate, in KB/s (1000 B/s).
    """
    counts = [f"n_{kind}" for kind in OUTCOMES]
    rates = ["failure_rate", "ci_low", "ci_high", "bricked_rate", "bricked_ci_high"]
    columns = [*SUMMARY_BY, "n", *counts, "rejected_as", *rates, "median_s", "p95_s", "throughput_KBps"]
    if df.empty:
        return pd.DataFrame(columns=columns)
    table = failure_table(df, SUMMARY_BY).set_index(SUMMARY_BY)
    data = df.assign(_kind=outcome_kinds(df["outcome"]), _time=time_to_new_version(df))
    rows = []
    for key, group in data.groupby(SUMMARY_BY, sort=True, dropna=False):
        ok = group[(group["_kind"] == OutcomeKind.UPDATED) & np.isfinite(group["_time"])]
        stats = table.loc[key]
        row: dict[str, Any] = dict(zip(SUMMARY_BY, key, strict=True))
        row["n"] = len(group)
        for kind in OUTCOMES:
            row[f"n_{kind}"] = int((group["_kind"] == kind).sum())
        row["rejected_as"] = _rejected_as(group["outcome"])
        row.update({name: stats[name] for name in rates})
        row["median_s"] = float(ok["_time"].median()) if len(ok) else math.nan
        row["p95_s"] = float(ok["_time"].quantile(0.95)) if len(ok) else math.nan
        row["throughput_KBps"] = float(ok["throughput_Bps"].median()) / 1000 if len(ok) else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def _rejected_as(outcomes: pd.Series) -> str:
    """``VerificationFailed×4, DecryptionFailed×1``: the device errors of the rejected outcomes."""
    counts = outcomes.astype(str).value_counts()
    rejected = [o for o in sorted_outcomes(counts.index) if o.startswith(f"{OutcomeKind.REJECTED.value}:")]
    return ", ".join(f"{o.partition(':')[2]}×{counts[o]}" for o in rejected)


def representative_trial(df: pd.DataFrame) -> pd.Series:
    """The updated trial with the median time to new version (else the latest trial)."""
    times = time_to_new_version(df)
    ok = df[(df["outcome"] == OutcomeKind.UPDATED) & np.isfinite(times)]
    if ok.empty:
        return df.iloc[-1]
    ok_times = times[ok.index].sort_values(kind="stable")
    return df.loc[ok_times.index[(len(ok_times) - 1) // 2]]


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``df`` (floats to 4 significant digits)."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|")

    header = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, rule, *body]) + "\n"


def _save(fig: Figure, path: Path) -> Path:
    with writing(path), atomic_writer(path) as handle:
        fig.savefig(handle, format="png", dpi=120)
    return path


def _markdown(summary: pd.DataFrame, meta: dict[str, Any], n_done: int) -> str:
    campaign = (meta.get("campaign") or {}).get("name", "?")
    git = meta.get("git") or {}
    revision = git.get("revision", "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    lines = [
        f"# Campaign {campaign}",
        "",
        f"- trials: {n_done} of {meta.get('n_trials', '?')} ({meta.get('status', 'unknown')})",
        f"- otalib {meta.get('otalib', '?')}, git {revision}",
        "- size = the image's (KiB); failure = any outcome but `updated` (a rejection is safe: the old firmware"
        " runs); bricked = no bootable"
        " firmware; CI = 95% Wilson interval; times = publish → new version (s); throughput in KB/s (1000 B/s)",
        "",
        markdown_table(summary.assign(size=summary["size"].map(format_size))),
    ]
    return "\n".join(lines)


def report_figures(df: pd.DataFrame, events: pd.DataFrame | None = None) -> dict[str, Figure]:
    """The report's charts by file name: the representative trial's timeline; time against size,
    outcome composition and the time CDF one panel per link; the device-time phases when the run
    measured them; failure probability and time against each rate fault present; under drops, the
    measured mean transfer times against the no-resume curve (``events``: the run's fault events,
    where the drops' reconnect times come from)."""
    figures: dict[str, Figure] = {}
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    plot_timeline(representative_trial(df), ax=fig.subplots())
    figures["timeline.png"] = fig
    rows = max(len(outcome_counts(group)) for _, group in df.groupby("link")) if "link" in df else 1
    for name, chart in LINK_CHARTS.items():
        tall = (6.0, max(4.5, 1.5 + 0.3 * rows)) if chart is plot_outcomes else (6.0, 4.5)  # a bar per condition
        figures[name] = facet(chart, df, by="link", panel_size=tall)
    if device_phase_columns(df):
        fig = Figure(figsize=(9, 1.5 + 0.4 * df.groupby(["size", "mode"]).ngroups), layout="constrained")
        plot_device_phases(df, ax=fig.subplots())
        figures["device_phases.png"] = fig
    kinds = rate_kinds(df)
    for kind in kinds:
        for prefix, chart in (("failure", plot_failure_probability), ("time", plot_time_vs_fault_rate)):
            figures[f"{prefix}_vs_{kind}.png"] = facet(chart, df[df["fault"].map(_kind_or_none(kind))], kind=kind)
    if "drops" in kinds:
        figures["completion_check.png"] = facet(_completion_check(events), df[df["fault"].map(_kind_or_none("drops"))])
    return figures


def _completion_check(events: pd.DataFrame | None) -> Callable[..., Any]:
    """:func:`plot_completion_check` of one panel's trials, per size × mode that can be compared (a small
    run may have a cell where no drop fired: it is left out; a panel with none says why)."""

    def chart(df: pd.DataFrame, ax: Any) -> Any:
        checks, reasons = [], []
        for _key, group in df.groupby(["size", "mode"], sort=True):
            try:
                checks.append(compare_with_prediction(group, events))
            except LabError as exc:
                reasons.append(str(exc))
        check = pd.concat(checks, ignore_index=True) if checks else pd.DataFrame()
        plot_completion_check(check, ax=ax)
        if check.empty:
            ax.texts[-1].set_text(f"no analytic check: {reasons[0] if reasons else 'no trials'}")
        return ax

    return chart


def _kind_or_none(kind: str) -> Callable[[str], bool]:
    return lambda fault: str(fault) == "none" or str(fault).startswith(f"{kind}:")


def write_report(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write a run's charts (PNG) and summary (``summary.csv``, ``summary.md``); return the paths.

    ``out_dir`` defaults to ``run_dir/report``. Every file is written atomically.
    """
    run_dir = Path(run_dir)
    df, meta = load_run(run_dir)
    if df.empty:
        raise LabError(f"no finished trials in {run_dir}")
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LabError(f"cannot create report directory {out}: {exc.strerror}") from None
    written: list[Path] = []

    for name, fig in report_figures(df, read_fault_events(run_dir)).items():
        written.append(_save(fig, out / name))

    summary = summarize(df)
    buffer = io.StringIO()
    summary.to_csv(buffer, index=False)
    written.append(write_file(out / "summary.csv", buffer.getvalue().encode()))
    written.append(write_file(out / "summary.md", _markdown(summary, meta, len(df)).encode()))
    return written

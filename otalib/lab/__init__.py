"""The lab: trials, campaigns (grid × repeats), tidy trial data, charts and reports.

Submodules: :mod:`schema` (the row of one trial), :mod:`trial` (one trial end to end
on a shared bench), :mod:`campaign` (grid and runner), :mod:`store` (run directory on
disk), :mod:`metadata` (the run's snapshot), :mod:`analytic` (the no-resume formula under Poisson
drops against a campaign's means), :mod:`stats`, :mod:`charts`
(``DataFrame -> Axes``), :mod:`report`, and for notebooks :mod:`session` (a broker, a
board and its console; its fault strings through :mod:`link_faults`), :mod:`console_view`
(console lines as a DataFrame),
:mod:`live_console` (a console watched live, with :mod:`progress`, the update's bytes),
:mod:`transfer` (the publisher's and the board's side of one update on one clock) and
:mod:`security` (try an action, record whether it was refused), :mod:`hardware` (a real-board
cell skips without a port). Names are imported
lazily, so ``import otalib.lab.schema`` does not load matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TRIAL_COLUMNS": "schema",
    "OUTCOMES": "schema",
    "TrialConfig": "schema",
    "TrialResult": "schema",
    "validate_frame": "schema",
    "CampaignSpec": "campaign",
    "TrialRunner": "campaign",
    "run_campaign": "campaign",
    "expected_completion_s": "analytic",
    "compare_with_prediction": "analytic",
    "load_run": "store",
    "collect_metadata": "metadata",
    "wilson_interval": "stats",
    "fit_throughput": "stats",
    "plot_timeline": "charts",
    "plot_time_vs_size": "charts",
    "plot_outcomes": "charts",
    "plot_failure_probability": "charts",
    "plot_time_vs_fault_rate": "charts",
    "plot_device_phases": "charts",
    "plot_time_cdf": "charts",
    "facet": "charts",
    "summarize": "report",
    "write_report": "report",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'otalib.lab' has no attribute {name!r}")
    return getattr(importlib.import_module(f"otalib.lab.{_EXPORTS[name]}"), name)

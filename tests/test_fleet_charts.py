"""The fleet's charts: titles and units, one palette with the campaign charts, stacked counts, rollout marks."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from otalib.fleet.charts import broker_load, outcome_composition, rollout_curve
from otalib.fleet.results import FleetResult
from otalib.lab.palette import outcome_color


def fleet(outcomes: dict[str, list[str]]) -> FleetResult:
    rows = []
    for group, kinds in outcomes.items():
        for i, kind in enumerate(kinds):
            rows.append(
                {
                    "board": f"{group}-{i}",
                    "group": group,
                    "outcome": kind,
                    "t_updated": 1.0 + i if kind == "updated" else None,
                }
            )
    load = pd.DataFrame(
        {"shard": [0, 0, 0], "t_s": [0.0, 1.0, 2.0], "bytes_received": [0, 2e6, 3e6], "connected": [3, 3, 2]}
    )
    return FleetResult(pd.DataFrame(rows), pd.DataFrame(), load, pd.DataFrame())


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_outcomes_use_the_campaign_palette_and_stack_the_counts() -> None:
    result = fleet({"wifi": ["updated", "updated", "bricked", "timeout"], "dsl": ["updated", "rejected", "rejected"]})
    ax = outcome_composition(result)
    assert ax.get_title() and ax.get_ylabel() == "boards"
    heights: dict[tuple[str, str], float] = {}
    for container in ax.containers:
        kind = container.get_label()
        colour = matplotlib.colors.to_hex(container.patches[0].get_facecolor())
        assert colour == outcome_color(kind), kind  # bricked red and rejected warm, as in every campaign chart
        for patch, group in zip(container.patches, ["dsl", "wifi"], strict=True):
            heights[(group, kind)] = patch.get_height()
    assert heights[("wifi", "updated")] == 2 and heights[("wifi", "bricked")] == 1
    assert heights[("dsl", "rejected")] == 2 and heights[("dsl", "timeout")] == 0


def test_rollout_marks_the_time_to_half_and_load_has_units() -> None:
    result = fleet({"g": ["updated", "updated", "updated", "timeout"]})
    ax = rollout_curve(result)
    assert "(s)" in ax.get_xlabel() and ax.get_title()
    texts = [t.get_text() for t in ax.texts]
    assert "50%: 2.0 s" in texts and not any(t.startswith("99%") for t in texts)  # 3 of 4 boards never reach 99 %
    ax = broker_load(result)
    assert "(MB/s)" in ax.get_ylabel() and "(s)" in ax.get_xlabel()

"""Every notebook runs top to bottom, headless, against the virtual board, with small parameters."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"

#: Small parameters per notebook (appended to its tagged parameters cell).
SMALL: dict[str, dict[str, object]] = {
    "01_build_and_sign.ipynb": {"IMAGE_SIZE": 16 * 1024},
    "02_publish_and_watch.ipynb": {"IMAGE_SIZE": 32 * 1024, "WATCH_S": 20},
    "03_timing.ipynb": {"SIZES": ["32KiB", "128KiB"], "LINKS": ["unlimited", "dsl"], "MODES": ["signed"], "REPEATS": 1},
    "04_failures.ipynb": {
        "SIZE": "16KiB",
        "FAULTS": ["none", "corrupt"],
        "DROP_RATES": [1.0],
        "POWER_P": [],
        "REPEATS": 2,
    },
    "05_security.ipynb": {},
    "06_device_quirks.ipynb": {"LOOP_WATCH_S": 3},
    "07_real_board.ipynb": {"PORT": None},  # no board in CI: every hardware cell skips
    "08_fleet.ipynb": {"BOARDS_WIFI": 20, "BOARDS_DSL": 10, "SIZE": "16KiB", "TIMEOUT_S": 10, "COMPARE_BOARDS": 10},
    # the exercises' solutions (kept apart from the notebooks), run in CI too
    "solutions/01_solutions.ipynb": {"IMAGE_SIZE": 16 * 1024},
    "solutions/02_solutions.ipynb": {"SIZE": 32 * 1024},
    "solutions/03_solutions.ipynb": {"SIZES": ["16KiB", "32KiB"]},
    "solutions/04_solutions.ipynb": {},
    "solutions/05_solutions.ipynb": {},
    "solutions/06_solutions.ipynb": {"LOOP_WATCH_S": 3},
}


def test_every_notebook_is_listed_and_committed_without_outputs():
    found = sorted(
        str(p.relative_to(NOTEBOOKS)) for p in NOTEBOOKS.glob("**/*.ipynb") if ".ipynb_checkpoints" not in str(p)
    )
    assert found == sorted(SMALL)
    for name in found:
        nb = json.loads((NOTEBOOKS / name).read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), name
        assert "parameters" in code[0]["metadata"].get("tags", []), name


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_runs(name, tmp_path):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    overrides = {"WORKDIR": str(tmp_path / "work"), "RUN_DIR": str(tmp_path / "run"), **SMALL[name]}
    params.source += "\n# test overrides\n" + "\n".join(f"{k} = {v!r}" for k, v in overrides.items())
    where = str((NOTEBOOKS / name).parent)  # a notebook's relative paths start from its folder
    client = NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": where}})
    client.execute()  # raises CellExecutionError (with the cell's traceback) when a cell fails
    if name == "02_publish_and_watch.ipynb":  # the live console's final state is in the saved output
        html = [o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if "otalab-live" in o.get("data", {}).get("text/html", "")]  # fmt: skip
        assert len(html) == 1 and "Update slot rom1" in html[0] and "Currently running rom1" in html[0]
        assert 'data-fraction="1.0000"' in html[0] and 'data-outcome="updated"' in html[0]
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "every notebook draws at least one chart"
    for cell in (c for c in nb.cells if "hardware" in c.metadata.get("tags", [])):
        printed = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stdout")
        assert printed.startswith("skipped: ") and "PORT" in printed, (name, cell.source)

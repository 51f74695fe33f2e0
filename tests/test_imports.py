"""Every otalib module imports on its own, first, in a fresh interpreter: no import circle.

A circle only shows when its modules are entered in a particular order, so the modules are
tried in a random order (the seed is in the failure message), each after every otalib module
was dropped from ``sys.modules``.
"""

from __future__ import annotations

import pkgutil
import random
import subprocess
import sys
from pathlib import Path

import otalib

ROOT = Path(__file__).resolve().parents[1]
#: ``python -m otalib`` runs the CLI when imported: not a library module.
NOT_IMPORTED = {"otalib.__main__"}

_CHILD = """
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "otalib" or m.startswith("otalib.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed.append(name + ": " + traceback.format_exc().strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def all_modules() -> list[str]:
    names = ["otalib"]
    names += [m.name for m in pkgutil.walk_packages(otalib.__path__, "otalib.")]
    return [n for n in names if n not in NOT_IMPORTED]


def test_every_module_imports_first_without_a_circle() -> None:
    modules = all_modules()
    assert {"otalib.board.sim.device", "otalib.net.link", "otalib.mqtt.wire", "otalib.firmware.demo"} <= set(modules)
    seed = random.randrange(2**32)
    random.Random(seed).shuffle(modules)
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, *modules], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"seed {seed}:\n{result.stdout}{result.stderr}"


def test_formats_is_the_bottom_layer() -> None:
    """A format module imports nothing from otalib but other formats and the error hierarchy."""
    code = (
        "import sys, importlib, pkgutil, otalib.formats as f\n"
        "for m in pkgutil.walk_packages(f.__path__, 'otalib.formats.'): importlib.import_module(m.name)\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('otalib'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.split())
    assert "otalib.formats.kinds" in loaded
    assert loaded <= {"otalib", "otalib.errors"} | {m for m in loaded if m.startswith("otalib.formats")}, loaded

"""Shared test set-up: fixture paths, the opt-in hardware marker, a private TMPDIR per test process,
a Mosquitto broker per test module."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
VECTORS = TESTS / "vectors"
CONSOLES = TESTS / "consoles"


def pytest_configure(config: pytest.Config) -> None:
    """Each test process (each pytest-xdist worker) works in a TMPDIR of its own, inherited by the
    otalab processes it starts: otalab's temporary folders, and its clean-up of the folders of dead
    owners, never reach another worker's (or another program's) while tests run in parallel."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    private = tempfile.mkdtemp(prefix=f"otalab-tests-{worker}-")
    config.stash[_TMPDIR] = (private, os.environ.get("TMPDIR"))
    os.environ["TMPDIR"] = private
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def pytest_unconfigure(config: pytest.Config) -> None:
    private, before = config.stash.get(_TMPDIR, (None, None))
    if private is None:
        return
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None
    shutil.rmtree(private, ignore_errors=True)


_TMPDIR = pytest.StashKey[tuple]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--port", default=None, help="serial port of a real board: runs tests marked 'hardware'")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--port"):
        return
    skip = pytest.mark.skip(reason="needs a real board: pass --port PORT")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def broker():
    """A Mosquitto broker of the test module's own (a free port: safe beside other xdist workers)."""
    from otalib.broker import start_broker

    with start_broker("mosquitto") as running:
        yield running


@pytest.fixture(scope="module")
def bench():
    """A trial bench (its broker and link proxies) of the test module's own, shared by its trials."""
    from otalib.lab.trial import Bench

    with Bench() as shared:
        yield shared


@pytest.fixture
def board_port(request: pytest.FixtureRequest) -> str:
    """The serial port given with ``--port`` (hardware tests only)."""
    return str(request.config.getoption("--port"))


@pytest.fixture(scope="session")
def vectors() -> Path:
    """Folder of the conformance vectors made by the framework's reference tool."""
    return VECTORS


@pytest.fixture(scope="session")
def consoles() -> Path:
    """Folder of consoles recorded from the real Sming Upgrade sample."""
    return CONSOLES

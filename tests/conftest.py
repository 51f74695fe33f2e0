"""Shared test set-up: fixture paths and the opt-in hardware marker."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).parent
VECTORS = TESTS / "vectors"
CONSOLES = TESTS / "consoles"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--port", default=None, help="serial port of a real board: runs tests marked 'hardware'")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--port"):
        return
    skip = pytest.mark.skip(reason="needs a real board: pass --port PORT")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)


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

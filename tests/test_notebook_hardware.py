"""The real-board notebook's skip guard: a cell without a port says so and does nothing."""

from __future__ import annotations

import pytest

from otalib.lab.hardware import board_port


@pytest.mark.parametrize("port", [None, "", "   "])
def test_no_port_skips_with_one_line_naming_the_step_and_the_fix(port, capsys):
    assert board_port(port, "flashing") is False
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1
    assert out[0].startswith("skipped: flashing needs a board")
    assert "PORT" in out[0] and "/dev/ttyUSB0" in out[0]


@pytest.mark.parametrize("port", ["/dev/ttyUSB0", "rfc2217://lab-host:4000"])
def test_a_port_runs_the_cell_silently(port, capsys):
    assert board_port(port, "flashing") is True
    assert capsys.readouterr().out == ""

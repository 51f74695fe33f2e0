"""A campaign's progress into a pipe is whole lines (no carriage return); on a terminal it stays a bar."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from process_helpers import ROOT, otalab_env

pytestmark = pytest.mark.timeout(120)

#: A campaign of the fake runner (24 trials, no board) with its progress on; the run folder is argv[1].
CAMPAIGN = """
import sys
from lab_helpers import fake_trial, small_spec
from otalib.lab.campaign import run_campaign
run_campaign(small_spec(), sys.argv[1], fake_trial, progress=True, parallel=1)
"""
LINE = re.compile(r"^synthetic: (\d+)/24 trials \((\d+)%\)(, last: \S+)?$")


def campaign_process(run_dir: Path, stderr: int) -> subprocess.Popen:
    env = otalab_env()
    env["PYTHONPATH"] += os.pathsep + str(ROOT / "tests")
    command = [sys.executable, "-c", CAMPAIGN, str(run_dir)]
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env)


def test_progress_into_a_pipe_is_plain_lines_with_the_count(tmp_path):
    with campaign_process(tmp_path / "run", subprocess.PIPE) as proc:
        err = proc.communicate(timeout=90)[1].decode()
    assert proc.returncode == 0, err[-2000:]
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    counts = [int(LINE.match(line).group(1)) for line in lines]  # every line a progress line
    assert counts[0] == 0 and counts[-1] == 24 and counts == sorted(set(counts))
    assert len(counts) >= 10  # a line at each tenth, not only the end
    assert lines[-1] == "synthetic: 24/24 trials (100%), last: rejected:VerificationFailed"


def test_progress_on_a_terminal_is_the_bar(tmp_path):
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    with campaign_process(tmp_path / "run", child) as proc:
        os.close(child)
        out = b""
        while chunk := read_terminal(parent):
            out += chunk
        os.close(parent)
    assert proc.wait(timeout=90) == 0
    text = out.decode()
    assert "\rsynthetic: " in text and "| 24/24 [" in text and not LINE.search(text.strip().splitlines()[0])


def read_terminal(fd: int) -> bytes:
    """What the terminal's other side wrote; b"" once it is closed (Linux: EIO)."""
    try:
        return os.read(fd, 65536)
    except OSError:
        return b""

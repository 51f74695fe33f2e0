"""Read-only checks on a REAL board: ``make test-hardware PORT=/dev/ttyUSB0`` (skipped without ``--port``).

They never write flash: they read the chip's facts and its boot loader through esptool, and watch
its console after a reset through the RTS line. Writing flash is exercised by ``otalab flash`` on
a board you are willing to reflash (see the README's "Verified only on hardware").
"""

from __future__ import annotations

import pytest

from otalib.board.serial_board import SerialBoard
from otalib.firmware import flashing

pytestmark = [pytest.mark.hardware, pytest.mark.timeout(120)]

#: Where each chip's first-stage image sits (rBoot on an ESP8266, the 2nd-stage loader on an ESP32).
BOOT_ADDRESS = {"ESP8266": 0x0, "ESP32": 0x1000}


def test_boot_loader_reads_back_as_an_esp_image(board_port: str, tmp_path) -> None:
    info = flashing.chip_info(board_port)
    family = "ESP8266" if "8266" in info.chip.upper() else "ESP32"
    data = flashing.read_flash(board_port, BOOT_ADDRESS[family], 4096, tmp_path / "boot.bin")
    assert len(data) == 4096 and (tmp_path / "boot.bin").read_bytes() == data
    assert data[0] == 0xE9, f"no ESP image at {BOOT_ADDRESS[family]:#x}: first byte {data[0]:#04x}"


def test_reset_through_rts_restarts_the_firmware(board_port: str) -> None:
    with SerialBoard(board_port) as board:
        board.skip()
        board.reset()
        line = board.expect(".", 15)  # whatever the firmware prints first after its boot
        assert line.line

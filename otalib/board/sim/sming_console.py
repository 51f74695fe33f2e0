"""Render the console of Sming's Upgrade sample exactly as the device prints it.

The virtual board prints through :class:`SmingConsole`, so the serial monitor's
patterns (:mod:`otalib.board.console`) parse virtual and real consoles alike.
Line endings, blank lines, the microsecond prefix of debug lines and the device's
wrong numbers (``quirks=True``) follow the recordings of the real device
(tests/consoles). Sming debug levels: ERR 0, WARN 1, INFO 2, DBG 3; a ``debug_x``
line prints only when its level <= ``debug_level`` (the sample's default is 2, at
which the standard-mode update prints nothing until the restart).

:class:`ConsolePlatform` picks the boot banners: the Host emulator's (its recordings), or a
real ESP8266's: the chip ROM's banner, sent at 74880 baud and so read as noise around
``ets Jan  8 2013,rst cause:N, boot mode:(3,6)`` at 115200, then rBoot's banner and
``Booting rom N.``; a restart there prints no exit lines, only the next boot's banners.
Bytes that are not UTF-8 are written as surrogate escapes (encode with ``surrogateescape``).
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable, Sequence

from otalib.errors import DEVICE_ERROR_TEXT, DeviceErrorCode

ERR, WARN, INFO, DBG = 0, 1, 2, 3

#: The rom slots of the sample's layout: (address, size).
DEFAULT_ROMS: tuple[tuple[int, int], ...] = ((0x8000, 0xF8000), (0x108000, 0xF8000))

#: What the Host build prints after ``ROM`` in ``ROM %u activated`` (a pointer, not the slot).
QUIRK_ROM_ACTIVATED_VALUE = 1471560480


#: rBoot's version in Sming 6.1's submodule.
RBOOT_VERSION = "1.4.2"
#: ESP8266 reset causes as the ROM prints them.
RST_POWER_ON, RST_EXTERNAL = 1, 2


class ConsolePlatform(str, enum.Enum):
    """Which boot banners the console prints."""

    HOST = "host"  # Sming's Host emulator (the recordings in tests/consoles)
    ESP8266 = "esp8266"  # a real ESP8266: ROM banner (garbled at 115200), rBoot banner


def rom_noise(seed: int, size: int = 24) -> str:
    """Bytes of the 74880-baud ROM output as a 115200-baud reader sees them (no newline), as surrogate escapes."""
    rng = random.Random(seed)
    noise = bytes(rng.choice(b"\x00\x80\x8c\x9e\xe0\xf8\xfc\xfe\xff\x02\x12rl{$o|") for _ in range(size))
    return noise.decode("utf-8", "surrogateescape")


class SmingConsole:
    """Writes the sample's console lines through ``write`` (raw text with the device's line ends)."""

    def __init__(
        self,
        write: Callable[[str], None],
        debug_level: int = 3,
        clock_us: Callable[[], int] | None = None,
        *,
        quirks: bool = True,
        platform: ConsolePlatform | str = ConsolePlatform.HOST,
    ) -> None:
        self.write = write
        self.debug_level = debug_level
        self.quirks = quirks
        self.platform = ConsolePlatform(platform)
        self._boots = 0
        if clock_us is None:
            start = time.monotonic()

            def clock_us() -> int:
                return int((time.monotonic() - start) * 1_000_000)

        self.clock_us = clock_us

    # -- primitives --
    def debug(self, level: int, message: str) -> None:
        """``debug_x(message)``: microsecond prefix, CRLF; nothing above ``debug_level``."""
        if level <= self.debug_level:
            self.write(f"{self.clock_us()} {message}\r\n")

    def serial(self, text: str) -> None:
        """``Serial.print`` of raw text."""
        self.write(text)

    # -- boot --
    def chip_start(self, rst_cause: int = RST_POWER_ON) -> None:
        """What the chip and the boot loader print before the firmware (ESP8266: ROM and rBoot banners)."""
        if self.platform is not ConsolePlatform.ESP8266:
            return
        self._boots += 1
        self.write(
            rom_noise(self._boots)
            + f"\r\n ets Jan  8 2013,rst cause:{rst_cause}, boot mode:(3,6)\r\n\r\n"
            + rom_noise(self._boots + 1000, 40)
            + f"\r\nrBoot v{RBOOT_VERSION} - richardaburton@gmail.com\r\n"
            "Flash Size:   32 Mbit\r\nFlash Mode:   QIO\r\nFlash Speed:  40 MHz\r\n"
            "rBoot Option: Big flash\r\n\r\n"
        )

    def banner(
        self,
        flash_file: str = "flash.bin",
        roms: Sequence[tuple[int, int]] = DEFAULT_ROMS,
        *,
        current_slot: int = 0,
        flash_size: int = 0x400000,
        mac: str = "9e:8a:d6:82:3b:64",
    ) -> None:
        """The Host emulator's start-up banner (before the application runs); on an ESP8266, rBoot's
        ``Booting rom N.`` and the SDK's start."""
        if self.platform is ConsolePlatform.ESP8266:
            self.write(f"Booting rom {current_slot}.\r\n\r\nSDK ver: 3.0.5 compiled @ Jan 13 2022 10:02:51\r\n")
            return
        out = ["\nWelcome to the Sming Host emulator\n\n\n", f'Opened "{flash_file}", size = 0x{flash_size:08x}\n']
        for i, (addr, size) in enumerate(roms):
            out.append(f"Found 'rom{i}' @ 0x{addr:08x}, size 0x{size:08x}, subtype 0x{0x10 + i:02x}\r\n\n")
        table = ", ".join(f"#{i}: 0x{addr:x}" for i, (addr, _) in enumerate(roms))
        out.append(f"ROM count = {len(roms)}, current = {current_slot}, {table}\n")
        out.append(
            "Initialising LWIP\n"
            "Using interface 'tap0', gateway 192.168.13.1, netmask 255.255.255.0, ip 192.168.13.10\n"
            f"MAC: {mac}\n"
            "If required, you may start terminal application(s) now\n"
            ">> Starting Sming <<\n\n"
        )
        self.write("".join(out))

    def show_info(
        self,
        chip_id: int | str,
        roms: Sequence[tuple[int, int]],
        running_slot: int,
        running_addr: int,
        app_version: str,
        *,
        sdk: str | None = None,
        free_heap: int = 129886,
        cpu_mhz: int = 80,
    ) -> None:
        """The sample's ``showInfo()``: SDK, heap, CPU, chip id, boot partitions, running ROM."""
        chip = chip_id if isinstance(chip_id, str) else f"{chip_id:x}"
        if sdk is None:
            sdk = "3.0.5" if self.platform is ConsolePlatform.ESP8266 else "Host-SDK-v1.0"
        out = [f"\r\nSDK: v{sdk}\r\n", f"Free Heap: {free_heap}\r\n", f"CPU Frequency: {cpu_mhz} MHz\r\n"]
        out.append(f"System Chip ID: {chip}\r\n")
        for i, (addr, size) in enumerate(roms):
            out.append(f"spiFlash/rom{i}, app/ota{i} @ 0x{addr:x}, size 0x{size:x}\r\n")
        out.append(f"=======================\r\nBootable ROMs found: {len(roms)}\r\n")
        out.append(
            f"\r\nCurrently running rom{running_slot}: 0x{running_addr:x}. Application version: {app_version}\r\n"
        )
        self.write("".join(out))

    def ip_change(
        self, ip: str = "192.168.13.10", netmask: str = "255.255.255.0", gateway: str = "192.168.13.1"
    ) -> None:
        """The network is up (printed at every debug level)."""
        self.write(f"IP_CHANGE, ip: {ip}, netmask: {netmask}, gateway: {gateway}\n")

    def checking(self) -> None:
        self.serial("Checking for a new application firmware...\r\n")

    # -- network and MQTT (verbose level), in the device's order --
    def mqtt_connecting(self, conn: str, host: str, port: int) -> None:
        """``MqttClient::connect``: the TCP connection is opened (``conn`` is the connection's id)."""
        self.debug(DBG, "MQTT start connection")
        self.debug(DBG, f"TCP {conn} +connection")
        self.debug(DBG, f'TCP {conn} connect to "{host}:{port}"')
        self.debug(DBG, "TCP connect result: 0")

    def subscribing(self, topic: str) -> None:
        self.debug(DBG, f"Subscribing to topic: {topic}")

    def tcp_connected(self, conn: str, ssl: bool = False) -> None:
        self.debug(DBG, f"TCP {conn} connected: useSSL: {int(ssl)}, Error: 0")
        self.debug(DBG, f"TCP {conn} connected")

    def subscribed(self, topic: str) -> None:
        self.debug(DBG, f"subscription '{topic}' registered")

    def tcp_received(self, conn: str, size: int) -> None:
        """One TCP segment of ``size`` bytes has been handed over (and processed): two lines, one write."""
        if self.debug_level >= DBG:
            us = self.clock_us()
            self.write(f"{us} TCP {conn} received: {size} bytes\r\n{us + 2} TCP {conn} onReadyToSendData: 1\r\n")

    def segments_received(self, conn: str, wires: Sequence[int], totals: Sequence[int] = ()) -> None:
        """Several segments' lines in one write, as the calls per segment print them: for each, standard
        mode's ``ota_write`` line (``totals``: the running byte counts; empty in advanced mode), then its
        TCP lines (``wires``: the sizes of those reported now). Stamped from one clock reading, each
        segment 2 µs after the one before (the segments were handed over together)."""
        if self.debug_level < DBG:
            return
        count = max(len(wires), len(totals))
        if not count:
            return
        us = self.clock_us()
        stamps = [str(t) for t in range(us, us + 2 * count + 1, 2)]  # each number formatted once
        received, ready = f" TCP {conn} received: ", f" TCP {conn} onReadyToSendData: 1\r\n"
        if not totals:  # advanced mode: the TCP lines only (the hot path)
            text = "".join([f"{stamps[i]}{received}{n} bytes\r\n{stamps[i + 1]}{ready}" for i, n in enumerate(wires)])
        else:
            out = []
            for i in range(count):
                out.append(f"{stamps[i]} ota_write_flash: item.size: {totals[i]}\r\n")
                if i < len(wires):
                    out.append(f"{stamps[i]}{received}{wires[i]} bytes\r\n{stamps[i + 1]}{ready}")
            text = "".join(out)
        self.write(text)

    # -- standard mode --
    def ota_write(self, total: int) -> None:
        """One received chunk; ``total`` is the running byte count."""
        self.debug(DBG, f"ota_write_flash: item.size: {total}")

    def swapping(self, from_slot: int, from_addr: int, to_slot: int, to_addr: int) -> None:
        self.debug(DBG, f"Swapping from rom{from_slot} @ 0x{from_addr:08x} to rom{to_slot} @ 0x{to_addr:08x}.\r\n")

    # -- advanced mode (OtaUpgrade::BasicStream) --
    def build_timestamps(self, current: int, file: int) -> None:
        """``%ull`` of 64-bit millisecond timestamps: the device prints the low 32 bits and ``ll``."""
        for what, value in (("current firmware", current), ("OTA upgrade file", file)):
            shown = value & 0xFFFFFFFF if self.quirks else value
            self.debug(INFO, f"Build timestamp of {what}: {shown}ll")

    def starting_upgrade(self, n: int) -> None:
        self.debug(INFO, f"Starting firmware upgrade, receive {n} image(s)")

    def update_slot(self, index: int, start: int, end: int) -> None:
        """The slot written: its start and start + image size (a clean build; see the parser for ``..0)``)."""
        self.debug(INFO, f"Update slot rom{index} [0x{start:08X}..0x{end:08X})")

    def skip_rom(self, start: int, end: int) -> None:
        self.debug(INFO, f"Skip ROM image for [0x{start:08X}..0x{end:08X})")

    def signature(self, sig: bytes) -> None:
        self.debug(DBG, "Signature/Checksum: " + " ".join(f"{b:02x}" for b in sig))

    def rom_update_complete(self) -> None:
        self.debug(INFO, "ROM update complete")

    def rom_activated(self, index: int) -> None:
        """``ROM %u activated`` is given a string pointer on Sming 6.1: the number is not the slot."""
        self.debug(INFO, f"ROM {QUIRK_ROM_ACTIVATED_VALUE if self.quirks else index} activated")

    def device_error(self, code: DeviceErrorCode | str) -> None:
        self.debug(ERR, f"Error: {DEVICE_ERROR_TEXT[DeviceErrorCode(code)]}")

    def got_error(self, code: DeviceErrorCode | str) -> None:
        self.debug(ERR, f"Got error: {DEVICE_ERROR_TEXT[DeviceErrorCode(code)]}")

    # -- end of an update --
    def switching_ok(self) -> None:
        self.debug(DBG, "Switching was successful. Restarting...")

    def switching_failed(self) -> None:
        self.debug(ERR, "Switching failed!")

    def normal_exit(self, flash_file: str = "flash.bin") -> None:
        """A restart on the Host emulator ends the process (an ESP8266 prints nothing: its ROM banner follows)."""
        if self.platform is ConsolePlatform.ESP8266:
            return
        self.write(f'returning 0\n>> Normal Exit <<\n\nClosed "{flash_file}"\nGoodbye!\n')

    def terminated(self, flash_file: str = "flash.bin") -> None:
        """The Host emulator killed with SIGTERM (not a restart)."""
        self.write(
            "\r\nsignal_handler: SIGTERM - a termination request was sent to the program\n"
            f'returning 1\n>> Normal Exit <<\n\nClosed "{flash_file}"\nGoodbye!\n'
        )

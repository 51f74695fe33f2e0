"""Real boards through esptool: chip info, flash the initial firmware, read flash back.

Flashing and reading go through ``esptool.main(argv)`` with argument lists built by
pure functions (:func:`flash_args`, :func:`verify_args`, :func:`read_args`) that the
tests check without hardware. Chip information uses esptool's library API
(``esptool.cmds.detect_chip``). esptool's own progress output is captured and
returned (or passed to ``log``), never printed by this module.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from otalib.errors import BoardError, UsageError
from otalib.fileio import read_input

#: Chips the ``otalab flash`` command accepts.
CHIPS = ("auto", "esp8266", "esp32")
#: Default flashing baud rate (esptool switches to it after connecting at 115200).
DEFAULT_BAUD = 460800


@dataclass(frozen=True)
class FlashFile:
    """One file to write at one flash address."""

    address: int
    path: Path


@dataclass(frozen=True)
class ChipInfo:
    """What a connected chip says about itself."""

    chip: str
    description: str
    mac: str
    features: tuple[str, ...] = ()
    flash_size: str | None = None
    crystal_mhz: int | None = None


def parse_int(text: str, what: str = "number") -> int:
    """``0x8000``, ``32768``, ``4k``/``4K``, ``1M`` -> int; UsageError otherwise."""
    m = re.fullmatch(r"\s*(0[xX][0-9a-fA-F]+|\d+)\s*([kKmM]?)\s*", text)
    if not m:
        raise UsageError(f"bad {what}: {text!r} (use e.g. 0x8000, 32768, 4k or 1M)")
    value = int(m.group(1), 0)
    return value * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]


def parse_image_spec(spec: str) -> FlashFile:
    """``FILE@ADDR`` (e.g. ``rom0.bin@0x8000``) -> FlashFile; UsageError if malformed."""
    path, sep, addr = spec.rpartition("@")
    if not sep or not path or not addr:
        raise UsageError(f"bad image {spec!r}: expected FILE@ADDR, e.g. rom0.bin@0x8000")
    address = parse_int(addr, f"flash address in {spec!r}")
    if address % 0x1000:
        raise UsageError(f"bad image {spec!r}: flash address 0x{address:x} is not 4 KB aligned")
    return FlashFile(address, Path(path))


def check_images(images: Sequence[FlashFile]) -> None:
    """Every file exists and is readable, and no two images overlap."""
    if not images:
        raise UsageError("nothing to flash: give at least one FILE@ADDR")
    spans = []
    for image in images:
        size = len(read_input(image.path, "image"))
        if size == 0:
            raise UsageError(f"image {image.path} is empty")
        spans.append((image.address, image.address + size, image.path))
    spans.sort()
    for (a0, a1, p), (b0, _, q) in itertools.pairwise(spans):
        if b0 < a1:
            raise UsageError(f"images overlap: {p} [0x{a0:x}..0x{a1:x}) and {q} at 0x{b0:x}")


def _check_chip(chip: str) -> str:
    if chip not in CHIPS:
        raise UsageError(f"unknown chip {chip!r}: use one of {', '.join(CHIPS)}")
    return chip


def base_args(port: str, chip: str = "auto", baud: int = DEFAULT_BAUD, *, after: str = "hard-reset") -> list[str]:
    """The global esptool options: chip, port, baud, reset before/after."""
    if not port:
        raise UsageError("no serial port given")
    return ["--chip", _check_chip(chip), "--port", port, "--baud", str(int(baud)), "--before", "default-reset",
            "--after", after]  # fmt: skip


def _pairs(images: Sequence[FlashFile]) -> list[str]:
    out: list[str] = []
    for image in sorted(images, key=lambda i: i.address):
        out += [f"0x{image.address:x}", str(image.path)]
    return out


def flash_args(
    port: str,
    images: Sequence[FlashFile],
    *,
    chip: str = "auto",
    baud: int = DEFAULT_BAUD,
    erase_all: bool = False,
) -> list[str]:
    """esptool argv writing ``images`` (keeps the images' flash mode/size/frequency headers)."""
    if not images:
        raise UsageError("nothing to flash: give at least one FILE@ADDR")
    keep = ["--flash-mode", "keep", "--flash-freq", "keep", "--flash-size", "keep"]
    args = [*base_args(port, chip, baud), "write-flash", "--no-progress", *keep]
    if erase_all:
        args.append("--erase-all")
    return args + _pairs(images)


def verify_args(port: str, images: Sequence[FlashFile], *, chip: str = "auto", baud: int = DEFAULT_BAUD) -> list[str]:
    """esptool argv reading the flash back and comparing it with ``images``."""
    return [*base_args(port, chip, baud), "verify-flash", "--diff", *_pairs(images)]


def read_args(port: str, address: int, size: int, output: str | os.PathLike[str], *, chip: str = "auto",
              baud: int = DEFAULT_BAUD) -> list[str]:  # fmt: skip
    """esptool argv reading ``size`` bytes at ``address`` into ``output``."""
    if address < 0 or size <= 0:
        raise UsageError(f"bad flash region: address 0x{address:x}, size {size}")
    region = [f"0x{address:x}", f"0x{size:x}", str(output)]
    return [*base_args(port, chip, baud, after="hard-reset"), "read-flash", "--no-progress", *region]


def run_esptool(argv: Sequence[str], log: Callable[[str], None] | None = None) -> str:
    """Run ``esptool.main(argv)``; return its output. Any esptool failure becomes one BoardError line."""
    import esptool

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            esptool.main(list(argv))
    except SystemExit as exc:  # click usage errors
        raise BoardError(f"esptool failed: {_last_line(buf.getvalue()) or f'exit {exc.code}'}") from None
    except Exception as exc:  # esptool.FatalError, serial.SerialException, OSError ...
        raise BoardError(f"esptool failed on {_port_of(argv)}: {_one_line(exc)}") from None
    finally:
        if log is not None:
            log(buf.getvalue())
    return buf.getvalue()


def flash(
    port: str,
    images: Sequence[FlashFile],
    *,
    chip: str = "auto",
    baud: int = DEFAULT_BAUD,
    verify: bool = True,
    log: Callable[[str], None] | None = None,
) -> str:
    """Write ``images`` (and read them back to compare when ``verify``); return esptool's output."""
    check_images(images)
    out = run_esptool(flash_args(port, images, chip=chip, baud=baud), log)
    if verify:
        out += run_esptool(verify_args(port, images, chip=chip, baud=baud), log)
    return out


def read_flash(
    port: str,
    address: int,
    size: int,
    output: str | os.PathLike[str] | None = None,
    *,
    chip: str = "auto",
    baud: int = DEFAULT_BAUD,
    log: Callable[[str], None] | None = None,
) -> bytes:
    """Read ``size`` bytes of flash at ``address``; also write them atomically to ``output`` if given."""
    target = Path(output) if output is not None else None
    folder = target.parent if target is not None else None
    fd, tmp = tempfile.mkstemp(prefix=".otalab-read-", dir=folder)
    os.close(fd)
    try:
        run_esptool(read_args(port, address, size, tmp, chip=chip, baud=baud), log)
        data = Path(tmp).read_bytes()
        if target is not None:
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        return data
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def connect_kwargs(port: str, baud: int = 115200) -> dict:
    """Arguments of ``esptool.cmds.detect_chip`` for :func:`chip_info`."""
    if not port:
        raise UsageError("no serial port given")
    return {"port": port, "baud": int(baud), "connect_mode": "default-reset"}


def chip_info(port: str, baud: int = 115200) -> ChipInfo:
    """Detect the chip on ``port`` and read its MAC (esptool library API); the chip is reset afterwards."""
    from esptool import cmds

    buf = io.StringIO()
    try:
        # the loader is a context manager (esptool's public API): leaving it closes the port, on errors too
        with (
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
            cmds.detect_chip(**connect_kwargs(port, baud)) as esp,
        ):
            mac = ":".join(f"{b:02x}" for b in esp.read_mac())
            info = ChipInfo(
                chip=esp.CHIP_NAME,
                description=esp.get_chip_description(),
                mac=mac,
                features=tuple(esp.get_chip_features()),
                crystal_mhz=_try(esp.get_crystal_freq),
            )
            with contextlib.suppress(Exception):  # best effort, as the comment says
                esp.run_stub()  # flash id needs the stub on some chips; best effort
            flash_size = _try(lambda: cmds.detect_flash_size(esp))
            cmds.reset_chip(esp, "hard-reset")
        return ChipInfo(**{**info.__dict__, "flash_size": flash_size})
    except Exception as exc:  # esptool.FatalError, serial.SerialException, OSError, struct.error ...
        raise BoardError(f"cannot read chip info on {port}: {_one_line(exc)}") from None


def _try(fn: Callable):
    """``fn()``, or None when the chip cannot tell (optional details: any esptool failure means unknown)."""
    try:
        return fn()
    except Exception:
        return None


def _one_line(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _port_of(argv: Sequence[str]) -> str:
    argv = list(argv)
    return argv[argv.index("--port") + 1] if "--port" in argv else "?"

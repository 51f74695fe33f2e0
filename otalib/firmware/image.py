"""ESP firmware images through esptool's own classes.

Inspect any image (chip, entry, segments, checksum and SHA-256), walk its parts,
read the otalab app marker, and convert an ELF with esptool's ``elf2image``.
Demo images are synthesised in :mod:`otalib.firmware.demo`.

The app marker of a demo image is a segment placed first, right after the header::

    b"OTALAB-APP\\0" + JSON {"app_id": ..., "version": ..., "chip": ...} + b"\\0"

so :func:`read_app_info` finds it in the first bytes of a flash slot.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import io
import json
import os
import re
import struct
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from otalib.errors import ImageError, UsageError
from otalib.fileio import read_input, write_atomic
from otalib.formats import kinds
from otalib.formats.kinds import ESP8266_V2_MAGIC, ESP_IMAGE_MAGIC

#: Starts the app marker of otalab demo images.
APP_MARKER = b"OTALAB-APP\0"

CHECKSUM_MAGIC = 0xEF
SHA256_LEN = 32
_MARKER_SEARCH = 0x10000
_VERSION_RE = re.compile(r"^\d+\.\d+\.\d+$")
_APP_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

FLASH_MODES = {"qio": 0, "qout": 1, "dio": 2, "dout": 3}


class ImageFormat(str, enum.Enum):
    """The image formats otalab reads (all through esptool's classes)."""

    ESP8266_V1 = "esp8266-v1"  # magic 0xE9: esptool's v1 image (rboot.bin, otalab demo images)
    ESP8266_V2 = "esp8266-v2"  # magic 0xEA: irom0 first, then a v1 header (Sming/esptool2 rom0.bin)
    ESP32 = "esp32"  # magic 0xE9 + extended header (ESP32 family, SHA-256 appended)


@dataclass(frozen=True)
class ImageInfo:
    """What an ESP image says about itself (as esptool reads it).

    ``sha256`` is the digest an ESP32 image carries; ``file_sha256`` the SHA-256 of the
    image bytes (``size`` of them). ``crc32`` is the CRC32 esptool appends to a v2 image,
    None when there is none (esptool2, which Sming uses, writes none; rBoot checks none).
    """

    chip: str
    image_version: int
    entry: int
    segments: tuple[tuple[int, int], ...]
    checksum_valid: bool
    sha256_valid: bool | None
    size: int
    app_id: str | None = None
    app_version: str | None = None
    checksum: int = 0
    calculated_checksum: int = 0
    sha256: str | None = None
    flash_mode: str | None = None
    flash_size: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    format: ImageFormat = ImageFormat.ESP8266_V1
    file_sha256: str = ""
    crc32: int | None = None

    @property
    def valid(self) -> bool:
        """True when the checksum (and the SHA-256, where present) match."""
        return self.checksum_valid and self.sha256_valid is not False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (addresses as ints, segments as lists)."""
        data = asdict(self)
        data["segments"] = [{"address": addr, "size": size} for addr, size in self.segments]
        data["warnings"] = list(self.warnings)
        data["format"] = self.format.value
        data["valid"] = self.valid
        return data


# --------------------------------------------------------------------------- esptool plumbing


_ESPTOOL_LOCK = threading.RLock()


@contextlib.contextmanager
def esptool_quiet() -> Iterator[list[str]]:
    """Run esptool code without it printing; collect its warnings/errors instead."""
    messages: list[str] = []
    with _ESPTOOL_LOCK:
        try:
            from esp_pylib.logger import EspLog, EspLogBase
        except ImportError:  # older esptool: it prints directly
            sink = io.StringIO()
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield messages
            messages.extend(line for line in sink.getvalue().splitlines() if "warning" in line.lower())
            return

        class _Collector(EspLogBase):  # type: ignore[misc, valid-type]
            def print(self, *args: Any, **kwargs: Any) -> None:
                pass

            def err(self, *args: Any, suggestion: str | None = None) -> None:
                messages.append(" ".join(str(a) for a in args))

            def warn(self, *args: Any, suggestion: str | None = None) -> None:
                messages.append(" ".join(str(a) for a in args))

            def note(self, *args: Any) -> None:
                pass

            def hint(self, *args: Any) -> None:
                pass

            def debug(self, *args: Any) -> None:
                pass

            def stage(self, finish: bool = False) -> None:
                pass

            def set_verbosity(self, mode: int | str) -> None:
                pass

            def progress_bar(self, *args: Any, **kwargs: Any) -> None:
                pass

        previous = EspLog.instance
        EspLog.instance = _Collector()
        try:
            yield messages
        finally:
            EspLog.instance = previous


def xor_checksum(data: bytes, state: int = CHECKSUM_MAGIC) -> int:
    """The ROM's XOR checksum of ``data`` (same result as ``ESPLoader.checksum``, without a byte loop)."""
    width = len(data)
    if not width:
        return state
    value = int.from_bytes(data, "little")
    while width > 1:
        half = (width + 1) // 2
        value = (value & ((1 << (8 * half)) - 1)) ^ (value >> (8 * half))
        width = half
    return state ^ value


def app_image_class(chip: str) -> type:
    """esptool's application image class for a chip of the ESP32 family."""
    from esptool.targets import CHIP_DEFS

    rom = CHIP_DEFS.get(chip)
    image_class = getattr(rom, "BOOTLOADER_IMAGE", None)
    if rom is None or image_class is None:
        raise UsageError(f"unknown chip {chip!r} (choose from {', '.join(supported_chips())})")
    return image_class


def supported_chips() -> list[str]:
    """Chip names esptool knows (``esp8266``, ``esp32``, ``esp32c3``...)."""
    from esptool.targets import CHIP_LIST

    return list(CHIP_LIST)


def normalise_chip(chip: str) -> str:
    """``"ESP32-C3"`` -> ``"esp32c3"``; :class:`UsageError` if esptool does not know it."""
    name = re.sub(r"[-_() ]", "", str(chip).lower())
    if name not in supported_chips():
        raise UsageError(f"unknown chip {chip!r} (choose from {', '.join(supported_chips())})")
    return name


# --------------------------------------------------------------------------- inspect


def is_esp_image(data: bytes) -> bool:
    """Cheap check: does ``data`` (a whole image or its first 16+ bytes) start like an ESP image?

    The header check is :func:`otalib.formats.kinds.is_esp_image` (rBoot's); this
    module reads the image itself through esptool.
    """
    return kinds.is_esp_image(data)


def _guess_chip(data: bytes) -> str:
    """esptool's own rule: a known chip id in an extended header, else ESP8266."""
    from esptool.targets import ROM_LIST

    if data[0] != ESP_IMAGE_MAGIC or len(data) < 24 or data[23] not in (0, 1):
        return "esp8266"
    chip_id = data[12]
    for rom in ROM_LIST:
        if getattr(rom, "IMAGE_CHIP_ID", None) == chip_id:
            return normalise_chip(rom.CHIP_NAME)
    return "esp8266"


def _load(chip: str, data: bytes) -> tuple[Any, int]:
    """Load ``data`` with esptool's class for ``chip``; return (image, parsed length)."""
    from esptool.bin_image import LoadFirmwareImage

    stream_len = len(data)
    image = LoadFirmwareImage(chip, data)
    if chip != "esp8266" and image.append_digest:
        if len(image.stored_digest) < SHA256_LEN:
            raise ImageError("truncated ESP image: SHA-256 digest missing at the end")
        length = image.data_length + SHA256_LEN
    else:
        length = _parsed_length(image)
    if length > stream_len:
        raise ImageError("truncated ESP image: checksum missing at the end")
    if _crc32_of_v2(image, data[:length], data[length : length + 4]) is not None:
        length += 4
    return image, length


def _parsed_length(image: Any) -> int:
    """Length of an image without digest: end of the last segment, aligned to 16 with the checksum byte.

    esptool's loader reads no further (an ESP8266 v2 image may have a CRC32 after it:
    see :func:`_crc32_of_v2`).
    """
    last = max((seg.file_offs + 8 + len(seg.data) for seg in image.segments if seg.file_offs is not None), default=8)
    return (last // 16 + 1) * 16


def _crc32_of_v2(image: Any, body: bytes, tail: bytes) -> int | None:
    """The CRC32 esptool appends to a v2 image, when ``tail`` holds it (esptool2 writes none)."""
    if getattr(image, "version", 1) != 2 or len(tail) < 4:
        return None
    from esptool.bin_image import esp8266_crc32

    stored = int.from_bytes(tail[:4], "little")
    return stored if stored == esp8266_crc32(body) else None


def _describe_load_error(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    if "End of file" in text:
        return f"truncated ESP image ({text.splitlines()[0][0].lower()}{text.splitlines()[0][1:]})"
    if isinstance(exc, (struct.error, TypeError, IndexError)):
        return "truncated ESP image"
    return f"not a valid ESP image ({text.splitlines()[0]})"


def inspect_image(data: bytes, chip: str | None = None) -> ImageInfo:
    """Read an ESP image with esptool and report what it holds.

    ``chip`` is detected from the header when not given. A bad checksum or
    digest is reported in the result; data that is not an ESP image (or is
    truncated) raises :class:`ImageError`.
    """
    data = bytes(data)
    if not data:
        raise ImageError("not an ESP image: empty data")
    if data[0] not in (ESP_IMAGE_MAGIC, ESP8266_V2_MAGIC):
        expected = f"{ESP_IMAGE_MAGIC:#04x} or {ESP8266_V2_MAGIC:#04x}"
        raise ImageError(f"not an ESP image: first byte is {data[0]:#04x}, expected {expected}")
    if len(data) < 8:
        raise ImageError("truncated ESP image: shorter than its 8-byte header")
    if chip is not None:
        candidates = [normalise_chip(chip)]
    else:
        first = _guess_chip(data)
        candidates = [first] + (["esp8266"] if first != "esp8266" else [])
    loaded: list[tuple[str, Any, int, list[str]]] = []
    first_error: Exception | None = None
    for name in candidates:
        try:
            with esptool_quiet() as messages:
                image, length = _load(name, data)
        except ImageError as exc:
            first_error = first_error or exc
            continue
        except Exception as exc:  # esptool raises FatalError, struct.error, TypeError, RuntimeError...
            first_error = first_error or ImageError(_describe_load_error(exc))
            continue
        loaded.append((name, image, length, messages))
        if _checksum_of(image) == image.checksum:
            break
    if not loaded:
        assert first_error is not None
        raise first_error if isinstance(first_error, ImageError) else ImageError(str(first_error))
    valid = [entry for entry in loaded if _checksum_of(entry[1]) == entry[1].checksum]
    name, image, length, messages = (valid or loaded)[0]
    return _info(name, image, data[:length], messages)


def _checksum_of(image: Any) -> int:
    state = CHECKSUM_MAGIC
    for seg in image.segments:
        if seg.include_in_checksum:
            state = xor_checksum(seg.data, state)
    return state


def _info(chip: str, image: Any, data: bytes, messages: list[str]) -> ImageInfo:
    from esptool.util import get_key_from_value

    calculated = _checksum_of(image)
    sha_valid: bool | None = None
    sha_hex: str | None = None
    if chip != "esp8266" and getattr(image, "append_digest", False):
        sha_valid = image.stored_digest == image.calc_digest
        sha_hex = image.stored_digest.hex()
    flash_size = get_key_from_value(image.ROM_LOADER.FLASH_SIZES, image.flash_size_freq & 0xF0)
    flash_mode = get_key_from_value(FLASH_MODES, image.flash_mode)
    app = read_app_info(data) or _idf_app_info(image)
    version = int(getattr(image, "version", 1))
    crc32 = None
    if chip != "esp8266":
        image_format = ImageFormat.ESP32
    elif version == 2:
        image_format = ImageFormat.ESP8266_V2
        if len(data) == _parsed_length(image) + 4:
            crc32 = _crc32_of_v2(image, data[:-4], data[-4:])
    else:
        image_format = ImageFormat.ESP8266_V1
    return ImageInfo(
        chip=chip,
        image_version=version,
        entry=int(image.entrypoint),
        segments=tuple((int(seg.addr), len(seg.data)) for seg in image.segments),
        checksum_valid=calculated == image.checksum,
        sha256_valid=sha_valid,
        size=len(data),
        app_id=app[0] if app else None,
        app_version=app[1] if app else None,
        checksum=int(image.checksum),
        calculated_checksum=calculated,
        sha256=sha_hex,
        flash_mode=flash_mode,
        flash_size=flash_size,
        warnings=tuple(messages),
        format=image_format,
        file_sha256=hashlib.sha256(data).hexdigest(),
        crc32=crc32,
    )


def _idf_app_info(image: Any) -> tuple[str, str] | None:
    """(project name, version) from an ESP-IDF ``esp_app_desc_t``, if the image has one."""
    try:
        from esptool.cmds import _parse_app_info
    except ImportError:  # pragma: no cover - esptool internals moved
        return None
    for seg in image.segments:
        if "DROM" in seg.get_memory_type(image):
            try:
                desc = _parse_app_info(seg.data)
            except (struct.error, ValueError):  # a DROM segment too short, or not text where text belongs
                return None
            if desc:
                return str(desc["project_name"]), str(desc["version"])
            return None
    return None


def inspect_file(path: str | os.PathLike[str], chip: str | None = None) -> ImageInfo:
    """:func:`inspect_image` of a file (missing/unreadable file -> :class:`InputError`)."""
    return inspect_image(read_input(path, "image file"), chip)


# --------------------------------------------------------------------------- the parts of an image


def image_regions(data: bytes, chip: str | None = None) -> list[dict[str, Any]]:
    """The parts of an ESP image in file order, as esptool walks it (for notebooks and training).

    One dict per part: ``offset``, ``size``, ``part`` (header, segment header, segment,
    padding+checksum, crc32, sha256), ``load_address`` (segments) and ``meaning``.
    """
    data = bytes(data)
    info = inspect_image(data, chip)
    with esptool_quiet():
        from esptool.bin_image import LoadFirmwareImage

        image = LoadFirmwareImage(info.chip, data[: info.size])
    regions: list[dict[str, Any]] = []

    def add(offset: int, size: int, part: str, meaning: str, load: int | None = None) -> None:
        regions.append({"offset": offset, "size": size, "part": part, "load_address": load, "meaning": meaning})

    v2 = info.format is ImageFormat.ESP8266_V2
    head = 24 if info.format is ImageFormat.ESP32 else 8
    if v2:
        add(0, 8, "header (v2)", "0xEA, 4, flash mode, size/freq, entry: no version field")
    else:
        add(0, head, "header", f"0xE9, segment count, flash mode, size/freq, entry{', chip id' if head == 24 else ''}")
    for index, seg in enumerate(image.segments):
        start = int(seg.file_offs)
        if v2 and index == 1:
            add(start - 8, 8, "header (v1)", "0xE9 and the loadable segments' count; flash fields; entry")
        irom = v2 and index == 0
        add(start, 8, "segment header", "load address and length")
        kinds = "irom0: code run from flash" if irom else ", ".join(seg.get_memory_type(image)) or "?"
        add(start + 8, len(seg.data), f"segment {index}", kinds, None if irom else int(seg.addr))
    end = _parsed_length(image)
    last = regions[-1]["offset"] + regions[-1]["size"]
    add(last, end - last, "padding + checksum", f"XOR checksum {info.checksum:#04x} in the last byte")
    if info.crc32 is not None:
        add(end, 4, "crc32", "esptool's CRC32 of the image (esptool2 writes none)")
    if info.sha256 is not None:
        add(info.size - SHA256_LEN, SHA256_LEN, "sha256", "SHA-256 of the image before it")
    return regions


def find_in_image(data: bytes, *texts: str) -> list[dict[str, Any]]:
    """Where each of ``texts`` occurs in an image: ``text``, ``offset``, the ``part`` holding it."""
    regions = image_regions(data)
    found = []
    for text in texts:
        needle, start = text.encode(), 0
        while (offset := bytes(data).find(needle, start)) >= 0:
            part = next((r for r in regions if r["offset"] <= offset < r["offset"] + r["size"]), None)
            found.append({"text": text, "offset": offset, "part": part["part"] if part else "outside the image"})
            start = offset + 1
    return found


# --------------------------------------------------------------------------- app marker


def app_marker(
    app_id: str, version: str, chip: str, build_timestamp: int | None = None, patch: int | None = None
) -> bytes:
    """The marker segment data of a demo image (4-byte aligned).

    ``build_timestamp`` (ms since 1900, the firmware's compiled-in build time, used by
    the device for downgrade protection) and ``patch`` are added when given.
    """
    record: dict[str, Any] = {"app_id": app_id, "version": version, "chip": chip}
    if build_timestamp is not None:
        record["build_timestamp"] = int(build_timestamp)
    if patch is not None:
        record["patch"] = int(patch)
    payload = json.dumps(record, separators=(",", ":"))
    data = APP_MARKER + payload.encode() + b"\0"
    return data + b"\0" * (-len(data) % 4)


def read_app_info(data: bytes, search_limit: int = _MARKER_SEARCH) -> tuple[str, str] | None:
    """(app_id, version) from an otalab app marker in the first ``search_limit`` bytes, else None.

    Works on any prefix of an image (e.g. the first KB of a flash slot) that
    holds the whole marker; needs no valid header.
    """
    record = read_app_marker(data, search_limit)
    return (record["app_id"], record["version"]) if record is not None else None


def read_app_marker(data: bytes, search_limit: int = _MARKER_SEARCH) -> dict[str, Any] | None:
    """The whole app marker record (``app_id``, ``version``, ``chip``, and ``build_timestamp``
    / ``patch`` when the image carries them) from the first ``search_limit`` bytes, else None."""
    window = bytes(data[: search_limit + 512])
    start = window.find(APP_MARKER, 0, search_limit)
    if start < 0:
        return None
    body_start = start + len(APP_MARKER)
    end = window.find(b"\0", body_start)
    if end < 0:
        return None
    try:
        record = json.loads(window[body_start:end].decode())
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deep: no marker
        return None
    if not isinstance(record, dict):
        return None
    app_id, version = record.get("app_id"), record.get("version")
    if not isinstance(app_id, str) or not isinstance(version, str):
        return None
    return record


def check_version(version: str) -> str:
    """``version`` if it is ``MAJOR.MINOR.PATCH`` (digits), else :class:`UsageError`."""
    if not isinstance(version, str) or not _VERSION_RE.match(version):
        raise UsageError(f"bad version {version!r}: expected MAJOR.MINOR.PATCH, e.g. 4.3.5")
    return version


def check_app_id(app_id: str) -> str:
    """``app_id`` if it is 1..64 of ``[A-Za-z0-9_.-]`` (safe in an MQTT topic), else :class:`UsageError`."""
    if not isinstance(app_id, str) or not _APP_ID_RE.match(app_id):
        raise UsageError(f"bad app id {app_id!r}: use 1..64 letters, digits, '_', '.', '-'")
    return app_id


# --------------------------------------------------------------------------- elf2image


def elf2image(
    elf_path: str | os.PathLike[str],
    chip: str,
    output: str | os.PathLike[str],
    version: int = 1,
    *,
    flash_mode: str = "dio",
    flash_size: str = "4MB",
    flash_freq: str | None = None,
) -> Path:
    """Convert an ELF into a flashable image with esptool's ``elf2image``; return the image path.

    ESP8266 ``version`` 1 gives esptool's split form: the image at ``output``
    and, if the ELF has an irom0 section, its data beside it as
    ``<output stem>-0xNNNNN.bin`` (NNNNN = flash offset), never over the ELF or
    a key file; version 2 gives one file. Other chips ignore ``version``.
    """
    from esptool.cmds import elf2image as esptool_elf2image

    chip = normalise_chip(chip)
    if chip == "esp8266" and version not in (1, 2):
        raise UsageError(f"bad ESP8266 image version {version!r}: expected 1 or 2")
    if flash_mode not in FLASH_MODES:
        raise UsageError(f"bad flash mode {flash_mode!r}: expected one of {', '.join(FLASH_MODES)}")
    elf = read_input(elf_path, "ELF file")
    if elf[:4] != b"\x7fELF":
        raise ImageError(f"not an ELF file: {elf_path}")
    out = Path(output)
    try:
        with esptool_quiet():
            result = esptool_elf2image(
                elf,
                chip,
                None,
                flash_freq=flash_freq,
                flash_mode=flash_mode,
                flash_size=flash_size,
                version=str(version),  # esptool compares the version as a string
            )
    except Exception as exc:  # FatalError and friends from esptool
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ImageError(f"elf2image failed: {text}") from None
    if isinstance(result, tuple):
        irom, main = result
        if irom:
            from esptool.targets import ESP8266ROM

            with esptool_quiet():
                from esptool.bin_image import ELFFile

                sections = ELFFile(elf).sections
            irom_addr = next(s.addr for s in sections if ESP8266ROM.IROM_MAP_START <= s.addr < ESP8266ROM.IROM_MAP_END)
            offset = irom_addr - ESP8266ROM.IROM_MAP_START
            irom_path = out.with_name(f"{out.stem}-{offset:#07x}.bin")
            # The irom part is named by esptool's rule, not by the user: never let it replace the ELF or a key.
            from otalib.outputs import guard_output

            guard_output(irom_path, [("ELF file", elf_path)], force=False)
            write_atomic(irom_path, irom)
        data = main
    else:
        data = result
    if not data:
        raise ImageError("elf2image produced no image")
    try:
        inspect_image(data, chip)
    except ImageError as exc:  # e.g. an ESP8266 v2 image of an ELF without irom0
        raise ImageError(f"elf2image produced an image esptool cannot read back ({exc})") from None
    return write_atomic(out, data)

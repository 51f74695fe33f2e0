"""The bytes of an update explained: every field of a package / OTA file with offset and meaning.

For notebooks and training: :func:`layout` walks a file with the same decoder the
devices use and returns one :class:`Field` per header, ROM, signature and encryption
chunk, at the offsets the decoder's events carry; :func:`layout_frame` makes that a
DataFrame and :func:`plot_layout` draws it.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

from otalib.errors import DeviceError
from otalib.formats.kinds import OTA_MAGIC_SIGNED, OTA_MAGIC_UNSIGNED, Kind, detect
from otalib.formats.ota import DigestRead, OtaDecoder, OtaEvent, OtaHeader, RomData, RomStart
from otalib.formats.secretstream import ContainerChunk, ContainerEvent, ContainerHeader, SecretstreamReader
from otalib.formats.version import decode_patch, device_patch
from otalib.inspect import timestamp_text
from otalib.keys import DeviceKeys, LabKey

PREVIEW = 4  # bytes of a ROM's content shown


@dataclass(frozen=True)
class Field:
    """One region of a file: where it is, what it is, what it holds."""

    offset: int
    length: int
    part: str
    field: str
    value: str


def _decode(data: bytes, keys: DeviceKeys) -> list[OtaEvent]:
    """The decoder's events for ``data`` up to its first error (a layout is drawn for broken files too)."""
    decoder = OtaDecoder(verify_key=keys.verify, decrypt_key=keys.decrypt)
    events: list[OtaEvent] = []
    with contextlib.suppress(DeviceError):
        events.extend(decoder.feed(data))  # extends with each event as it comes, up to the error
    return events


def _container_frames(data: bytes) -> list[ContainerEvent]:
    """The container's frames, walked without decrypting (no key, or the key does not fit)."""
    frames: list[ContainerEvent] = []
    reader = SecretstreamReader(None, lambda plain: None, frames.append, frames_only=True)
    reader.feed(memoryview(data))
    return frames


def _plain_fields(events: list[OtaEvent], base: int, label: str = "") -> list[Field]:
    """One field per header, ROM header, ROM content and signature the decoder reported."""
    fields: list[Field] = []
    previews: dict[int, bytes] = {}
    for event in events:
        if isinstance(event, RomData) and len(previews.get(event.index, b"")) < PREVIEW:
            previews[event.index] = (previews.get(event.index, b"") + event.data)[:PREVIEW]
    for event in events:
        if isinstance(event, OtaHeader):
            magic = OTA_MAGIC_SIGNED if event.signed else OTA_MAGIC_UNSIGNED
            kind = "signed" if event.signed else "not signed"
            at, part = base + event.offset, f"{label}header"
            when = timestamp_text(event.timestamp)
            fields += [
                Field(at, 4, part, "magic", f"{magic:#010x} ({kind})"),
                Field(at + 4, 8, part, "build timestamp", f"{event.timestamp} ms since 1900 ({when})"),
                Field(at + 12, 1, part, "ROM count", str(event.rom_count)),
                Field(at + 13, 3, part, "reserved", event.reserved.hex()),
            ]
        elif isinstance(event, RomStart):
            at, part = base + event.offset, f"{label}ROM {event.index}"
            preview = previews.get(event.index, b"").hex() + "…"
            fields += [
                Field(at, 4, part, "flash address", f"{event.address:#x}"),
                Field(at + 4, 4, part, "size", str(event.size)),
                Field(base + event.data_offset, event.size, part, "image", preview),
            ]
        elif isinstance(event, DigestRead):
            name = "Ed25519ph signature" if event.method == "ed25519ph" else "MD5 checksum"
            value = event.digest[:8].hex() + "…"
            fields.append(Field(base + event.offset, event.length, f"{label}verification", name, value))
    return fields


def _container_fields(frames: list[ContainerEvent], data: bytes, base: int) -> list[Field]:
    fields: list[Field] = []
    for frame in frames:
        if isinstance(frame, ContainerHeader):
            value = data[frame.offset : frame.offset + 8].hex() + "…"
            fields.append(Field(base + frame.offset, frame.length, "encryption", "secretstream header", value))
        elif isinstance(frame, ContainerChunk):
            size, at = frame.cipher_length, base + frame.offset
            fields.append(Field(at, 2, "encryption", f"chunk {frame.index} length-1", str(size - 1)))
            fields.append(Field(at + 2, size, "encryption", f"chunk {frame.index} ciphertext", f"{size} bytes"))
    return fields


def _encrypted_fields(data: bytes, keys: DeviceKeys, base: int) -> list[Field]:
    """The container's frames, then (with the key) the decrypted file's fields."""
    events = _decode(data, keys) if keys.decrypt is not None else []
    decrypted = [e for e in events if not isinstance(e, (ContainerHeader, ContainerChunk))]
    frames = _container_frames(data)
    return _container_fields(frames, data, base) + _plain_fields(decrypted, 0, "decrypted ")


def layout(data: bytes, key: LabKey | DeviceKeys | None = None, varint: bool = True) -> list[Field]:
    """Fields of a package or OTA file (encrypted files are decrypted when a key is given).

    The regions are the ones the device's decoder reports (its events carry their
    offsets); a package's patch prefix is read with the device's patch decoder.
    """
    keys = DeviceKeys.of(key)
    fields: list[Field] = []
    base = 0
    kind = detect(data)
    if kind is Kind.UNKNOWN:  # a package: the patch version, then the firmware
        patch, used = decode_patch(data, varint)
        seen = device_patch(patch, varint)
        note = f"patch {patch}" + (f" (a Sming 6.1 device reads {seen})" if seen != patch else "")
        fields.append(Field(0, used, "package", "patch version (varint)" if varint else "patch version", note))
        base = used
        data = data[used:]
        kind = detect(data)
    if kind is Kind.OTA:
        return fields + _plain_fields(_decode(data, keys), base)
    if kind is Kind.ESP_IMAGE:
        return [*fields, Field(base, len(data), "firmware", "raw ESP image (standard mode)", data[:4].hex() + "…")]
    if kind is Kind.OTA_ENCRYPTED:
        return fields + _encrypted_fields(data, keys, base)
    return [*fields, Field(base, len(data), "firmware", "unrecognised data", data[:4].hex() + "…")]


def layout_frame(fields: list[Field]):
    """The fields as a DataFrame (offset, length, part, field, value)."""
    import pandas as pd

    return pd.DataFrame([asdict(f) for f in fields])


def plot_layout(frame, ax=None):
    """A file's regions as one horizontal bar per part (log-scaled lengths make headers visible)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9, 2.5))
    outer = frame[~frame["part"].str.startswith("decrypted")]
    parts = list(dict.fromkeys(outer["part"]))
    colors = plt.get_cmap("tab10")
    for i, part in enumerate(parts):
        rows = outer[outer["part"] == part]
        ax.barh(0, rows["length"].sum(), left=rows["offset"].min(), color=colors(i % 10), label=part, edgecolor="k")
    ax.set_yticks([])
    ax.set_xlabel("byte offset")
    ax.set_title("file layout")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=min(len(parts), 6), fontsize="small")
    return ax

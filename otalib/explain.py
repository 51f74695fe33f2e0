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


def condensed(fields: list[Field], keep_chunks: int = 2) -> list[Field]:
    """``fields`` with the encryption chunks after the first ``keep_chunks`` folded into one row.

    An encrypted file has one length and one ciphertext field per 2 KiB chunk; a table of them
    hides the header fields that follow (the decrypted file's magic, timestamp, ROM address…).
    """
    chunks = [f for f in fields if f.part == "encryption" and f.field.startswith("chunk ")]
    later = [f for f in chunks if int(f.field.split()[1]) >= keep_chunks]
    if not later:
        return list(fields)
    first, last = int(later[0].field.split()[1]), int(later[-1].field.split()[1])
    total = sum(f.length for f in later)
    folded = Field(
        later[0].offset,
        total,
        "encryption",
        f"chunks {first}–{last}",
        f"{last - first + 1} chunks of length-1 (2 B) + ciphertext, {total} bytes",
    )
    out: list[Field] = []
    for f in fields:
        if f is later[0]:
            out.append(folded)
        elif not any(f is g for g in later):
            out.append(f)
    return out


def layout_frame(fields: list[Field]):
    """The fields as a DataFrame (offset, length, part, field, value)."""
    import pandas as pd

    return pd.DataFrame([asdict(f) for f in fields], columns=["offset", "length", "part", "field", "value"])


#: Colour of each kind of part (the same in every layout chart).
PART_COLORS = {
    "package": "#9467bd",
    "header": "#1f77b4",
    "ROM": "#2ca02c",
    "verification": "#d62728",
    "encryption": "#7f7f7f",
    "firmware": "#2ca02c",
}


def _part_color(part: str) -> str:
    name = part.removeprefix("decrypted ")
    return PART_COLORS.get(name.split()[0] if name.startswith("ROM") else name, "#bcbd22")


#: Short names for the zoomed boxes (the byte table has the full ones).
_SHORT = {
    "patch version (varint)": "patch",
    "patch version": "patch",
    "build timestamp": "timestamp",
    "ROM count": "ROMs",
    "reserved": "rsvd",
    "flash address": "address",
    "secretstream header": "secretstream header",
    "Ed25519ph signature": "Ed25519ph signature",
}


def _short(field: str) -> str:
    if field.startswith("chunk "):
        index, what = field.split()[1], field.split()[2]
        return f"#{index} len" if what == "length-1" else f"chunk {index}"
    return _SHORT.get(field, field)


def _draw_window(ax, rows, start: int, end: int, title: str) -> None:
    """Each field overlapping ``start..end`` as a labelled box, clipped to the window."""
    for row in rows.itertuples():
        lo, hi = max(row.offset, start), min(row.offset + row.length, end)
        if hi <= lo:
            continue
        ax.barh(0, hi - lo, left=lo, color=_part_color(row.part), edgecolor="k", height=0.8, alpha=0.85)
        name = _short(row.field) + ("…" if row.offset + row.length > end or row.offset < start else "")
        narrow = (hi - lo) / (end - start) < 0.011 * len(name)
        ax.text(
            (lo + hi) / 2,
            0,
            name,
            ha="center",
            va="center",
            rotation=90 if narrow else 0,
            fontsize="x-small" if narrow else "small",
        )
    ax.set_xlim(start, end)
    ax.set_yticks([])
    ax.set_xlabel("byte offset")
    ax.set_title(title, fontsize="medium")


def plot_layout(frame, fig=None, *, head: int = 32, tail: int = 80):
    """A file's layout: the whole file to scale, then zooms on its first ``head`` and last ``tail`` bytes.

    To scale, the headers are a few bytes next to a ROM of kilobytes, invisible; the zooms show
    every header field by name (magic, build timestamp, ROM count, flash address, size) and the
    signature or checksum at the end. An encrypted file gets a third row: the same zooms of the
    file inside the encryption (needs the key). Returns the figure.
    """

    outer = frame[~frame["part"].str.startswith("decrypted")]
    inner = frame[frame["part"].str.startswith("decrypted")]
    rows = 3 if len(inner) else 2
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(11, 1.9 * rows + 0.6), layout="constrained")
    grid = fig.add_gridspec(rows, 2)
    whole = fig.add_subplot(grid[0, :])
    size = int((outer["offset"] + outer["length"]).max()) if len(outer) else 0
    for part in dict.fromkeys(outer["part"]):
        picked = outer[outer["part"] == part]
        start = int(picked["offset"].min())
        length = int((picked["offset"] + picked["length"]).max()) - start
        whole.barh(0, length, left=start, color=_part_color(part), label=part, edgecolor="k", height=0.8)
    whole.set_xlim(0, max(size, 1))
    whole.set_yticks([])
    whole.set_xlabel("byte offset")
    thinnest = int(outer["length"].min()) if len(outer) else 0
    hidden = ": its headers are too thin to see, the zooms below show them" if thinnest < 0.01 * size else ""
    whole.set_title(f"the whole file to scale ({size} bytes){hidden}", fontsize="medium")
    whole.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    for row, (fields, what) in enumerate([(outer, "sent"), (inner, "decrypted")][: rows - 1], start=1):
        end = int((fields["offset"] + fields["length"]).max())
        left, right = fig.add_subplot(grid[row, 0]), fig.add_subplot(grid[row, 1])
        _draw_window(left, fields, 0, min(head, end), f"{what}: the first {min(head, end)} bytes")
        _draw_window(right, fields, max(end - tail, 0), end, f"{what}: the last {min(tail, end)} bytes")
    fig.suptitle("package layout, field by field")
    return fig

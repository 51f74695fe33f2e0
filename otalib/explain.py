"""The bytes of an update explained: every field of a package / OTA file with offset and meaning.

For notebooks and training: :func:`layout` walks a file with the same decoder the
devices use and returns one :class:`Field` per header, ROM, signature and encryption
chunk; :func:`layout_frame` makes that a DataFrame and :func:`plot_layout` draws it.
"""

from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

from otalib.formats.ota import (
    ENC_HEADER_BYTES,
    HEADER,
    MAGIC_SIGNED,
    MAGIC_UNSIGNED,
    MD5_BYTES,
    ROM_HEADER,
    SIGNATURE_BYTES,
    OtaDecoder,
    OtaHeader,
)
from otalib.formats.version import decode_patch, device_patch
from otalib.inspect import timestamp_text
from otalib.keys import DeviceKeys, LabKey
from otalib.package_check import is_esp_image


@dataclass(frozen=True)
class Field:
    """One region of a file: where it is, what it is, what it holds."""

    offset: int
    length: int
    part: str
    field: str
    value: str


def _plain_fields(data: bytes, base: int, label: str = "") -> list[Field]:
    fields: list[Field] = []
    if len(data) < HEADER.size:
        return [Field(base, len(data), "truncated", "data", data[:16].hex())]
    magic, timestamp, count = HEADER.unpack_from(data)
    kind = {MAGIC_SIGNED: "signed", MAGIC_UNSIGNED: "not signed"}.get(magic, "unknown")
    when = timestamp_text(timestamp)
    fields += [
        Field(base, 4, f"{label}header", "magic", f"{magic:#010x} ({kind})"),
        Field(base + 4, 8, f"{label}header", "build timestamp", f"{timestamp} ms since 1900 ({when})"),
        Field(base + 12, 1, f"{label}header", "ROM count", str(count)),
        Field(base + 13, 3, f"{label}header", "reserved", data[13:16].hex()),
    ]
    offset = HEADER.size
    for index in range(count):
        if offset + ROM_HEADER.size > len(data):
            break
        address, size = ROM_HEADER.unpack_from(data, offset)
        fields += [
            Field(base + offset, 4, f"{label}ROM {index}", "flash address", f"{address:#x}"),
            Field(base + offset + 4, 4, f"{label}ROM {index}", "size", str(size)),
            Field(base + offset + 8, size, f"{label}ROM {index}", "image", data[offset + 8 : offset + 12].hex() + "…"),
        ]
        offset += ROM_HEADER.size + size
    tail = SIGNATURE_BYTES if magic == MAGIC_SIGNED else MD5_BYTES
    name = "Ed25519ph signature" if magic == MAGIC_SIGNED else "MD5 checksum"
    fields.append(Field(base + offset, tail, f"{label}verification", name, data[offset : offset + 8].hex() + "…"))
    return fields


def _decrypted(data: bytes, keys: DeviceKeys) -> bytes | None:
    if keys.decrypt is None:
        return None
    from nacl import bindings as sodium

    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    try:
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, data[:ENC_HEADER_BYTES], keys.decrypt)
        parts, offset = [], ENC_HEADER_BYTES
        while offset < len(data):
            size = struct.unpack_from("<H", data, offset)[0] + 1
            plain, _ = sodium.crypto_secretstream_xchacha20poly1305_pull(state, data[offset + 2 : offset + 2 + size])
            parts.append(plain)
            offset += 2 + size
    except Exception:
        return None
    return b"".join(parts)


def layout(data: bytes, key: LabKey | DeviceKeys | None = None, varint: bool = True) -> list[Field]:
    """Fields of a package or OTA file (encrypted files are decrypted when a key is given)."""
    keys = DeviceKeys.of(key)
    fields: list[Field] = []
    base = 0
    magic = int.from_bytes(data[:4], "little") if len(data) >= 4 else None
    if magic not in (MAGIC_SIGNED, MAGIC_UNSIGNED) and not is_esp_image(data):
        decoder = OtaDecoder(decrypt_key=keys.decrypt, verify_key=keys.verify)
        is_encrypted_ota = False
        try:
            events = decoder.feed(data[:4096])
            is_encrypted_ota = any(isinstance(e, OtaHeader) for e in events)
        except Exception:
            pass
        if not is_encrypted_ota:
            patch, used = decode_patch(data, varint)
            seen = device_patch(patch, varint)
            note = f"patch {patch}" + (f" (a Sming 6.1 device reads {seen})" if seen != patch else "")
            fields.append(Field(0, used, "package", "patch version (varint)" if varint else "patch version", note))
            base = used
            data = data[used:]
    magic = int.from_bytes(data[:4], "little") if len(data) >= 4 else None
    if magic in (MAGIC_SIGNED, MAGIC_UNSIGNED):
        return fields + _plain_fields(data, base)
    if is_esp_image(data):
        return [*fields, Field(base, len(data), "firmware", "raw ESP image (standard mode)", data[:4].hex() + "…")]
    fields.append(Field(base, ENC_HEADER_BYTES, "encryption", "secretstream header", data[:8].hex() + "…"))
    offset, index = ENC_HEADER_BYTES, 0
    while offset + 2 <= len(data):
        size = struct.unpack_from("<H", data, offset)[0] + 1
        fields.append(Field(base + offset, 2, "encryption", f"chunk {index} length-1", str(size - 1)))
        fields.append(Field(base + offset + 2, size, "encryption", f"chunk {index} ciphertext", f"{size} bytes"))
        offset += 2 + size
        index += 1
    plain = _decrypted(data, keys)
    if plain is not None:
        fields += _plain_fields(plain, 0, "decrypted ")
    return fields


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

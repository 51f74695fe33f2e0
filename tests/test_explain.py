"""``explain.layout`` draws a file from the decoder's own events: every byte in one field, in order."""

from __future__ import annotations

from pathlib import Path

from otalib.explain import layout
from otalib.formats.ota import Rom, build_ota
from otalib.formats.package import pack
from otalib.keys import load_key

VECTORS = Path(__file__).parent / "vectors"
KEY = load_key(VECTORS / "demo.key")
ROMS = [Rom(0x2000, b"\xe9\x01" + bytes(range(200)) * 20), Rom(0x108000, b"")]


def _tiles(fields, start: int, end: int) -> None:
    """The fields cover ``start..end`` exactly, one after another."""
    at = start
    for f in fields:
        assert f.offset == at, f
        at += f.length
    assert at == end


def test_a_signed_package_is_tiled_by_its_fields():
    ota = build_ota(ROMS, KEY, signed=True, timestamp=5)
    data = pack(ota, 300)
    fields = layout(data, KEY)
    _tiles(fields, 0, len(data))
    by_name = {(f.part, f.field): f for f in fields}
    assert by_name["package", "patch version (varint)"].value == "patch 300 (a Sming 6.1 device reads 46)"
    assert by_name["header", "magic"].value == "0xf01af02a (signed)"
    assert by_name["header", "ROM count"].value == "2"
    assert by_name["ROM 0", "image"].value == "e9010001…"
    assert by_name["ROM 1", "image"].value == "…"  # an empty ROM shows none of the bytes after it
    signature = by_name["verification", "Ed25519ph signature"]
    assert (signature.offset, signature.length) == (len(data) - 64, 64)
    assert signature.value == ota[-64:-56].hex() + "…"


def test_an_encrypted_file_shows_its_chunks_and_with_the_key_the_file_inside():
    ota = build_ota(ROMS, KEY, signed=True, encrypted=True, timestamp=5)
    plain = build_ota(ROMS, KEY, signed=True, timestamp=5)
    keyless = layout(ota)
    assert {f.part for f in keyless} == {"encryption"}  # not read as a package, no decrypted part
    _tiles(keyless, 0, len(ota))
    fields = layout(ota, KEY)
    outer = [f for f in fields if f.part == "encryption"]
    assert outer == keyless
    inner = [f for f in fields if f.part.startswith("decrypted ")]
    _tiles(inner, 0, len(plain))
    assert next(f for f in fields if f.field == "chunk 0 length-1").value == "2047"


def test_a_file_with_a_bad_checksum_is_still_drawn_whole():
    ota = bytearray(build_ota(ROMS, timestamp=5))
    ota[-1] ^= 1
    fields = layout(bytes(ota))
    _tiles(fields, 0, len(ota))
    assert fields[-1].field == "MD5 checksum"


def _zoom_labels(fig) -> list[list[str]]:
    return [[t.get_text() for t in ax.texts] for ax in fig.get_axes()[1:]]


def test_the_layout_chart_names_every_header_field_in_its_zooms():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from otalib.explain import layout_frame, plot_layout

    data = pack(build_ota(ROMS, KEY, signed=True, timestamp=5), 7)
    fig = plot_layout(layout_frame(layout(data, KEY)), Figure())
    whole, head, tail = fig.get_axes()
    assert "too thin to see" in whole.get_title()  # to scale, 17 header bytes vs 4 KiB of ROM
    assert [t.get_text() for t in whole.get_legend().get_texts()] == [
        "package",
        "header",
        "ROM 0",
        "ROM 1",
        "verification",
    ]
    assert head.get_xlim() == (0, 32) and tail.get_xlim() == (len(data) - 80, len(data))
    labels = _zoom_labels(fig)
    assert labels[0][:6] == ["patch", "magic", "timestamp", "ROMs", "rsvd", "address"]
    assert labels[1][-1] == "Ed25519ph signature"
    magic = head.patches[1]
    assert (magic.get_x(), magic.get_width()) == (1, 4)  # the magic's 4 bytes after the 1-byte patch


def test_an_encrypted_layout_shows_the_file_inside_and_a_table_with_its_header():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from otalib.explain import condensed, layout_frame, plot_layout

    rom = [Rom(0x2000, bytes(range(256)) * 40)]  # 10 KiB: five 2 KiB chunks
    ota = build_ota(rom, KEY, signed=True, encrypted=True, timestamp=5)
    fields = layout(ota, KEY)
    fig = plot_layout(layout_frame(fields), Figure())
    assert len(fig.get_axes()) == 5  # the whole file, the sent bytes' zooms, the decrypted file's zooms
    assert _zoom_labels(fig)[2][:3] == ["magic", "timestamp", "ROMs"]
    table = condensed(fields)
    assert len(table) < 16 and len(fields) > len(table)
    names = [f.field for f in table]
    assert {"magic", "build timestamp", "flash address", "Ed25519ph signature"} <= set(names)
    _tiles([f for f in table if f.part == "encryption"], 0, len(ota))  # the folded row keeps every byte
    folded = next(f for f in table if f.field.startswith("chunks "))
    assert folded.field == "chunks 2–5" and folded.value.startswith("4 chunks")
    plain = layout(pack(build_ota(ROMS, KEY, signed=True, timestamp=5), 1), KEY)
    assert condensed(plain) == plain  # nothing to fold

"""Test helpers for ESP images: a minimal Xtensa ELF written with struct."""

from __future__ import annotations

import struct

EM_XTENSA = 94
SHT_PROGBITS = 1
SHT_STRTAB = 3
SHF_ALLOC_EXEC = 0x6


def minimal_elf(sections: list[tuple[str, int, bytes]], entry: int = 0x40100004) -> bytes:
    """An ELF32 little-endian Xtensa file with the given (name, address, data) sections and one
    PT_LOAD program header per section; enough for esptool's ``elf2image``."""
    names = b"\0" + b"".join(name.encode() + b"\0" for name, _, _ in sections) + b".shstrtab\0"
    ehsize, phentsize, shentsize = 0x34, 0x20, 0x28
    phoff = ehsize
    data_off = phoff + phentsize * len(sections)
    blobs = b""
    offsets = []
    for _, _, data in sections:
        offsets.append(data_off + len(blobs))
        blobs += data + b"\0" * (-len(data) % 4)
    strtab_off = data_off + len(blobs)
    shoff = strtab_off + len(names) + (-len(names) % 4)
    shnum = len(sections) + 2
    header = struct.pack(
        "<16sHHLLLLLHHHHHH",
        b"\x7fELF\x01\x01\x01" + b"\0" * 9,
        2,  # ET_EXEC
        EM_XTENSA,
        1,
        entry,
        phoff,
        shoff,
        0x300,
        ehsize,
        phentsize,
        len(sections),
        shentsize,
        shnum,
        shnum - 1,
    )
    phdrs = b"".join(
        struct.pack("<LLLLLLLL", 1, off, addr, addr, len(data), len(data), 5, 4)
        for (_, addr, data), off in zip(sections, offsets, strict=True)
    )
    shdrs = b"\0" * shentsize
    name_off = 1
    for (name, addr, data), off in zip(sections, offsets, strict=True):
        shdrs += struct.pack("<LLLLLLLLLL", name_off, SHT_PROGBITS, SHF_ALLOC_EXEC, addr, off, len(data), 0, 0, 4, 0)
        name_off += len(name) + 1
    shdrs += struct.pack("<LLLLLLLLLL", name_off, SHT_STRTAB, 0, 0, strtab_off, len(names), 0, 0, 1, 0)
    body = header + phdrs + blobs + names + b"\0" * (-len(names) % 4)
    assert len(body) == shoff
    return body + shdrs

"""Output paths that never destroy an input or a key.

:func:`guard_output` is called by every command that writes a file made from
other files (``mkfile``, ``pack``, ``keys rollover``) before anything is written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from otalib.errors import KeyFileError, UsageError
from otalib.fileio import write_atomic
from otalib.keys import back_up, looks_like_key_file


def same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """True when both paths exist and are one file (same device and inode: links and symlinks too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def guard_output(
    output: str | os.PathLike[str], inputs: Iterable[tuple[str, str | os.PathLike[str]]], *, force: bool = False
) -> bool:
    """Check ``output`` before a command reads its inputs; True when it replaces a key file (``force``).

    ``inputs`` are ``(what, path)`` pairs. An output that is one of them (the
    same file, whatever its name) is refused, ``force`` or not. An existing key
    file is replaced only with ``force`` (:func:`write_output` backs it up first).
    """
    if str(output).endswith(("/", os.sep)) or Path(output).is_dir():
        raise UsageError(f"output {output} is a folder: give a file name")
    target = Path(output)
    for what, path in inputs:
        if same_file(target, path):
            raise UsageError(f"output {target} is also the {what} ({path}): refusing to overwrite an input")
    if looks_like_key_file(target):
        if not force:
            raise KeyFileError(f"{target} holds an OTA key: refusing to overwrite it (use --force; a backup is kept)")
        return True
    return False


def write_output(output: str | os.PathLike[str], data: bytes, replaces_key: bool) -> Path | None:
    """Write ``data`` atomically; when it replaces a key file, back that up (0600) first and return the backup."""
    target = Path(output)
    backup = back_up(target) if replaces_key and target.exists() else None
    write_atomic(target, data)
    return backup

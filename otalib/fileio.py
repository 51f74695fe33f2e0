"""Files written safely: temp file in the same folder, then rename.

A failed write never leaves a half-written output; secrets are created 0600.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from otalib.errors import InputError, UsageError

SECRET_MODE = 0o600


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int = 0o644, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; on success rename it over ``path``.

    The file is created with ``mode`` from the start (a secret is never
    readable by others, not even for a moment). On any exception the temp file
    is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise UsageError(f"{target} exists (use --force to overwrite)")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_writer(path, mode, overwrite=overwrite) as handle:
        handle.write(data)
    return Path(path)


def read_input(path: str | os.PathLike[str], what: str = "file") -> bytes:
    """Read a whole input file, turning OS errors into one clear :class:`InputError`."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory: {path}") from None
    except PermissionError:
        raise InputError(f"{what} is not readable: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None

"""Files read with a bound and written safely: temp file in the same folder, then rename.

A failed write never leaves a half-written output and names the path it could not
write; secrets are created 0600; a file created with ``overwrite=False`` is created
exclusively (of several writers racing for one name, exactly one wins).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from otalib.errors import InputError, OutputError, UsageError

SECRET_MODE = 0o600
MIB = 1024 * 1024
#: Largest ROM image: the biggest flash an ESP8266/ESP32 module carries.
MAX_ROM_BYTES = 16 * MIB
#: Largest package / OTA file: a few full-size ROMs and their framing.
MAX_PACKAGE_BYTES = 64 * MIB
#: Largest key file (a hex key is 128 characters, a binary key 32 bytes).
MAX_KEY_FILE_BYTES = 4096
#: Largest input of any kind: one MQTT message.
MAX_INPUT_BYTES = 256 * MIB


def _size_text(limit: int) -> str:
    return f"{limit // MIB} MiB" if limit >= MIB and limit % MIB == 0 else f"{limit} bytes"


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], mode: int = 0o644, *, overwrite: bool = True) -> Iterator[BinaryIO]:
    """Open a temp file beside ``path``; on success rename it over ``path``.

    The file is created with ``mode`` from the start (a secret is never
    readable by others, not even for a moment). On any exception the temp file
    is removed and ``path`` is left as it was; an OS error becomes an
    :class:`OutputError` naming ``path``. With ``overwrite=False`` the file is
    linked into place exclusively: an existing ``path`` (even one created a
    moment ago by another process) raises :class:`UsageError`.
    """
    target = Path(path)
    if not overwrite and target.exists():
        raise UsageError(f"{target} exists (use --force to overwrite)")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise OutputError(f"{exc.strerror or exc}: {target}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_exclusive(tmp, target)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise OutputError(f"{exc.strerror or exc}: {target}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _link_exclusive(tmp: str, target: Path) -> None:
    """Put the complete ``tmp`` at ``target`` only if nothing is there (hard link, then drop ``tmp``)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise UsageError(f"{target} exists (use --force to overwrite)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # no hard links here: claim the name with O_EXCL, then move the complete file over it
        try:
            os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, SECRET_MODE))
        except FileExistsError:
            raise UsageError(f"{target} exists (use --force to overwrite)") from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


def write_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_writer(path, mode, overwrite=overwrite) as handle:
        handle.write(data)
    return Path(path)


def read_input(path: str | os.PathLike[str], what: str = "file", limit: int = MAX_INPUT_BYTES) -> bytes:
    """Read a whole input file of at most ``limit`` bytes, turning OS errors into one clear :class:`InputError`.

    The bound is enforced on the bytes read, not on the size the file system reports
    (``/dev/zero`` and pipes report 0).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory: {path}") from None
    except PermissionError:
        raise InputError(f"{what} is not readable: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{what} {path} is larger than {_size_text(limit)}: refusing it")
    return data

"""OTA key files: 64 random bytes as ASCII hex (Ed25519 seed + secretstream key).

Layout as the framework's reference tool (``otatool.py genkey``/``mkbinkeys``):
bytes 0..31 are the Ed25519 seed, bytes 32..63 the XChaCha20-Poly1305
secretstream key. ``verify.key.bin`` (public key) and ``decrypt.key.bin``
(secret) are what a firmware embeds.
"""

from __future__ import annotations

import binascii
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from nacl import bindings as sodium

from otalib.errors import KeyFileError, UsageError
from otalib.fileio import MAX_KEY_FILE_BYTES, SECRET_MODE, read_input, write_atomic

SEED_BYTES = sodium.crypto_sign_SEEDBYTES
STREAM_KEY_BYTES = sodium.crypto_secretstream_xchacha20poly1305_KEYBYTES
KEY_FILE_BYTES = SEED_BYTES + STREAM_KEY_BYTES
#: verify.key.bin (Ed25519 public key) and decrypt.key.bin (secretstream key) are 32 raw bytes each.
DEVICE_KEY_BYTES = 32
VERIFY_KEY_FILE = "verify.key.bin"
DECRYPT_KEY_FILE = "decrypt.key.bin"


@dataclass(frozen=True)
class LabKey:
    """The secret material of one OTA key file. Its repr never shows the secrets."""

    seed: bytes = field(repr=False)
    stream_key: bytes = field(repr=False)
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.seed) != SEED_BYTES or len(self.stream_key) != STREAM_KEY_BYTES:
            raise KeyFileError("bad key material: need a 32-byte seed and a 32-byte stream key")
        pk, sk = sodium.crypto_sign_seed_keypair(self.seed)
        object.__setattr__(self, "_pk", pk)
        object.__setattr__(self, "_sk", sk)

    @classmethod
    def from_bytes(cls, material: bytes, source: str = "") -> LabKey:
        """Key from the 64 raw bytes of a key file."""
        if len(material) != KEY_FILE_BYTES:
            raise KeyFileError(f"bad key {source or ''}: {len(material)} bytes, expected {KEY_FILE_BYTES}".strip())
        return cls(material[:SEED_BYTES], material[SEED_BYTES:], source)

    @classmethod
    def generate(cls) -> LabKey:
        """A fresh random key (libsodium's ``randombytes``)."""
        return cls.from_bytes(sodium.randombytes(KEY_FILE_BYTES), "generated")

    @property
    def verify_key(self) -> bytes:
        """The 32-byte Ed25519 public key (``verify.key.bin``)."""
        return self._pk  # type: ignore[attr-defined]

    @property
    def signing_key(self) -> bytes:
        """The 64-byte libsodium secret key (seed + public key)."""
        return self._sk  # type: ignore[attr-defined]

    @property
    def decrypt_key(self) -> bytes:
        """The 32-byte secretstream key (``decrypt.key.bin``; secret)."""
        return self.stream_key

    def to_hex(self) -> bytes:
        """The key file's content."""
        return binascii.hexlify(self.seed + self.stream_key)


def load_key(path: str | os.PathLike[str]) -> LabKey:
    """Read a hex key file; raise :class:`KeyFileError` with a clear reason."""
    raw = read_input(path, "key file", MAX_KEY_FILE_BYTES)
    text = raw.strip()
    try:
        material = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        if len(raw) == DEVICE_KEY_BYTES:
            raise KeyFileError(
                f"{path} is a 32-byte binary device key (verify.key.bin or decrypt.key.bin), not the hex key file"
                " that `otalab keygen` makes: a verify key goes with --verify-key (inspect, board)"
            ) from None
        raise KeyFileError(f"bad key file {path}: not hex (expected {KEY_FILE_BYTES * 2} hex characters)") from None
    if len(material) != KEY_FILE_BYTES:
        raise KeyFileError(f"bad key file {path}: {len(text)} hex characters, expected {KEY_FILE_BYTES * 2}")
    return LabKey.from_bytes(material, str(path))


def backup_name(path: Path, now: datetime | None = None) -> Path:
    """Backup name the reference tool uses: ``KEY.YYYYmmdd_HHMMSS.bak``."""
    stamp = (now or datetime.now()).strftime("%Y%m%d_%H%M%S")
    candidate = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.{stamp}.{n}.bak")
        n += 1
    return candidate


def back_up(path: Path) -> Path:
    """Copy ``path`` to its backup name (content and times), mode 0600; return the backup."""
    if path.is_dir():
        raise KeyFileError(f"{path} is a directory")
    backup = backup_name(path)
    shutil.copy2(path, backup)
    os.chmod(backup, SECRET_MODE)
    return backup


def generate_key_file(path: str | os.PathLike[str], force: bool = False) -> tuple[LabKey, Path | None]:
    """Create a new key file (0600). Refuses to overwrite unless ``force``.

    Without ``force`` the file is created exclusively: of several processes
    racing for one name exactly one succeeds. With ``force`` an existing key is
    first copied to a backup (content and permissions, as the reference tool
    does), so a key is never lost. Returns the key and the backup path (or None).
    """
    target = Path(path)
    backup: Path | None = None
    if target.exists() or target.is_symlink():
        if not force:
            raise KeyFileError(f"{target} exists: refusing to overwrite a key (use --force; a backup is kept)")
        backup = back_up(target)
    key = LabKey.generate()
    try:
        write_atomic(target, key.to_hex(), SECRET_MODE, overwrite=force)
    except UsageError:
        raise KeyFileError(f"{target} exists: refusing to overwrite a key (use --force; a backup is kept)") from None
    return LabKey(key.seed, key.stream_key, str(target)), backup


def export_keys(key: LabKey, folder: str | os.PathLike[str], force: bool = False) -> tuple[Path, Path]:
    """Write ``verify.key.bin`` (0644) and ``decrypt.key.bin`` (0600) into ``folder``.

    Key files there with other content are refused unless ``force``, and then
    backed up (0600) first (see :func:`export_keys_with_backups`).
    """
    verify, decrypt, _ = export_keys_with_backups(key, folder, force)
    return verify, decrypt


def export_keys_with_backups(
    key: LabKey, folder: str | os.PathLike[str], force: bool = False
) -> tuple[Path, Path, list[Path]]:
    """:func:`export_keys`, also returning the backups it made of replaced key files."""
    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise KeyFileError(f"{out} is not a folder")
    wanted = {out / VERIFY_KEY_FILE: (key.verify_key, 0o644), out / DECRYPT_KEY_FILE: (key.decrypt_key, SECRET_MODE)}
    replaced = [path for path, (data, _) in wanted.items() if _differs(path, data)]
    if replaced and not force:
        names = " and ".join(str(p) for p in replaced)
        raise KeyFileError(f"{names}: other key(s) there, refusing to replace them (use --force; a backup is kept)")
    backups = [back_up(path) for path in replaced]
    out.mkdir(parents=True, exist_ok=True)
    for path, (data, mode) in wanted.items():
        write_atomic(path, data, mode)
    return out / VERIFY_KEY_FILE, out / DECRYPT_KEY_FILE, backups


def _differs(path: Path, data: bytes) -> bool:
    """True when ``path`` exists (or dangles) and does not hold exactly ``data``."""
    if not (path.exists() or path.is_symlink()):
        return False
    try:
        return not path.is_file() or path.stat().st_size != len(data) or path.read_bytes() != data
    except OSError:
        return True


def looks_like_key_file(path: Path) -> bool:
    """True when ``path`` holds an OTA key: a hex key file, or a 32-byte ``*.key.bin``."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_KEY_FILE_BYTES:
            return False
        raw = path.read_bytes()
    except OSError:
        return False
    if path.name.endswith(".key.bin") and len(raw) == 32:
        return True
    text = raw.strip()
    if len(text) != KEY_FILE_BYTES * 2:
        return False
    try:
        binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        return False
    return True


def load_binary_key(path: str | os.PathLike[str], what: str) -> bytes:
    """Read a 32-byte ``verify.key.bin`` / ``decrypt.key.bin``."""
    data = read_input(path, what, MAX_KEY_FILE_BYTES)
    if len(data) != DEVICE_KEY_BYTES:
        if looks_like_key_file(Path(path)):
            raise KeyFileError(
                f"{path} is a hex key file (`otalab keygen`), not the 32-byte {what}: give it with -k,"
                " or export the device keys with `otalab keys export`"
            )
        raise KeyFileError(f"bad {what} {path}: {len(data)} bytes, expected {DEVICE_KEY_BYTES}")
    return data


@dataclass(frozen=True)
class DeviceKeys:
    """The keys a device embeds: ``verify.key.bin`` and ``decrypt.key.bin`` (either may be absent)."""

    verify: bytes | None = field(default=None, repr=False)
    decrypt: bytes | None = field(default=None, repr=False)

    @classmethod
    def of(cls, key: LabKey | DeviceKeys | None) -> DeviceKeys:
        """The device keys derived from a key file (or given as they are)."""
        if key is None:
            return cls()
        if isinstance(key, DeviceKeys):
            return key
        return cls(key.verify_key, key.decrypt_key)

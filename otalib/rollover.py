"""Key / settings rollover: a file the devices accept today that installs firmware for the new key.

Devices only accept files made with the key they embed (``verify.key.bin`` /
``decrypt.key.bin``), so moving to a new key takes one update made with the OLD
key whose firmware embeds the NEW key. :func:`build_rollover` builds it and
checks, by looking for the key bytes in the ROMs, that the firmware really
carries the new verification key — otherwise the fleet would be locked out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from otalib.errors import UsageError
from otalib.formats.ota import Rom, build_ota, resolve_modes
from otalib.keys import LabKey


@dataclass(frozen=True)
class RolloverResult:
    """The rollover file and what was found in its firmware."""

    data: bytes = field(repr=False)
    new_verify_key_found: bool
    old_verify_key_found: bool
    warnings: tuple[str, ...]

    def summary(self) -> dict[str, object]:
        return {
            "bytes": len(self.data),
            "new_verify_key_found": self.new_verify_key_found,
            "old_verify_key_found": self.old_verify_key_found,
            "warnings": list(self.warnings),
        }


def build_rollover(
    old: LabKey,
    new: LabKey,
    roms: Sequence[Rom],
    *,
    signed: bool = False,
    encrypted: bool = False,
    timestamp: int | None = None,
) -> RolloverResult:
    """Build with ``old`` the file that carries firmware embedding ``new``'s keys."""
    if old.verify_key == new.verify_key:
        raise UsageError("old and new key are the same key")
    signed, encrypted = resolve_modes(True, signed, encrypted)
    data = build_ota(roms, old, signed=signed, encrypted=encrypted, timestamp=timestamp)
    new_found = any(new.verify_key in rom.data for rom in roms)
    old_found = any(old.verify_key in rom.data for rom in roms)
    warnings = []
    if not new_found:
        warnings.append(
            "the firmware does not contain the new verify.key.bin: after this update the devices would not accept"
            " files made with the new key (build the firmware with the new key first)"
        )
    if old_found:
        warnings.append("the firmware still contains the old verify.key.bin")
    return RolloverResult(data, new_found, old_found, tuple(warnings))

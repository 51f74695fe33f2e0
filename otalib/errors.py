"""One error hierarchy for otalib.

Every error raised on purpose derives from :class:`OtaLabError`; the CLI turns
each into one line on stderr and a non-zero exit. Anything else is a bug.
"""

from __future__ import annotations

from enum import Enum


class OtaLabError(Exception):
    """Base of every error otalib raises on purpose."""

    exit_code = 1


class UsageError(OtaLabError):
    """The caller asked for something impossible (bad argument, bad option)."""

    exit_code = 2


class InputError(OtaLabError):
    """A file or value given to otalib is missing, unreadable or malformed."""


class KeyFileError(InputError):
    """A key file is missing, malformed or would be overwritten."""


class OutputError(OtaLabError):
    """An output file could not be written (the message names it)."""


class ImageError(InputError):
    """An ESP image could not be read, built or recognised."""


class ConfigError(UsageError):
    """The lab configuration (otalab.toml / environment) is invalid."""


class BrokerError(OtaLabError):
    """A broker could not be started, reached or used."""


class PublishError(OtaLabError):
    """A deployment could not be published (completely)."""


class BoardError(OtaLabError):
    """A board (serial or virtual) failed or did not behave as expected."""


class LabError(OtaLabError):
    """A trial or campaign could not be run or its data read."""


class BuildError(OtaLabError):
    """A firmware build could not be run (no toolchain, no project) or failed."""


class DeviceErrorCode(str, Enum):
    """Error names of the device's OtaUpgrade stream (Sming ``OtaUpgrade::Error``)."""

    InvalidFormat = "InvalidFormat"
    UnsupportedData = "UnsupportedData"
    DecryptionFailed = "DecryptionFailed"
    NoRomFound = "NoRomFound"
    RomTooLarge = "RomTooLarge"
    DowngradeNotAllowed = "DowngradeNotAllowed"
    VerificationFailed = "VerificationFailed"
    FlashWriteFailed = "FlashWriteFailed"
    RomActivationFailed = "RomActivationFailed"
    OutOfMemory = "OutOfMemory"
    Internal = "Internal"

    def __str__(self) -> str:
        return self.value


#: The device's own message for each error (``BasicStream::errorToString``).
DEVICE_ERROR_TEXT: dict[DeviceErrorCode, str] = {
    DeviceErrorCode.InvalidFormat: "Invalid/Unrecognized upgrade image format",
    DeviceErrorCode.UnsupportedData: "Upgrade image contains unsupported extended data.",
    DeviceErrorCode.DecryptionFailed: "Upgrade image decryption failed.",
    DeviceErrorCode.NoRomFound: "No suitable ROM image found",
    DeviceErrorCode.RomTooLarge: "ROM image too large",
    DeviceErrorCode.DowngradeNotAllowed: "Downgrade not allowed",
    DeviceErrorCode.VerificationFailed: "Signature/Checksum verification failed",
    DeviceErrorCode.FlashWriteFailed: "Error while writing Flash memory",
    DeviceErrorCode.RomActivationFailed: "Could not activate updated ROM",
    DeviceErrorCode.OutOfMemory: "Out of memory. Allocation failed.",
    DeviceErrorCode.Internal: "Internal error",
}


class DeviceError(InputError):
    """Data a device would reject, named as the device names it.

    ``code`` is the device's error name; ``detail`` says what otalib saw.
    """

    def __init__(self, code: DeviceErrorCode, detail: str = "") -> None:
        self.code = DeviceErrorCode(code)
        self.detail = detail
        text = f"{self.code.value}: {DEVICE_ERROR_TEXT[self.code]}"
        super().__init__(f"{text} ({detail})" if detail else text)

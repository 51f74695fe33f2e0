"""Device logic without network: boot, standard/advanced updates, profiles, console lines."""

from __future__ import annotations

import pytest
from board_helpers import (
    KEY,
    OTHER_KEY,
    T_RUNNING,
    deliver,
    firmware,
    make_device,
    make_flash,
    signed_package,
    standard_package,
)

from otalib.board.sim.flash import SECTOR


@pytest.fixture
def flash(tmp_path):
    with make_flash(tmp_path / "flash.bin", "4.3.5") as f:
        yield f


def test_boot_reports_version_and_slot(flash):
    device, out = make_device(flash)
    result = device.boot()
    assert result.booted and result.slot == 0 and result.version == "4.3.5"
    assert device.patch == 5 and device.build_timestamp == T_RUNNING
    running = next(e for e in out.events() if e.event == "running")
    assert running.fields["slot"] == 0 and running.fields["version"] == "4.3"
    assert "ROM count = 2, current = 0" in out.output


@pytest.mark.parametrize("chunk", [1, 7, 1390, 1 << 20])
def test_signed_update_applies_any_chunking(flash, chunk):
    device, out = make_device(flash)
    device.boot()
    out.clear()
    result = deliver(device, signed_package("4.3.6", 6), chunk)
    assert result.outcome == "applied" and result.restart and result.boot_slot == 1
    names = out.event_names()
    assert names == [
        "build_timestamp_current",
        "build_timestamp_file",
        "ota_started",
        "update_slot",
        "signature",
        "rom_update_complete",
        "rom_activated",
        "switch_ok",
    ]
    device.restart()
    assert device.slot == 1 and str(device.version) == "4.3.6"
    assert flash.boot_config().current_rom == 1


def test_tampered_rejected_and_slot_erased(flash):
    device, out = make_device(flash)
    device.boot()
    package = bytearray(signed_package("4.3.6", 6))
    package[200] ^= 0x01
    out.clear()
    result = deliver(device, bytes(package))
    assert result.outcome == "rejected" and result.error == "VerificationFailed" and not result.restart
    assert out.event_names()[-3:] == ["device_error", "got_error", "switch_failed"]
    assert "signature" in out.event_names()
    assert flash.slot_head(1, SECTOR) == b"\xff" * SECTOR
    device.restart()
    assert device.slot == 0 and str(device.version) == "4.3.5"


def test_other_key_rejected(flash):
    device, _ = make_device(flash)
    device.boot()
    result = deliver(device, signed_package("4.3.6", 6, key=OTHER_KEY))
    assert result.error == "VerificationFailed"


def test_downgrade_refused(flash):
    device, out = make_device(flash)
    device.boot()
    out.clear()
    result = deliver(device, signed_package("4.3.6", 6, timestamp=T_RUNNING - 1))
    assert result.outcome == "rejected" and result.error == "DowngradeNotAllowed"
    # found mid-stream: the one error line and nothing else (no Got error, no Switching failed!)
    assert out.event_names() == ["build_timestamp_current", "build_timestamp_file", "device_error"]
    assert flash.boot_config().current_rom == 0 and device.state == "running"


@pytest.mark.parametrize(
    ("verify", "decrypt", "encrypted", "error"),
    [
        (True, False, True, "InvalidFormat"),  # an encrypted file on a signing-only build
        (True, True, False, "DecryptionFailed"),  # a plain file on an encrypting build
        (True, False, False, "RomTooLarge"),  # a ROM bigger than the slot
    ],
)
def test_mid_stream_errors_print_one_line_and_abandon_the_message(flash, verify, decrypt, encrypted, error):
    device, out = make_device(flash, key=KEY if verify else None, decrypt=KEY.decrypt_key if decrypt else None)
    device.boot()
    out.clear()
    image = (
        firmware("4.3.6", patch=6, size=flash.layout.slot_range(1)[1] - 0x108000 + 4096)
        if error == "RomTooLarge"
        else None
    )
    result = deliver(device, signed_package("4.3.6", 6, encrypted=encrypted, image=image))
    assert (result.outcome, result.error, result.restart) == ("rejected", error, False)
    names = out.event_names()
    assert names[-1] == "device_error" and names.count("device_error") == 1
    assert "got_error" not in names and "switch_failed" not in names
    assert next(e for e in out.events() if e.event == "device_error").fields["error"] == error
    assert device.last_update == result and device.state == "running"


def test_encrypted_update_and_wrong_decrypt_key(flash):
    device, _ = make_device(flash, decrypt=KEY.decrypt_key)
    device.boot()
    assert deliver(device, signed_package("4.3.6", 6, encrypted=True), 100).outcome == "applied"
    device.restart()
    other, _ = make_device(flash, decrypt=OTHER_KEY.decrypt_key)
    other.boot()
    result = deliver(other, signed_package("4.3.7", 7, encrypted=True))
    assert result.error == "DecryptionFailed"


def test_older_patch_skipped_silently(flash):
    device, out = make_device(flash)
    device.boot()
    out.clear()
    result = deliver(device, signed_package("4.3.4", 4))
    assert result.outcome == "skipped" and out.output == ""


@pytest.mark.parametrize(
    ("profile", "current", "outcome"),
    [("sming-6.1", 46, "applied"), ("sming-6.1", 47, "skipped"), ("reference", 47, "applied")],
)
def test_varint_quirk(tmp_path, profile, current, outcome):
    with make_flash(tmp_path / "f.bin", f"4.3.{current}") as flash:
        device, _ = make_device(flash, profile=profile)
        device.boot()
        result = deliver(device, signed_package("4.3.300", 300))
        assert result.outcome == outcome
        if outcome == "applied":
            assert result.patch == (46 if profile == "sming-6.1" else 300)


def test_equal_patch_reinstalls_on_sming_61_only(flash):
    device, _ = make_device(flash, profile="sming-6.1")
    device.boot()
    package = signed_package("4.3.5", 5)
    assert deliver(device, package).outcome == "applied"
    device.restart()
    assert device.slot == 1
    assert deliver(device, package).outcome == "applied"  # the retained loop
    device.restart()
    assert device.slot == 0
    ref, _ = make_device(flash, profile="reference")
    ref.boot()
    assert deliver(ref, package).outcome == "skipped"


def test_standard_mode_writes_next_slot(flash):
    device, out = make_device(flash, mode="standard", key=None, write_current_slot=False)
    device.boot()
    out.clear()
    message = standard_package("4.3.6", 6)
    result = deliver(device, message, 1390)
    assert result.outcome == "applied" and result.target_slot == 1
    writes = [e for e in out.events() if e.event == "ota_write"]
    assert writes[-1].fields["total"] == len(message) - 1
    assert out.event_names()[-2:] == ["swapping", "switch_ok"]
    device.restart()
    assert device.slot == 1 and str(device.version) == "4.3.6"


@pytest.mark.parametrize("explicit", [True, None])
def test_standard_write_current_slot_quirk(flash, explicit):
    """The sample writes into the running slot and switches to the blank one: rBoot falls back.

    This is the sming-6.1 profile's default (``None``); the reference profile writes the other slot.
    """
    assert make_device(flash, mode="standard", key=None, profile="reference")[0].write_current_slot is False
    device, out = make_device(flash, mode="standard", key=None, write_current_slot=explicit)
    assert device.write_current_slot and device.status["write_current_slot"]
    device.boot()
    result = deliver(device, standard_package("4.3.6", 6))
    assert result.target_slot == 0 and result.boot_slot == 1
    out.clear()
    boot = device.restart()
    assert "Rom 1 is bad." in out.output
    assert boot.tried == (1, 0) and device.slot == 0 and str(device.version) == "4.3.6"


def test_standard_corrupted_image_crash_loops(flash):
    device, out = make_device(flash, mode="standard", key=None)
    device.boot()
    image = bytearray(firmware("4.3.6", patch=6))
    image[3000] ^= 0xFF  # payload byte: header fine, checksum wrong
    from otalib.formats.package import pack

    assert deliver(device, pack(bytes(image), 6)).outcome == "applied"
    out.clear()
    boot = device.restart()
    assert not boot.booted and boot.reason == "crash" and device.state == "bricked"
    assert "Fatal exception" in out.output


def test_erased_header_slot_does_not_boot(flash):
    flash.write_slot(1, firmware("4.3.9"))
    flash.set_current_rom(1)
    flash.erase_slot_header(1)
    device, out = make_device(flash)
    boot = device.boot()
    assert "Rom 1 is bad." in out.output and boot.slot == 0
    assert flash.boot_config().current_rom == 0
    flash.erase_slot_header(0)
    out.clear()
    boot = device.boot()
    assert not boot.booted and "No good rom available." in out.output and device.state == "bricked"


def test_default_debug_level_prints_nothing_about_update(flash):
    device, out = make_device(flash, mode="standard", key=None, debug_level=2)
    device.boot()
    out.clear()
    assert deliver(device, standard_package("4.3.6", 6)).outcome == "applied"
    assert out.output == ""


def test_abandoned_message_does_not_switch(flash):
    device, _ = make_device(flash)
    device.boot()
    package = signed_package("4.3.6", 6)
    device.on_message_start(len(package))
    device.on_message_data(package[:3000])
    assert device.on_message_abort().outcome == "abandoned"
    assert flash.boot_config().current_rom == 0 and device.state == "running"

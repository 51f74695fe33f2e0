"""make_update: every mode yields a package the inspector (the device's decoder) accepts."""

from __future__ import annotations

import pytest

from otalib.errors import UsageError
from otalib.firmware.demo import make_demo_image
from otalib.inspect import inspect_bytes
from otalib.keys import LabKey
from otalib.update import make_update
from otalib.vocabulary import UpdateMode

KEY = LabKey.generate()
IMAGE = make_demo_image("esp8266", "test", "4.3.9", size=20_000)


@pytest.mark.parametrize("mode", list(UpdateMode))
def test_every_mode_inspects_as_verified(mode):
    update = make_update(IMAGE, mode, patch=9, key=KEY, timestamp=123)
    report = inspect_bytes(update.package, KEY)
    assert report.kind == "sdp" and report.data["patch"] == 9
    assert report.ok
    inner = report.data["payload"]
    if mode == "standard":
        assert inner["kind"] == "esp-image" and inner["app_version"] == "4.3.9"
    else:
        assert inner["kind"] == "ota"
        assert inner["signed"] is update.signed and inner["encrypted"] is update.encrypted
        assert inner["timestamp"] == 123


def test_other_key_is_rejected_and_missing_key_refused():
    update = make_update(IMAGE, "signed", patch=1, key=KEY)
    other = inspect_bytes(update.package, LabKey.generate())
    payload = other.data["payload"]
    assert not other.ok and payload["verified"] is False
    assert payload["error"] == "VerificationFailed"
    assert payload["error_detail"] == "ed25519ph over the file does not match"
    with pytest.raises(UsageError, match=r"^mode 'encrypted' needs a key$"):
        make_update(IMAGE, "encrypted", patch=1)
    with pytest.raises(UsageError, match=r"^unknown update mode 'zip': one of "):
        make_update(IMAGE, "zip", patch=1, key=KEY)


def test_device_patch_of_a_unix_time_patch():
    assert make_update(IMAGE, "standard", patch=300).device_patch == 46


@pytest.mark.parametrize("mode", list(UpdateMode))
def test_every_mode_judged_by_the_device_built_for_it_and_by_a_signing_one(mode):
    from otalib.inspect import DeviceBuild
    from otalib.keys import DeviceKeys
    from otalib.vocabulary import Decision

    update = make_update(IMAGE, mode, patch=9, key=KEY, timestamp=123)
    keys = UpdateMode(mode).device_keys(KEY)  # what the device built for this mode holds
    built_for = DeviceBuild(keys, signing=update.signed, encryption=update.encrypted, advanced=update.advanced)
    assert inspect_bytes(update.package, build=built_for).verdict.outcome is Decision.APPLIED
    signing = DeviceBuild(DeviceKeys(KEY.verify_key), signing=True, encryption=False, advanced=True)
    verdict = inspect_bytes(update.package, build=signing).verdict
    if mode == "signed":
        assert verdict.outcome is Decision.APPLIED
    else:  # unsigned, encrypted, or a raw image: a signing-only advanced device rejects it
        assert (verdict.outcome, verdict.error) == (Decision.REJECTED, "InvalidFormat")

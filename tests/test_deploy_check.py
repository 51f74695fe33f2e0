"""``otalab deploy`` checks a package as a device would parse it before publishing; --force says so."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_helpers import retained

from otalib.broker import BrokerUser, start_broker
from otalib.errors import InputError
from otalib.firmware.demo import make_demo_image
from otalib.formats.kinds import Kind
from otalib.formats.ota import Rom, build_ota
from otalib.formats.package import check_package, pack
from otalib.keys import load_key

VECTORS = Path(__file__).parent / "vectors"
KEY = load_key(VECTORS / "demo.key")
IMAGE = make_demo_image("esp8266", "test", "4.3.2", size=20_000)
USER = BrokerUser("deployer", "pw")
TOPIC = "a/test/u/4.3"


def test_good_packages_pass_with_their_kind():
    for data, kind in (
        (pack(IMAGE, 5), Kind.ESP_IMAGE),
        (pack(b"\xea\x04\x00\x00" + bytes(60), 5), Kind.ESP_IMAGE),  # ESP8266 v2 (Sming rom0.bin)
        (pack(build_ota([Rom(0x8000, IMAGE)]), 5), Kind.OTA),
        (pack(build_ota([Rom(0x8000, IMAGE)], KEY, signed=True), 300), Kind.OTA),
        (pack(build_ota([Rom(0x8000, IMAGE)], KEY, encrypted=True), 5), Kind.OTA_ENCRYPTED),
        ((VECTORS / "pack_255_byte.sdp").read_bytes(), Kind.OTA),
    ):
        check = check_package(data, varint=data != (VECTORS / "pack_255_byte.sdp").read_bytes())
        assert check.kind is kind


def _bad_packages() -> dict[str, bytes]:
    noise = random.Random(8).randbytes
    md5 = bytearray(pack(build_ota([Rom(0x8000, IMAGE)]), 5))
    md5[300] ^= 1
    encrypted = pack(build_ota([Rom(0x8000, IMAGE)], KEY, encrypted=True), 5)
    return {
        "random": bytes([5]) + noise(1024 * 1024),
        "random-with-ota-like-length": bytes([5]) + noise(24) + (100).to_bytes(2, "little") + noise(5000),
        "md5-mismatch": bytes(md5),
        "truncated-ota": pack(build_ota([Rom(0x8000, IMAGE)], KEY, signed=True), 5)[:-10],
        "truncated-encrypted": encrypted[:-5],
        "encrypted-extra": encrypted + b"\x00",
        "esp-magic-zero-segments": pack(b"\xe9\x00" + bytes(100), 5),
    }


@pytest.mark.parametrize("name", list(_bad_packages()))
def test_what_no_device_parses_is_refused_with_the_reason(name):
    data = _bad_packages()[name]
    with pytest.raises(InputError, match="not a deployment package"):
        check_package(data, varint=True)


def _deploy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OTALAB_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "otalib", "deploy", *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


def test_cli_refuses_random_bytes_and_force_publishes_saying_so(tmp_path):
    junk = tmp_path / "junk.sdp"
    junk.write_bytes(b"\x05" + random.Random(1).randbytes(1024 * 1024))
    with start_broker("mosquitto", users=[USER]) as broker:
        url = broker.url_for(TOPIC, USER)
        result = _deploy(str(junk), url, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "not a deployment package" in lines[0], result.stderr
        assert retained(url, TOPIC) is None  # nothing was published
        forced = _deploy(str(junk), url, "--force", cwd=tmp_path)
        assert forced.returncode == 0, forced.stderr
        assert "publishing anyway (--force)" in forced.stderr and "not a deployment package" in forced.stderr
        assert retained(url, TOPIC) == junk.read_bytes()
        good = tmp_path / "good.sdp"
        good.write_bytes(pack(build_ota([Rom(0x8000, IMAGE)], KEY, signed=True), 5))
        published = _deploy(str(good), url, cwd=tmp_path)
        assert published.returncode == 0 and published.stderr == ""
        assert retained(url, TOPIC) == good.read_bytes()

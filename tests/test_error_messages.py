"""Error messages that name the way out (issue 12.7), and ``image`` outputs that never destroy a key or an input.

Every case runs the real CLI in a subprocess: one line on stderr, the exit code, and what
happened to the files and the broker.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
from deploy_helpers import retained
from process_helpers import run_otalab as otalab

from otalib.firmware.demo import make_demo_image
from otalib.formats.ota import Rom, build_ota
from otalib.formats.package import pack
from otalib.keys import LabKey

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "a/test/u/4.3"
KEY = LabKey.from_bytes(bytes(range(64)), "test")


def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.strip()]


def one_error(result: subprocess.CompletedProcess[str], *needles: str, code: int = 1) -> str:
    """The one stderr line of a command that failed with ``code`` (2: bad usage), holding every needle."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def one_warning(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The one stderr warning of a command that succeeded."""
    assert result.returncode == 0, result.stderr
    lines = stderr_lines(result)
    assert len(lines) == 1 and lines[0].startswith("otalab: warning: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A lab folder: a hex key, its device keys, an ESP image, its .ota, the package, and random bytes."""
    (tmp_path / "ota.key").write_bytes(KEY.to_hex())
    os.chmod(tmp_path / "ota.key", 0o600)
    (tmp_path / "verify.key.bin").write_bytes(KEY.verify_key)
    image = make_demo_image("esp8266", "test", "4.3.2", size=8192)
    (tmp_path / "app.bin").write_bytes(image)
    ota = build_ota([Rom(0x2000, image)], KEY, signed=True, timestamp=4_000_000_000_000)
    (tmp_path / "up.ota").write_bytes(ota)
    (tmp_path / "up.sdp").write_bytes(pack(ota, 2, True))
    (tmp_path / "noise.bin").write_bytes(bytes((i * 37 + 11) % 251 for i in range(5000)))
    return tmp_path


# -- deploy: a file that was not packed ------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "what"), [("up.ota", "an OTA upgrade file"), ("app.bin", "an ESP image")])
def test_deploy_of_an_unpacked_file_says_to_pack_it(broker, files, name, what) -> None:
    url = broker.url_for(TOPIC)
    line = one_error(otalab("deploy", name, url, cwd=files), f"{name} is {what}", "otalab pack")
    assert f"otalab pack {name} " in line  # the command to run, with the file given
    assert retained(url, TOPIC) is None  # nothing published


# -- keys given to the wrong option ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("mkfile", "-o", "x.ota", "-k", "verify.key.bin", "--rom", "app.bin@0x2000"),
        ("inspect", "up.ota", "-k", "verify.key.bin"),
    ],
)
def test_a_binary_verify_key_given_as_key_file_points_to_verify_key(files, args) -> None:
    one_error(otalab(*args, cwd=files), "verify.key.bin is a 32-byte binary device key", "--verify-key")
    assert not (files / "x.ota").exists()


def test_a_hex_key_file_given_as_verify_key_points_to_k(files) -> None:
    line = one_error(otalab("inspect", "up.ota", "--verify-key", "ota.key", cwd=files), "ota.key is a hex key file")
    assert "-k" in line
    assert KEY.seed.hex() not in line  # never printed


# -- pack / mkfile: inputs that are not ESP images --------------------------------------------------------------


def test_mkfile_warns_when_a_rom_is_not_an_esp_image(files) -> None:
    noisy = otalab("mkfile", "-o", "n.ota", "--rom", "noise.bin@0x2000", cwd=files)
    one_warning(noisy, "noise.bin is not an ESP image")
    assert (files / "n.ota").is_file()
    quiet = otalab("mkfile", "-o", "a.ota", "--rom", "app.bin@0x2000", cwd=files)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_pack_warns_when_the_input_is_neither_image_nor_ota(files) -> None:
    one_warning(otalab("pack", "noise.bin", "n.sdp", "3", cwd=files), "noise.bin is neither an ESP image nor an OTA")
    one_warning(otalab("pack", "up.sdp", "twice.sdp", "3", cwd=files), "up.sdp is already a deployment package")
    for good in ("up.ota", "app.bin"):
        quiet = otalab("pack", good, "g.sdp", "3", cwd=files)
        assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


# -- deploy without a URL: where the default came from ----------------------------------------------------------


def test_deploy_without_url_names_the_environment(broker, files) -> None:
    result = otalab("deploy", "up.sdp", cwd=files, env={"MQTT_URL": broker.url})
    assert result.returncode == 0, result.stderr
    (line,) = stderr_lines(result)
    assert f"using {broker.url}/{TOPIC}" in line and "MQTT_URL from environment" in line, line
    assert "APP_ID, APP_VERSION from the built-in defaults" in line
    assert retained(broker.url_for(TOPIC), TOPIC) == (files / "up.sdp").read_bytes()
    otalab("deploy", "--clear", broker.url_for(TOPIC), cwd=files)


def test_deploy_without_url_names_the_configuration_file(broker, files) -> None:
    (files / "otalab.toml").write_text(f'MQTT_URL = "{broker.url}"\nAPP_VERSION = "4.3"\n')
    result = otalab("deploy", "up.sdp", cwd=files)
    assert result.returncode == 0, result.stderr
    (line,) = stderr_lines(result)
    assert "MQTT_URL, APP_VERSION from configuration file otalab.toml" in line, line
    assert "APP_ID from the built-in defaults" in line
    otalab("deploy", "--clear", broker.url_for(TOPIC), cwd=files)


def test_deploy_without_url_names_the_built_in_default(files) -> None:
    # a package no device parses: refused before any connection, after saying which URL it would have used
    result = otalab("deploy", "noise.bin", cwd=files)
    assert result.returncode == 1
    info, error = stderr_lines(result)
    assert "using mqtt://127.0.0.1:1883/a/test/u/4.3" in info
    assert "MQTT_URL, APP_ID, APP_VERSION from the built-in defaults" in info
    assert error.startswith("otalab: error: ")


# -- deploy: size, time and throughput that agree -------------------------------------------------------------


def test_deploy_prints_size_time_and_the_rate_they_make(broker, files) -> None:
    result = otalab("deploy", "up.sdp", broker.url_for(TOPIC), cwd=files)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    match = re.search(r"published (\d+) bytes .*: ([\d.]+) KB in ([\d.]+) (ms|s) \(([\d.]+) KB/s", result.stdout)
    assert match, result.stdout
    size, kb, time_text, unit, rate = match.groups()
    assert int(size) == (files / "up.sdp").stat().st_size
    assert float(kb) == round(int(size) / 1000, 1)
    seconds = float(time_text) / (1000 if unit == "ms" else 1)
    assert float(rate) == pytest.approx(float(kb) / seconds, rel=1e-3, abs=0.06)
    otalab("deploy", "--clear", broker.url_for(TOPIC), cwd=files)


# -- image demo / elf2image: outputs guarded as mkfile's -------------------------------------------------------


@pytest.mark.parametrize("key_name", ["ota.key", "verify.key.bin"])
def test_image_demo_refuses_a_key_file_and_backs_it_up_with_force(files, key_name) -> None:
    key = files / key_name
    before = key.read_bytes()
    demo = ("image", "demo", "--chip", "esp8266", "--app-id", "test", "--version", "4.3.2", "-o", key_name)
    one_error(otalab(*demo, cwd=files), "holds an OTA key", "--force")
    assert key.read_bytes() == before
    forced = otalab(*demo, "--force", cwd=files)
    assert forced.returncode == 0, forced.stderr
    (backup,) = files.glob(f"{key_name}.*.bak")
    assert backup.read_bytes() == before and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert key.read_bytes()[:1] == b"\xe9"  # the demo image replaced it


def test_image_elf2image_refuses_its_input_and_a_key_file(files) -> None:
    elf = files / "fw.elf"
    elf.write_bytes(b"\x7fELF" + bytes(60))
    link = files / "same.elf"
    link.symlink_to(elf)
    one_error(
        otalab("image", "elf2image", "fw.elf", "--chip", "esp8266", "-o", "same.elf", cwd=files),
        "also the ELF file",
        code=2,
    )
    assert elf.read_bytes() == b"\x7fELF" + bytes(60)
    before = (files / "ota.key").read_bytes()
    one_error(
        otalab("image", "elf2image", "fw.elf", "--chip", "esp8266", "-o", "ota.key", cwd=files), "holds an OTA key"
    )
    assert (files / "ota.key").read_bytes() == before
    assert not list(files.glob("ota.key.*.bak"))


@pytest.mark.parametrize("command", [("inspect", "x.ota"), ("deploy", "x.sdp"), ("config", "show")])
def test_usage_error_honours_json(tmp_path: Path, command: tuple[str, ...]) -> None:
    """A usage error (exit 2) under ``--json`` still prints one JSON object on stdout, and one line on stderr."""
    import json

    result = otalab(*command, "--json", "--no-such-option", cwd=tmp_path)
    one_error(result, "--no-such-option", code=2)
    record = json.loads(result.stdout)
    assert record["ok"] is False and record["usage"] is True
    assert record["error"].startswith("No such option '--no-such-option'.")
    plain = otalab(*command, "--no-such-option", cwd=tmp_path)
    one_error(plain, "--no-such-option", code=2)
    assert plain.stdout == ""

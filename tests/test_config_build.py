"""The lab configuration drives the commands: ``otalab config``, ``board``, ``deploy`` (through the CLI).

The environment and ``otalab.toml`` give the device's build (a :class:`DeviceBuild`) and the
broker connection (ENABLE_SSL, MQTT_FINGERPRINT_SHA1); explicit options win.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from otalib.board.sim.build import DeviceBuild
from otalib.board.virtual import VirtualBoardProcess
from otalib.broker import start_broker
from otalib.firmware.demo import make_demo_image
from otalib.keys import generate_key_file
from otalib.update import make_update

#: The settings a test's environment must not inherit.
SETTINGS = (
    "APP_ID",
    "APP_VERSION",
    "APP_VERSION_PATCH",
    "MQTT_URL",
    "ENABLE_SSL",
    "ENABLE_CLIENT_CERTIFICATE",
    "MQTT_FINGERPRINT_SHA1",
    "ENABLE_OTA_ADVANCED",
    "ENABLE_OTA_VARINT_VERSION",
    "ENABLE_OTA_SIGNING",
    "ENABLE_OTA_ENCRYPTION",
    "ENABLE_OTA_DOWNGRADE",
    "OTA_KEY",
    "FIRMWARE_BUILD_TIMESTAMP",
    "OTALAB_CONFIG",
)
WAIT = 30.0


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean lab folder as the working directory, no lab settings in the environment."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def otalab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otalib", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _rows(stdout: str) -> dict[str, tuple[str, str]]:
    """``NAME = value  # origin`` lines -> {NAME: (value, origin)}."""
    rows = {}
    for line in stdout.splitlines():
        name, sep, rest = line.partition(" = ")
        if sep:
            value, _, origin = rest.partition(" # ")
            rows[name.strip()] = (value.strip(), origin.strip())
    return rows


# -- otalab config ------------------------------------------------------------------------------------------


def test_config_says_where_each_value_came_from(lab: Path) -> None:
    key, _ = generate_key_file(lab / "lab.key")
    (lab / "otalab.toml").write_text('APP_ID = "lamp"\nAPP_VERSION = "2.1"\nOTA_KEY = "lab.key"\n')
    env = {"APP_VERSION": "2.2", "MQTT_URL": "mqtt://dev:s3cret@127.0.0.1:1884", "ENABLE_OTA_ADVANCED": "0"}
    result = otalab("config", "--set", "ENABLE_SSL=1", env=env)
    assert result.returncode == 0, result.stderr
    rows = _rows(result.stdout)
    assert rows["APP_ID"] == ("lamp", f"configuration file {Path('otalab.toml')}")
    assert rows["APP_VERSION"] == ("2.2", "environment")  # the environment wins over the file
    assert rows["ENABLE_SSL"] == ("1", "option (--set)")  # an option wins over both
    assert rows["APP_VERSION_PATCH"] == ("(unset)", "built-in default")
    assert rows["ENABLE_OTA_ADVANCED"] == ("0", "environment")
    assert rows["OTA_KEY"] == ("lab.key", f"configuration file {Path('otalab.toml')}")
    assert "broker: mqtts://dev@127.0.0.1:1884" in result.stdout  # ENABLE_SSL makes it mqtts://
    assert "device: lamp 2.2.0, standard" in result.stdout
    # never key material, never the broker password
    assert key.to_hex().decode() not in result.stdout and "s3cret" not in result.stdout
    assert key.verify_key.hex() not in result.stdout
    pasted = otalab("config", "--set", f"OTA_KEY={key.to_hex().decode()}")  # the key itself, not its path
    assert pasted.returncode == 0 and key.to_hex().decode()[:32] not in pasted.stdout
    assert "(not shown: this looks like key material" in pasted.stdout


def test_config_json_and_bad_input(lab: Path) -> None:
    result = otalab("config", "--json", env={"ENABLE_OTA_ADVANCED": "1"})
    data = json.loads(result.stdout)
    assert data["settings"]["ENABLE_OTA_ADVANCED"] == {"value": True, "from": "environment"}
    assert data["settings"]["MQTT_URL"]["from"] == "default"
    assert data["effective"]["flash"] == "esp8266 layout esp8266 (rom0 0x2000)"
    for args, message in [
        (("--set", "NOPE=1"), "unknown setting NOPE"),
        (("--set", "ENABLE_SSL=maybe"), "bad ENABLE_SSL"),
        (("--set", "APP_ID"), "expected NAME=VALUE"),
        (("--file", "missing.toml"), "configuration file not found"),
        (("--set", "APP_VERSION=x"), "bad APP_VERSION='x' (option)"),
        (("--set", "ENABLE_SSL=1", "--set", "MQTT_FINGERPRINT_SHA1=zz"), "MQTT_FINGERPRINT_SHA1 (option): bad pin"),
    ]:
        result = otalab("config", *args)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


# -- the device's build from the configuration --------------------------------------------------------------


def _board_status(*args: str) -> dict:
    """The status line ``otalab board`` prints before it powers on (the board is stopped right after)."""
    with VirtualBoardProcess(["--broker", "mqtt://127.0.0.1:1", *args]) as proc:
        return json.loads(proc.status_line.removeprefix("status: "))


def test_board_builds_the_device_the_configuration_describes(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert _board_status()["mode"] == "advanced"  # nothing configured: the board's default
    monkeypatch.setenv("ENABLE_OTA_ADVANCED", "0")
    monkeypatch.setenv("APP_ID", "lamp")
    status = _board_status()
    assert (status["mode"], status["app_id"], status["signed"]) == ("standard", "lamp", None)
    status = _board_status("--mode", "advanced", "--app-id", "desk")  # explicit options win
    assert (status["mode"], status["app_id"]) == ("advanced", "desk")


def test_board_signs_with_the_configured_key(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generate_key_file(lab / "ota.key")
    monkeypatch.setenv("ENABLE_OTA_ADVANCED", "1")
    monkeypatch.setenv("OTA_KEY", "ota.key")
    assert (_board_status()["signed"], _board_status()["encrypted"]) == (True, False)
    monkeypatch.setenv("ENABLE_OTA_ENCRYPTION", "1")
    assert _board_status()["encrypted"] is True
    monkeypatch.setenv("OTA_KEY", "gone.key")
    result = otalab("board", "--broker", "mqtt://127.0.0.1:1")
    assert result.returncode == 2 and "OTA_KEY=gone.key (environment): no such key file" in result.stderr


def test_esp8266_layout_by_default_host_layout_by_name(lab: Path) -> None:
    assert _board_status()["layout"]["roms"] == ["0x2000", "0x102000"]
    assert _board_status("--layout", "host")["layout"]["roms"] == ["0x8000", "0x108000"]
    assert DeviceBuild().rom_address == 0x2000 and DeviceBuild(layout="host").rom_address == 0x8000


# -- TLS with a pin, from the configuration, against Mosquitto ---------------------------------------------------


def test_ssl_and_pin_from_the_environment_drive_deploy_and_board(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_broker("mosquitto", tls=True, plain_port=0, workdir=lab / "broker") as broker:
        fingerprint = broker.pki.fingerprints()["sha1"]
        monkeypatch.setenv("MQTT_URL", f"mqtt://127.0.0.1:{broker.port}")  # plain scheme: ENABLE_SSL makes it TLS
        monkeypatch.setenv("ENABLE_SSL", "1")
        monkeypatch.setenv("MQTT_FINGERPRINT_SHA1", fingerprint)
        monkeypatch.setenv("ENABLE_OTA_ADVANCED", "0")
        monkeypatch.setenv("APP_ID", "pinned")
        package = lab / "update.sdp"
        image = make_demo_image("esp8266", "pinned", "4.3.6", size=16 * 1024)
        package.write_bytes(make_update(image, "standard", patch=6).package)
        with VirtualBoardProcess(["--flash", str(lab / "flash.bin"), "--restart-delay", "0.1"]) as board:
            status = json.loads(board.status_line.removeprefix("status: "))
            assert status["broker"].startswith("mqtts://127.0.0.1:")  # no --broker: MQTT_URL with ENABLE_SSL
            board.expect("subscribed", WAIT)
            assert board.expect("tcp_connected", WAIT).fields["ssl"] == 1  # the TLS handshake passed the pin
            wrong = otalab("deploy", str(package), "--pin", "00" * 20)  # an explicit pin wins, and fails
            assert wrong.returncode != 0 and "pin mismatch" in wrong.stderr, wrong.stderr
            result = otalab("deploy", str(package))
            assert result.returncode == 0, result.stderr
            assert "using mqtts://127.0.0.1" in result.stderr
            board.expect("switch_ok", WAIT)  # the board took it over TLS
            assert board.current_version() is not None
        otalab("deploy", "--clear")
        monkeypatch.setenv("MQTT_FINGERPRINT_SHA1", "00" * 20)
        refused = otalab("deploy", str(package))
        assert refused.returncode != 0 and "pin mismatch" in refused.stderr


# -- the ROM address of an update follows the build's layout ---------------------------------------------------


@pytest.mark.parametrize(("layout", "other"), [("esp8266", "host"), ("host", "esp8266")])
def test_update_rom_goes_where_the_builds_layout_has_rom0(tmp_path: Path, layout: str, other: str) -> None:
    from board_helpers import KEY, deliver

    from otalib.board.sim.device import Device
    from otalib.board.virtual import prepare_flash
    from otalib.keys import DeviceKeys

    build = DeviceBuild(keys=DeviceKeys(KEY.verify_key), layout=layout, version="4.3.1")
    image = make_demo_image("esp8266", "test", "4.3.2", size=16 * 1024)
    fitting = make_update(image, "signed", patch=2, key=KEY, timestamp=1, build=build).package
    misplaced = make_update(image, "signed", patch=2, key=KEY, timestamp=1, build=DeviceBuild(layout=other)).package
    with prepare_flash(tmp_path / f"{layout}.bin", build) as flash:
        device = Device(flash, build)
        assert device.boot().slot == 0
        assert deliver(device, misplaced).error == "NoRomFound"
        assert deliver(device, fitting).outcome == "applied"
        assert device.restart().slot == 1 and str(device.version) == "4.3.2"


# -- inspect judges as the configured device --------------------------------------------------------------------


def test_inspect_judges_with_the_configured_key_and_build(lab: Path) -> None:
    generate_key_file(lab / "ota.key")
    other, _ = generate_key_file(lab / "other.key")
    image = make_demo_image("esp8266", "test", "4.3.2", size=16 * 1024)
    (lab / "signed.sdp").write_bytes(make_update(image, "signed", patch=2, key=other, timestamp=5).package)
    (lab / "standard.sdp").write_bytes(make_update(image, "standard", patch=2).package)
    assert otalab("inspect", "signed.sdp").returncode == 1  # no key known: signed, not checked
    env = {"ENABLE_OTA_ADVANCED": "1", "OTA_KEY": "ota.key"}
    judged = json.loads(otalab("inspect", "signed.sdp", "--json", env=env).stdout)
    assert judged["device"]["error"] == "VerificationFailed"  # signed with another key than OTA_KEY's
    assert otalab("inspect", "signed.sdp", "-k", "other.key", env=env).returncode == 0  # an explicit key wins
    standard = json.loads(otalab("inspect", "standard.sdp", "--json", env={"ENABLE_OTA_ADVANCED": "0"}).stdout)
    assert standard["device"]["outcome"] == "applied" and standard["device"]["build"]["advanced"] is False


def test_client_certificate_build_needs_one(lab: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENABLE_CLIENT_CERTIFICATE", "1")
    result = otalab("board", "--broker", "mqtts://127.0.0.1:1")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == (
        "otalab: error: ENABLE_CLIENT_CERTIFICATE=1 (environment): give the board --client-cert and --client-key"
    )
    assert _board_status()["mode"] == "advanced"  # plain MQTT: no certificate involved


# -- otalab build takes the version from the configuration ------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_build_takes_app_version_and_patch_from_otalab_toml(lab: Path) -> None:
    project = lab / "fw"
    project.mkdir()
    (project / "Makefile").write_text(
        'all:\n\tmkdir -p out\n\techo "$(APP_VERSION) $(APP_VERSION_PATCH)" > out/v.txt\n'
    )
    (lab / "otalab.toml").write_text('APP_VERSION = "2.1"\nAPP_VERSION_PATCH = 7\n')
    result = otalab("build", "--project", "fw", "--json")
    assert json.loads(result.stdout)["command"] == ["make", "APP_VERSION=2.1", "APP_VERSION_PATCH=7"]
    assert (project / "out/v.txt").read_text().strip() == "2.1 7"
    result = otalab("build", "--project", "fw", "--json", "--patch", "8", env={"APP_VERSION": "2.2"})
    assert json.loads(result.stdout)["command"] == ["make", "APP_VERSION=2.2", "APP_VERSION_PATCH=8"]

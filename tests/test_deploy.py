"""Deploying to a real Mosquitto: retained QoS 2 publish, clear, failures, and ``otalab deploy``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from deploy_helpers import CuttingProxy, Subscriber, esp_package, refused_port, retained

from otalib.broker import BrokerUser, start_broker
from otalib.broker.mosquitto import MosquittoBroker
from otalib.cli import cli
from otalib.errors import BrokerError, InputError, PublishError, UsageError
from otalib.mqtt.publish import deploy, publish_packet_size

USER = BrokerUser("deployer", "s3cret:pw")
TOPIC = "a/test/u/4.3"
OTALAB = Path(sys.executable).with_name("otalab")


@pytest.fixture(scope="module")
def broker():
    with start_broker("mosquitto", users=[USER]) as running:
        yield running


@pytest.fixture
def url(broker) -> str:
    deploy(None, broker.url_for(TOPIC, USER), clear=True)
    return broker.url_for(TOPIC, USER)


def test_subscribers_before_and_after_get_identical_bytes(broker, url) -> None:
    package = esp_package(256 * 1024)
    seen: list[tuple[int, int]] = []
    with Subscriber(url, TOPIC) as early:
        record = deploy(package, url, progress=lambda done, total: seen.append((done, total)))
        topic, payload, _retain = early.get()
    assert (topic, payload) == (TOPIC, package)
    with Subscriber(url, TOPIC) as late:
        assert [p for t, p, _r in late.settle()] == [package]
    # what the record says is what the broker delivered: QoS 2 (both subscribed at 2), retained for the late one
    assert early.delivered == [(TOPIC, record.qos, False)] and late.delivered[0] == (TOPIC, record.qos, record.retain)
    assert (record.qos, record.retain) == (2, True)
    assert record.bytes == len(package) and not record.cleared
    assert record.mqtt_version == "5" and record.patch == 5
    assert 0 <= record.connect_s <= record.publish_start <= record.pubrec_s <= record.pubcomp_s <= record.total_s
    assert record.throughput_Bps > 0
    assert seen[-1] == (len(package), len(package)) and seen == sorted(seen)
    assert "s3cret" not in json.dumps(record.to_dict())


def test_clear_removes_the_firmware(url) -> None:
    deploy(esp_package(1024), url)
    assert retained(url, TOPIC) is not None
    record = deploy(None, url, clear=True)
    assert record.cleared and record.bytes == 0
    assert retained(url, TOPIC) is None


def test_channel_topic_and_path_package(url, broker, tmp_path) -> None:
    path = tmp_path / "fw.sdp"
    package = esp_package(2048)
    path.write_bytes(package)
    channel = broker.url_for(TOPIC + "/s", USER)
    record = deploy(path, channel)
    assert record.topic == "a/test/u/4.3/s"
    assert retained(channel, TOPIC + "/s") == package
    deploy(None, channel, clear=True)


def test_wrong_password(broker) -> None:
    bad = broker.url_for(TOPIC, BrokerUser("deployer", "wrong"))
    with pytest.raises(BrokerError, match="not authorised"):
        deploy(esp_package(1024), bad)


def test_unknown_host_and_refused_port() -> None:
    with pytest.raises(BrokerError, match=r"unknown host 'no-such-broker\.invalid'"):
        deploy(esp_package(1024), "mqtt://no-such-broker.invalid/a/test/u/4.3", connect_timeout=5)
    with refused_port() as port, pytest.raises(BrokerError, match="connection refused"):
        deploy(esp_package(1024), f"mqtt://127.0.0.1:{port}/a/test/u/4.3")


def test_not_a_package_refused_unless_no_check(url) -> None:
    with pytest.raises(InputError, match="not a deployment package"):
        deploy(b"hello world, not firmware", url)
    assert retained(url, TOPIC) is None
    deploy(b"hello world, not firmware", url, check_package=False)
    assert retained(url, TOPIC) == b"hello world, not firmware"


def test_empty_package_and_missing_topic_refused(broker, url) -> None:
    with pytest.raises(UsageError, match="empty"):
        deploy(b"", url, check_package=False)
    with pytest.raises(UsageError, match="no topic"):
        deploy(esp_package(1024), broker.url)


def test_oversize_refused_before_sending() -> None:
    limit = 64 * 1024
    with start_broker("mosquitto", users=[USER], max_packet_size=limit) as small:
        url = small.url_for(TOPIC, USER)
        fits = esp_package(limit - 100)
        assert publish_packet_size(TOPIC, len(fits)) <= limit
        record = deploy(fits, url)
        assert record.broker_max_packet_size == limit
        with pytest.raises(PublishError, match="exceeds its maximum packet size of 65536 bytes"):
            deploy(esp_package(limit), url)
        assert retained(url, TOPIC) == fits
        log = small.log_path.read_text(errors="replace")
        publishes = [line for line in log.splitlines() if "Received PUBLISH" in line and f"'{TOPIC}'" in line]
        assert len(publishes) == 1  # only the one that fits


def test_connection_cut_mid_publish_leaves_nothing(broker, url) -> None:
    host_port = int(url.split("@")[1].split("/")[0].rsplit(":", 1)[1])
    with CuttingProxy(host_port, limit=1_000_000) as proxy:
        proxied = url.replace(f":{host_port}/", f":{proxy.port}/")
        with pytest.raises(PublishError, match="NOT published") as info:
            deploy(esp_package(4 * 1024 * 1024), proxied, timeout=20)
        assert "\n" not in str(info.value)
        assert proxy.cut.is_set()
    assert retained(url, TOPIC) is None


class PersistentMosquitto(MosquittoBroker):
    """The lab Mosquitto with persistence on, saving every retained change at once (autosave_on_changes)."""

    def config_text(self) -> str:
        text = super().config_text()
        assert "persistence false" in text
        saving = f"persistence true\npersistence_location {self.workdir}/\nautosave_interval 1\n"
        saving += "autosave_on_changes true"
        return text.replace("persistence false", saving)


def test_broker_killed_mid_publish(tmp_path) -> None:
    # The broker keeps its retained messages across a restart (persistence on). A deployment cut by the
    # broker's death is REPORTED (not success), and the restarted broker still holds the firmware that
    # was there before, whole: the half-sent one never replaced it.
    workdir = tmp_path / "broker"
    before = esp_package(4096)
    with PersistentMosquitto(users=[USER], workdir=workdir) as first:
        url = first.url_for(TOPIC, USER)
        port = first.port
        deploy(before, url)
        saved = workdir / "mosquitto.db"
        deadline = time.monotonic() + 10
        while not (saved.is_file() and before[1:] in saved.read_bytes()):
            assert time.monotonic() < deadline, "mosquitto never saved the retained firmware"
            time.sleep(0.02)

        def kill_at_quarter(done: int, total: int) -> None:
            if done > total // 4 and first.running():
                os.kill(first.pid, 9)

        with pytest.raises(PublishError, match="NOT published"):
            deploy(esp_package(32 * 1024 * 1024), url, progress=kill_at_quarter, timeout=30)
        assert not first.running()
    with PersistentMosquitto(users=[USER], port=port, workdir=workdir) as again:
        assert retained(again.url_for(TOPIC, USER), TOPIC) == before


def test_publish_timeout_is_a_failure(broker, url) -> None:
    # A relay that stops forwarding (but stays open) in the middle of the PUBLISH: PUBCOMP never comes.
    port = int(url.split("@")[1].split("/")[0].rsplit(":", 1)[1])
    with CuttingProxy(port, limit=200_000, stall=True) as proxy:
        proxied = url.replace(f":{port}/", f":{proxy.port}/")
        with pytest.raises(PublishError, match=r"timed out after 1 s waiting for PUBCOMP.*NOT published"):
            deploy(esp_package(1024 * 1024), proxied, timeout=1)
        assert proxy.cut.is_set()
    assert retained(url, TOPIC) is None


def test_fallback_to_mqtt_311_on_the_embedded_broker() -> None:
    with start_broker("embedded", users=[USER]) as embedded:
        url = embedded.url_for(TOPIC, USER)
        package = esp_package(32 * 1024)
        record = deploy(package, url, connect_timeout=4)
        assert record.mqtt_version == "3.1.1" and record.broker_max_packet_size is None
        assert deploy(package, url, mqtt_version="3.1.1").mqtt_version == "3.1.1"


# -- CLI ------------------------------------------------------------------------------------


def _run(*args: str):
    return CliRunner().invoke(cli, ["deploy", *args])


def test_cli_json_record(url, tmp_path) -> None:
    path = tmp_path / "fw.sdp"
    package = esp_package(100_000)
    path.write_bytes(package)
    result = _run(str(path), url, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    for field in (
        "url",
        "topic",
        "bytes",
        "t_start",
        "connect_s",
        "tls_handshake_s",
        "publish_start",
        "pubrec_s",
        "pubcomp_s",
        "total_s",
        "throughput_Bps",
        "cleared",
        "broker_max_packet_size",
    ):
        assert field in record
    assert record["bytes"] == len(package) and record["topic"] == TOPIC and record["qos"] == 2
    assert "s3cret" not in result.stdout
    assert retained(url, TOPIC) == package
    cleared = _run("--clear", url)
    assert cleared.exit_code == 0 and "cleared" in cleared.stdout
    assert retained(url, TOPIC) is None


def test_cli_subprocess_success(url, tmp_path) -> None:
    path = tmp_path / "fw.sdp"
    path.write_bytes(esp_package(10_000))
    done = subprocess.run([str(OTALAB), "deploy", str(path), url], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("published 10000 bytes to a/test/u/4.3")
    assert done.stderr == ""  # no progress bar without a terminal


def _failure(broker, tmp_path, case: str) -> list[str]:
    path = tmp_path / "fw.sdp"
    path.write_bytes(esp_package(4096))
    good = broker.url_for(TOPIC, USER)
    with refused_port() as port:
        args = {
            "password": [str(path), broker.url_for(TOPIC, BrokerUser("deployer", "nope"))],
            "host": [str(path), "mqtt://no-such-broker.invalid/a/test/u/4.3", "--connect-timeout", "5"],
            "refused": [str(path), f"mqtt://127.0.0.1:{port}/a/test/u/4.3"],
            "badurl": [str(path), "http://host/a"],
            "missing": [str(tmp_path / "nope.sdp"), good],
            "notsdp": [str(tmp_path / "junk"), good],
            "pin": [str(path), good.replace("mqtt://", "mqtts://"), "--pin", "zz"],
            "tlsplain": [str(path), good, "--ca", str(path)],
            "clearpkg": ["--clear", str(path), good],
        }[case]
        (tmp_path / "junk").write_bytes(b"definitely not a package")
        result = _run(*args)
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("otalab: error: "), result.stderr
    return lines


@pytest.mark.parametrize(
    ("case", "text"),
    [
        ("password", "not authorised"),
        ("host", "unknown host"),
        ("refused", "connection refused"),
        ("badurl", "unsupported URL scheme"),
        ("missing", "package not found"),
        ("notsdp", "not a deployment package"),
        ("pin", "bad pin"),
        ("tlsplain", "not mqtts"),
        ("clearpkg", "--clear takes only the URL"),
    ],
)
def test_cli_failures_one_line(broker, tmp_path, case: str, text: str) -> None:
    (line,) = _failure(broker, tmp_path, case)
    assert text in line
    assert "s3cret" not in line and "nope" not in line.split("otalab: error: ")[1].replace("nope.sdp", "")


def test_cli_oversize_and_tls_failures(tmp_path) -> None:
    path = tmp_path / "fw.sdp"
    path.write_bytes(esp_package(50_000))
    with start_broker("mosquitto", users=[USER], max_packet_size=10_000) as small:
        result = _run(str(path), small.url_for(TOPIC, USER))
        assert result.exit_code == 1 and result.stderr.count("\n") == 1
        assert "maximum packet size" in result.stderr
    with start_broker("mosquitto", users=[USER], tls=True, require_client_cert=True) as secure:
        url = secure.url_for(TOPIC, USER)
        for extra, text in (
            (["--ca", str(secure.ca_path)], "client certificate"),
            (["--pin", "ab" * 32], "pin mismatch"),
            ([], "certificate verify failed"),
        ):
            result = _run(str(path), url, *extra)
            assert result.exit_code == 1, result.output
            assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
            assert "Traceback" not in result.output


def test_publish_denied_by_acl_is_a_failure(broker) -> None:
    # MQTT v5 tells (PUBREC reason "not authorised"); 3.1.1 cannot: the broker acks and drops.
    device = BrokerUser("device", "dev-pw", role="device")
    with start_broker("mosquitto", users=[USER, device]) as acl:
        with pytest.raises(PublishError, match="not authorised to publish"):
            deploy(esp_package(4096), acl.url_for(TOPIC, device), mqtt_version="5")
        assert retained(acl.url_for(TOPIC, USER), TOPIC) is None

"""Lab brokers: real Mosquitto and the embedded amqtt broker, driven by real paho clients."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import broker_helpers
import pytest
from broker_helpers import DEPLOYER, DEVICE

from otalib.broker import BrokerUser, find_mosquitto, make_broker, port_accepts, start_broker
from otalib.errors import BrokerError, UsageError

pytestmark = pytest.mark.timeout(60)

BACKENDS = ["mosquitto", "embedded"]
TOPIC = "a/test/u/4.3"

# shared fixtures
probes = broker_helpers.probes
lab_broker = broker_helpers.lab_broker
mosquitto_broker = broker_helpers.mosquitto_broker
embedded_broker = broker_helpers.embedded_broker


def payload(size: int) -> bytes:
    """Deterministic, non-repeating-looking bytes."""
    block = bytes((i * 131 + 7) & 0xFF for i in range(251))
    return (block * (size // len(block) + 1))[:size]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("size", [256 * 1024, 4 * 1024 * 1024], ids=["256K", "4M"])
def test_retained_firmware_reaches_early_and_late_subscribers(lab_broker, probes, backend, size):
    broker = lab_broker(backend)
    assert broker.backend == backend and broker.version
    data = payload(size)
    early = probes(broker).connect_ok()
    assert early.subscribe(TOPIC)[0].value == 2
    probes(broker).connect_ok().publish(TOPIC, data)
    got_early = early.get(timeout=30)
    late = probes(broker).connect_ok()
    late.subscribe(TOPIC, qos=0)
    got_late = late.get(timeout=30)
    assert got_early is not None and got_early.payload == data
    assert got_late is not None and got_late.payload == data and got_late.retain


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_retained_message_clears_the_topic(lab_broker, probes, backend):
    broker = lab_broker(backend)
    pub = probes(broker).connect_ok()
    pub.publish(TOPIC, b"firmware")
    first = probes(broker).connect_ok()
    first.subscribe(TOPIC)
    assert first.get().payload == b"firmware"
    pub.publish(TOPIC, b"")
    later = probes(broker).connect_ok()
    later.subscribe(TOPIC)
    assert later.settle() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_retained_message_without_subscribe(lab_broker, probes, backend):
    # amqtt 0.12 pushes retained messages on CONNECT; the embedded broker must not
    broker = lab_broker(backend)
    subscribed = probes(broker).connect_ok()
    subscribed.subscribe("a/#")
    probes(broker).connect_ok().publish(TOPIC, b"fw")
    assert subscribed.get().payload == b"fw"
    idle = probes(broker).connect_ok()
    assert idle.settle() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_listener_with_lab_ca(lab_broker, probes, backend, tmp_path):
    broker = lab_broker(backend, tls=True, workdir=tmp_path, server_names=["broker.lab"], plain_port=0)
    assert broker.url.startswith("mqtts://127.0.0.1:")
    assert broker.ca_path is not None and broker.ca_path.is_file()
    assert broker.pki is not None and len(broker.pki.fingerprints()["sha1"]) == 40
    sub = probes(broker).connect_ok()
    sub.subscribe(TOPIC)
    probes(broker).connect_ok().publish(TOPIC, b"over tls")
    assert sub.get().payload == b"over tls"
    # the plain listener asked for serves the same broker
    assert broker.plain_port and broker.plain_url == f"mqtt://127.0.0.1:{broker.plain_port}"
    plain = probes(broker, port=broker.plain_port, tls=False).connect_ok()
    plain.subscribe(TOPIC)
    assert plain.get().payload == b"over tls"


@pytest.mark.parametrize("backend", BACKENDS)
def test_tls_refuses_a_client_that_does_not_trust_the_lab_ca(lab_broker, backend, tmp_path):
    import ssl

    broker = lab_broker(backend, tls=True)
    context = ssl.create_default_context()  # system CAs only
    with (
        socket.create_connection((broker.host, broker.port), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("backend", BACKENDS)
def test_client_certificate_required(lab_broker, probes, backend):
    broker = lab_broker(backend, tls=True, require_client_cert=True)
    assert probes(broker).connect() is None
    assert broker.pki is not None
    good = probes(broker, client_cert=broker.pki.client("dev-1")).connect_ok()
    good.subscribe(TOPIC)
    probes(broker, client_cert=broker.pki.client("deployer")).connect_ok().publish(TOPIC, b"with cert")
    assert good.get().payload == b"with cert"


@pytest.mark.parametrize("backend", BACKENDS)
def test_client_certificate_from_another_ca_is_refused(lab_broker, probes, backend, tmp_path):
    from otalib.certs import LabPKI

    broker = lab_broker(backend, tls=True, require_client_cert=True)
    stranger = LabPKI(tmp_path / "other").client("dev-1")
    assert probes(broker, client_cert=stranger).connect() is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_passwords(lab_broker, probes, backend):
    broker = lab_broker(backend, users=[DEPLOYER, DEVICE])
    bad = probes(broker, user=DEPLOYER, password="wrong").connect()
    assert bad is not None and bad.is_failure
    assert bad.getName() in ("Not authorized", "Bad user name or password")
    anonymous = probes(broker).connect()
    assert anonymous is None or anonymous.is_failure
    ok = probes(broker, user=DEPLOYER).connect()
    assert ok is not None and not ok.is_failure


@pytest.mark.parametrize("backend", BACKENDS)
def test_acl_device_reads_updates_but_cannot_publish_firmware(lab_broker, probes, backend):
    broker = lab_broker(backend, users=[DEPLOYER, DEVICE])
    watcher = probes(broker, user=DEPLOYER).connect_ok()
    watcher.subscribe("a/#")
    device = probes(broker, user=DEVICE).connect_ok()
    device.publish(TOPIC, b"evil firmware", timeout=5)
    assert watcher.settle() == []
    late = probes(broker, user=DEPLOYER).connect_ok()
    late.subscribe(TOPIC)
    assert late.settle() == []

    device2 = probes(broker, user=DEVICE).connect_ok()
    device2.subscribe("a/test/u/#", qos=0)
    device2.subscribe("a/other/u/#", qos=0)
    deployer = probes(broker, user=DEPLOYER).connect_ok()
    deployer.publish("a/other/u/1.0", b"not for you")
    deployer.publish(TOPIC, b"good firmware")
    got = device2.get()
    assert got is not None and (got.topic, got.payload) == (TOPIC, b"good firmware")
    assert device2.settle(via=deployer, topic="a/test/u/sentinel") == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_packet_size_drops_oversize_publish(lab_broker, probes, backend):
    broker = lab_broker(backend, max_packet_size=64 * 1024)
    if backend == "mosquitto":
        assert "max_packet_size 65536" in (broker.workdir / "mosquitto.conf").read_text()
    else:
        assert any("max_packet_size enforced only after" in note for note in broker.notes)
    sub = probes(broker).connect_ok()
    sub.subscribe("a/#")
    big = probes(broker).connect_ok()
    big.client.publish(TOPIC, payload(100 * 1024), qos=2, retain=True)
    assert big.disconnected.wait(5)
    assert sub.settle() == []
    probes(broker).connect_ok().publish(TOPIC, payload(32 * 1024))
    got = sub.get()
    assert got is not None and got.payload == payload(32 * 1024)
    late = probes(broker).connect_ok()
    late.subscribe(TOPIC)
    assert late.get().payload == payload(32 * 1024)


def test_embedded_publish_packet_size_matches_the_wire():
    from otalib.broker.embedded import publish_packet_size

    assert publish_packet_size("a/b", 0, 0) == 1 + 1 + 2 + 3
    assert publish_packet_size("a/b", 200, 2) == 1 + 2 + 2 + 3 + 2 + 200
    assert publish_packet_size("t", 4 * 1024 * 1024, 2) == 1 + 4 + 2 + 1 + 2 + 4 * 1024 * 1024


def test_mosquitto_config_and_logs(mosquitto_broker, tmp_path):
    broker = mosquitto_broker(users=[DEPLOYER, DEVICE], tls=True, require_client_cert=True, workdir=tmp_path)
    conf = (tmp_path / "mosquitto.conf").read_text()
    for line in ("set_tcp_nodelay true", "allow_anonymous false", "require_certificate true", "log_type all"):
        assert line in conf
    assert "use_identity_as_username false" in conf
    acl = (tmp_path / "acl").read_text()
    assert "user deployer\ntopic readwrite a/#" in acl and "user sming\ntopic read a/test/u/#" in acl
    assert (tmp_path / "passwd").stat().st_mode & 0o777 == 0o600
    assert "deploy-pw" not in (tmp_path / "passwd").read_text()
    assert broker.pki is not None and broker.pki.server.key.stat().st_mode & 0o777 == 0o600
    broker.stop()
    assert broker.log_path == tmp_path / "mosquitto.log"
    assert "mosquitto version 2" in broker.log_path.read_text()


@pytest.mark.parametrize("backend", BACKENDS)
def test_stop_is_idempotent_and_closes_the_port(backend, tmp_path):
    if backend == "mosquitto" and find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    with start_broker(backend) as broker:
        own = broker.workdir
        assert port_accepts(broker.host, broker.port) and broker.running()
    assert not port_accepts(broker.host, broker.port) and not broker.running()
    assert not own.exists()  # temporary workdir removed
    broker.stop()
    kept = start_broker(backend, workdir=tmp_path / "w")
    kept.stop()
    kept.stop()
    assert kept.log_path.is_file() and kept.log_path.parent == tmp_path / "w"


def test_fixed_port_in_use_is_a_broker_error(mosquitto_broker):
    first = mosquitto_broker()
    with pytest.raises(BrokerError, match="in use"):
        start_broker("mosquitto", port=first.port)


def test_auto_falls_back_to_embedded_without_mosquitto(monkeypatch, probes):
    monkeypatch.setenv("OTALAB_MOSQUITTO", "none")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert find_mosquitto() is None
    with pytest.raises(BrokerError, match="mosquitto not found"):
        make_broker("mosquitto")
    with start_broker("auto") as broker:
        assert broker.backend == "embedded"
        sub = probes(broker).connect_ok()
        sub.subscribe(TOPIC)
        probes(broker).connect_ok().publish(TOPIC, b"fallback")
        assert sub.get().payload == b"fallback"


def test_find_mosquitto_search_and_override(monkeypatch, tmp_path):
    fake = tmp_path / "mosquitto"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("OTALAB_MOSQUITTO", str(fake))
    assert find_mosquitto() == fake
    monkeypatch.delenv("OTALAB_MOSQUITTO")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_mosquitto() == fake
    if Path("/usr/sbin/mosquitto").exists():
        monkeypatch.setenv("PATH", "/nonexistent")
        assert find_mosquitto() == Path("/usr/sbin/mosquitto")  # sbin is searched beyond PATH


def test_urls():
    broker = make_broker("embedded", port=1883)
    try:
        assert broker.url == "mqtt://127.0.0.1:1883"
        user = BrokerUser("dep", "p@ss:w/rd")
        assert broker.url_for("/a/test/u/4.3/", user) == "mqtt://dep:p%40ss%3Aw%2Frd@127.0.0.1:1883/a/test/u/4.3"
        assert broker.url_for("a/test/u/4.3") == "mqtt://127.0.0.1:1883/a/test/u/4.3"
    finally:
        broker.stop()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"backend": "nats"},
        {"require_client_cert": True},
        {"max_packet_size": 3},
        {"users": [DEPLOYER, DEPLOYER]},
    ],
)
def test_bad_options_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        make_broker(**{"backend": "embedded", **kwargs})


def test_bad_user_names_are_usage_errors():
    with pytest.raises(UsageError):
        BrokerUser("a/b", "x")
    with pytest.raises(UsageError):
        BrokerUser("dev", "x", "admin")  # type: ignore[arg-type]


def test_no_process_left_behind():
    broker = start_broker("embedded")
    pid = broker.pid
    assert pid is not None
    broker.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- otalab broker (CLI) -------------------------------------------------------------

OTALAB = [sys.executable, "-m", "otalib"]


def run_cli_broker(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start ``otalab broker ARGS``; return the process and its printed ``key: value`` lines up to 'ready'."""
    proc = subprocess.Popen(
        [*OTALAB, "broker", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    info: dict[str, str] = {}
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line.startswith("ready"):
            info["_rest"] = ""
            proc.lines = lines  # type: ignore[attr-defined]
            return proc, info
        key, _, value = line.rstrip("\n").partition(": ")
        info.setdefault(key, value)
    proc.kill()
    proc.wait(5)
    raise AssertionError(f"otalab broker did not get ready: {proc.stderr.read() if proc.stderr else ''}")  # type: ignore[union-attr]


def finish(proc: subprocess.Popen[str], sig: int) -> tuple[int, str, str]:
    """Send ``sig``, wait (bounded); return exit code, rest of stdout, stderr."""
    proc.send_signal(sig)
    try:
        code = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise
    rest = []
    while True:
        try:
            rest.append(proc.lines.get(timeout=0.5))  # type: ignore[attr-defined]
        except queue.Empty:
            break
    return code, "".join(rest), proc.stderr.read() if proc.stderr else ""  # type: ignore[union-attr]


@pytest.mark.parametrize(("backend", "sig"), [("mosquitto", signal.SIGINT), ("embedded", signal.SIGTERM)])
def test_cli_broker_runs_until_signal(backend, sig, probes, tmp_path):
    if backend == "mosquitto" and find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    proc, info = run_cli_broker(["--backend", backend, "--user", "dep:pw", "--dir", str(tmp_path)])
    try:
        assert info["backend"].startswith(backend)
        url = info["url"]
        assert url.startswith("mqtt://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])

        ok = probes(url, user=BrokerUser("dep", "pw")).connect()
        assert ok is not None and not ok.is_failure
    finally:
        code, rest, err = finish(proc, sig)
    assert code == 0
    assert "stopped" in rest
    assert "Traceback" not in err
    assert not port_accepts("127.0.0.1", port)
    assert (tmp_path / f"{backend}.log").is_file()


#: A device password no printed path or fingerprint can contain by chance.
SECRET = "Never-Printed-7c41e9"


def test_cli_broker_tls_prints_ca_fingerprints_and_client_certs(tmp_path):
    proc, info = run_cli_broker(
        [
            "--backend",
            "embedded",
            "--tls",
            "--require-client-cert",
            "--device-user",
            f"esp1:{SECRET}",
            "--dir",
            str(tmp_path),
        ]
    )
    try:
        assert info["url"].startswith("mqtts://")
        assert Path(info["ca"]).is_file()
        assert len(info["fingerprint sha1"]) == 40 and len(info["spki sha256"]) == 64
        assert info["fingerprint sha1 (MQTT_FINGERPRINT_SHA1)"].count("0x") == 20
        cert, _, key = info["client cert esp1"].partition(" key: ")
        assert Path(cert).is_file() and Path(key).stat().st_mode & 0o777 == 0o600
        assert SECRET not in " ".join(info.values())  # (a short password could be part of a random tmp path)
    finally:
        code, _rest, err = finish(proc, signal.SIGTERM)
    assert code == 0 and "Traceback" not in err


def test_cli_broker_bad_user_is_one_line_error():
    done = subprocess.run(
        [*OTALAB, "broker", "--backend", "embedded", "--user", "nopassword"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["otalab: error: bad user 'nopassword': expected NAME:PASSWORD"]

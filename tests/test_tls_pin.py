"""Pins and TLS against a real Mosquitto: CA, SHA-1/SHA-256/SPKI pins, client certificates."""

from __future__ import annotations

import time

import pytest
from deploy_helpers import Subscriber, esp_package, plain, retained

from otalib.broker import BrokerUser, start_broker
from otalib.certs import LabPKI
from otalib.errors import BrokerError, InputError, UsageError
from otalib.mqtt.publish import deploy
from otalib.mqtt.tls import Pin, PinMismatchError, TlsOptions, certificate_digests, make_ssl_context, parse_pin

USER = BrokerUser("deployer", "pw-tls")
TOPIC = "a/test/u/4.3"
SHA1 = "DD:A9:71:AB:E0:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE"


# -- pin parsing ------------------------------------------------------------------------


def test_pin_forms() -> None:
    digest = bytes.fromhex(SHA1.replace(":", ""))
    assert parse_pin(SHA1) == Pin("sha1", digest)
    assert parse_pin(SHA1.lower()) == Pin("sha1", digest)
    assert parse_pin(SHA1.replace(":", "")) == Pin("sha1", digest)
    assert parse_pin("sha1:" + SHA1) == Pin("sha1", digest)
    sha256 = "ab" * 32
    assert parse_pin(sha256) == Pin("sha256", bytes.fromhex(sha256))
    assert parse_pin("SPKI:" + ":".join(["AB"] * 32)) == Pin("spki", bytes.fromhex(sha256))
    assert str(parse_pin("spki:" + sha256)).startswith("spki:AB:AB")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("zz" * 20, "not hexadecimal"),
        ("ab" * 19, "19 bytes"),
        ("ab" * 33, "33 bytes"),
        ("spki:" + "ab" * 20, "spki pin is a SHA-256"),
        ("sha256:" + "ab" * 20, "not a sha256"),
        ("", "0 bytes"),
    ],
)
def test_bad_pins(text: str, reason: str) -> None:
    with pytest.raises(UsageError, match=reason):
        parse_pin(text)


def test_context_files_are_checked(tmp_path) -> None:
    with pytest.raises(InputError, match="CA file not found"):
        make_ssl_context(TlsOptions(ca=tmp_path / "nope.pem"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(InputError, match="CA file"):
        make_ssl_context(TlsOptions(ca=junk))
    with pytest.raises(InputError, match="client certificate not found"):
        make_ssl_context(TlsOptions(client_cert=tmp_path / "c.pem"))
    with pytest.raises(UsageError, match="--client-key needs --client-cert"):
        make_ssl_context(TlsOptions(client_key=junk))


# -- against Mosquitto ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_broker():
    with start_broker("mosquitto", tls=True, users=[USER], plain_port=0) as broker:
        yield broker


@pytest.fixture(scope="module")
def cert_broker():
    with start_broker("mosquitto", tls=True, require_client_cert=True, users=[USER], plain_port=0) as broker:
        yield broker


def _log_count(broker, needle: str) -> int:
    return broker.log_path.read_text(errors="replace").count(needle)


def test_ca_accepted_and_message_retained(tls_broker) -> None:
    url = tls_broker.url_for(TOPIC, USER)
    package = esp_package(64 * 1024)
    record = deploy(package, url, tls=TlsOptions(ca=tls_broker.ca_path))
    assert record.tls_handshake_s is not None and record.tls_handshake_s > 0
    assert record.url.startswith("mqtts://deployer@") and "pw-tls" not in record.url
    assert retained(plain(url, tls_broker), TOPIC) == package


@pytest.mark.parametrize("kind", ["sha1", "sha256", "spki"])
def test_correct_pin_accepted_without_ca(tls_broker, kind: str) -> None:
    fps = tls_broker.pki.fingerprints()
    text = {"sha1": fps["sha1"], "sha256": fps["sha256"].upper(), "spki": "spki:" + fps["spki_sha256"]}[kind]
    url = tls_broker.url_for(TOPIC, USER)
    package = esp_package(4096)
    record = deploy(package, url, tls=TlsOptions(pins=(parse_pin(text),)))
    assert record.bytes == len(package)
    assert retained(plain(url, tls_broker), TOPIC) == package


def test_pin_list_and_ca_together(tls_broker) -> None:
    fps = tls_broker.pki.fingerprints()
    pins = (parse_pin("00" * 20), parse_pin("spki:" + fps["spki_sha256"]))
    record = deploy(
        esp_package(1024), tls_broker.url_for(TOPIC, USER), tls=TlsOptions(ca=tls_broker.ca_path, pins=pins)
    )
    assert record.bytes == 1024


def test_pin_digests_match_the_lab_pki(tls_broker) -> None:
    der = tls_broker.pki.server.cert.read_bytes()
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    digests = certificate_digests(x509.load_pem_x509_certificate(der).public_bytes(Encoding.DER))
    fps = tls_broker.pki.fingerprints()
    assert digests["sha1"].hex() == fps["sha1"]
    assert digests["sha256"].hex() == fps["sha256"]
    assert digests["spki"].hex() == fps["spki_sha256"]


def test_wrong_pin_refused_before_any_mqtt_byte(tls_broker) -> None:
    url = tls_broker.url_for(TOPIC, USER)
    sub_url = plain(url, tls_broker)
    deploy(None, url, tls=TlsOptions(ca=tls_broker.ca_path), clear=True)
    connects = _log_count(tls_broker, "New client connected")
    publishes = _log_count(tls_broker, "Received PUBLISH")
    with Subscriber(sub_url, TOPIC) as sub:
        with pytest.raises(PinMismatchError, match="pin mismatch") as info:
            deploy(esp_package(256 * 1024), url, tls=TlsOptions(ca=tls_broker.ca_path, pins=(parse_pin("ab" * 32),)))
        assert "\n" not in str(info.value)
        assert sub.settle() == []  # the live subscriber saw nothing
    assert retained(sub_url, TOPIC) is None
    time.sleep(0.2)  # let Mosquitto's log catch up (it is only read, never waited on for the verdict above)
    # The handshake was refused before the MQTT CONNECT: no new client, and only the checkers' publishes.
    assert _log_count(tls_broker, "Received PUBLISH") - publishes == 2  # the two sentinels of settle()/retained()
    assert _log_count(tls_broker, "New client connected") - connects == 2  # the two subscribers


def test_wrong_ca_refused(tls_broker, tmp_path) -> None:
    other = LabPKI(tmp_path / "other-pki")
    with pytest.raises(BrokerError, match="certificate verify failed"):
        deploy(esp_package(1024), tls_broker.url_for(TOPIC, USER), tls=TlsOptions(ca=other.ca.cert))


def test_system_ca_refuses_the_lab_certificate(tls_broker) -> None:
    with pytest.raises(BrokerError, match="certificate verify failed"):
        deploy(esp_package(1024), tls_broker.url_for(TOPIC, USER))


def test_insecure_only_when_asked(tls_broker) -> None:
    record = deploy(esp_package(1024), tls_broker.url_for(TOPIC, USER), tls=TlsOptions(insecure=True))
    assert record.bytes == 1024


def test_tls_options_on_plain_url_refused(tls_broker) -> None:
    with pytest.raises(UsageError, match="not mqtts"):
        deploy(esp_package(1024), plain(tls_broker.url_for(TOPIC, USER), tls_broker), tls=TlsOptions(insecure=True))


def test_client_certificate_required(cert_broker) -> None:
    url = cert_broker.url_for(TOPIC, USER)
    with pytest.raises(BrokerError, match="client certificate") as info:
        deploy(esp_package(1024), url, tls=TlsOptions(ca=cert_broker.ca_path))
    assert "\n" not in str(info.value)
    assert retained(plain(url, cert_broker), TOPIC) is None


def test_client_certificate_accepted(cert_broker) -> None:
    pair = cert_broker.pki.client("bench-01")
    url = cert_broker.url_for(TOPIC, USER)
    package = esp_package(8192)
    deploy(package, url, tls=TlsOptions(ca=cert_broker.ca_path, client_cert=pair.cert, client_key=pair.key))
    assert retained(plain(url, cert_broker), TOPIC) == package


def test_foreign_client_certificate_refused(cert_broker, tmp_path) -> None:
    pair = LabPKI(tmp_path / "foreign").client("intruder")
    with pytest.raises(BrokerError, match="TLS"):
        deploy(
            esp_package(1024),
            cert_broker.url_for(TOPIC, USER),
            tls=TlsOptions(ca=cert_broker.ca_path, client_cert=pair.cert, client_key=pair.key),
        )

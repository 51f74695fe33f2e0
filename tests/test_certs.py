"""Lab PKI: chain verification, SANs, key modes, fingerprint formats, renewal."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from otalib.certs import (
    LabPKI,
    fingerprint_sha1,
    fingerprint_sha256,
    san_names,
    sming_fingerprint_initialiser,
    spki_sha256,
)
from otalib.errors import InputError, UsageError


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return LabPKI(tmp_path_factory.mktemp("pki"), ["broker.lab", "192.168.7.2"])


def load(path):
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_server_chain_verifies_for_each_name(pki):
    store = Store([load(pki.ca.cert)])
    now = dt.datetime.now(dt.timezone.utc)
    for name in (x509.DNSName("localhost"), x509.DNSName("broker.lab")):
        verifier = PolicyBuilder().store(store).time(now).build_server_verifier(name)
        chain = verifier.verify(load(pki.server.cert), [])
        assert chain[-1] == load(pki.ca.cert)
    import ipaddress

    verifier = (
        PolicyBuilder().store(store).time(now).build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    verifier.verify(load(pki.server.cert), [])
    wrong = PolicyBuilder().store(store).time(now).build_server_verifier(x509.DNSName("elsewhere.lab"))
    with pytest.raises(VerificationError):
        wrong.verify(load(pki.server.cert), [])


def test_client_chain_verifies(pki):
    pair = pki.client("esp-01")
    store = Store([load(pki.ca.cert)])
    verifier = PolicyBuilder().store(store).time(dt.datetime.now(dt.timezone.utc)).build_client_verifier()
    verified = verifier.verify(load(pair.cert), [])
    assert verified.chain[-1] == load(pki.ca.cert)
    assert load(pair.cert).subject.rfc4514_string() == "CN=esp-01"


def test_ssl_module_accepts_the_chain(pki):
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(pki.server.cert, pki.server.key)
    client = ssl.create_default_context(cafile=str(pki.ca.cert))
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    cli = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(10):
        for key, end in (("c", cli), ("s", srv)):
            if not done[key]:
                try:
                    end.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    assert cli.getpeercert()["subjectAltName"][0] == ("DNS", "localhost")


def test_san_holds_localhost_loopback_and_given_names(pki):
    names = san_names(pki.server.cert.read_bytes())
    for name in ("localhost", "127.0.0.1", "broker.lab", "192.168.7.2"):
        assert name in names


def test_keys_are_private_and_ec(pki):
    pki.client("esp-02")
    for key in (pki.ca.key, pki.server.key, pki.folder / "clients" / "esp-02.key"):
        assert key.stat().st_mode & 0o777 == 0o600
        loaded = serialization.load_pem_private_key(key.read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey) and loaded.curve.name == "secp256r1"
    assert pki.ca.cert.stat().st_mode & 0o077 != 0  # certificates are public


def test_fingerprint_formats(pki):
    pem = pki.server.cert.read_bytes()
    der = load(pki.server.cert).public_bytes(serialization.Encoding.DER)
    assert fingerprint_sha1(pem) == fingerprint_sha1(der) == hashlib.sha1(der).digest()
    assert fingerprint_sha256(pem) == hashlib.sha256(der).digest()
    fps = pki.fingerprints()
    assert fps["sha1"] == hashlib.sha1(der).hexdigest()
    c_init = fps["sha1_c"]
    assert re.fullmatch(r"\{(0x[0-9A-F]{2}, ){19}0x[0-9A-F]{2}\}", c_init)
    assert bytes(int(b, 16) for b in re.findall(r"0x([0-9A-F]{2})", c_init)) == hashlib.sha1(der).digest()
    assert len(bytes.fromhex(fps["spki_sha256"])) == 32
    assert fps["spki_sha256"] != fps["sha256"]
    assert spki_sha256(pem).hex() == fps["spki_sha256"]
    assert sming_fingerprint_initialiser(b"\x12\x34") == "{0x12, 0x34}"


def test_folder_is_reused(pki):
    again = LabPKI(pki.folder, ["broker.lab"])
    assert again.fingerprints() == pki.fingerprints()
    assert again.client("esp-01").cert.read_bytes() == pki.client("esp-01").cert.read_bytes()


def test_renewal_keeps_spki_and_changes_sha1(tmp_path):
    pki = LabPKI(tmp_path)
    before = pki.fingerprints()
    key_before = pki.server.key.read_bytes()
    pki.renew_server()
    after = pki.fingerprints()
    assert after["spki_sha256"] == before["spki_sha256"]
    assert after["sha1"] != before["sha1"]
    assert pki.server.key.read_bytes() == key_before
    # a new server name re-issues with the same key too
    named = LabPKI(tmp_path, ["new.lab"])
    assert "new.lab" in san_names(named.server.cert.read_bytes())
    assert named.fingerprints()["spki_sha256"] == before["spki_sha256"]


def test_rsa_option(tmp_path):
    pki = LabPKI(tmp_path, key_type="rsa")
    key = serialization.load_pem_private_key(pki.client("d1").key.read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)


def test_bad_inputs(tmp_path, pki):
    with pytest.raises(UsageError):
        pki.client("../etc/passwd")
    with pytest.raises(UsageError):
        LabPKI(tmp_path / "x", key_type="dsa")  # type: ignore[arg-type]
    with pytest.raises(InputError):
        spki_sha256(b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(InputError):
        spki_sha256(b"\x30\x03\x02\x01\x00")

"""A lab PKI: one CA, one broker (server) certificate, client certificates per device.

Keys are ECDSA P-256 by default (fast to make; Mosquitto with OpenSSL accepts them).
Devices built with axTLS cannot do ECDSA: give ``key_type="rsa"`` for those.
Fingerprints come in the formats a device takes: the SHA-1 of the certificate as the
C initialiser of Sming's ``MQTT_FINGERPRINT_SHA1``, and the SHA-256 of the public key
(SPKI), which survives a renewal that keeps the key (:meth:`LabPKI.renew_server`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from otalib.errors import InputError, UsageError
from otalib.fileio import SECRET_MODE, read_input, write_atomic

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_DAYS = 3650
LEAF_DAYS = 825
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class CertPair:
    """A certificate file and its private key file (both PEM)."""

    cert: Path
    key: Path


def _der(cert: bytes) -> bytes:
    """DER bytes of a certificate given as PEM or DER."""
    if cert.lstrip().startswith(b"-----BEGIN"):
        try:
            return x509.load_pem_x509_certificate(cert).public_bytes(serialization.Encoding.DER)
        except ValueError as exc:
            raise InputError(f"not a PEM certificate: {exc}") from None
    return cert


def _load_cert(cert: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(_der(cert))
    except ValueError as exc:
        raise InputError(f"not a certificate: {exc}") from None


def fingerprint_sha1(cert_der_or_pem: bytes) -> bytes:
    """SHA-1 of the certificate's DER bytes (what Sming's sample pins)."""
    return hashlib.sha1(_der(cert_der_or_pem)).digest()


def fingerprint_sha256(cert: bytes) -> bytes:
    """SHA-256 of the certificate's DER bytes."""
    return hashlib.sha256(_der(cert)).digest()


def spki_sha256(cert: bytes) -> bytes:
    """SHA-256 of the certificate's SubjectPublicKeyInfo (pin that survives renewal)."""
    spki = (
        _load_cert(cert)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return hashlib.sha256(spki).digest()


def sming_fingerprint_initialiser(fp: bytes) -> str:
    """C initialiser for ``MQTT_FINGERPRINT_SHA1`` and friends: ``{0xAB, 0xCD, ...}``."""
    return "{" + ", ".join(f"0x{b:02X}" for b in fp) + "}"


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    raise UsageError(f"unknown key type {key_type!r} (use ec or rsa)")


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(read_input(path, "private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"unreadable private key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InputError(f"unsupported private key type in {path}")
    return key


def _san_entries(names: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in ("localhost", "127.0.0.1", *names):
        name = name.strip()
        if not name or name in seen:
            continue
        seen.add(name)
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def san_names(cert: bytes) -> list[str]:
    """DNS names and IP addresses in a certificate's subjectAltName, as strings."""
    try:
        san = _load_cert(cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


class LabPKI:
    """A folder holding ``ca.crt``/``ca.key``, ``server.crt``/``server.key`` and ``clients/<id>.crt``/``.key``.

    Existing files are reused; missing ones are created. A server certificate that lacks
    one of ``server_names`` is re-issued with the same key (SPKI pins stay valid).
    """

    def __init__(self, folder: Path, server_names: Sequence[str] = (), *, key_type: KeyType = "ec") -> None:
        self.folder = Path(folder)
        self.key_type: KeyType = key_type
        self.server_names = tuple(server_names)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ca = CertPair(self.folder / "ca.crt", self.folder / "ca.key")
        self.server = CertPair(self.folder / "server.crt", self.folder / "server.key")
        self._ensure_ca()
        self._ensure_server()

    # -- CA -----------------------------------------------------------------
    def _ensure_ca(self) -> None:
        if self.ca.cert.exists() and self.ca.key.exists():
            self._ca_cert = _load_cert(self.ca.cert.read_bytes())
            self._ca_key = _load_key(self.ca.key)
            return
        key = _new_key(self.key_type)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "otalab lab CA")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        write_atomic(self.ca.key, _key_pem(key), mode=SECRET_MODE)
        write_atomic(self.ca.cert, cert.public_bytes(serialization.Encoding.PEM))
        self._ca_cert, self._ca_key = cert, key

    def _issue(self, pair: CertPair, common_name: str, key: PrivateKey, *, server: bool, names: Sequence[str]) -> None:
        now = dt.datetime.now(dt.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()), critical=False
            )
        )
        if server:
            san = x509.SubjectAlternativeName(_san_entries(names))
        else:  # RFC 5280 profile verifiers want a SAN on client certificates too
            san = x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"urn:otalab:device:{common_name}")])
        builder = builder.add_extension(san, critical=False)
        cert = builder.sign(self._ca_key, hashes.SHA256())
        if not pair.key.exists():
            write_atomic(pair.key, _key_pem(key), mode=SECRET_MODE)
        write_atomic(pair.cert, cert.public_bytes(serialization.Encoding.PEM))

    # -- server ---------------------------------------------------------------
    def _ensure_server(self) -> None:
        if self.server.cert.exists() and self.server.key.exists():
            have = set(san_names(self.server.cert.read_bytes()))
            wanted = {"localhost", "127.0.0.1", *(n.strip() for n in self.server_names if n.strip())}
            if wanted <= have:
                return
            self.renew_server()
            return
        self.server.key.unlink(missing_ok=True)
        self._issue(self.server, "otalab broker", _new_key(self.key_type), server=True, names=self.server_names)

    def renew_server(self, server_names: Sequence[str] | None = None) -> CertPair:
        """Re-issue the server certificate with the SAME key (SPKI pins stay, SHA-1 pins change)."""
        if server_names is not None:
            self.server_names = tuple(server_names)
        if self.server.cert.exists():
            self.server_names = tuple(dict.fromkeys([*san_names(self.server.cert.read_bytes()), *self.server_names]))
        key = _load_key(self.server.key) if self.server.key.exists() else _new_key(self.key_type)
        self._issue(self.server, "otalab broker", key, server=True, names=self.server_names)
        return self.server

    # -- clients --------------------------------------------------------------
    def client(self, device_id: str) -> CertPair:
        """The client certificate of ``device_id`` (CN = device id), created on first use."""
        if not _DEVICE_ID.match(device_id):
            raise UsageError(f"bad device id {device_id!r} (letters, digits, '.', '_', '-'; at most 64)")
        folder = self.folder / "clients"
        folder.mkdir(exist_ok=True)
        pair = CertPair(folder / f"{device_id}.crt", folder / f"{device_id}.key")
        if not (pair.cert.exists() and pair.key.exists()):
            pair.key.unlink(missing_ok=True)
            self._issue(pair, device_id, _new_key(self.key_type), server=False, names=())
        return pair

    # -- fingerprints ---------------------------------------------------------
    def fingerprints(self) -> dict[str, str]:
        """Fingerprints of the server certificate, in the formats devices take."""
        pem = self.server.cert.read_bytes()
        sha1 = fingerprint_sha1(pem)
        return {
            "sha1": sha1.hex(),
            "sha1_c": sming_fingerprint_initialiser(sha1),
            "sha256": fingerprint_sha256(pem).hex(),
            "spki_sha256": spki_sha256(pem).hex(),
        }

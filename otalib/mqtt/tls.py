"""TLS for MQTT clients: CA, client certificates and certificate pinning.

A pin is checked inside the TLS handshake (an :class:`ssl.SSLSocket` subclass
installed as ``context.sslsocket_class``), so on a mismatch the socket is closed
before the MQTT CONNECT, let alone any firmware byte, is sent. With pins and no
CA a pin match alone authorises the server, as a pinning device does.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from otalib.errors import BrokerError, InputError, UsageError


class PinMismatchError(BrokerError):
    """The server's certificate matches none of the pinned fingerprints."""


@dataclass(frozen=True)
class Pin:
    """One allowed fingerprint: SHA-1 or SHA-256 of the certificate, or SHA-256 of its public key."""

    kind: str
    digest: bytes

    def __str__(self) -> str:
        hexed = ":".join(f"{b:02X}" for b in self.digest)
        return f"spki:{hexed}" if self.kind == "spki" else hexed


def parse_pin(text: str) -> Pin:
    """Parse ``AB:CD:..``, ``abcd..`` or ``spki:..`` (any case); 20 bytes = SHA-1, 32 = SHA-256."""
    raw = text.strip()
    kind = None
    prefix, sep, rest = raw.partition(":")
    if sep and prefix.lower() in ("spki", "sha1", "sha256", "sha-1", "sha-256"):
        kind = prefix.lower().replace("-", "")
        raw = rest
    hexed = raw.replace(":", "").replace(" ", "")
    try:
        digest = bytes.fromhex(hexed)
    except ValueError:
        raise UsageError(f"bad pin {text!r}: not hexadecimal") from None
    sizes = {20: "sha1", 32: "sha256"}
    if len(digest) not in sizes:
        raise UsageError(f"bad pin {text!r}: {len(digest)} bytes (a SHA-1 has 20, a SHA-256 32)")
    if kind is None:
        kind = sizes[len(digest)]
    elif kind == "spki":
        if len(digest) != 32:
            raise UsageError(f"bad pin {text!r}: an spki pin is a SHA-256 (32 bytes)")
    elif kind != sizes[len(digest)]:
        raise UsageError(f"bad pin {text!r}: {len(digest)} bytes is not a {kind}")
    return Pin(kind, digest)


def certificate_digests(der: bytes) -> dict[str, bytes]:
    """The three pinnable digests of a DER certificate: ``sha1``, ``sha256``, ``spki``."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    spki = (
        x509.load_der_x509_certificate(der).public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    )
    return {
        "sha1": hashlib.sha1(der).digest(),
        "sha256": hashlib.sha256(der).digest(),
        "spki": hashlib.sha256(spki).digest(),
    }


def pin_matches(der: bytes | None, pins: tuple[Pin, ...]) -> bool:
    """True if the DER certificate matches one of ``pins``."""
    if not der:
        return False
    digests = certificate_digests(der)
    return any(digests[pin.kind] == pin.digest for pin in pins)


@dataclass(frozen=True)
class TlsOptions:
    """How to authenticate the broker (CA, pins) and ourselves (client certificate)."""

    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    pins: tuple[Pin, ...] = ()
    insecure: bool = False


class TimedSSLSocket(ssl.SSLSocket):
    """SSLSocket that times its handshake and checks the context's pins before returning."""

    otalab_pins: tuple[Pin, ...] = ()
    otalab_handshake_s: float | None = None

    def do_handshake(self, block: bool = False) -> None:
        start = time.monotonic()
        super().do_handshake(block)
        self.otalab_handshake_s = time.monotonic() - start
        if self.otalab_pins:
            der = self.getpeercert(binary_form=True)
            if not pin_matches(der, self.otalab_pins):
                presented = certificate_digests(der) if der else {}
                self.close()
                shown = ", ".join(f"{k} {v.hex()}" for k, v in presented.items() if k != "sha1") or "no certificate"
                raise PinMismatchError(f"TLS: pin mismatch: the server certificate matches no --pin ({shown})")


def _file(path: Path | str, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} not found: {p}")
    return str(p)


def make_ssl_context(opts: TlsOptions) -> ssl.SSLContext:
    """Build the client context for ``opts``; file problems raise :class:`InputError`."""
    if opts.ca is not None:
        cafile = _file(opts.ca, "CA file")
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (ssl.SSLError, OSError) as exc:
            raise InputError(f"CA file {opts.ca} is not a PEM certificate ({exc.__class__.__name__})") from None
    else:
        context = ssl.create_default_context()
    if opts.insecure or (opts.ca is None and opts.pins):
        # --insecure: no verification at all; pins without a CA: the pin check authorises the server.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if opts.client_key is not None and opts.client_cert is None:
        raise UsageError("--client-key needs --client-cert")
    if opts.client_cert is not None:
        certfile = _file(opts.client_cert, "client certificate")
        keyfile = _file(opts.client_key, "client key") if opts.client_key is not None else None
        try:
            context.load_cert_chain(certfile, keyfile)
        except ssl.SSLError as exc:
            raise InputError(f"client certificate/key unusable: {exc.reason or exc}") from None
        except OSError as exc:
            raise InputError(f"client certificate/key unreadable: {exc.strerror or exc}") from None
    socket_class = type("PinnedSSLSocket", (TimedSSLSocket,), {"otalab_pins": tuple(opts.pins)})
    context.sslsocket_class = socket_class
    return context

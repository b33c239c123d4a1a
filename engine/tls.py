"""TLS 1.3 contexts in which both sides present certificates and any Tack device is accepted.

Python's :mod:`ssl` has no certificate-verify callback: a side that asks for the peer's
certificate must also validate it against a trusted CA, and rejects an unknown self-signed
one.  Tack does not trust certificates at all — who a peer *is* comes from its device ID
(the hash of the public key it proved it holds in the TLS 1.3 handshake), and whether it may
sync comes from the capability proof bound to both certificates (:mod:`engine.auth`).  So
every device presents a leaf certificate for its own device key issued by a **public,
well-known "Tack" CA** whose key is derived from a published constant: anyone can mint such
a certificate, and that is the point — chain validation then accepts every Tack device,
while TLS still proves possession of the device key (CertificateVerify) and encrypts
everything.  This CA is not a security boundary and must never be treated as one.

The leaf certificate is issued afresh at each start (it is cheap) and written next to the
identity with mode 0600 because :meth:`ssl.SSLContext.load_cert_chain` reads files.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from engine.identity import Identity

PUBLIC_CA_SEED = hashlib.sha256(b"tack/v1/public-ca: not a secret, see engine/tls.py").digest()
_EPOCH = datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC)
_FOREVER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)


def _public_ca() -> tuple[Ed25519PrivateKey, x509.Certificate]:
    key = Ed25519PrivateKey.from_private_bytes(PUBLIC_CA_SEED)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tack public ca")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(_EPOCH)
        .not_valid_after(_FOREVER)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .sign(key, None)
    )
    return key, cert


def public_ca_pem() -> bytes:
    return _public_ca()[1].public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class TlsMaterial:
    """Paths for ``load_cert_chain`` and the DER of the leaf we present."""

    cert_path: Path
    key_path: Path
    leaf_der: bytes


def issue_leaf(identity: Identity) -> TlsMaterial:
    """Issue this device's TLS leaf certificate (for its own key) from the public CA."""
    ca_key, ca_cert = _public_ca()
    device_key = serialization.load_pem_private_key(identity.key_path.read_bytes(), None)
    if not isinstance(device_key, Ed25519PrivateKey):
        raise ValueError("device key is not Ed25519")
    now = datetime.datetime.now(datetime.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tack device")]))
        .issuer_name(ca_cert.subject)
        .public_key(device_key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(_FOREVER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, None)
    )
    path = identity.key_path.parent / f"tls-leaf-{os.getpid()}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(leaf.public_bytes(serialization.Encoding.PEM))
    return TlsMaterial(path, identity.key_path, leaf.public_bytes(serialization.Encoding.DER))


def _context(purpose: int, material: TlsMaterial) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(material.cert_path, material.key_path)
    ctx.load_verify_locations(cadata=public_ca_pem().decode())
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def server_context(material: TlsMaterial) -> ssl.SSLContext:
    return _context(ssl.PROTOCOL_TLS_SERVER, material)


def client_context(material: TlsMaterial) -> ssl.SSLContext:
    ctx = _context(ssl.PROTOCOL_TLS_CLIENT, material)
    ctx.check_hostname = False  # peers are named by device ID, not host name
    return ctx

"""This device's identity: its key pair, its self-signed certificate and its device ID.

Owns three files in the Tack home directory (``$TACK_HOME``, else ``~/.config/tack``):

``device-key.pem``
    The private key: Ed25519, unencrypted PKCS#8 PEM, mode 0600.
``device-cert.pem``
    A self-signed X.509 certificate for that key (CN ``tack``, valid until 9999-12-31, EKU
    serverAuth and clientAuth), mode 0600.  It exists so that the key can be used in a standard
    TLS 1.3 handshake (stdlib :mod:`ssl`), in which both sides present certificates.
``device.json``
    ``{"name": ...}``, the device's human name (default: the host name), mode 0600.

Invariants:

- The private key never leaves ``device-key.pem``.  It is read only to check that it matches
  the certificate (and to sign a replacement certificate if that file is missing); it is not
  kept in :class:`Identity`, not returned and not logged.  TLS code loads it from
  :attr:`Identity.key_path`.
- The home directory is created with mode 0700 and every file with mode 0600.  Files are
  written atomically: temporary file in the same directory, fsync, link/rename into place,
  directory fsync.  The key and certificate are published with ``os.link``, which never
  replaces an existing file, so two processes starting at once agree on one key.
- An existing identity is never replaced.  A corrupt or unreadable file raises
  :class:`IdentityError` naming that file; a certificate without its key raises too, because a
  new key would be a new device ID.  The one repair made is re-signing a *missing* certificate
  from an existing key (a crash between the two first writes), which keeps the device ID.

Device ID scheme (Syncthing's textual format, see ``lib/protocol/deviceid.go`` there):

1. ``digest = SHA-256(DER SubjectPublicKeyInfo of the certificate)``, 32 bytes.  Syncthing
   hashes the whole certificate; Tack hashes only the public key, so the ID names the key and
   survives re-issuing the certificate.
2. ``s = base32(digest)`` with the RFC 4648 alphabet ``A-Z2-7`` and the ``====`` padding
   stripped: 52 characters.
3. ``s`` is cut into 4 pieces of 13 characters and each piece gets one check character,
   ``luhn32(piece)``, appended: 56 characters.  ``luhn32`` is Syncthing's mod-32 Luhn variant:
   with character values ``A=0 … Z=25, 2=26 … 7=31`` and a factor alternating 1, 2, 1, 2, …
   from the left, ``sum += (f*v) // 32 + (f*v) % 32`` per character, and the check value is
   ``(32 - sum % 32) % 32``.  It catches any single mistyped character.
4. The 56 characters are written in 8 groups of 7, joined by ``-``, e.g.
   ``P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2``.

:func:`parse_device_id` accepts any case, dashes and white space, and reads ``0``, ``1`` and
``8`` (not in the alphabet) as ``O``, ``I`` and ``B``, as Syncthing does; it always checks the
four check characters.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import errno
import hashlib
import json
import os
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CERT_FILE",
    "KEY_FILE",
    "META_FILE",
    "Identity",
    "IdentityError",
    "device_id_of_cert",
    "format_device_id",
    "load_or_create",
    "parse_device_id",
    "tack_home",
]

KEY_FILE = "device-key.pem"
CERT_FILE = "device-cert.pem"
META_FILE = "device.json"

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_VALUE = {c: i for i, c in enumerate(_ALPHABET)}
_PIECE = 13  # base32 characters per check character
_GROUP = 7  # characters per dash-separated group
_ID_CHARS = 4 * (_PIECE + 1)  # 56
_TYPOS = str.maketrans({"0": "O", "1": "I", "8": "B"})
_NOT_AFTER = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC)

_PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


class IdentityError(Exception):
    """The identity files cannot be read, parsed or written; the message names the file."""


def tack_home(env: Mapping[str, str] = os.environ) -> Path:
    """Tack's per-user directory: ``$TACK_HOME`` if set and non-empty, else ``~/.config/tack``."""
    explicit = env.get("TACK_HOME")
    if explicit:
        return Path(explicit).expanduser()
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".config" / "tack"


@dataclass(frozen=True)
class Identity:
    """This device as others see it.  Holds no private key material (only :attr:`key_path`)."""

    device_id: str
    name: str
    cert_path: Path
    key_path: Path
    cert_pem: bytes

    def short_id(self) -> str:
        """The first group of the device ID (7 characters), for logs."""
        return self.device_id.split("-", 1)[0]

    @property
    def cert_der(self) -> bytes:
        """The certificate in DER, as the peer sees it in ``getpeercert(binary_form=True)``."""
        return x509.load_pem_x509_certificate(self.cert_pem).public_bytes(
            serialization.Encoding.DER
        )


# --- device ID -------------------------------------------------------------------------------


def _luhn32(piece: str) -> str:
    factor, total = 1, 0
    for char in piece:
        addend = factor * _VALUE[char]
        factor = 3 - factor
        total += addend // 32 + addend % 32
    return _ALPHABET[(32 - total % 32) % 32]


def format_device_id(digest: bytes) -> str:
    """The printed device ID for a 32-byte SHA-256 ``digest`` (scheme in the module docstring)."""
    if len(digest) != 32:
        raise ValueError(f"a device id digest is 32 bytes, not {len(digest)}")
    s = base64.b32encode(digest).decode("ascii").rstrip("=")
    pieces = (s[i : i + _PIECE] for i in range(0, len(s), _PIECE))
    checked = "".join(p + _luhn32(p) for p in pieces)
    return "-".join(checked[i : i + _GROUP] for i in range(0, len(checked), _GROUP))


def _spki_der(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def device_id_of_cert(der_cert: bytes) -> str:
    """The device ID of a DER certificate, e.g. ``ssl_sock.getpeercert(binary_form=True)``.

    The certificate is untrusted input: anything that is not a DER X.509 certificate with a
    public key ``cryptography`` understands raises :class:`ValueError`.
    """
    try:
        spki = _spki_der(x509.load_der_x509_certificate(der_cert).public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise ValueError(f"not a usable DER X.509 certificate: {e}") from e
    return format_device_id(hashlib.sha256(spki).digest())


def parse_device_id(text: str) -> str:
    """Normalise a device ID typed or pasted by a person; return it in canonical form.

    Ignores case, dashes and white space, reads ``0``/``1``/``8`` as ``O``/``I``/``B``, and
    raises :class:`ValueError` on a wrong length, a character outside base32 or a wrong check
    character (a typo).
    """
    compact = "".join(text.split()).replace("-", "").upper().translate(_TYPOS)
    if len(compact) != _ID_CHARS:
        raise ValueError(
            f"a device id has {_ID_CHARS} letters and digits (8 groups of 7), "
            f"not {len(compact)}: {text!r}"
        )
    bad = sorted({c for c in compact if c not in _VALUE})
    if bad:
        raise ValueError(f"device id {text!r} has characters outside A-Z and 2-7: {bad}")
    pieces = [compact[i : i + _PIECE + 1] for i in range(0, _ID_CHARS, _PIECE + 1)]
    for n, piece in enumerate(pieces, 1):
        if _luhn32(piece[:-1]) != piece[-1]:
            raise ValueError(f"device id {text!r} fails check character {n} of 4 (a typo?)")
    digest = base64.b32decode("".join(p[:-1] for p in pieces) + "====")
    return format_device_id(digest)


# --- files -----------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # platforms that cannot open a directory (Windows) have nothing to fsync
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes, *, exclusive: bool) -> bool:
    """Atomically write ``data`` to ``path`` with mode 0600.

    With ``exclusive`` an existing file is left alone and False is returned.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), 0o600)
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if exclusive:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                except OSError as e:
                    # file systems without hard links: best effort no-overwrite
                    if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                        raise
                    if path.exists():
                        return False
                    os.replace(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        _fsync_dir(path.parent)
    except OSError as e:
        raise IdentityError(f"cannot write {path}: {e.strerror or e}") from e
    return True


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise IdentityError(f"cannot read {path}: {e.strerror or e}") from e


def _ensure_home(home: Path) -> None:
    try:
        home.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not home.is_dir():
            raise IdentityError(f"Tack home {home} exists and is not a directory") from None
        return
    except OSError as e:
        raise IdentityError(f"cannot create Tack home {home}: {e.strerror or e}") from e
    try:
        os.chmod(home, 0o700)  # in case the umask took bits away from mkdir's mode
        _fsync_dir(home.parent)
    except OSError as e:
        raise IdentityError(f"cannot set up Tack home {home}: {e.strerror or e}") from e


def _load_key(path: Path) -> _PrivateKey | None:
    data = _read(path)
    if data is None:
        return None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise IdentityError(f"{path} is not a readable PEM private key ({e})") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{path} holds a {type(key).__name__}; Tack expects Ed25519 or ECDSA")
    return key


def _load_cert(path: Path) -> x509.Certificate | None:
    data = _read(path)
    if data is None:
        return None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as e:
        raise IdentityError(f"{path} is not a readable PEM certificate ({e})") from e


def _make_cert(key: _PrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tack")])
    public = key.public_key()
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))  # tolerate clock skew
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def _load_name(path: Path) -> dict[str, object] | None:
    data = _read(path)
    if data is None:
        return None
    try:
        meta = json.loads(data)
    except ValueError as e:
        raise IdentityError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
        raise IdentityError(f'{path} must be a JSON object with a string "name"')
    return meta


def load_or_create(home: Path, name: str | None = None) -> Identity:
    """Load this device's identity from ``home``, creating it on first use.

    ``name`` sets the device's human name (stored in ``device.json``, replacing the stored
    name); without it the stored name is kept, or the host name is used for a new device.
    Raises :class:`IdentityError` if an identity file is unreadable or corrupt, or if the
    certificate is there without its key (the device ID would otherwise change).
    """
    if name is not None and not name.strip():
        raise ValueError("a device name must not be empty")
    home = Path(home)
    _ensure_home(home)
    key_path, cert_path, meta_path = home / KEY_FILE, home / CERT_FILE, home / META_FILE

    key = _load_key(key_path)
    if key is None:
        if os.path.lexists(cert_path):
            raise IdentityError(
                f"{cert_path} exists but its key {key_path} is missing; refusing to make a new "
                "key, which would give this device a new id. Restore the key, or move both "
                "files away to start over as a new device."
            )
        new_key = ed25519.Ed25519PrivateKey.generate()
        pem = new_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_file(key_path, pem, exclusive=True)  # if another process won, use its key
        key = _load_key(key_path)
        if key is None:
            raise IdentityError(f"{key_path} vanished while it was being created")

    cert = _load_cert(cert_path)
    if cert is None:
        made = _make_cert(key).public_bytes(serialization.Encoding.PEM)
        _write_file(cert_path, made, exclusive=True)
        cert = _load_cert(cert_path)
        if cert is None:
            raise IdentityError(f"{cert_path} vanished while it was being created")

    try:
        cert_spki = _spki_der(cert.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise IdentityError(f"{cert_path} has an unusable public key ({e})") from e
    if cert_spki != _spki_der(key.public_key()):
        raise IdentityError(f"{cert_path} does not belong to the key in {key_path}")

    meta = _load_name(meta_path)
    stored = str(meta["name"]) if meta is not None else None
    chosen = name if name is not None else (stored or socket.gethostname() or "tack")
    if meta is None or chosen != stored:
        new_meta = dict(meta or {})
        new_meta["name"] = chosen
        text = json.dumps(new_meta, indent=2, sort_keys=True) + "\n"
        _write_file(meta_path, text.encode("utf-8"), exclusive=False)

    return Identity(
        device_id=format_device_id(hashlib.sha256(cert_spki).digest()),
        name=chosen,
        cert_path=cert_path,
        key_path=key_path,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
    )

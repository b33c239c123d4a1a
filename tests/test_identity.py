"""Device identity: files and modes, the device ID scheme, and a real mutual-TLS 1.3 handshake."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import ssl
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from engine.identity import (
    CERT_FILE,
    KEY_FILE,
    META_FILE,
    Identity,
    IdentityError,
    device_id_of_cert,
    format_device_id,
    load_or_create,
    parse_device_id,
    tack_home,
)

ID_SHAPE = re.compile(r"^[A-Z2-7]{7}(-[A-Z2-7]{7}){7}$")
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"

# Known-answer vector from Syncthing's lib/protocol/deviceid_test.go: the 52 base32 characters
# of a digest and its printed form with check characters.
ST_RAW = "P56IOI7MZJNU2IQGDREYDM2MGTMGL3BXNPQ6W5BTBBZ4TJXZWICQ"
ST_FORMATTED = "P56IOI7-MZJNU2Y-IQGDREY-DM2MGTI-MGL3BXN-PQ6W5BM-TBBZ4TJ-XZWICQ2"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- home and files --------------------------------------------------------------------------


def test_tack_home_prefers_env_then_config_dir(tmp_path: Path) -> None:
    assert tack_home({"TACK_HOME": str(tmp_path / "t")}) == tmp_path / "t"
    assert tack_home({"TACK_HOME": "", "HOME": str(tmp_path)}) == tmp_path / ".config" / "tack"
    assert tack_home({"HOME": str(tmp_path)}) == tmp_path / ".config" / "tack"


def test_creation_is_idempotent_and_modes_are_private(tmp_path: Path) -> None:
    home = tmp_path / "a" / "tack"
    first = load_or_create(home)
    files = {n: (home / n).read_bytes() for n in (KEY_FILE, CERT_FILE, META_FILE)}
    second = load_or_create(home)

    assert first == second
    assert {n: (home / n).read_bytes() for n in files} == files
    assert mode(home) == 0o700
    assert mode(home / KEY_FILE) == 0o600
    assert mode(home / CERT_FILE) == 0o600
    assert sorted(p.name for p in home.iterdir()) == sorted(files)  # no temporary files left
    assert first.key_path == home / KEY_FILE and first.cert_path == home / CERT_FILE


def test_identity_shape_and_certificate(tmp_path: Path) -> None:
    ident = load_or_create(tmp_path / "h")
    assert ID_SHAPE.match(ident.device_id)
    assert ident.short_id() == ident.device_id[:7]
    assert ident.name == socket.gethostname()
    assert json.loads((tmp_path / "h" / META_FILE).read_text()) == {"name": ident.name}

    cert = x509.load_pem_x509_certificate(ident.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "tack"
    assert cert.issuer == cert.subject
    assert isinstance(cert.public_key(), ed25519.Ed25519PublicKey)
    assert cert.not_valid_after_utc.year == 9999
    assert b"PRIVATE" not in repr(ident).encode()


def test_distinct_homes_give_distinct_ids(tmp_path: Path) -> None:
    ids = {load_or_create(tmp_path / str(i)).device_id for i in range(3)}
    assert len(ids) == 3


def test_name_is_stored_and_can_be_changed(tmp_path: Path) -> None:
    home = tmp_path / "h"
    assert load_or_create(home, name="laptop").name == "laptop"
    assert load_or_create(home).name == "laptop"
    renamed = load_or_create(home, name="desk")
    assert renamed.name == "desk"
    assert load_or_create(home).name == "desk"
    assert load_or_create(home).device_id == renamed.device_id
    with pytest.raises(ValueError):
        load_or_create(home, name="  ")


def test_id_is_the_hash_of_the_public_key(tmp_path: Path) -> None:
    ident = load_or_create(tmp_path / "h")
    assert device_id_of_cert(ident.cert_der) == ident.device_id
    spki = (
        x509.load_pem_x509_certificate(ident.cert_pem)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    assert ident.device_id == format_device_id(hashlib.sha256(spki).digest())


def test_missing_certificate_is_reissued_with_the_same_id(tmp_path: Path) -> None:
    home = tmp_path / "h"
    ident = load_or_create(home)
    (home / CERT_FILE).unlink()
    again = load_or_create(home)
    assert again.device_id == ident.device_id
    assert mode(home / CERT_FILE) == 0o600


@pytest.mark.parametrize("victim", [KEY_FILE, CERT_FILE, META_FILE])
def test_corrupt_file_raises_and_is_not_replaced(tmp_path: Path, victim: str) -> None:
    home = tmp_path / "h"
    load_or_create(home)
    (home / victim).write_bytes(b"-----BEGIN garbage\n")
    with pytest.raises(IdentityError, match=re.escape(str(home / victim))):
        load_or_create(home)
    assert (home / victim).read_bytes() == b"-----BEGIN garbage\n"


def test_unreadable_key_raises_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / KEY_FILE).mkdir()  # unreadable as a file, even for root
    with pytest.raises(IdentityError, match=re.escape(str(home / KEY_FILE))):
        load_or_create(home)


def test_certificate_without_its_key_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "h"
    load_or_create(home)
    (home / KEY_FILE).unlink()
    with pytest.raises(IdentityError, match="missing"):
        load_or_create(home)
    assert not (home / KEY_FILE).exists()


def test_certificate_of_another_key_is_refused(tmp_path: Path) -> None:
    load_or_create(tmp_path / "a")
    load_or_create(tmp_path / "b")
    (tmp_path / "a" / CERT_FILE).write_bytes((tmp_path / "b" / CERT_FILE).read_bytes())
    with pytest.raises(IdentityError, match="does not belong"):
        load_or_create(tmp_path / "a")


# --- device ID text --------------------------------------------------------------------------


def test_format_matches_syncthing_vector() -> None:
    digest = base64.b32decode(ST_RAW + "====")
    assert format_device_id(digest) == ST_FORMATTED
    with pytest.raises(ValueError):
        format_device_id(digest[:31])


@pytest.mark.parametrize(
    "typed",
    [
        ST_FORMATTED,
        ST_FORMATTED.lower(),
        ST_FORMATTED.replace("-", ""),
        ST_FORMATTED.replace("-", " "),
        "  " + ST_FORMATTED.replace("-", "\n") + "\t",
        "P56IOI7MZJNU2YIQGDREYDM2MGTIMGL3BXNPQ6W5BMTBBZ4TJXZWICQ2",
        "p561017mzjnu2yiqgdreydm2mgtimgl3bxnpq6w5bmt88z4tjxzwicq2",  # 0/1/8 for O/I/B
    ],
)
def test_parse_normalises(typed: str) -> None:
    assert parse_device_id(typed) == ST_FORMATTED


def test_parse_round_trips_real_ids(tmp_path: Path) -> None:
    ident = load_or_create(tmp_path / "h")
    assert parse_device_id(ident.device_id) == ident.device_id
    assert parse_device_id(ident.device_id.lower().replace("-", " ")) == ident.device_id


def test_parse_rejects_every_one_character_typo() -> None:
    compact = ST_FORMATTED.replace("-", "")
    for i, original in enumerate(compact):
        for other in ALPHABET:
            if other == original:
                continue
            typo = compact[:i] + other + compact[i + 1 :]
            with pytest.raises(ValueError, match="check character"):
                parse_device_id(typo)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ST_RAW,  # Syncthing's old form without check characters
        ST_FORMATTED + "A",
        ST_FORMATTED[:-1] + "9",
        ST_FORMATTED[:-1] + "!",
    ],
)
def test_parse_rejects_malformed(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_device_id(bad)


def test_device_id_of_garbage_is_value_error() -> None:
    with pytest.raises(ValueError):
        device_id_of_cert(b"\x30\x03\x02\x01\x00")


# --- real TLS 1.3 on loopback ----------------------------------------------------------------


def tls_context(server: bool, own: Identity, trusted: Identity) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(own.cert_path, own.key_path)
    ctx.load_verify_locations(cadata=trusted.cert_pem.decode("ascii"))  # trust only the peer
    return ctx


Outcome = tuple[str, str | None] | BaseException


def handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[Outcome, Outcome]:
    """Run both ends over a socket pair, each in a thread.

    Each end's outcome is (the peer's device id, TLS version), or the exception it raised.
    """
    server_raw, client_raw = socket.socketpair()
    for s in (server_raw, client_raw):
        s.settimeout(10)

    def serve() -> tuple[str, str | None]:
        try:
            with server_ctx.wrap_socket(server_raw, server_side=True) as tls:
                peer = tls.getpeercert(binary_form=True)
                assert peer is not None
                assert tls.recv(4) == b"ping"
                tls.sendall(b"pong")
                return device_id_of_cert(peer), tls.version()
        finally:
            server_raw.close()

    def connect() -> tuple[str, str | None]:
        try:
            with client_ctx.wrap_socket(client_raw) as tls:
                peer = tls.getpeercert(binary_form=True)
                assert peer is not None
                tls.sendall(b"ping")
                assert tls.recv(4) == b"pong"
                return device_id_of_cert(peer), tls.version()
        finally:
            client_raw.close()

    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = pool.submit(serve), pool.submit(connect)
        outcomes: list[Outcome] = []
        for future in futures:
            error = future.exception(timeout=15)
            outcomes.append(error if error is not None else future.result())
    return outcomes[0], outcomes[1]


@pytest.mark.timeout(60)
def test_mutual_tls13_handshake_reveals_device_ids(tmp_path: Path) -> None:
    alice = load_or_create(tmp_path / "alice")
    bob = load_or_create(tmp_path / "bob")
    server, client = handshake(tls_context(True, alice, bob), tls_context(False, bob, alice))
    assert server == (bob.device_id, "TLSv1.3")
    assert client == (alice.device_id, "TLSv1.3")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("stranger_is_server", [True, False])
def test_handshake_refuses_an_untrusted_certificate(
    tmp_path: Path, stranger_is_server: bool
) -> None:
    alice = load_or_create(tmp_path / "alice")
    bob = load_or_create(tmp_path / "bob")
    mallory = load_or_create(tmp_path / "mallory")
    if stranger_is_server:  # bob expects alice but mallory answers
        server, client = handshake(tls_context(True, mallory, bob), tls_context(False, bob, alice))
        verifier, other = client, server
    else:  # alice expects bob but mallory connects
        server, client = handshake(
            tls_context(True, alice, bob), tls_context(False, mallory, alice)
        )
        verifier, other = server, client
    assert isinstance(verifier, ssl.SSLCertVerificationError), verifier
    assert isinstance(other, BaseException), other  # the alert (or close) reaches the other end

"""The capability proof: how two devices show each other which spaces they hold.  Sans-I/O.

Pure functions over bytes: no sockets, no clock, no randomness except :func:`new_nonce`.
The session code feeds them what it saw on the wire (:mod:`engine.wire`) and in TLS.

Protocol
--------
It runs inside a TLS 1.3 connection in which both sides presented a certificate
(:mod:`engine.identity`); neither certificate is trusted by itself.

1. Each side sends ``Hello(version, nonce, name)`` with a fresh 32-byte random nonce.
2. Each side computes the same :func:`transcript` from both nonces and both certificates as
   seen in TLS (its own, and ``getpeercert(binary_form=True)``).
3. The dialer sends ``Offer(proofs)``: one ``make_proof(keys, OFFER, transcript)`` per space
   it wants to sync.
4. The listener runs :func:`match_offer` on each proof against all of its spaces and sends
   ``Accept(proofs)``: ``make_proof(keys, ACCEPT, transcript)`` for each offer it recognised,
   in the offer's order.  An offer it does not recognise is left out -- exactly as if it had
   not been made, so an empty ``Accept`` says nothing.
5. The dialer runs :func:`match_accept` on each answer against the spaces it offered.  A space
   is synced only when both sides have proven it; each side's :data:`Access` is what *its*
   proof showed, and updates from a side with ``"read"`` access are refused.

A proof is ``mac || sig``::

    mac = HMAC-SHA256(read_key, label || transcript)                  32 bytes, always
    sig = Ed25519-sign(space signing key, label || transcript || mac)  64 bytes, writers only

``read_key`` and the signing key are derived from the space's write secret
(:mod:`engine.sharelink`); a read-only replica has ``read_key`` and the public ``verify_key``
only.  :func:`check_proof` answers ``None`` (no proof), ``"read"`` (right MAC, no signature)
or ``"write"`` (right MAC and a valid signature).  A wrong MAC, a signature that does not
verify, or any other length is ``None``: a malformed proof is never downgraded to "read".

Threat model
------------
The network is hostile: anyone can connect, listen in, drop, replay and reorder, and terminate
TLS with a certificate of his own (certificates are self-signed, so TLS alone cannot tell an
impostor from a peer).  Peers may hold a read link and want to write.  Secrets of a space are
held only by devices it was shared with; their keys and certificates' private keys are not
stolen.  Out of scope: denial of service by dropping traffic, and a friend who leaks a link.

Why the attacks fail
--------------------
Replay
    Both nonces are in the transcript, and each side picks its own fresh nonce, so a proof
    from an earlier session is over a transcript that this session never has.
Relay (man in the middle)
    The transcript binds the SHA-256 of both certificates presented in TLS.  When Alice dials
    Mallory believing him to be Bob, her transcript names her certificate and Mallory's; when
    Mallory passes her proof on to Bob, Bob's transcript names Mallory's certificate and
    Bob's.  Mallory can forward the nonces, but to make the certificates agree he would have to
    present Alice's certificate in TLS, which needs her private key.  After the proofs, the
    traffic stays inside the TLS channel whose certificates they name.
    This holds for a reader in the middle too: knowing ``read_key`` he can make his own MAC,
    but a writer's signature covers a transcript naming the writer's certificate.
Reflection
    The dialer's and listener's proofs carry different labels (:data:`OFFER`,
    :data:`ACCEPT`), so an offer sent back as an answer does not check.
Writing with a read link
    "write" needs an Ed25519 signature under the space key.  The signing seed is derived from
    the write secret by HKDF, which a reader cannot invert; a reader's own MAC with a signature
    from another session (or made up) is rejected outright.
Probing
    A device without a space's secret cannot make a proof that matches it, and the listener
    answers such a proof exactly as no proof (it is left out of ``Accept``), computing a MAC
    for every one of its spaces whatever the outcome, so the answer and its timing do not say
    whether the listener holds the space.  HMAC outputs reveal nothing of the key, so a
    listener without the secret learns nothing about which spaces a dialer offered.

What is not hidden: a listener sees how many proofs a dialer offers, and from their lengths
(32 or 96 bytes) for how many it claims write access.  A dialer that minds can add decoy
proofs of 32 random bytes, which match nothing.  A device that connects to itself (its own
address, or a TCP relay back to it) simply proves its spaces to itself; the session layer
should drop a connection whose peer certificate has its own device ID.  A writer's proof cut
to its first 32 bytes is a valid "read" proof for the same session: a peer can always claim
less than it holds, never more.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from typing import Literal

from engine.sharelink import SpaceKeys

__all__ = [
    "ACCEPT",
    "MAC_BYTES",
    "NONCE_BYTES",
    "OFFER",
    "READ_PROOF_BYTES",
    "SIG_BYTES",
    "TRANSCRIPT_DOMAIN",
    "WRITE_PROOF_BYTES",
    "Access",
    "check_proof",
    "make_proof",
    "match_accept",
    "match_offer",
    "match_proof",
    "new_nonce",
    "transcript",
]

Access = Literal["read", "write"]

OFFER = b"tack/v1/offer"
ACCEPT = b"tack/v1/accept"
_LABELS = (OFFER, ACCEPT)
TRANSCRIPT_DOMAIN = b"tack/v1/transcript"

NONCE_BYTES = 32
MAC_BYTES = 32
SIG_BYTES = 64
READ_PROOF_BYTES = MAC_BYTES
WRITE_PROOF_BYTES = MAC_BYTES + SIG_BYTES


def new_nonce() -> bytes:
    """A fresh random nonce for ``Hello``."""
    return secrets.token_bytes(NONCE_BYTES)


def _field(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def transcript(
    dialer_nonce: bytes, listener_nonce: bytes, dialer_cert: bytes, listener_cert: bytes
) -> bytes:
    """What both proofs of one session are bound to.

    ``TRANSCRIPT_DOMAIN``, the dialer's nonce, the listener's nonce, SHA-256 of the dialer's
    DER certificate and SHA-256 of the listener's, each preceded by its length as 4 big-endian
    bytes.  Raises :class:`ValueError` if a nonce is not 32 bytes or a certificate is empty
    (the caller's inputs, already checked by the wire codec and TLS).
    """
    for name, nonce in (("dialer", dialer_nonce), ("listener", listener_nonce)):
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"the {name} nonce must be {NONCE_BYTES} bytes, not {len(nonce)}")
    if not dialer_cert or not listener_cert:
        raise ValueError("both certificates are needed to bind a transcript")
    return b"".join(
        _field(part)
        for part in (
            TRANSCRIPT_DOMAIN,
            bytes(dialer_nonce),
            bytes(listener_nonce),
            hashlib.sha256(dialer_cert).digest(),
            hashlib.sha256(listener_cert).digest(),
        )
    )


def _check_label(label: bytes) -> bytes:
    if label not in _LABELS:
        raise ValueError(f"unknown proof label {label!r}; use auth.OFFER or auth.ACCEPT")
    return label


def _mac(keys: SpaceKeys, signed: bytes) -> bytes:
    return hmac.new(keys.read_key, signed, hashlib.sha256).digest()


def make_proof(keys: SpaceKeys, label: bytes, transcript: bytes) -> bytes:
    """This replica's proof for one space: 32 bytes, or 96 when it holds the write secret."""
    signed = _check_label(label) + transcript
    mac = _mac(keys, signed)
    if not keys.can_write:
        return mac
    return mac + keys.sign(signed + mac)


def _access(proof: bytes, keys: SpaceKeys, signed: bytes) -> Access | None:
    """The access a proof whose MAC already matched shows; None for a bad signature."""
    if len(proof) == READ_PROOF_BYTES:
        return "read"
    mac, sig = proof[:MAC_BYTES], proof[MAC_BYTES:]
    return "write" if keys.verify(signed + mac, sig) else None


def _as_bytes(proof: object) -> bytes | None:
    if not isinstance(proof, bytes | bytearray | memoryview):
        return None
    data = bytes(proof)
    return data if len(data) in (READ_PROOF_BYTES, WRITE_PROOF_BYTES) else None


def check_proof(proof: bytes, keys: SpaceKeys, label: bytes, transcript: bytes) -> Access | None:
    """The access ``proof`` shows for the space of ``keys`` in this session, or None.

    Never raises on any ``proof``; raises :class:`ValueError` only for an unknown ``label``
    (a programming error).
    """
    signed = _check_label(label) + transcript
    data = _as_bytes(proof)
    if data is None:
        return None
    if not hmac.compare_digest(data[:MAC_BYTES], _mac(keys, signed)):
        return None
    return _access(data, keys, signed)


def match_proof(
    proof: bytes, spaces: Sequence[SpaceKeys], label: bytes, transcript: bytes
) -> tuple[SpaceKeys, Access] | None:
    """Which of ``spaces`` (if any) ``proof`` is for, and the access it shows.

    Computes and compares the MAC of every space whatever the outcome, so the time taken
    depends on the number of spaces, not on which (if any) matched.  Only a matching proof
    goes on to a signature check, which needs the space's read key to reach.
    """
    signed = _check_label(label) + transcript
    data = _as_bytes(proof)
    if data is None:
        return None
    given = data[:MAC_BYTES]
    found: SpaceKeys | None = None
    for keys in spaces:
        ok = hmac.compare_digest(given, _mac(keys, signed))
        if ok and found is None:
            found = keys
    if found is None:
        return None
    access = _access(data, found, signed)
    return None if access is None else (found, access)


def match_offer(
    proof: bytes, spaces: Sequence[SpaceKeys], transcript: bytes
) -> tuple[SpaceKeys, Access] | None:
    """Listener side: the space an ``Offer`` proof names among ours, and the dialer's access."""
    return match_proof(proof, spaces, OFFER, transcript)


def match_accept(
    proof: bytes, offered: Sequence[SpaceKeys], transcript: bytes
) -> tuple[SpaceKeys, Access] | None:
    """Dialer side: which offered space an ``Accept`` proof answers, and the listener's access."""
    return match_proof(proof, offered, ACCEPT, transcript)

"""The capability proof: honest sessions pass with the right access; replay, relay, reflection,
forgery and probing fail; arbitrary bytes never raise."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.auth import (
    ACCEPT,
    OFFER,
    TRANSCRIPT_DOMAIN,
    Access,
    check_proof,
    make_proof,
    match_accept,
    match_offer,
    new_nonce,
    transcript,
)
from engine.identity import load_or_create
from engine.sharelink import SpaceKeys, new_space_keys, read_only

# --- fixtures ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Devices:
    alice: bytes  # DER certificates, as each side sees them in TLS
    bob: bytes
    mallory: bytes


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Devices:
    root: Path = tmp_path_factory.mktemp("devices")
    der = {n: load_or_create(root / n, name=n).cert_der for n in ("alice", "bob", "mallory")}
    assert len(set(der.values())) == 3
    return Devices(der["alice"], der["bob"], der["mallory"])


@pytest.fixture(scope="module")
def space() -> SpaceKeys:
    return new_space_keys()


def session(dialer_cert: bytes, listener_cert: bytes) -> bytes:
    """The transcript of a fresh session (both sides compute the same bytes)."""
    return transcript(new_nonce(), new_nonce(), dialer_cert, listener_cert)


def handshake(
    dialer: list[SpaceKeys], listener: list[SpaceKeys], t: bytes
) -> tuple[list[tuple[SpaceKeys, Access]], list[tuple[SpaceKeys, Access]]]:
    """Run Offer/Accept as the session layer will: what each side learned about the other."""
    offers = [make_proof(k, OFFER, t) for k in dialer]
    recognised = [m for p in offers if (m := match_offer(p, listener, t)) is not None]
    accepts = [make_proof(k, ACCEPT, t) for k, _ in recognised]
    answered = [m for p in accepts if (m := match_accept(p, dialer, t)) is not None]
    return recognised, answered


# --- transcript -------------------------------------------------------------------------------


def test_transcript_binds_every_input(certs: Devices) -> None:
    n1, n2 = new_nonce(), new_nonce()
    base = transcript(n1, n2, certs.alice, certs.bob)
    assert base.startswith(len(TRANSCRIPT_DOMAIN).to_bytes(4, "big") + TRANSCRIPT_DOMAIN)
    assert hashlib.sha256(certs.alice).digest() in base
    assert hashlib.sha256(certs.bob).digest() in base
    assert transcript(n1, n2, certs.alice, certs.bob) == base
    variants = {
        transcript(n2, n1, certs.alice, certs.bob),
        transcript(n1, n2, certs.bob, certs.alice),
        transcript(new_nonce(), n2, certs.alice, certs.bob),
        transcript(n1, new_nonce(), certs.alice, certs.bob),
        transcript(n1, n2, certs.mallory, certs.bob),
        transcript(n1, n2, certs.alice, certs.mallory),
    }
    assert base not in variants and len(variants) == 6


def test_transcript_refuses_bad_inputs(certs: Devices) -> None:
    with pytest.raises(ValueError, match="nonce"):
        transcript(b"short", new_nonce(), certs.alice, certs.bob)
    with pytest.raises(ValueError, match="nonce"):
        transcript(new_nonce(), bytes(33), certs.alice, certs.bob)
    with pytest.raises(ValueError, match="certificate"):
        transcript(new_nonce(), new_nonce(), b"", certs.bob)


def test_unknown_label_is_a_programming_error(space: SpaceKeys, certs: Devices) -> None:
    t = session(certs.alice, certs.bob)
    with pytest.raises(ValueError, match="label"):
        make_proof(space, b"tack/v1/other", t)
    with pytest.raises(ValueError, match="label"):
        check_proof(b"", space, b"", t)


# --- honest sessions --------------------------------------------------------------------------


def test_proof_shapes(space: SpaceKeys, certs: Devices) -> None:
    t = session(certs.alice, certs.bob)
    writer = make_proof(space, OFFER, t)
    reader = make_proof(read_only(space), OFFER, t)
    assert len(writer) == 96 and len(reader) == 32
    assert writer[:32] == reader  # the MAC part is the same; the writer adds a signature
    expected = hmac.new(space.read_key, OFFER + t, hashlib.sha256).digest()
    assert reader == expected
    assert space.verify(OFFER + t + reader, writer[32:])


def test_writer_and_writer(space: SpaceKeys, certs: Devices) -> None:
    t = session(certs.alice, certs.bob)
    assert check_proof(make_proof(space, OFFER, t), space, OFFER, t) == "write"
    recognised, answered = handshake([space], [space], t)
    assert recognised == [(space, "write")] and answered == [(space, "write")]


def test_writer_and_reader_each_see_the_others_access(space: SpaceKeys, certs: Devices) -> None:
    ro = read_only(space)
    t = session(certs.alice, certs.bob)
    # writer dials reader: the reader verifies the writer's signature with verify_key alone
    recognised, answered = handshake([space], [ro], t)
    assert recognised == [(ro, "write")] and answered == [(space, "read")]
    # reader dials writer
    recognised, answered = handshake([ro], [space], t)
    assert recognised == [(space, "read")] and answered == [(ro, "write")]
    # reader and reader
    recognised, answered = handshake([ro], [ro], t)
    assert recognised == [(ro, "read")] and answered == [(ro, "read")]


def test_read_only_proof_has_no_signature_and_is_read(space: SpaceKeys, certs: Devices) -> None:
    t = session(certs.alice, certs.bob)
    proof = make_proof(read_only(space), ACCEPT, t)
    assert len(proof) == 32
    assert check_proof(proof, space, ACCEPT, t) == "read"
    assert check_proof(proof, read_only(space), ACCEPT, t) == "read"


def test_listener_finds_the_right_space_among_many(certs: Devices) -> None:
    spaces = [new_space_keys() for _ in range(5)]
    t = session(certs.alice, certs.bob)
    dialer = [spaces[3], read_only(spaces[1]), new_space_keys()]  # the last one bob lacks
    recognised, answered = handshake(dialer, spaces, t)
    assert recognised == [(spaces[3], "write"), (spaces[1], "read")]
    assert answered == [(spaces[3], "write"), (read_only(spaces[1]), "write")]


# --- attacks ----------------------------------------------------------------------------------


def test_wrong_secret_is_none(space: SpaceKeys, certs: Devices) -> None:
    t = session(certs.alice, certs.bob)
    stranger = new_space_keys(space.space_id)  # same id, different secret
    for keys in (stranger, read_only(stranger)):
        proof = make_proof(keys, OFFER, t)
        assert check_proof(proof, space, OFFER, t) is None
        assert check_proof(proof, read_only(space), OFFER, t) is None
        assert match_offer(proof, [space], t) is None
    # a device without the secret gets the same (empty) answer as from a device without spaces
    assert handshake([stranger], [space], t) == handshake([stranger], [], t) == ([], [])


def test_replayed_proof_is_none(space: SpaceKeys, certs: Devices) -> None:
    old = session(certs.alice, certs.bob)
    new = session(certs.alice, certs.bob)  # same devices and keys, fresh nonces
    for keys in (space, read_only(space)):
        for label in (OFFER, ACCEPT):
            proof = make_proof(keys, label, old)
            assert check_proof(proof, space, label, old) is not None
            assert check_proof(proof, space, label, new) is None


def test_replay_with_one_nonce_kept_is_none(space: SpaceKeys, certs: Devices) -> None:
    """A replayer who controls his own side's nonce still cannot reuse a proof."""
    d, listener_old, listener_new = new_nonce(), new_nonce(), new_nonce()
    old = transcript(d, listener_old, certs.alice, certs.bob)
    new = transcript(d, listener_new, certs.alice, certs.bob)
    assert check_proof(make_proof(space, OFFER, old), space, OFFER, new) is None


def test_relayed_proof_is_none(space: SpaceKeys, certs: Devices) -> None:
    """Mallory sits between alice (dialer) and bob (listener) and forwards the nonces."""
    nd, nl = new_nonce(), new_nonce()
    alice_sees = transcript(nd, nl, certs.alice, certs.mallory)  # alice talks TLS to mallory
    bob_sees = transcript(nd, nl, certs.mallory, certs.bob)  # mallory talks TLS to bob
    offer = make_proof(space, OFFER, alice_sees)
    assert check_proof(offer, space, OFFER, bob_sees) is None
    assert match_offer(offer, [space], bob_sees) is None
    # and the other way: bob's answer relayed back to alice is useless too
    accept = make_proof(space, ACCEPT, bob_sees)
    assert check_proof(accept, space, ACCEPT, alice_sees) is None
    # (to make bob see alice's certificate instead, mallory would need alice's TLS key)


def test_reader_in_the_middle_cannot_borrow_a_writers_signature(
    space: SpaceKeys, certs: Devices
) -> None:
    """Mallory holds a read link; alice (a writer) dials him; he relays to bob."""
    ro = read_only(space)
    nd, nl = new_nonce(), new_nonce()
    alice_sees = transcript(nd, nl, certs.alice, certs.mallory)
    bob_sees = transcript(nd, nl, certs.mallory, certs.bob)
    alice_offer = make_proof(space, OFFER, alice_sees)
    own_mac = make_proof(ro, OFFER, bob_sees)  # a valid reader's proof for his own session
    grafted = own_mac + alice_offer[32:]
    assert check_proof(own_mac, space, OFFER, bob_sees) == "read"
    assert check_proof(grafted, space, OFFER, bob_sees) is None
    assert match_offer(grafted, [space], bob_sees) is None


def test_reflected_offer_is_not_an_accept(space: SpaceKeys, certs: Devices) -> None:
    t = session(certs.alice, certs.bob)
    for keys in (space, read_only(space)):
        offer = make_proof(keys, OFFER, t)
        assert check_proof(offer, space, ACCEPT, t) is None
        assert match_accept(offer, [space], t) is None
        accept = make_proof(keys, ACCEPT, t)
        assert check_proof(accept, space, OFFER, t) is None
        assert match_offer(accept, [space], t) is None


def test_forged_signature_on_a_read_proof_is_none(space: SpaceKeys, certs: Devices) -> None:
    t = session(certs.alice, certs.bob)
    mac = make_proof(read_only(space), OFFER, t)
    other = new_space_keys()
    forgeries = [
        mac + bytes(64),
        mac + b"\xff" * 64,
        mac + other.sign(OFFER + t + mac),  # a real signature, by the wrong space
        mac + space.sign(OFFER + t + mac[::-1]),  # the right key over the wrong message
        mac + space.sign(ACCEPT + t + mac),  # the right key, for the other direction
    ]
    for proof in forgeries:
        assert len(proof) == 96
        assert check_proof(proof, space, OFFER, t) is None
        assert check_proof(proof, read_only(space), OFFER, t) is None
        assert match_offer(proof, [other, space], t) is None
    # flipping any bit of a genuine write proof is rejected, never downgraded to "read"
    genuine = make_proof(space, OFFER, t)
    for i in range(0, 96 * 8, 7):
        bad = bytearray(genuine)
        bad[i // 8] ^= 1 << (i % 8)
        assert check_proof(bytes(bad), space, OFFER, t) is None


def test_odd_lengths_are_none(space: SpaceKeys, certs: Devices) -> None:
    t = session(certs.alice, certs.bob)
    genuine = make_proof(space, OFFER, t)
    for n in (0, 1, 31, 33, 64, 95, 97, 200):
        proof = (genuine * 3)[:n]
        assert check_proof(proof, space, OFFER, t) is None
        assert match_offer(proof, [space], t) is None
    assert check_proof(genuine + b"\0", space, OFFER, t) is None


# --- fuzz -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_setup(certs: Devices) -> tuple[list[SpaceKeys], bytes]:
    spaces = [new_space_keys(), read_only(new_space_keys())]
    return spaces, session(certs.alice, certs.bob)


@settings(max_examples=500)
@given(
    proof=st.one_of(
        st.binary(max_size=300),
        st.binary(min_size=32, max_size=32),
        st.binary(min_size=96, max_size=96),
    )
)
def test_arbitrary_bytes_never_raise(
    fuzz_setup: tuple[list[SpaceKeys], bytes], proof: bytes
) -> None:
    spaces, t = fuzz_setup
    for keys in spaces:
        for label in (OFFER, ACCEPT):
            assert check_proof(proof, keys, label, t) is None
    assert match_offer(proof, spaces, t) is None
    assert match_accept(proof, spaces, t) is None


@settings(max_examples=200)
@given(data=st.data())
def test_mutated_genuine_proofs_never_raise(
    fuzz_setup: tuple[list[SpaceKeys], bytes], data: st.DataObject
) -> None:
    spaces, t = fuzz_setup
    keys = data.draw(st.sampled_from(spaces))
    genuine = make_proof(keys, OFFER, t)
    i = data.draw(st.integers(0, len(genuine)))
    tail = data.draw(st.binary(max_size=100))
    cut = data.draw(st.integers(0, len(genuine)))
    mutated = genuine[:i] + tail + genuine[cut:]
    result = check_proof(mutated, keys, OFFER, t)
    # The only byte strings that check are the proof itself and, for a writer's proof, its
    # MAC alone: a downgrade to "read" in the same session, never an escalation.
    if mutated == genuine:
        assert result == ("write" if keys.can_write else "read")
    elif mutated == genuine[:32]:
        assert result == "read"
    else:
        assert result is None
        assert match_offer(mutated, spaces, t) is None

"""Space keys and share links: derivation, both link kinds, strict parsing, storage."""

from __future__ import annotations

import base64
import json
import re

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.sharelink import (
    ShareLinkError,
    SpaceKeys,
    format_link,
    from_json,
    keys_from_secret,
    new_space_keys,
    parse_link,
    read_only,
    to_json,
)

SPACE_ID = "0123456789abcdef0123456789abcdef"
SECRET = bytes(range(32))
LINK_SHAPE = re.compile(r"tack:space/[0-9a-f]{32}\?(w=[\w-]{43}|r=[\w-]{43}&v=[\w-]{43})")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def keys() -> SpaceKeys:
    return new_space_keys()


# --- keys -------------------------------------------------------------------------------------


def test_new_keys_are_fresh_and_writable() -> None:
    a, b = new_space_keys(), new_space_keys()
    assert a.can_write and b.can_write
    assert re.fullmatch(r"[0-9a-f]{32}", a.space_id)
    assert a.space_id != b.space_id and a.write_secret != b.write_secret
    assert new_space_keys(SPACE_ID).space_id == SPACE_ID


def test_derivation_is_deterministic_and_salted_by_space_id() -> None:
    k1 = keys_from_secret(SPACE_ID, SECRET)
    assert keys_from_secret(SPACE_ID, SECRET) == k1
    k2 = keys_from_secret("f" * 32, SECRET)
    assert k2.read_key != k1.read_key and k2.verify_key != k1.verify_key
    assert len({k1.read_key, k1.verify_key, SECRET}) == 3


def test_sign_and_verify(keys: SpaceKeys) -> None:
    sig = keys.sign(b"hello")
    assert len(sig) == 64
    assert keys.verify(b"hello", sig)
    assert not keys.verify(b"hellO", sig)
    assert not keys.verify(b"hello", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not keys.verify(b"hello", b"")
    assert not keys.verify(b"hello", b"x" * 200)
    assert not new_space_keys().verify(b"hello", sig)


def test_read_only_replica_cannot_sign_but_verifies(keys: SpaceKeys) -> None:
    ro = read_only(keys)
    assert not ro.can_write and ro.write_secret is None
    assert (ro.space_id, ro.read_key, ro.verify_key) == (
        keys.space_id,
        keys.read_key,
        keys.verify_key,
    )
    with pytest.raises(PermissionError):
        ro.sign(b"x")
    assert ro.verify(b"x", keys.sign(b"x"))


def test_inconsistent_or_malformed_keys_are_refused(keys: SpaceKeys) -> None:
    other = new_space_keys()
    with pytest.raises(ShareLinkError, match="do not belong"):
        SpaceKeys(keys.space_id, keys.write_secret, other.read_key, keys.verify_key)
    with pytest.raises(ShareLinkError, match="do not belong"):
        SpaceKeys(other.space_id, keys.write_secret, keys.read_key, keys.verify_key)
    with pytest.raises(ShareLinkError, match="32 bytes"):
        SpaceKeys(keys.space_id, None, keys.read_key[:-1], keys.verify_key)
    with pytest.raises(ShareLinkError, match="space id"):
        SpaceKeys(keys.space_id.upper(), None, keys.read_key, keys.verify_key)
    with pytest.raises(ShareLinkError):
        keys_from_secret(SPACE_ID, b"short")
    with pytest.raises(ShareLinkError):
        new_space_keys("not-hex")


def test_repr_hides_secrets(keys: SpaceKeys) -> None:
    assert keys.write_secret is not None
    text = repr(keys) + str(keys)
    for secret in (keys.write_secret, keys.read_key):
        assert repr(secret) not in text and b64(secret) not in text and secret.hex() not in text
    assert keys.space_id in text


# --- links ------------------------------------------------------------------------------------


def test_write_link_round_trip(keys: SpaceKeys) -> None:
    link = format_link(keys)
    assert LINK_SHAPE.fullmatch(link) and "?w=" in link
    assert parse_link(link) == keys


def test_read_link_round_trip_and_cannot_sign(keys: SpaceKeys) -> None:
    link = format_link(keys, read_only=True)
    assert LINK_SHAPE.fullmatch(link) and "?r=" in link and "&v=" in link
    assert keys.write_secret is not None and b64(keys.write_secret) not in link
    parsed = parse_link(link)
    assert parsed == read_only(keys)
    assert not parsed.can_write
    with pytest.raises(PermissionError):
        parsed.sign(b"x")
    with pytest.raises(PermissionError):
        format_link(parsed)  # a reader cannot hand out a write link
    assert format_link(parsed, read_only=True) == link


def test_write_link_derives_what_the_read_link_carries(keys: SpaceKeys) -> None:
    w = parse_link(format_link(keys))
    r = parse_link(format_link(keys, read_only=True))
    assert (w.read_key, w.verify_key) == (r.read_key, r.verify_key)
    assert r.verify(b"m", w.sign(b"m"))


def test_read_link_params_in_either_order(keys: SpaceKeys) -> None:
    link = f"tack:space/{keys.space_id}?v={b64(keys.verify_key)}&r={b64(keys.read_key)}"
    assert parse_link(link) == read_only(keys)


def test_known_answer() -> None:
    """Pin the derivation so that a change to it (which would split every space) is caught."""
    k = keys_from_secret(SPACE_ID, SECRET)
    assert format_link(k) == f"tack:space/{SPACE_ID}?w={b64(SECRET)}"
    r = parse_link(format_link(k, read_only=True))
    assert r.read_key == k.read_key

    def hkdf(info: bytes) -> bytes:
        salt = b"tack/v1/" + SPACE_ID.encode()
        return HKDF(hashes.SHA256(), 32, salt, info).derive(SECRET)

    assert k.read_key == hkdf(b"read")
    seed = ed25519.Ed25519PrivateKey.from_private_bytes(hkdf(b"sign"))
    assert k.verify_key == seed.public_key().public_bytes_raw()


@pytest.mark.parametrize(
    "wrap",
    [
        "  {}  ",
        "\n\t{}\r\n",
        "<{}>",
        '"{}"',
        "'{}'",
        "`{}`",
        "“{}”",
        "‘{}’",
        "({})",
        "[{}]",
        ' < "{}" > ',
        "TACK:{rest}",
        "Tack:{rest}",
    ],
)
@pytest.mark.parametrize("ro", [False, True])
def test_pasted_with_junk_parses(keys: SpaceKeys, wrap: str, ro: bool) -> None:
    link = format_link(keys, read_only=ro)
    text = wrap.format(link, rest=link.removeprefix("tack:"))
    assert parse_link(text) == (read_only(keys) if ro else keys)


def test_line_wrapped_link_parses(keys: SpaceKeys) -> None:
    link = format_link(keys, read_only=True)
    wrapped = "\n".join(link[i : i + 40] for i in range(0, len(link), 40))
    assert parse_link(wrapped) == read_only(keys)
    assert parse_link(link[:50] + " \u00a0\u2003" + link[50:]) == read_only(keys)


def _bad(keys: SpaceKeys) -> list[tuple[str, str]]:
    w = b64(keys.write_secret or b"")
    r, v, sid = b64(keys.read_key), b64(keys.verify_key), keys.space_id
    return [
        ("", "empty"),
        ("   ", "empty"),
        ("<>", "empty"),
        (f"https://example.com/space/{sid}?w={w}", "start with"),
        (f"tack://space/{sid}?w={w}", "start with"),
        (f"tack:board/{sid}?w={w}", "start with"),
        (f"tack:space/{sid.upper()}?w={w}", "space id"),
        (f"tack:space/{sid[:-1]}?w={w}", "space id"),
        (f"tack:space/{sid}0?w={w}", "space id"),
        (f"tack:space/{sid}/?w={w}", "space id"),
        (f"tack:space/{sid}", "cut short"),
        (f"tack:space/{sid}?", "cut short"),
        (f"tack:space/{sid}?w={w[:-1]}", "42 characters"),
        (f"tack:space/{sid}?w={w}A", "44 characters"),
        (f"tack:space/{sid}?w={w}=", "outside base64url"),
        (f"tack:space/{sid}?w={w[:-1]}+", "outside base64url"),
        (f"tack:space/{sid}?w={w[:-1]}/", "outside base64url"),
        (f"tack:space/{sid}?w={w}&r={r}&v={v}", "not both"),
        (f"tack:space/{sid}?r={r}&v={v}&w={w}", "not both"),
        (f"tack:space/{sid}?r={r}", "lacks its v="),
        (f"tack:space/{sid}?v={v}", "lacks its r="),
        (f"tack:space/{sid}?r={r}&v={v}&x=1", "unknown"),
        (f"tack:space/{sid}?W={w}", "unknown"),
        (f"tack:space/{sid}?w={w}&w={w}", "twice"),
        (f"tack:space/{sid}?r={r}&r={r}&v={v}", "twice"),
        (f"tack:space/{sid}?w", "expected k=v"),
        (f"tack:space/{sid}?w={w}&", "expected k=v"),
        (f"tack:space/{sid}?w={w}#frag", "'#'"),
        (f"tack:space/{sid}?w={w[:10]}%41{w[11:]}", "%-escapes"),
        ("tack:space/" + sid + "?w=" + w + "x" * 2000, "too long"),
    ]


def test_malformed_links_are_refused_with_a_reason(keys: SpaceKeys) -> None:
    for text, reason in _bad(keys):
        with pytest.raises(ShareLinkError, match=re.escape(reason)):
            parse_link(text)


def test_non_canonical_base64_is_refused(keys: SpaceKeys) -> None:
    # 43 base64url characters hold 258 bits; the last 2 must be zero in a canonical encoding.
    w = b64(keys.write_secret or b"")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(w[-1])
    for flip in (1, 2, 3):
        twisted = w[:-1] + alphabet[last ^ flip]
        with pytest.raises(ShareLinkError, match="canonical"):
            parse_link(f"tack:space/{keys.space_id}?w={twisted}")


def test_non_ascii_look_alikes_are_refused(keys: SpaceKeys) -> None:
    link = format_link(keys)
    # Fullwidth and Arabic-Indic digits match \d in Python regexes; they must not pass here.
    for old, new in (("0", "０"), ("1", "١")):
        if old in keys.space_id:
            with pytest.raises(ShareLinkError):
                parse_link(link.replace(old, new, 1))
    with pytest.raises(ShareLinkError, match="outside base64url"):
        parse_link(link[:-1] + "Ａ")


def test_parse_link_refuses_non_text() -> None:
    with pytest.raises(ShareLinkError):
        parse_link(b"tack:space/" + SPACE_ID.encode())  # type: ignore[arg-type]


# --- fuzz -------------------------------------------------------------------------------------


def _check_parse(text: str) -> None:
    try:
        result = parse_link(text)
    except ShareLinkError as e:
        assert str(e)
        return
    # Whatever parses is a well-formed key set whose own link parses back to it.
    assert isinstance(result, SpaceKeys)
    assert parse_link(format_link(result, read_only=not result.can_write)) == result


@settings(max_examples=500)
@given(st.text())
def test_fuzz_any_text_raises_only_share_link_error(text: str) -> None:
    _check_parse(text)


_LINK_CHARS = st.sampled_from(
    [*"tack:space/?&=wrv0123456789abcdefABCDEF-_+/%#<>\"' \n", "é", "０", "\x00", "😀"]
)


@st.composite
def mutated_links(draw: st.DrawFn) -> str:
    keys = keys_from_secret(
        draw(st.text("0123456789abcdef", min_size=32, max_size=32)),
        draw(st.binary(min_size=32, max_size=32)),
    )
    text = format_link(keys, read_only=draw(st.booleans()))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate", "dup", "swap"]))
        if op == "insert":
            text = text[:i] + draw(_LINK_CHARS) + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "replace":
            text = text[:i] + draw(_LINK_CHARS) + text[i + 1 :]
        elif op == "truncate":
            text = text[:i]
        elif op == "dup":
            j = draw(st.integers(i, len(text)))
            text = text[:j] + text[i:j] + text[j:]
        else:
            j = draw(st.integers(0, len(text)))
            a, b = sorted((i, j))
            text = text[b:] + text[a:b] + text[:a]
    return text


@settings(max_examples=1000)
@given(mutated_links())
def test_fuzz_mutated_links_raise_only_share_link_error(text: str) -> None:
    _check_parse(text)


@settings(max_examples=100)
@given(st.binary(min_size=32, max_size=32), st.text("0123456789abcdef", min_size=32, max_size=32))
def test_round_trip_property(secret: bytes, space_id: str) -> None:
    k = keys_from_secret(space_id, secret)
    assert parse_link(format_link(k)) == k
    assert parse_link(format_link(k, read_only=True)) == read_only(k)
    assert from_json(json.loads(json.dumps(to_json(k)))) == k


# --- storage ----------------------------------------------------------------------------------


def test_json_round_trip(keys: SpaceKeys) -> None:
    stored = json.loads(json.dumps(to_json(keys)))
    assert set(stored) == {"space_id", "write_secret", "read_key", "verify_key"}
    assert all(isinstance(v, str) for v in stored.values())
    assert from_json(stored) == keys
    ro = to_json(read_only(keys))
    assert ro["write_secret"] is None
    assert from_json(json.loads(json.dumps(ro))) == read_only(keys)
    assert from_json({**stored, "name": "Team"}) == keys  # other config entries are ignored


def test_json_refuses_damaged_entries(keys: SpaceKeys) -> None:
    good = to_json(keys)
    other = to_json(new_space_keys())
    damaged: list[object] = [
        [],
        {},
        {**good, "space_id": 5},
        {**good, "read_key": None},
        {**good, "write_secret": 7},
        {**good, "verify_key": good["read_key"]},  # inconsistent with the secret
        {**good, "read_key": other["read_key"]},
        {**good, "read_key": "!" * 43},
        {k: v for k, v in good.items() if k != "verify_key"},
    ]
    for data in damaged:
        with pytest.raises(ShareLinkError):
            from_json(data)  # type: ignore[arg-type]

"""A space's keys, and the share links that carry them between people.  Pure: no I/O.

Keys
----
A space is named by a random ``space_id`` (32 lowercase hex characters, 128 bits; a name, not a
secret) and held by a 256-bit ``write_secret``.  Everything else is derived from the secret with
HKDF-SHA256 (RFC 5869), salt ``b"tack/v1/" + space_id``:

``read_key`` (info ``b"read"``, 32 bytes)
    The MAC key of the capability proof (:mod:`engine.auth`).  Knowing it is read access.
``signing seed`` (info ``b"sign"``, 32 bytes)
    The Ed25519 private key of the space.  Never stored: it is re-derived from the write secret
    whenever something is signed.  Its public half is ``verify_key`` (32 raw bytes), which lets
    anyone who can read check that a peer can write.

HKDF is one-way, so a read-only replica (``read_key`` + ``verify_key``, ``write_secret=None``)
cannot recover the write secret or sign.  Salting with the space id keeps the derivations of
two spaces apart even if a secret were ever reused.

Invariant: a :class:`SpaceKeys` is always consistent.  Construction checks the field types and
lengths and, when a write secret is present, that ``read_key`` and ``verify_key`` are the ones it
derives.  Its ``repr`` never shows ``write_secret`` or ``read_key``.

Share links
-----------
::

    write link:  tack:space/<space_id>?w=<write_secret>
    read link:   tack:space/<space_id>?r=<read_key>&v=<verify_key>

Each key is base64url (RFC 4648 §5) without ``=`` padding: 43 characters for 32 bytes.  The
write link holds everything; the read link holds only what a reader needs.

:func:`parse_link` is strict, because a link is untrusted text pasted by a person: after it
has taken off what chat and mail add around a link (outer white space; a surrounding pair of
``<>``, ``""``, ``''``, backticks, typographic quotes, ``()`` or ``[]``; and white space *inside*
the link, left by line wrapping -- no valid link contains any), it accepts exactly the two
forms above.  The scheme ``tack:`` may be in any case (RFC 3986 §3.1); the rest is exact: the
id is 32 lowercase hex characters, the parameters are ``w`` alone or ``r`` and ``v`` (in
either order), each exactly once, each exactly 43 canonical base64url characters; no
percent-escapes, no fragment, no other parameters.  Anything else raises
:class:`ShareLinkError` (a :class:`ValueError`) with a message a person can act on -- and
nothing else is ever raised.  For a read link nothing more can be checked: its two keys are
independent as far as a reader can tell.

Storage
-------
:func:`to_json` / :func:`from_json` turn keys into a JSON-ready dict for the space config::

    {"space_id": "...", "write_secret": "<b64url>" | null, "read_key": "<b64url>",
     "verify_key": "<b64url>"}
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_BYTES",
    "SCHEME",
    "ShareLinkError",
    "SpaceKeys",
    "format_link",
    "from_json",
    "keys_from_secret",
    "new_space_keys",
    "parse_link",
    "read_only",
    "to_json",
]

KEY_BYTES = 32
SCHEME = "tack:"
_PATH = "space/"
_SALT_PREFIX = b"tack/v1/"
_INFO_READ = b"read"
_INFO_SIGN = b"sign"

_SPACE_ID = re.compile(r"[0-9a-f]{32}")
_B64_KEY = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, unpadded
_WRAPPERS = {"<": ">", '"': '"', "'": "'", "`": "`", "“": "”", "‘": "’", "(": ")", "[": "]"}
_MAX_LINK = 1024  # far longer than any valid link; keeps error messages short


class ShareLinkError(ValueError):
    """A share link (or stored keys) that is malformed; the message says what is wrong."""


# --- keys -------------------------------------------------------------------------------------


def _hkdf(space_id: str, write_secret: bytes, info: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=KEY_BYTES,
        salt=_SALT_PREFIX + space_id.encode("ascii"),
        info=info,
    ).derive(write_secret)


def _signing_key(space_id: str, write_secret: bytes) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.from_private_bytes(_hkdf(space_id, write_secret, _INFO_SIGN))


def _check_space_id(space_id: object) -> str:
    if not isinstance(space_id, str) or not _SPACE_ID.fullmatch(space_id):
        raise ShareLinkError(f"a space id is 32 lowercase hex characters, not {_shorten(space_id)}")
    return space_id


def _check_key(name: str, value: object) -> bytes:
    if not isinstance(value, bytes) or len(value) != KEY_BYTES:
        size = len(value) if isinstance(value, bytes) else type(value).__name__
        raise ShareLinkError(f"{name} must be {KEY_BYTES} bytes, not {size}")
    return value


@dataclass(frozen=True)
class SpaceKeys:
    """The keys of one space as this replica holds them (see the module docstring)."""

    space_id: str
    write_secret: bytes | None = field(repr=False)
    read_key: bytes = field(repr=False)
    verify_key: bytes

    def __post_init__(self) -> None:
        _check_space_id(self.space_id)
        _check_key("read_key", self.read_key)
        _check_key("verify_key", self.verify_key)
        if self.write_secret is not None:
            _check_key("write_secret", self.write_secret)
            derived = _hkdf(self.space_id, self.write_secret, _INFO_READ)
            public = _signing_key(self.space_id, self.write_secret).public_key()
            if derived != self.read_key or public.public_bytes_raw() != self.verify_key:
                raise ShareLinkError(
                    "read_key/verify_key do not belong to this write secret and space id"
                )

    def __repr__(self) -> str:
        return f"SpaceKeys(space_id={self.space_id!r}, can_write={self.can_write})"

    @property
    def can_write(self) -> bool:
        """True when this replica holds the write secret (and so the signing key)."""
        return self.write_secret is not None

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (64 bytes) by the space; PermissionError on a read-only replica.

        Callers put a purpose label at the start of ``message`` (as :mod:`engine.auth` does)
        so that a signature made for one purpose can never be taken for another.
        """
        if self.write_secret is None:
            raise PermissionError(f"space {self.space_id} is read-only here: cannot sign")
        return _signing_key(self.space_id, self.write_secret).sign(message)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """True iff ``signature`` is the space's valid signature of ``message``; never raises."""
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(self.verify_key)
            key.verify(bytes(signature), bytes(message))
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


def keys_from_secret(space_id: str, write_secret: bytes) -> SpaceKeys:
    """The full (read-write) keys of a space from its id and 32-byte write secret."""
    _check_space_id(space_id)
    _check_key("write_secret", write_secret)
    return SpaceKeys(
        space_id=space_id,
        write_secret=write_secret,
        read_key=_hkdf(space_id, write_secret, _INFO_READ),
        verify_key=_signing_key(space_id, write_secret).public_key().public_bytes_raw(),
    )


def new_space_keys(space_id: str | None = None) -> SpaceKeys:
    """Keys for a new space: a fresh 256-bit secret, and a fresh id unless one is given."""
    return keys_from_secret(
        space_id if space_id is not None else secrets.token_hex(16),
        secrets.token_bytes(KEY_BYTES),
    )


def read_only(keys: SpaceKeys) -> SpaceKeys:
    """The same space without the write secret (what a read link gives)."""
    return SpaceKeys(keys.space_id, None, keys.read_key, keys.verify_key)


# --- base64url --------------------------------------------------------------------------------


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode_key(name: str, text: str, where: str = "this share link") -> bytes:
    """Strictly decode one 32-byte key: exact alphabet and length, canonical last character."""
    if not _B64_KEY.fullmatch(text):
        bad = sorted({c for c in text if not (c.isascii() and (c.isalnum() or c in "-_"))})
        if bad:
            why = f"has characters outside base64url (A-Z a-z 0-9 - _): {''.join(bad)!r}"
        else:
            why = f"is {len(text)} characters long; a key is 43"
        raise ShareLinkError(f"the {name} in {where} {why}; was it cut short or altered?")
    try:
        data = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError) as e:  # pragma: no cover - excluded by the pattern
        raise ShareLinkError(f"the {name} in {where} is not base64url") from e
    if len(data) != KEY_BYTES or _b64encode(data) != text:
        raise ShareLinkError(f"the {name} in {where} is not a canonical 32-byte key")
    return data


# --- links ------------------------------------------------------------------------------------


def format_link(keys: SpaceKeys, read_only: bool = False) -> str:
    """The share link for ``keys``: a write link, or a read link when ``read_only`` is set.

    A read-only replica can only make a read link; asking it for a write link raises
    :class:`PermissionError`.
    """
    head = f"{SCHEME}{_PATH}{keys.space_id}"
    if not read_only:
        if keys.write_secret is None:
            raise PermissionError(f"space {keys.space_id} is read-only here: no write link")
        return f"{head}?w={_b64encode(keys.write_secret)}"
    return f"{head}?r={_b64encode(keys.read_key)}&v={_b64encode(keys.verify_key)}"


def _shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _unwrap(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and _WRAPPERS.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return "".join(text.split())


def parse_link(text: str) -> SpaceKeys:
    """Read a share link pasted by a person; raises only :class:`ShareLinkError`.

    The accepted forms and the tolerated surroundings are in the module docstring.
    """
    if not isinstance(text, str):
        raise ShareLinkError(f"a share link is text, not {type(text).__name__}")
    if len(text) > _MAX_LINK:
        raise ShareLinkError(f"this is {len(text)} characters long: too long to be a share link")
    link = _unwrap(text)
    if not link:
        raise ShareLinkError("the share link is empty")
    if link[: len(SCHEME)].lower() != SCHEME:
        raise ShareLinkError(
            f"not a Tack share link: it should start with 'tack:space/', got {_shorten(link)}"
        )
    rest = link[len(SCHEME) :]
    if "#" in rest:
        raise ShareLinkError("a Tack share link has no '#' part; remove it and what follows")
    if "%" in rest:
        raise ShareLinkError("a Tack share link contains no %-escapes; copy it again unchanged")
    if not rest.startswith(_PATH):
        raise ShareLinkError(
            f"not a Tack share link: it should start with 'tack:space/', got {_shorten(link)}"
        )
    path, sep, query = rest[len(_PATH) :].partition("?")
    if not _SPACE_ID.fullmatch(path):
        raise ShareLinkError(
            f"the space id in a share link is 32 lowercase hex characters, not {_shorten(path)}"
        )
    if not sep or not query:
        raise ShareLinkError("this share link has no key (the part after '?'); it is cut short")

    params: dict[str, str] = {}
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if not eq:
            raise ShareLinkError(f"malformed share link parameter {_shorten(part)}: expected k=v")
        if name not in ("w", "r", "v"):
            raise ShareLinkError(
                f"unknown share link parameter {_shorten(name)} (expected w, or r and v)"
            )
        if name in params:
            raise ShareLinkError(f"share link parameter {name!r} appears twice")
        params[name] = value

    if "w" in params:
        if len(params) > 1:
            raise ShareLinkError(
                "a share link is either a write link (w=) or a read link (r= and v=), not both"
            )
        return keys_from_secret(path, _b64decode_key("write secret", params["w"]))
    if set(params) != {"r", "v"}:
        missing = "v" if "r" in params else "r"
        raise ShareLinkError(f"this read link lacks its {missing}= parameter; it is cut short")
    return SpaceKeys(
        space_id=path,
        write_secret=None,
        read_key=_b64decode_key("read key", params["r"]),
        verify_key=_b64decode_key("verify key", params["v"]),
    )


# --- storage ----------------------------------------------------------------------------------


def to_json(keys: SpaceKeys) -> dict[str, str | None]:
    """The keys as a JSON-ready dict (shape in the module docstring)."""
    return {
        "space_id": keys.space_id,
        "write_secret": None if keys.write_secret is None else _b64encode(keys.write_secret),
        "read_key": _b64encode(keys.read_key),
        "verify_key": _b64encode(keys.verify_key),
    }


def from_json(data: Mapping[str, object]) -> SpaceKeys:
    """Keys from :func:`to_json`'s dict; other entries are ignored.

    Raises :class:`ShareLinkError` when an entry is missing or malformed, or when a stored
    write secret does not derive the stored read and verify keys.
    """
    if not isinstance(data, Mapping):
        raise ShareLinkError(f"space keys must be a JSON object, not {type(data).__name__}")

    def text(name: str) -> str:
        value = data.get(name)
        if not isinstance(value, str):
            raise ShareLinkError(f"stored space keys: {name!r} must be a string")
        return value

    where = "the stored space keys"
    space_id = _check_space_id(text("space_id"))
    secret = data.get("write_secret")
    if secret is not None and not isinstance(secret, str):
        raise ShareLinkError("stored space keys: 'write_secret' must be a string or null")
    return SpaceKeys(
        space_id=space_id,
        write_secret=None if secret is None else _b64decode_key("write secret", secret, where),
        read_key=_b64decode_key("read key", text("read_key"), where),
        verify_key=_b64decode_key("verify key", text("verify_key"), where),
    )

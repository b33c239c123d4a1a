"""Where a change came from, and the record of one change to one document.

Every mutation of a Tack document carries an :class:`Origin`.  Origins are how echo loops are
broken: the folder bridge does not render back to disk what it just ingested from disk, and a
sync session does not send a peer's update back to that peer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Origin(StrEnum):
    """Who caused a change."""

    FILE = "file"  # a save in the user's folder, ingested by the folder bridge
    PEER = "peer"  # an update received from another device
    STORE = "store"  # replayed from the local store at start-up
    API = "api"  # a program using the engine as a library


@dataclass(frozen=True, slots=True)
class Change:
    """One committed transaction on one document.

    ``update`` is the Yjs v1 update the transaction produced; ``summary`` is a short human
    description for the history (for example ``+12 −3 chars``).  ``peer`` names the device an
    update came from when ``origin`` is :attr:`Origin.PEER`.
    """

    doc_id: str
    origin: Origin
    update: bytes
    seq: int
    summary: str = ""
    peer: str | None = None
    path: str = ""  # the card path the change concerns, when known
    cards: frozenset[str] = frozenset()  # for the space document: the card ids it touched

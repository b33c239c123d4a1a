"""Tack's engine: documents, store, change streams (and later sync, peers and identity).

It knows nothing about folders.  The public face is re-exported here; ``fsbridge`` imports
only these names.
"""

from engine.blobs import Blobs, DirBlobs, MemoryBlobs
from engine.changes import Change, Origin
from engine.replica import SPACE_DOC, Pending, Replica, new_id, sha256_hex
from engine.spacedoc import CARD_KINDS, CardView, EdgeView
from engine.store import Base, HistoryEntry, Store, StoreError
from engine.text_edits import Splice, apply_splices, apply_splices_to_str

__all__ = [
    "CARD_KINDS",
    "SPACE_DOC",
    "Base",
    "Blobs",
    "CardView",
    "Change",
    "DirBlobs",
    "EdgeView",
    "HistoryEntry",
    "MemoryBlobs",
    "Origin",
    "Pending",
    "Replica",
    "Splice",
    "Store",
    "StoreError",
    "apply_splices",
    "apply_splices_to_str",
    "new_id",
    "sha256_hex",
]

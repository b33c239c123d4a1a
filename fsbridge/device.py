"""This device's identity as the folder bridge needs it: an id and a name for the history.

Wraps :mod:`engine.identity` when it is available so that ``tack`` works before networking
is configured; the identity lives under ``$TACK_HOME``.
"""

from __future__ import annotations

from engine.identity import Identity, load_or_create, tack_home


def this_device(name: str | None = None) -> Identity:
    return load_or_create(tack_home(), name)

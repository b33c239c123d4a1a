"""Tack's benchmark harness: ``python -m bench.run`` (see bench/README.md).

Everything here drives Tack the way a user does (the ``tack`` command line, real processes,
real folders on loopback) except the CRDT-only scenarios, which call the engine in-process.
Baselines (Syncthing, ``cp -r``, ``rsync``, bare pycrdt) run in the same invocation, so every
number is reported next to the baseline measured on the same noisy machine at the same time.
"""

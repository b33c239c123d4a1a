"""Fuzzing Tack's parsers of untrusted input: the targets (:mod:`fuzz.targets`) and the
on-demand runner (``python -m fuzz.run``)."""

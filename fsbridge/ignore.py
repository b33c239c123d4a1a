"""Which paths in a space are never cards.

This module owns the ignore decision for the whole folder bridge: the watcher, the scanner and
the writer all ask :meth:`IgnoreRules.is_ignored` and nothing else.

Two rule sets apply, both in gitignore syntax (compiled with ``pathspec.GitIgnoreSpec``):

* :data:`ALWAYS_IGNORED` — Tack's own state (``.tack`` at the space root), Tack's temporary
  files, ``.git`` anywhere, and the swap/backup/lock/temp files that editors and operating
  systems leave beside the files they touch.  Users cannot re-include these: a ``!`` line in
  ``.tackignore`` does not reach them.
* the user's ``<root>/.tackignore``, if present and readable.

Invariants:

* A path is ignored if it, or any directory above it, is ignored (as in git, a file cannot be
  re-included when a parent directory is excluded).
* ``.tackignore`` at the space root is never ignored: it is synced like any card, so that every
  peer applies the same rules.
* ``.tack`` and ``.git`` are matched whether or not the caller knows they are directories (a
  deleted path's kind is unknown, and ``.git`` is a *file* in git worktrees and submodules).
* A broken ``.tackignore`` never raises: unreadable or undecodable means no user rules, an
  invalid line is skipped; :attr:`IgnoreRules.problem` says what was wrong.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pathspec import GitIgnoreSpec

from fsbridge.atomic import TEMP_PREFIX

MAX_WILDCARDS = 16  # per .tackignore line; more is refused (regex blow-up)
TACKIGNORE = ".tackignore"
"""Name of the user's ignore file, at the space root."""

ALWAYS_IGNORED: tuple[str, ...] = (
    # Tack's own state, anywhere: a space nested in another keeps its store to itself.
    ".tack",
    # Tack's temporary files (atomic writes).
    f"{TEMP_PREFIX}*",
    # git's repository (a directory, or a file in worktrees and submodules), anywhere.
    ".git",
    # vim: swap files, the write-test file, backup files.
    "*.swp",
    "*.swo",
    "*.swx",
    "*.swpx",
    ".*.sw?",
    "4913",
    "*~",
    # emacs: lock files and auto-save files.
    ".#*",
    "\\#*#",
    # LibreOffice lock files; Microsoft Office owner/lock files and temp files.
    ".~lock.*#",
    "~$*",
    "~*.tmp",
    # Chromium's File System Access API (VS Code for the web and others) swap files.
    "*.crswap",
    # JetBrains IDEs' "safe write" temp and old copies.
    "*___jb_tmp___",
    "*___jb_old___",
    # gedit / GIO atomic-save temp files.
    ".goutputstream-*",
    # kate / KTextEditor swap files.
    "*.kate-swp",
    # Operating-system clutter.
    ".DS_Store",
    "._*",
    "Thumbs.db",
    "ehthumbs.db",
    ".Trash-*",
)
"""Gitignore-syntax patterns that are ignored in every space, whatever ``.tackignore`` says."""

_ALWAYS_SPEC = GitIgnoreSpec.from_lines(ALWAYS_IGNORED)


def _any_of(spec: GitIgnoreSpec) -> re.Pattern[str]:
    """One regex matching what ``spec`` matches, for a spec of include patterns only (no
    ``!`` line, so a path is ignored when any pattern matches it): one search per path
    instead of one per pattern.  pathspec's per-pattern groups are made anonymous."""
    parts = []
    for pattern in spec.patterns:
        regex = getattr(pattern, "regex", None)
        if pattern.include is not True or not isinstance(regex, re.Pattern):
            raise ValueError(f"not an include pattern: {pattern!r}")
        parts.append("(?:" + re.sub(r"\(\?P<\w+>", "(?:", regex.pattern) + ")")
    return re.compile("|".join(parts))


_ALWAYS_MATCH = _any_of(_ALWAYS_SPEC)


MAX_REMEMBERED = 100_000  # answers kept per rule set (then forgotten all at once)


@dataclass(frozen=True)
class IgnoreRules:
    """The ignore rules of one space: the built-in patterns plus the user's ``.tackignore``.

    ``user_lines`` are the ``.tackignore`` lines that compiled; ``problem`` describes what was
    wrong with the file (``None`` when it is absent or fine).
    """

    user_lines: tuple[str, ...] = ()
    problem: str | None = None
    _user_spec: GitIgnoreSpec = field(init=False, repr=False, compare=False)
    # Answers so far: every watcher event asks, and pathspec's regexes cost ~50 µs a path.
    _answers: dict[tuple[str, bool], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_user_spec", GitIgnoreSpec.from_lines(self.user_lines))
        object.__setattr__(self, "_answers", {})

    @classmethod
    def load(cls, root: Path) -> IgnoreRules:
        """Read ``<root>/.tackignore``; never raises for a missing, unreadable or bad file."""
        path = root / TACKIGNORE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return cls()
        except OSError as exc:
            return cls(
                problem=f"{TACKIGNORE} cannot be read ({exc.strerror or exc}); "
                "no user ignore rules apply"
            )
        if raw.startswith(codecs.BOM_UTF8):  # git skips a UTF-8 BOM too
            raw = raw[len(codecs.BOM_UTF8) :]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return cls(
                problem=f"{TACKIGNORE} is not valid UTF-8 (byte {exc.start}); "
                "no user ignore rules apply"
            )
        return cls.from_lines(text.splitlines())

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> IgnoreRules:
        """Compile gitignore lines, skipping (and reporting) any line that is not a pattern."""
        good: list[str] = []
        bad: list[str] = []
        for number, line in enumerate(lines, start=1):
            # .tackignore syncs from peers: runs of stars compile to backtracking regexes
            # (ten stars take seconds per path), so collapse them and bound wildcards.
            line = re.sub(r"\*{3,}", "**", line)
            if line.count("*") + line.count("?") > MAX_WILDCARDS or len(line) > 4096:
                bad.append(f"line {number} (too many wildcards)")
                continue
            try:
                GitIgnoreSpec.from_lines([line])
            except (ValueError, re.error):
                bad.append(f"line {number} ({line!r})")
                continue
            good.append(line)
        problem = None
        if bad:
            problem = f"{TACKIGNORE}: invalid pattern skipped: " + ", ".join(bad)
        return cls(user_lines=tuple(good), problem=problem)

    def is_ignored(self, rel: str, is_dir: bool = False) -> bool:
        """Whether the space-relative POSIX path ``rel`` is never a card.

        ``is_dir`` says that ``rel`` itself is a directory (so that dir-only patterns such as
        ``build/`` apply to it); every component above ``rel`` is a directory by definition.
        A trailing ``/`` on ``rel`` also marks a directory.  The space root (``""``) and
        ``.tackignore`` at the root are never ignored.
        """
        if rel.endswith("/"):
            rel = rel.rstrip("/")
            is_dir = True
        if not rel:
            return False
        known = self._answers.get((rel, is_dir))
        if known is None:
            if len(self._answers) >= MAX_REMEMBERED:
                self._answers.clear()
            known = self._answers[(rel, is_dir)] = self._match(rel, is_dir)
        return known

    def _match(self, rel: str, is_dir: bool) -> bool:
        # Every folder above ``rel`` is asked as a directory, through the remembered answers
        # (the files of one folder share their parent's), then ``rel`` itself.
        parent = rel.rpartition("/")[0]
        if parent and self.is_ignored(parent, True):
            return True
        candidate = rel + "/" if is_dir else rel
        if _ALWAYS_MATCH.match(candidate):
            return True
        if candidate == TACKIGNORE:
            return False
        return bool(self._user_spec.match_file(candidate))

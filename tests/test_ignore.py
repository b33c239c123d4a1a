"""Tests for fsbridge.ignore: built-in patterns and the user's .tackignore."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pathspec import GitIgnoreSpec

from fsbridge import atomic
from fsbridge.atomic import atomic_write
from fsbridge.ignore import _ALWAYS_MATCH, _ALWAYS_SPEC, ALWAYS_IGNORED, IgnoreRules, _any_of

NONE = IgnoreRules()

ALWAYS_IGNORED_NAMES = [
    ".tack-tmp-notes.md-1a2b3c4d",
    "notes.md.swp",
    "notes.md.swo",
    "notes.md.swx",
    "notes.md.swpx",
    ".notes.md.swp",
    ".notes.md.swn",
    "4913",
    "notes.md~",
    ".#notes.md",
    "#notes.md#",
    ".~lock.report.odt#",
    "~$report.docx",
    "~WRL0001.tmp",
    "notes.md.crswap",
    "notes.md___jb_tmp___",
    "notes.md___jb_old___",
    ".goutputstream-ABC123",
    "notes.md.kate-swp",
    ".DS_Store",
    "._photo.png",
    "Thumbs.db",
    "ehthumbs.db",
]


@pytest.mark.parametrize("name", ALWAYS_IGNORED_NAMES)
def test_always_ignored_names_anywhere(name: str) -> None:
    assert NONE.is_ignored(name)
    assert NONE.is_ignored(f"Roadmap/{name}")
    assert NONE.is_ignored(f"a/b/c/{name}")


@pytest.mark.parametrize(
    "name",
    [
        "notes.md",
        "swp",
        "notes.swpfile",
        "Roadmap",
        "board.canvas",
        "49130",
        "a~b",
        "#notes",
        "tack-tmp-x",
        "x.tack-tmp-y",
        "lock.odt#",
        "report$.docx",
    ],
)
def test_ordinary_names_are_cards(name: str) -> None:
    assert not NONE.is_ignored(name)
    assert not NONE.is_ignored(f"Roadmap/{name}")


def test_tack_dir_only_at_root() -> None:
    assert NONE.is_ignored(".tack", is_dir=True)
    assert NONE.is_ignored(".tack")  # kind unknown (e.g. a deleted path): still ignored
    assert NONE.is_ignored(".tack/store.sqlite")
    assert NONE.is_ignored(".tack/blobs/ab/cdef")
    # A space nested inside another never has its state synced by the outer one.
    assert NONE.is_ignored("Roadmap/.tack", is_dir=True)
    assert NONE.is_ignored("Roadmap/.tack/store.sqlite")


def test_git_anywhere_dir_or_file() -> None:
    assert NONE.is_ignored(".git", is_dir=True)
    assert NONE.is_ignored(".git/config")
    assert NONE.is_ignored("Roadmap/.git/objects/ab/cd")
    assert NONE.is_ignored("Roadmap/.git")  # a worktree's .git file
    assert not NONE.is_ignored(".gitignore")
    assert not NONE.is_ignored(".github/workflows/ci.yml")


def test_inside_ignored_directory_is_ignored() -> None:
    assert NONE.is_ignored("notes.md~/inner.md")
    assert NONE.is_ignored(".tack-tmp-x/inner.md")


def test_space_root_and_tackignore_are_not_ignored() -> None:
    rules = IgnoreRules.from_lines(["*", ".*"])
    assert not rules.is_ignored("")
    assert not rules.is_ignored(".tackignore")
    assert rules.is_ignored("Roadmap/.tackignore")  # only the root file is special
    assert rules.is_ignored("notes.md")


def write(root: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    (root / ".tackignore").write_bytes(data)


def test_load_missing_file_means_no_rules(tmp_path: Path) -> None:
    rules = IgnoreRules.load(tmp_path)
    assert rules.problem is None
    assert rules.user_lines == ()
    assert not rules.is_ignored("build/out.bin")


def test_load_and_match_nested(tmp_path: Path) -> None:
    write(tmp_path, "# comment\n\n*.log\nbuild/\n/top-only.md\ndocs/**/draft-*.md\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.problem is None
    assert rules.is_ignored("x.log")
    assert rules.is_ignored("a/b/x.log")
    assert rules.is_ignored("build", is_dir=True)
    assert rules.is_ignored("build/")
    assert rules.is_ignored("build/out.bin")
    assert rules.is_ignored("Roadmap/build/deep/out.bin")
    assert rules.is_ignored("top-only.md")
    assert not rules.is_ignored("Roadmap/top-only.md")
    assert rules.is_ignored("docs/a/b/draft-1.md")
    assert not rules.is_ignored("docs/a/b/final.md")
    assert not rules.is_ignored("x.log.md")


def test_dir_only_pattern_does_not_match_a_file(tmp_path: Path) -> None:
    write(tmp_path, "build/\n")
    rules = IgnoreRules.load(tmp_path)
    assert not rules.is_ignored("build")  # a file named build is a card
    assert rules.is_ignored("build", is_dir=True)
    assert rules.is_ignored("build/file")  # its parent is a directory by definition


def test_negation(tmp_path: Path) -> None:
    write(tmp_path, "*.log\n!keep.log\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.is_ignored("a.log")
    assert not rules.is_ignored("keep.log")
    assert not rules.is_ignored("sub/keep.log")


def test_negation_cannot_reinclude_inside_excluded_dir(tmp_path: Path) -> None:
    write(tmp_path, "build/\n!build/keep.md\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.is_ignored("build/keep.md")  # as in git: build/ is excluded whole


def test_negation_of_directory_contents_via_star(tmp_path: Path) -> None:
    write(tmp_path, "assets/*\n!assets/logo.png\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.is_ignored("assets/big.psd")
    assert not rules.is_ignored("assets/logo.png")
    assert not rules.is_ignored("assets", is_dir=True)


def test_user_cannot_unignore_builtins(tmp_path: Path) -> None:
    write(tmp_path, "!.git\n!*.swp\n!.tack/\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.is_ignored(".git/config")
    assert rules.is_ignored("a.swp")
    assert rules.is_ignored(".tack/lock")


def test_crlf_and_bom(tmp_path: Path) -> None:
    write(tmp_path, b"\xef\xbb\xbf*.log\r\nbuild/\r\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.problem is None
    assert rules.is_ignored("x.log")
    assert rules.is_ignored("build/x")


def test_undecodable_file_means_no_rules(tmp_path: Path) -> None:
    write(tmp_path, b"*.log\n\xff\xfe\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.problem is not None and "UTF-8" in rules.problem
    assert not rules.is_ignored("x.log")
    assert rules.is_ignored("x.swp")  # built-ins still apply


def test_unreadable_file_means_no_rules(tmp_path: Path) -> None:
    (tmp_path / ".tackignore").mkdir()  # readable by nobody as a file, even root
    rules = IgnoreRules.load(tmp_path)
    assert rules.problem is not None and "cannot be read" in rules.problem
    assert not rules.is_ignored("x.log")


def test_invalid_line_is_skipped_and_reported(tmp_path: Path) -> None:
    write(tmp_path, "*.log\n!\nfoo\\\n*.tmp\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.problem is not None
    assert "line 2" in rules.problem and "line 3" in rules.problem
    assert rules.is_ignored("x.log")
    assert rules.is_ignored("x.tmp")


def temp_names_while_writing(path: Path, expected: bytes | None) -> list[str]:
    """The names beside ``path`` just before :func:`atomic_write` puts the new file in."""
    seen: list[str] = []

    def look() -> None:
        seen.extend(p.name for p in path.parent.iterdir())

    atomic_write(path, b"x", expected, _before_rename=look)
    return [name for name in seen if name != path.name]


def test_atomic_write_temp_names_are_ignored(tmp_path: Path) -> None:
    """The temp file of a replacement has a name, and it is ignored.  (A new file's temp
    file has none where O_TMPFILE works; with named temp files, its name is ignored too.)"""
    (tmp_path / "notes.md").write_bytes(b"old")
    temps = temp_names_while_writing(tmp_path / "notes.md", b"old")
    assert temps and all(NONE.is_ignored(name) for name in temps)


def test_named_temp_files_of_new_files_are_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic, "_USE_TMPFILE", False)
    temps = temp_names_while_writing(tmp_path / "notes.md", None)
    assert temps and all(NONE.is_ignored(name) for name in temps)


def test_always_ignored_is_gitignore_syntax() -> None:
    assert ".tack" in ALWAYS_IGNORED and ".git" in ALWAYS_IGNORED
    assert all(isinstance(p, str) and p for p in ALWAYS_IGNORED)


# Path segments that hit the built-in patterns' edges (prefixes, suffixes, dots, dir marks).
SEGMENTS = [
    *ALWAYS_IGNORED_NAMES, ".tack", ".git", "notes.md", "a", ".a.swp", "x.swp.md", "~", "#",
    "#a", "a#", ".~lock.", "~$", "tack", ".tackx", ".gitignore", "4913x", "._", ".Trash-",
    ".Trash-1000", "Thumbs.db.md", "é😀", ".goutputstream-", "a___jb_tmp___", "b.kate-swp",
]


@given(
    st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4),
    st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_the_one_regex_of_the_built_in_patterns_matches_what_pathspec_matches(
    parts: list[str], as_dir: bool
) -> None:
    """The built-in patterns are checked with one regex (speed); it must agree with
    pathspec's own matching, pattern by pattern, on every path."""
    candidate = "/".join(parts) + ("/" if as_dir else "")
    assert bool(_ALWAYS_MATCH.match(candidate)) == _ALWAYS_SPEC.match_file(candidate)


def test_the_one_regex_is_refused_for_a_spec_with_a_negation() -> None:
    with pytest.raises(ValueError, match="not an include pattern"):
        _any_of(GitIgnoreSpec.from_lines(["*.md", "!keep.md"]))

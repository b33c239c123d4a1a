"""Tests for fsbridge.paths: validating, deriving and resolving space-relative paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsbridge.paths import UnsafePath, rel_of, resolve_inside, validate_rel

GOOD = [
    "notes.md",
    "Roadmap/Q1.md",
    "a/b/c/d.txt",
    ".tackignore",
    "..hidden",
    "x..y",
    "...",
    "café/naïve.md",
    "日本語/メモ.md",
    "emoji 😀.md",
    "with space/and\ttab.md",
    "é" * 127,  # 254 bytes
]

BAD = [
    "",
    "/etc/passwd",
    "/",
    "../x",
    "a/../../x",
    "..",
    ".",
    "./x",
    "a/./b",
    "a//b",
    "a/",
    "a/b/",
    "a\x00b",
    "a\\b",
    "..\\x",
    "x" * 256,
    "é" * 128,  # 256 bytes
    "a/" + "😀" * 64,  # 256 bytes
    "bad\udcff",  # a lone surrogate cannot be sent as UTF-8
]


@pytest.mark.parametrize("rel", GOOD)
def test_validate_accepts_and_returns_unchanged(rel: str) -> None:
    assert validate_rel(rel) is rel


@pytest.mark.parametrize("rel", BAD)
def test_validate_rejects(rel: str) -> None:
    with pytest.raises(UnsafePath):
        validate_rel(rel)


def test_unsafe_path_is_a_value_error() -> None:
    assert issubclass(UnsafePath, ValueError)


def test_rel_of(tmp_path: Path) -> None:
    assert rel_of(tmp_path, tmp_path / "notes.md") == "notes.md"
    assert rel_of(tmp_path, tmp_path / "Roadmap" / "Q1.md") == "Roadmap/Q1.md"
    assert rel_of(tmp_path, tmp_path / "日本語" / "メモ.md") == "日本語/メモ.md"
    assert rel_of(tmp_path, tmp_path / "a" / ".." / "b.md") == "b.md"


def test_rel_of_outside_or_root(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    for path in [
        tmp_path / "other.md",
        tmp_path / "space2" / "x.md",
        Path("/etc/passwd"),
        root / ".." / "x.md",
        root,
    ]:
        with pytest.raises(UnsafePath):
            rel_of(root, path)


def test_rel_of_relative_path_uses_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert rel_of(Path("."), Path("sub/x.md")) == "sub/x.md"


def test_rel_of_is_lexical_through_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert rel_of(root, root / "link" / "x.md") == "link/x.md"


def test_rel_of_rejects_unsyncable_names(tmp_path: Path) -> None:
    with pytest.raises(UnsafePath):
        rel_of(tmp_path, tmp_path / "win\\name.md")


def test_resolve_inside(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path, "notes.md") == tmp_path / "notes.md"
    assert resolve_inside(tmp_path, "not/yet/made.md") == tmp_path / "not/yet/made.md"
    assert resolve_inside(tmp_path, "café/ß.md") == tmp_path / "café" / "ß.md"


@pytest.mark.parametrize("rel", ["../x", "/etc/x", "a/../../x", "a//b", "", "a\\..\\b"])
def test_resolve_inside_validates(tmp_path: Path, rel: str) -> None:
    with pytest.raises(UnsafePath):
        resolve_inside(tmp_path, rel)


def test_resolve_refuses_symlinked_dir_pointing_outside(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    outside = tmp_path / "outside"
    (outside / "deep").mkdir(parents=True)
    (root / "escape").symlink_to(outside)
    (root / "sub").mkdir()
    (root / "sub" / "escape").symlink_to("../../outside")
    for rel in ["escape/x.md", "escape/deep/x.md", "escape/missing/x.md", "sub/escape/x.md"]:
        with pytest.raises(UnsafePath):
            resolve_inside(root, rel)


def test_resolve_refuses_dangling_symlink_outside(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    (root / "dangling").symlink_to(tmp_path / "not-there")
    with pytest.raises(UnsafePath):
        resolve_inside(root, "dangling/x.md")


def test_resolve_allows_symlink_within_space(tmp_path: Path) -> None:
    root = tmp_path / "space"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to("real")
    assert resolve_inside(root, "alias/x.md") == root / "alias" / "x.md"


def test_resolve_does_not_follow_final_component(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    (root / "leaf").symlink_to(tmp_path)
    # The leaf itself is returned unresolved; only the directories above it are checked.
    assert resolve_inside(root, "leaf") == root / "leaf"


def test_resolve_with_symlinked_root(tmp_path: Path) -> None:
    real = tmp_path / "real-space"
    (real / "sub").mkdir(parents=True)
    root = tmp_path / "space-link"
    root.symlink_to(real)
    assert resolve_inside(root, "sub/x.md") == root / "sub" / "x.md"
    assert os.path.realpath(resolve_inside(root, "sub/x.md")) == str(real / "sub" / "x.md")


def test_resolve_refuses_sibling_with_common_prefix(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    (tmp_path / "space-evil").mkdir()
    (root / "link").symlink_to(tmp_path / "space-evil")
    with pytest.raises(UnsafePath):
        resolve_inside(root, "link/x.md")

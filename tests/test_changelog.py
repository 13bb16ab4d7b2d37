"""CHANGELOG.md insertion: only the new lines are added, in the file's own style."""

from __future__ import annotations

from pathlib import Path

import pytest

from kanban.changelog import category_for, insert_entry

CORPUS = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "corpus" / "markdown" / "changelog",
                           Path("/work/shared/corpus/markdown/changelog")) if p.is_dir()), None)
FILES = sorted(CORPUS.iterdir()) if CORPUS else []


def assert_pure_insertion(old: bytes, new: bytes, must_contain: bytes) -> bytes:
    """new == old[:p] + inserted + old[p:] for some p; returns the inserted bytes."""
    assert len(new) > len(old)
    p = 0
    while p < len(old) and old[p] == new[p]:
        p += 1
    inserted_len = len(new) - len(old)
    # the common prefix may run into the insertion; back off until the suffix matches
    for start in range(p, -1, -1):
        if new[start + inserted_len:] == old[start:] and new[:start] == old[:start]:
            inserted = new[start:start + inserted_len]
            assert must_contain in inserted or must_contain in new[max(0, start - 200):start + inserted_len + 200]
            return inserted
    raise AssertionError("the change is not a pure insertion")


@pytest.mark.skipif(not FILES, reason="the shared corpus is not next to this checkout")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_corpus_changelog_gets_only_inserted_lines(path):
    old = path.read_bytes()
    new = insert_entry(old, "TASK-41: Fix the frobnicator", "Fixed")
    inserted = assert_pure_insertion(old, new, b"TASK-41: Fix the frobnicator")
    if b"\r\n" in old:
        assert b"\n" not in inserted.replace(b"\r\n", b"")  # the file's own line endings
    again = insert_entry(new, "TASK-42: Add a gadget", "Added")
    assert_pure_insertion(new, again, b"TASK-42: Add a gadget")
    third = insert_entry(again, "TASK-43: Fix more", "Fixed")
    assert_pure_insertion(again, third, b"TASK-43: Fix more")
    text = third.decode("utf-8")
    assert text.index("TASK-41") < text.index("TASK-43") or "TASK-43" in text


@pytest.mark.skipif(not FILES, reason="the shared corpus is not next to this checkout")
@pytest.mark.parametrize("path", [p for p in FILES if b"nreleased" in p.read_bytes() or b"NRELEASED" in p.read_bytes()],
                         ids=lambda p: p.name)
def test_corpus_with_unreleased_section_removed(path):
    """The same files without their Unreleased heading: a section is created, still a pure insertion."""
    lines = path.read_bytes().splitlines(keepends=True)
    kept = [ln for ln in lines if b"nreleased" not in ln.lower() or not ln.lstrip().startswith(b"#")]
    old = b"".join(kept)
    new = insert_entry(old, "TASK-7: Remove the widget", "Removed")
    assert_pure_insertion(old, new, b"TASK-7: Remove the widget")
    assert new.count(b"[Unreleased]") == old.count(b"[Unreleased]") + 1


def test_keep_a_changelog_shapes():
    base = b"# Changelog\n\n## [Unreleased]\n\n### Fixed\n\n- old fix\n\n## [1.0.0] - 2026-01-01\n\n- first\n"
    out = insert_entry(base, "TASK-1: Fix x", "Fixed").decode()
    assert "- old fix\n- TASK-1: Fix x\n\n## [1.0.0]" in out
    out = insert_entry(base, "TASK-2: Add y", "Added").decode()
    assert "- old fix\n\n### Added\n\n- TASK-2: Add y\n\n## [1.0.0]" in out
    fresh = insert_entry(b"# Changelog\n\n## [1.0.0] - 2026-01-01\n\n- first\n", "TASK-3: Add z", "Added").decode()
    assert fresh == ("# Changelog\n\n## [Unreleased]\n\n### Added\n\n- TASK-3: Add z\n\n"
                     "## [1.0.0] - 2026-01-01\n\n- first\n")


def test_crlf_bom_and_no_final_newline():
    old = "\ufeff# Changelog\r\n\r\n## [Unreleased]\r\n\r\n### Changed\r\n\r\n- a".encode()
    new = insert_entry(old, "TASK-1: Tweak", "Changed")
    assert new == "\ufeff# Changelog\r\n\r\n## [Unreleased]\r\n\r\n### Changed\r\n\r\n- a\r\n- TASK-1: Tweak".encode()


def test_unreleased_inside_code_fence_is_not_the_section():
    old = b"# C\n\n```\n## [Unreleased]\n```\n\n## [Unreleased]\n\n## [1.0]\n"
    out = insert_entry(old, "TASK-1: x", "Changed").decode()
    assert out == "# C\n\n```\n## [Unreleased]\n```\n\n## [Unreleased]\n\n### Changed\n\n- TASK-1: x\n\n## [1.0]\n"


def test_other_styles_use_their_own_category_names_and_bullets():
    bat = b"# unreleased\n\n## Bugfixes\n\n* one\n\n## Other\n\n* two\n\n# v0.1\n"
    out = insert_entry(bat, "TASK-5: Fix paging", "Fixed").decode()
    assert "* one\n* TASK-5: Fix paging\n\n## Other" in out
    link = b"## [Unreleased]\n- plain item\n\n## [1.0]\n\n[unreleased]: https://example.com\n"
    assert b"- plain item\n- TASK-6: y\n\n## [1.0]" in insert_entry(link, "TASK-6: y", "Changed")


@pytest.mark.parametrize("title,expected", [("Fix race in cache", "Fixed"), ("Add --verbose", "Added"),
                                            ("Remove old API", "Removed"), ("Speed up the cache", "Changed"),
                                            ("Implement retries", "Added"), ("Deprecate v1", "Deprecated")])
def test_category_from_title(title, expected):
    assert category_for(title) == expected
    assert category_for(title, "security") == "Security"

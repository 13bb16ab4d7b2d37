"""The git questions a handover answers from files, once, or narrowed: the same answers as git's.

Each shortcut (a loose ref read from its file, the shared git directory remembered, MERGE_HEAD
looked for, the tester's tracked files asked by name, the git guard's digests kept by stat)
is checked against what git itself says, also where the shortcut must give way to git
(packed refs, symbolic refs, a merge under way).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import git

from kanban import agents, gitguard
from kanban import git as kgit
from kanban.targets import covering_tests


def test_a_loose_ref_is_read_from_its_file_and_anything_else_left_to_git(repo):
    common = kgit.common_dir(repo)
    main = git(repo, "rev-parse", "main").strip()
    assert kgit.loose_ref(common, "refs/heads/main") == main
    git(repo, "symbolic-ref", "refs/heads/link", "refs/heads/main")
    assert kgit.loose_ref(common, "refs/heads/link") is None  # symbolic: git's to answer
    assert kgit.loose_ref(common, "refs/heads/none") is None
    git(repo, "pack-refs", "--all")
    assert kgit.loose_ref(common, "refs/heads/main") is None  # packed: git's to answer
    assert kgit.branch_exists(repo, "main") and not kgit.branch_exists(repo, "none")


def _git_refs(repo, pattern):
    out = git(repo, "for-each-ref", "--format=%(objectname) %(refname)", pattern)
    return {ref: sha for sha, _, ref in (line.partition(" ") for line in out.splitlines())}


def test_refs_read_from_the_files_are_git_s_own_answer_loose_packed_and_both(repo, monkeypatch):
    main = git(repo, "rev-parse", "main").strip()
    for n in range(1, 5):
        git(repo, "branch", f"kanban/TASK-{n}", "main")
    git(repo, "pack-refs", "--all")  # all packed: main and TASK-1..4
    (repo / "f").write_text("x\n")
    git(repo, "add", "f")
    git(repo, "commit", "-q", "-m", "next")
    moved = git(repo, "rev-parse", "HEAD").strip()  # main moved: a loose ref over its packed one
    git(repo, "branch", "-f", "kanban/TASK-2", moved)
    git(repo, "branch", "kanban/TASK-9", moved)  # loose only
    git(repo, "branch", "-D", "kanban/TASK-3")  # deleted from packed-refs
    git(repo, "branch", "kanban/deeper/TASK-5", main)  # a folder inside the folder
    calls = []
    real = kgit.run
    monkeypatch.setattr(kgit, "run", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    for pattern in ("refs/heads/kanban/", "refs/heads/kanban", "refs/heads/kanban/TASK-2", "refs/heads/main",
                    "refs/heads/none/"):
        assert kgit.ref_shas(repo, pattern) == _git_refs(repo, pattern), pattern
    assert kgit.branch_sha(repo, "main") == moved != main
    assert kgit.branches(repo, "refs/heads/kanban/") == sorted(
        ["kanban/TASK-1", "kanban/TASK-2", "kanban/TASK-4", "kanban/TASK-9", "kanban/deeper/TASK-5"])
    assert [c for c in calls if c[0] == "for-each-ref" or c[:2] == ("rev-parse", "--verify")] == [], calls


def test_refs_the_files_cannot_vouch_for_are_asked_of_git(repo, monkeypatch):
    common = kgit.common_dir(repo)
    git(repo, "branch", "kanban/TASK-1", "main")
    git(repo, "symbolic-ref", "refs/heads/kanban/TASK-2", "refs/heads/main")  # symbolic: git resolves it
    calls = []
    real = kgit.run
    monkeypatch.setattr(kgit, "run", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    assert kgit.ref_shas(repo, "refs/heads/kanban/") == _git_refs(repo, "refs/heads/kanban/")
    assert calls and calls[-1][0] == "for-each-ref"
    git(repo, "update-ref", "-d", "--no-deref", "refs/heads/kanban/TASK-2")
    (common / "refs/heads/kanban/TASK-3").symlink_to(common / "refs/heads/kanban/TASK-1")  # a link
    calls.clear()
    kgit.ref_shas(repo, "refs/heads/kanban/")
    assert calls and calls[-1][0] == "for-each-ref"
    (common / "refs/heads/kanban/TASK-3").unlink()
    (common / "refs/heads/kanban/TASK-1.lock").write_text("0" * 40 + "\n")  # a write under way: not yet the ref
    calls.clear()
    assert kgit.ref_shas(repo, "refs/heads/kanban/") == _git_refs(repo, "refs/heads/kanban/")
    assert not calls
    (common / "reftable").mkdir()  # refs kept another way: only git knows
    kgit.ref_shas(repo, "refs/heads/kanban/")
    assert calls and calls[-1][0] == "for-each-ref"


def test_toplevel_remembers_the_shared_git_directory_of_a_linked_worktree(repo, tmp_path):
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(wt), "main")
    assert kgit.toplevel(wt) == wt.resolve()
    assert kgit.common_dir(wt) == (repo / ".git").resolve()
    assert kgit.branch_exists(wt, "side") and kgit.branch_exists(wt, "main") and not kgit.branch_exists(wt, "x")
    assert kgit.toplevel(tmp_path) is None


def test_a_merge_under_way_is_seen_and_none_costs_no_git(repo, tmp_path):
    wt = tmp_path / "wt"
    git(repo, "worktree", "add", "-q", "-b", "side", str(wt), "main")
    assert not kgit.merge_in_progress(wt) and not kgit.merge_in_progress(repo)
    (wt / "README.md").write_text("side\n")
    git(wt, "commit", "-qam", "side")
    (repo / "README.md").write_text("main\n")
    git(repo, "commit", "-qam", "main")
    assert kgit.merge_main_into(wt, "main") == ["README.md"]
    assert kgit.merge_in_progress(wt)
    git(wt, "merge", "--abort")
    assert not kgit.merge_in_progress(wt)


def test_a_transient_lock_is_retried_then_reported(repo):
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    began = time.monotonic()
    with pytest.raises(kgit.GitError) as err:
        kgit.run(repo, "add", "README.md")
    assert time.monotonic() - began >= 1.5  # 0.05 + 0.1 + 0.2 + 0.4 + 0.8 s between the six tries
    assert "index.lock" in err.value.stderr
    lock.unlink()
    assert kgit.run(repo, "rev-parse", "--verify", "-q", "HEAD").strip() == git(repo, "rev-parse", "HEAD").strip()
    assert kgit.run(repo, "rev-parse", "--verify", "-q", "nope", check=False) == ""


NAMES = ["src/cache.py", "src/a/cache.ts", "tests/test_cache.py", "tests/x/cache_test.go", "cache.spec.js",
         "CacheTest.java", "we[ir]d/test_we*ird.py", "src/we*ird.py", "tests/test_other.py", "test_cache",
         "src/test_cache.py.bak", "tests/test_we[ir]d.py", "src/we[ir]d.py", ".eslintrc.js", "tests/test_.py",
         "docs/cache.md"]


@pytest.mark.parametrize("changed", [["src/cache.py"], ["src/we*ird.py"], ["src/we[ir]d.py"], ["README.md"],
                                     ["src/.py"], ["tests/test_cache.py", "src/a/cache.ts"], []])
def test_the_testers_tracked_files_are_asked_by_name_with_the_same_tests_found(repo, changed):
    for name in NAMES:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "files")
    assert covering_tests(changed, agents.tracked_candidates(repo, changed)) == \
        covering_tests(changed, kgit.tracked_files(repo))


def test_the_guard_sees_a_rewrite_that_keeps_size_and_mtime(repo, monkeypatch):
    monkeypatch.setattr(gitguard, "RACY_NS", 0)  # remember digests at once
    guard = gitguard.GitGuard(repo, repo / ".git")
    hook = repo / ".git" / "hooks" / "post-checkout"
    hook.write_text("#!/bin/sh\necho a\n")
    stamp = os.stat(hook).st_mtime_ns
    guard.take_baseline()
    assert guard.check_and_restore() == ([], None)
    time.sleep(0.02)
    hook.write_text("#!/bin/sh\necho b\n")  # same size
    os.utime(hook, ns=(stamp, stamp))  # same mtime: only the ctime tells
    findings, aside = guard.check_and_restore()
    assert [str(f) for f in findings] == [".git/hooks/post-checkout changed"]
    assert hook.read_text() == "#!/bin/sh\necho a\n" and Path(aside, "hooks", "post-checkout").exists()


def test_worktrees_read_from_git_s_records_are_git_s_own_list(repo, tmp_path, monkeypatch):
    """Main, linked on a branch, detached, locked, packed branch tips, a record whose worktree was
    deleted by hand (prunable): the same list as `git worktree list`, with no git process."""
    git(repo, "worktree", "add", "-q", "-b", "kanban/TASK-1", str(tmp_path / "one"), "main")
    git(repo, "worktree", "add", "-q", "--detach", str(tmp_path / "two"), "main")
    git(repo, "worktree", "add", "-q", "-b", "kanban/TASK-3", str(tmp_path / "three"), "main")
    git(repo, "worktree", "lock", str(tmp_path / "three"))
    (tmp_path / "one" / "f").write_text("x\n")
    git(tmp_path / "one", "add", "f")
    git(tmp_path / "one", "commit", "-q", "-m", "one")
    git(repo, "pack-refs", "--all")
    git(repo, "worktree", "add", "-q", "-b", "kanban/TASK-4", str(tmp_path / "four"), "main")
    import shutil

    shutil.rmtree(tmp_path / "four")  # gone by hand: git still lists it until pruned
    calls = []
    real = kgit.run
    monkeypatch.setattr(kgit, "run", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    from_files = kgit.worktrees(repo)
    assert not calls
    listed = kgit._listed_worktrees(repo)
    assert sorted(from_files) == sorted(listed) and from_files[0] == listed[0]  # the main one first
    assert {w.branch for w in from_files} == {"main", "kanban/TASK-1", None, "kanban/TASK-3", "kanban/TASK-4"}
    assert [w.locked for w in from_files if w.branch == "kanban/TASK-3"] == [True]


def test_worktree_records_the_files_cannot_vouch_for_are_asked_of_git(repo, tmp_path, monkeypatch):
    git(repo, "worktree", "add", "-q", "-b", "kanban/TASK-1", str(tmp_path / "one"), "main")
    admin = kgit.common_dir(repo) / "worktrees" / "one"
    calls = []
    real = kgit.run
    monkeypatch.setattr(kgit, "run", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    for broken in ("ref: refs/heads/kanban/none\n", "ref: refs/remotes/origin/main\n"):  # unborn; not a branch
        (admin / "HEAD").write_text(broken)
        calls.clear()
        assert kgit.worktrees(repo) == kgit._listed_worktrees(repo)
        assert calls and calls[0][:2] == ("worktree", "list"), broken
    (admin / "HEAD").write_text("ref: refs/heads/kanban/TASK-1\n")
    (admin / "gitdir").write_text("../one/.git\n")  # relative (worktree.useRelativePaths): git's to read
    calls.clear()
    kgit.worktrees(repo)
    assert calls and calls[0][:2] == ("worktree", "list")


def test_merged_tips_are_git_s_answer_and_asked_again_only_for_what_moved(repo, monkeypatch):
    main = git(repo, "rev-parse", "main").strip()
    git(repo, "branch", "kanban/TASK-1", "main")  # merged: main holds its tip
    git(repo, "checkout", "-q", "-b", "kanban/TASK-2")
    (repo / "two").write_text("2\n")
    git(repo, "add", "two")
    git(repo, "commit", "-q", "-m", "two")  # not merged
    git(repo, "checkout", "-q", "main")
    kgit.common_dir(repo)  # asked once per process
    calls = []
    real = kgit.run
    monkeypatch.setattr(kgit, "run", lambda *a, **k: calls.append(a[1:]) or real(*a, **k))
    want = kgit.branches_merged_into(repo, main, "refs/heads/kanban/")
    assert want == {"kanban/TASK-1": main}
    calls.clear()
    assert kgit.merged_tips(repo, main, "refs/heads/kanban/") == want
    assert [c[0] for c in calls] == ["for-each-ref"]
    calls.clear()
    assert kgit.merged_tips(repo, main, "refs/heads/kanban/") == want  # nothing moved: no git
    assert not calls
    git(repo, "branch", "-f", "kanban/TASK-1", "kanban/TASK-2")  # moved to a tip already asked about
    assert kgit.merged_tips(repo, main, "refs/heads/kanban/") == {}
    assert not calls
    git(repo, "commit", "-q", "--allow-empty", "-m", "three")
    git(repo, "branch", "kanban/TASK-3", "main")  # a new tip: asked
    git(repo, "reset", "-q", "--hard", main)
    assert kgit.merged_tips(repo, main, "refs/heads/kanban/") == {}
    assert [c[0] for c in calls] == ["for-each-ref"]
    git(repo, "merge", "-q", "--ff-only", "kanban/TASK-2")  # main moved: a new question
    new_main = git(repo, "rev-parse", "main").strip()
    assert kgit.merged_tips(repo, new_main, "refs/heads/kanban/") == \
        {"kanban/TASK-1": new_main, "kanban/TASK-2": new_main}

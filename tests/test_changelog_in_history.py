"""CHANGELOG.md in main's history: each merge commit holds its own line, the person's checkout
follows without a dirty file, the remote gets it; the other board files are never committed.

Also the merge queue's side of a person's day: dirty files hold only the merges they touch,
every verification keeps its own log, and `--dry-run` changes nothing even when a branch is gone.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess

from agents_kit import task_md
from conftest import git, run_cli, snapshot
from test_merge_queue import assert_task_done, good, make_origin
from test_merge_queue import make_project as make_queue_project

from kanban.commands.run import run as run_loop
from kanban.history import History

WORKING_BOARD = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md")


def merge_commits(root, since: str = "") -> list[tuple[str, str]]:
    """(sha, subject) of main's first-parent merge commits, oldest first."""
    out = git(root, "log", "--first-parent", "--merges", "--reverse", "--format=%H %s", "main")
    return [tuple(line.split(" ", 1)) for line in out.splitlines()]


def changelog_lines_added(root, sha: str) -> list[str]:
    diff = git(root, "diff", "-U0", f"{sha}^1", sha, "--", "CHANGELOG.md")
    return [line[1:] for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]


def test_five_merges_each_commit_their_line_the_checkout_stays_clean_and_the_remote_has_them(kit, tmp_path):
    tasks = "".join(task_md(f"TASK-{n}", f"Add module {n}", files=f"src/m{n}.py") for n in range(1, 6))
    p = kit(tasks, extra_toml="\n[merge]\npush = true\n")
    # as `kanban init` sets it up: the working board is the person's, kept out of git; CHANGELOG.md is committed
    # (the kit wrote TODO.md before init, so init left that one alone: as a person would, keep it local too)
    git(p.root, "rm", "-q", "--cached", "TODO.md")
    with open(p.root / ".git" / "info" / "exclude", "a") as out:
        out.write("/TODO.md\n")
    git(p.root, "commit", "-q", "-m", "the working board stays local")
    tracked = git(p.root, "ls-files").split()
    assert "CHANGELOG.md" in tracked and not set(WORKING_BOARD) & set(tracked)
    origin = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    git(p.root, "remote", "add", "origin", str(origin))
    git(p.root, "push", "-q", "origin", "main")
    p.set_rules([{"task": f"TASK-{n}", "role": "task", "steps": [["commit", f"src/m{n}.py"]]} for n in range(1, 6)])

    assert run_loop(p.root, no_merge=False, live=False) == 0

    assert git(p.root, "status", "--porcelain", "--untracked-files=all") == "", "the checkout is clean"
    merges = merge_commits(p.root)
    assert sorted(subject for _, subject in merges) == sorted(f"Merge TASK-{n}: Add module {n}" for n in range(1, 6))
    for sha, subject in merges:
        tid, title = re.match(r"Merge (TASK-\d+): (.*)", subject).groups()
        added = [line for line in changelog_lines_added(p.root, sha) if line.startswith("- ")]
        assert added == [f"- {tid}: {title}"], (subject, added)
        changed = git(p.root, "diff", "--name-only", f"{sha}^1", sha).split()
        assert not set(changed) & set(WORKING_BOARD), changed
    # main's history of CHANGELOG.md: one commit per merge, each adding its line (merge commits show
    # their diff against main's previous commit with --first-parent, or with --cc)
    touching = git(p.root, "log", "--format=%H", "main", "--", "CHANGELOG.md").split()
    assert set(sha for sha, _ in merges) <= set(touching)
    for flags in (["--first-parent"], ["--cc"]):
        log = git(p.root, "log", "-p", *flags, "main", "--", "CHANGELOG.md")
        assert sum(1 for line in log.splitlines() if re.match(r"^\+\+?- TASK-\d+: ", line)) == 5, (flags, log)
    committed = git(p.root, "show", "main:CHANGELOG.md")
    assert (p.root / "CHANGELOG.md").read_text() == committed
    assert git(origin, "show", "main:CHANGELOG.md") == committed
    assert all(f"- TASK-{n}: Add module {n}" in committed for n in range(1, 6))


def test_uncommitted_changelog_edits_are_carried_over_each_merge(tmp_path):
    p = make_queue_project(tmp_path)
    p.add_task(1, "Add one", good("one"), priority=1)
    p.add_task(2, "Add two", good("two"), priority=2)
    mine = p.text("CHANGELOG.md").replace("## [Unreleased]\n", "## [Unreleased]\n\n- My own note, not committed\n")
    (p.root / "CHANGELOG.md").write_text(mine)

    out = p.queue(code=0)

    assert out["merged"] == ["TASK-1", "TASK-2"]
    committed = git(p.root, "show", "main:CHANGELOG.md")
    assert "My own note" not in committed, "kanban never commits the person's uncommitted text"
    assert "TASK-1: Add one" in committed and "TASK-2: Add two" in committed
    working = p.text("CHANGELOG.md")
    assert "- My own note, not committed\n" in working
    assert "TASK-1: Add one" in working and "TASK-2: Add two" in working
    diff = git(p.root, "diff", "-U0", "--", "CHANGELOG.md")
    added = [line for line in diff.splitlines() if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
    assert added == ["+- My own note, not committed"], diff
    for tid in ("TASK-1", "TASK-2"):
        assert_task_done(p, tid)


def test_a_queue_killed_after_the_fast_forward_gives_the_carried_edits_back(tmp_path):
    """Repair of the one window where the person's CHANGELOG.md edits live only in the record."""
    p = make_queue_project(tmp_path)
    p.add_task(1, "Add one", good("one"))
    mine = p.text("CHANGELOG.md").replace("## [Unreleased]\n", "## [Unreleased]\n\n- Mine\n")
    (p.root / "CHANGELOG.md").write_text(mine)
    p.queue(code=0)
    head = p.main()
    old = git(p.root, "rev-parse", "main^1").strip()
    # as if killed right after `git merge --ff-only`: the file is main's, the record holds the edits
    (p.root / "CHANGELOG.md").write_text(git(p.root, "show", "main:CHANGELOG.md"))
    (p.root / ".kanban" / "advance.json").write_text(json.dumps({
        "checkout": str(p.root), "old": old, "new": head,
        "changelog": base64.b64encode(mine.encode()).decode(), "entries": [["TASK-1", "Add one", "Added"]]}))

    out = p.queue(code=0)

    assert any("uncommitted edits of CHANGELOG.md are back" in line for line in out["lines"]), out["lines"]
    working = p.text("CHANGELOG.md")
    assert "- Mine\n" in working and "TASK-1: Add one" in working
    assert not (p.root / ".kanban" / "advance.json").exists() and p.main() == head


def test_an_untracked_changelog_gets_its_lines_in_the_working_copy_and_one_hint(tmp_path):
    p = make_queue_project(tmp_path)
    git(p.root, "rm", "-q", "--cached", "CHANGELOG.md")
    git(p.root, "commit", "-q", "-m", "CHANGELOG.md untracked")
    p.add_task(1, "Add one", good("one"), priority=1)
    p.add_task(2, "Add two", good("two"), priority=2)

    proc = run_cli(p.root, "merge-queue", check_code=0)

    assert proc.stdout.count("CHANGELOG.md is not committed on main") == 1, proc.stdout
    assert subprocess.run(["git", "cat-file", "-e", "main:CHANGELOG.md"], cwd=p.root).returncode != 0, \
        "kanban never starts tracking a file on its own"
    assert "TASK-1: Add one" in p.text("CHANGELOG.md") and "TASK-2: Add two" in p.text("CHANGELOG.md")


def test_dirty_files_hold_only_the_merges_that_touch_them(tmp_path):
    p = make_queue_project(tmp_path)
    p.add_task(1, "Add one", good("one"), priority=1)
    p.add_task(2, "Change beta", {"shared.txt": "alpha\nBETA\ngamma\n"}, priority=2)
    p.add_task(3, "Add three", good("three"), priority=3)
    (p.root / "shared.txt").write_text("alpha\nbeta (mine)\ngamma\n")

    out = p.queue(code=1)

    assert out["merged"] == ["TASK-1", "TASK-3"], out
    assert out["waiting"] == {"TASK-2": ["shared.txt"]} and out["blocked"] is None
    waiting = [line for line in out["lines"] if line.startswith("waiting to merge")]
    assert waiting == ["waiting to merge: TASK-2 (uncommitted changes in your checkout touch shared.txt; "
                       "commit or stash them and the queue merges them)"], out["lines"]
    assert (p.root / "shared.txt").read_text() == "alpha\nbeta (mine)\ngamma\n"
    assert "status: ready to merge" in p.text("TESTING.md") and "[RETRY]" not in p.text("TESTING.md")
    assert out["verifications"] == 2, "the waiting merge is not verified before the person is done"

    (p.root / "shared.txt").write_text("alpha\nbeta\ngamma\n")
    assert p.queue(code=0)["merged"] == ["TASK-2"]


def test_dry_run_changes_nothing_when_a_ready_branch_is_gone(tmp_path):
    p = make_queue_project(tmp_path)
    p.add_task(1, "Add one", good("one"))
    p.add_task(2, "Add two", good("two"))
    git(p.root, "worktree", "remove", "--force", str(p.root / ".worktrees" / "TASK-1"))
    git(p.root, "branch", "-q", "-D", "kanban/TASK-1")
    run_cli(p.root, "status")  # kanban's state folder exists already
    before = {k: v for k, v in snapshot(p.root).items() if not k.startswith(".kanban/")}
    refs = git(p.root, "for-each-ref")

    out = p.queue("--dry-run", code=0)

    assert out["lines"] == ["would send TASK-1 back to testing: its branch kanban/TASK-1 is gone",
                            "would merge TASK-2"], out["lines"]
    assert {k: v for k, v in snapshot(p.root).items() if not k.startswith(".kanban/")} == before
    assert git(p.root, "for-each-ref") == refs
    # the real run does send it back
    p.queue(code=0)
    assert "[RETRY]" in p.text("TESTING.md")


def test_each_verification_keeps_its_own_log_and_the_note_names_it(tmp_path):
    p = make_queue_project(tmp_path)
    p.add_task(1, "Add one", good("one"), priority=1)
    p.add_task(2, "Break it", {"BAD": "x\n"}, priority=2)

    p.queue(code=1)

    with History(p.root, readonly=True) as history:
        checks = history.verifications()
        # a failure runs once more before it counts ([merge] verify_retries = 1)
        assert [(v.tasks, v.outcome, v.how, v.try_) for v in checks] == [
            ("TASK-1", "pass", "exit status 0", 1), ("TASK-2", "fail", "exit status 1", 1),
            ("TASK-2", "fail", "exit status 1", 2)]
        assert [v.task_ids() for v in history.verifications("TASK-2")] == [["TASK-2"], ["TASK-2"]]
    logs = [v.log for v in checks]
    assert len(set(logs)) == 3
    assert "verify: all good" in open(logs[0]).read()
    assert "BAD marker present" in open(logs[2]).read()
    rel = logs[2][len(str(p.root)) + 1:]
    assert f"log: {rel})" in p.text("TESTING.md") + p.text("REVIEW.md")
    assert not (p.root / ".kanban" / "verify.log").exists()


def test_push_carries_the_changelog_to_the_remote(tmp_path):
    p = make_queue_project(tmp_path, toml="push = true\n")
    origin = make_origin(p)
    p.add_task(1, "Add one", good("one"))

    p.queue(code=0)

    assert "- TASK-1: Add one" in git(origin, "show", "main:CHANGELOG.md")
    assert git(p.root, "status", "--porcelain", "--", "CHANGELOG.md") == ""


def test_changelog_lines_pushed_by_another_clone_are_kept_beside_the_queues(tmp_path):
    p = make_queue_project(tmp_path, toml="push = true\n")
    origin = make_origin(p)
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    text = (other / "CHANGELOG.md").read_text().replace("## [Unreleased]\n", "## [Unreleased]\n\n- Their line\n")
    (other / "CHANGELOG.md").write_text(text)
    git(other, "commit", "-q", "-am", "their changelog line")
    git(other, "push", "-q", "origin", "main")
    p.add_task(1, "Add one", good("one"))

    out = p.queue(code=0)

    assert out["merged"] == ["TASK-1"]
    remote = git(origin, "show", "main:CHANGELOG.md")
    assert "- Their line" in remote and "- TASK-1: Add one" in remote and "<<<<<<<" not in remote
    assert (p.root / "CHANGELOG.md").read_text() == remote

"""Acceptance tests for `kanban merge-queue`: real repositories, real task branches and worktrees.

Each test builds a repository with `kanban init` and a `[merge] verify` command
that is a small Python script kept OUTSIDE the repository. The script fails
when a file named BAD is in the merged tree, and appends one JSON line per run
(the commit it verified, pass or fail, its pid) to a log that is also outside
the repository, so the tests count verification runs exactly and know which
commits were verified.

Task branches are made directly, without agents: `kanban/TASK-N` from main with
one commit, a worktree at `.worktrees/TASK-N`, and a `status: ready to merge`
entry in TESTING.md.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import git, run_cli, snapshot

from kanban.commands.init import init

BOARD = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md")

CHANGELOG = (
    "# Changelog\n\nAll notable changes to this project are documented in this file.\n\n"
    "## [Unreleased]\n\n"
    "## [0.1.0] - 2025-12-01\n\n### Added\n\n- The first release.\n"
)

VERIFY_SCRIPT = '''\
import json, os, subprocess, sys, time

LOG = {log!r}
ROOT = {root!r}
TMP = {tmp!r}
SLEEP = {sleep!r}


def git(*args, cwd=None, env=None, input=None):
    return subprocess.run(["git", *args], cwd=cwd, env=env, input=input, check=True,
                          capture_output=True, text=True).stdout.strip()


RUN = sum(1 for _ in open(LOG)) if os.path.exists(LOG) else 0
BAD = sorted(name for name in os.listdir(".") if name.startswith("BAD"))
rec = {{"head": git("rev-parse", "HEAD"), "ok": not BAD, "pid": os.getpid(), "run": RUN}}
{hook}
with open(LOG, "a") as out:
    out.write(json.dumps(rec) + "\\n")
time.sleep(SLEEP)
if not rec["ok"]:
    print("verify: BAD marker present in the merged tree, the build is broken")
    sys.exit(1)
print("verify: all good")
'''

# Run by the verify script on its first run only: commit a new file to main
# with plumbing, as another person or process would while the queue works.
LAND_ON_MAIN_HOOK = '''\
if RUN == 0:
    env = dict(os.environ, GIT_INDEX_FILE=os.path.join(TMP, "landing-index"))
    git("read-tree", "refs/heads/main", cwd=ROOT, env=env)
    blob = git("hash-object", "-w", "--stdin", cwd=ROOT, input="landed while the queue worked\\n")
    git("update-index", "--add", "--cacheinfo", "100644," + blob + ",landed.txt", cwd=ROOT, env=env)
    tree = git("write-tree", cwd=ROOT, env=env)
    old = git("rev-parse", "refs/heads/main", cwd=ROOT)
    new = git("commit-tree", tree, "-p", old, "-m", "landed during the queue", cwd=ROOT)
    git("update-ref", "refs/heads/main", new, old, cwd=ROOT)
    with open(os.path.join(TMP, "landed"), "w") as out:
        out.write(new)
'''

# Records where origin's main is at each verification run.
ORIGIN_HOOK = '''\
rec["origin"] = git("rev-parse", "main", cwd=os.path.join(TMP, "origin.git"))
'''


# -- the project under test ------------------------------------------------------------------


@dataclass
class Project:
    root: Path
    tmp: Path
    log: Path
    tips: dict[str, str] = field(default_factory=dict)  # task id -> its branch tip
    titles: dict[str, str] = field(default_factory=dict)

    # set-up

    def add_task(self, n: int, title: str, files: dict[str, str | None], *, priority: int | None = None,
                 base: str = "main") -> str:
        """Branch kanban/TASK-N from `base`, one commit changing `files`, a worktree, a ready TESTING entry."""
        tid = f"TASK-{n}"
        wt = self.root / ".worktrees" / tid
        git(self.root, "worktree", "add", "-q", "--no-track", "-b", f"kanban/{tid}", str(wt), base)
        for rel, text in files.items():
            path = wt / rel
            if text is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
        git(wt, "add", "-A")
        git(wt, "commit", "-q", "-m", f"{tid}: {title}")
        self.tips[tid] = git(wt, "rev-parse", "HEAD").strip()
        self.titles[tid] = title
        meta = (f"priority: {priority}\n" if priority is not None else "") + "status: ready to merge\n"
        with (self.root / "TESTING.md").open("a") as out:
            out.write(f"\n## {tid}: {title}\n{meta}")
        return tid

    def commit_main(self, files: dict[str, str], message: str) -> str:
        """A commit on main made in the person's checkout (main checked out at the root)."""
        for rel, text in files.items():
            (self.root / rel).write_text(text)
        git(self.root, "add", *files)
        git(self.root, "commit", "-q", "-m", message)
        return self.main()

    # running

    def queue(self, *args: str, code: int | None = None) -> dict:
        proc = run_cli(self.root, "merge-queue", "--json", *args)
        if code is not None:
            assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
        data = json.loads(proc.stdout) if proc.stdout.strip() else {}
        data["_proc"] = proc
        return data

    def popen_queue(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "kanban", "-C", str(self.root), "merge-queue", *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy())

    # looking

    def runs(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def main(self) -> str:
        return git(self.root, "rev-parse", "refs/heads/main").strip()

    def text(self, name: str) -> str:
        return (self.root / name).read_text()

    def merges_of(self, tid: str, rev: str = "main") -> list[tuple[str, list[str]]]:
        """(commit, parents) of every `Merge TASK-N: ...` commit reachable from `rev`."""
        out = git(self.root, "log", rev, "--format=%H%x00%P%x00%s")
        found = []
        for line in out.splitlines():
            sha, parents, subject = line.split("\0")
            if subject.startswith(f"Merge {tid}: "):
                found.append((sha, parents.split()))
        return found

    def first_parent_chain(self, since: str) -> list[tuple[str, list[str], str]]:
        """Commits on main's first-parent line after `since`, oldest first: (sha, parents, subject)."""
        out = git(self.root, "log", "--first-parent", "--reverse", "--format=%H%x00%P%x00%s", f"{since}..main")
        return [(sha, parents.split(), subject) for sha, parents, subject in
                (line.split("\0") for line in out.splitlines())]

    def in_main(self, rev: str) -> bool:
        return subprocess.run(["git", "merge-base", "--is-ancestor", rev, "main"], cwd=self.root).returncode == 0

    def has_branch(self, tid: str) -> bool:
        return subprocess.run(["git", "rev-parse", "-q", "--verify", f"refs/heads/kanban/{tid}"],
                              cwd=self.root, capture_output=True).returncode == 0

    def worktree_paths(self) -> set[str]:
        """The worktrees git lists, but the idle ones a merged task's worktree is parked in for reuse."""
        out = git(self.root, "worktree", "list", "--porcelain")
        idle = str(self.root / ".worktrees" / ".idle") + "/"
        listed = {line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")}
        return {path for path in listed if not path.startswith(idle)}

    def has_worktree(self, tid: str) -> bool:
        wt = self.root / ".worktrees" / tid
        return wt.exists() or str(wt) in self.worktree_paths()


def make_project(tmp_path: Path, *, hook: str = "", sleep: float = 0.0, toml: str = "",
                 before_commit=None) -> Project:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("# project\n")
    (root / "shared.txt").write_text("alpha\nbeta\ngamma\n")
    assert init(root) == 0  # `kanban init`, in-process: the CLI itself is run by every queue call
    (root / "CHANGELOG.md").write_text(CHANGELOG)
    log = tmp_path / "verify-runs.jsonl"
    script = tmp_path / "verify.py"
    script.write_text(VERIFY_SCRIPT.format(log=str(log), root=str(root), tmp=str(tmp_path), sleep=sleep,
                                           hook=textwrap.dedent(hook)))
    (root / "kanban.toml").write_text(
        '[agent]\npreset = "demo"\n\n[merge]\n'
        f"verify = {json.dumps([sys.executable, str(script)])}\n" + toml)
    if before_commit:
        before_commit(root)
    git(root, "add", "-A")
    # init keeps the working board out of git; these tests track it, as a team sharing its board does
    git(root, "add", "-f", *BOARD)
    git(root, "commit", "-q", "-m", "initial")
    return Project(root, tmp_path, log)


# -- reading the board files as text (not through kanban's own parser) ----------------------------


def heading_re(tid: str) -> re.Pattern:
    return re.compile(rf"^## (?:\[[A-Z]+\] )*{re.escape(tid)}:", re.M)


def entry_text(text: str, tid: str) -> str | None:
    """The entry of `tid`: its heading up to the next level-1 or level-2 heading."""
    m = heading_re(tid).search(text)
    if m is None:
        return None
    nxt = re.compile(r"^#{1,2} ", re.M).search(text, m.end())
    return text[m.start(): nxt.start() if nxt else len(text)]


def changelog_count(text: str, tid: str) -> int:
    return len(re.findall(rf"^[-*+] {re.escape(tid)}: ", text, re.M))


def unreleased(text: str) -> str:
    start = text.index("## [Unreleased]")
    end = text.find("\n## ", start + 1)
    return text[start: end if end >= 0 else len(text)]


def only_insertions(before: str, after: str) -> list[str]:
    """The lines `after` adds to `before`; fails if anything of `before` was changed or removed."""
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    added = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        assert op in ("equal", "insert"), f"{op} of {a[i1:i2]!r} -> {b[j1:j2]!r}"
        added += b[j1:j2] if op == "insert" else []
    return added


def assert_changelog_gained(p: Project, before: str, tids: list[str]) -> None:
    """CHANGELOG.md gained exactly one line per task under Unreleased (plus category headings), nothing else."""
    after = p.text("CHANGELOG.md")
    added = only_insertions(before, after)
    entries = [line for line in added if line.startswith("- ")]
    assert sorted(entries) == sorted(f"- {t}: {p.titles[t]}\n" for t in tids), added
    assert all(line.strip() == "" or line.startswith(("- ", "### ")) for line in added), added
    section = unreleased(after)
    for t in tids:
        assert changelog_count(section, t) == 1, (t, section)
        assert changelog_count(after, t) == 1, (t, after)


def assert_task_done(p: Project, tid: str) -> None:
    assert entry_text(p.text("TESTING.md"), tid) is None
    assert changelog_count(p.text("CHANGELOG.md"), tid) == 1
    assert len(p.merges_of(tid)) == 1
    assert p.in_main(p.tips[tid])
    assert not p.has_branch(tid), f"branch of {tid} left behind"
    assert not p.has_worktree(tid), f"worktree of {tid} left behind"


def assert_board_consistent(p: Project, tids: list[str]) -> None:
    """Every task is on the board exactly once or in CHANGELOG exactly once, merged at most once,
    and a finished task leaves no worktree or branch."""
    texts = {name: p.text(name) for name in BOARD}
    for tid in tids:
        on_board = sum(len(heading_re(tid).findall(texts[n])) for n in BOARD if n != "CHANGELOG.md")
        logged = changelog_count(texts["CHANGELOG.md"], tid)
        merges = len(p.merges_of(tid))
        assert (on_board, logged) in ((1, 0), (0, 1)), (tid, on_board, logged, texts)
        assert merges == logged, (tid, merges, logged)
        if logged:
            assert p.in_main(p.tips[tid])
            assert not p.has_branch(tid), f"orphaned branch of {tid}"
            assert not p.has_worktree(tid), f"orphaned worktree of {tid}"
        else:
            assert not p.in_main(p.tips[tid]), f"{tid} is in main but still on the board"


def assert_main_only_verified(p: Project, since: str, *, logged: bool = True, others: tuple[str, ...] = ()) -> None:
    """Every commit on main's first-parent line passes verification (no BAD in its tree); with
    `logged`, every commit main ever pointed at (its reflog) was verified by the queue first,
    except `since` and the `others` that somebody else put on main."""
    for sha, _parents, subject in p.first_parent_chain(since):
        assert not has_bad(p, sha), (sha, subject)
    if logged:
        passed = {r["head"] for r in p.runs() if r["ok"]}
        for sha in reflog_of_main(p):
            assert sha in passed or sha == since or sha in others, \
                f"main was at {sha[:10]} without a passing verification"


def has_bad(p: Project, rev: str) -> bool:
    return any(name.startswith("BAD") for name in git(p.root, "ls-tree", "--name-only", rev).split())


def reflog_of_main(p: Project) -> list[str]:
    return git(p.root, "reflog", "show", "--format=%H", "refs/heads/main").split()


def wait_for(predicate, timeout: float = 20.0, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def kill_orphans(p: Project) -> None:
    """Verification runs left behind by a killed queue (they run in their own session)."""
    for r in p.runs():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(r["pid"], signal.SIGKILL)


def good(name: str) -> dict[str, str]:
    return {f"src/{name}.py": f"def {name}():\n    return {name!r}\n"}


# -- 1. serial ------------------------------------------------------------------------------------------


def test_serial_merges_in_priority_order_with_one_merge_commit_each(tmp_path):
    p = make_project(tmp_path)
    start = p.main()
    changelog_before = p.text("CHANGELOG.md")
    testing_committed = git(p.root, "show", "main:TESTING.md")
    p.add_task(1, "Add parser", good("parser"), priority=3)
    p.add_task(2, "Add lexer", good("lexer"), priority=1)
    p.add_task(3, "Add printer", good("printer"), priority=2)

    out = p.queue(code=0)

    order = ["TASK-2", "TASK-3", "TASK-1"]
    assert out["merged"] == order
    assert out["verifications"] == 3 and len(p.runs()) == 3
    assert out["conflicts"] == [] and out["failed"] == [] and out["blocked"] is None
    chain = p.first_parent_chain(start)
    assert [subject for _, _, subject in chain] == [f"Merge {t}: {p.titles[t]}" for t in order]
    for (sha, parents, _), tid in zip(chain, order):
        assert len(parents) == 2 and parents[1] == p.tips[tid], "a --no-ff merge of the task's branch"
        assert p.merges_of(tid) == [(sha, parents)]
    # each merge was verified on exactly the commit main then moved to, in order
    assert [r["head"] for r in p.runs()] == [sha for sha, _, _ in chain]
    assert_changelog_gained(p, changelog_before, order)
    added = [line for line in unreleased(p.text("CHANGELOG.md")).splitlines() if line.startswith("- ")]
    assert added == [f"- {t}: {p.titles[t]}" for t in order], "CHANGELOG lines in merge order"
    # the three entries, and only they, are gone (the blank line add_task wrote before the first
    # heading is outside every entry, so it stays)
    assert p.text("TESTING.md") == testing_committed + "\n"
    for tid in order:
        assert_task_done(p, tid)
    assert p.worktree_paths() <= {str(p.root), str(p.root / ".kanban" / "verify"),
                                  str(p.root / ".kanban" / "verify-2")}  # verify-2: the armed one's
    # the person's checkout of main moved with it
    assert git(p.root, "rev-parse", "HEAD").strip() == p.main()
    assert (p.root / "src" / "lexer.py").read_text() == "def lexer():\n    return 'lexer'\n"
    # nothing left to do: a second run is a no-op
    again = p.queue(code=0)
    assert again["merged"] == [] and again["verifications"] == 0 and len(p.runs()) == 3


# -- 2. batch of disjoint tasks ---------------------------------------------------------------------------


def test_batch_of_disjoint_tasks_is_verified_once(tmp_path):
    p = make_project(tmp_path)
    start = p.main()
    changelog_before = p.text("CHANGELOG.md")
    tids = [p.add_task(n, f"Add module {n}", good(f"mod{n}")) for n in range(1, 7)]

    out = p.queue("--batch", code=0)

    assert sorted(out["merged"]) == tids
    assert out["verifications"] == 1 and len(p.runs()) == 1
    assert p.runs()[0]["head"] == p.main(), "the verified tree is the one main moved to"
    chain = p.first_parent_chain(start)
    assert len(chain) == 6 and all(len(parents) == 2 for _, parents, _ in chain)
    for tid in tids:
        assert_task_done(p, tid)
        assert (p.root / "src" / f"mod{tid[-1]}.py").exists()
    assert_changelog_gained(p, changelog_before, tids)


# -- 3. batch with conflicts --------------------------------------------------------------------------------


def test_batch_conflicts_go_back_to_testing_and_the_rest_merge(tmp_path):
    p = make_project(tmp_path, before_commit=lambda root: (root / "conf.txt").write_text("mode = slow\nlevel = 1\n"))
    p.add_task(1, "Add one", good("one"), priority=1)
    p.add_task(2, "Change mode", {"conf.txt": "mode = fast\nlevel = 1\n"}, priority=1)
    p.add_task(3, "Change beta", {"shared.txt": "alpha\nBETA three\ngamma\n"}, priority=2)
    p.add_task(4, "Change beta too", {"shared.txt": "alpha\nBETA four\ngamma\n"}, priority=2)
    p.add_task(5, "Add five", good("five"), priority=3)
    # main moves after TASK-2 branched, changing the same line
    p.commit_main({"conf.txt": "mode = medium\nlevel = 1\n"}, "tune the mode")

    out = p.queue("--batch", code=1)

    assert sorted(out["merged"]) == ["TASK-1", "TASK-3", "TASK-5"]
    assert sorted(out["conflicts"]) == ["TASK-2", "TASK-4"]
    assert out["failed"] == []
    for tid in ("TASK-1", "TASK-3", "TASK-5"):
        assert_task_done(p, tid)
    testing = p.text("TESTING.md")
    for tid, path in (("TASK-2", "conf.txt"), ("TASK-4", "shared.txt")):
        entry = entry_text(testing, tid)
        assert entry is not None and entry.startswith(f"## [RETRY] {tid}:"), entry
        assert "status: ready to merge" not in entry, "a conflicted task is no longer ready"
        notes = entry.split("### Notes", 1)[1]
        assert path in notes, entry
        assert p.has_branch(tid) and git(p.root, "rev-parse", f"kanban/{tid}").strip() == p.tips[tid]
        assert p.has_worktree(tid)
        assert not p.in_main(p.tips[tid]) and p.merges_of(tid) == []
        assert changelog_count(p.text("CHANGELOG.md"), tid) == 0
    assert git(p.root, "show", "main:conf.txt") == "mode = medium\nlevel = 1\n"
    assert git(p.root, "show", "main:shared.txt") == "alpha\nBETA three\ngamma\n"
    assert subprocess.run(["git", "grep", "-q", "<<<<<<<", "main"], cwd=p.root).returncode == 1
    assert_board_consistent(p, list(p.tips))


# -- 4. batch with a culprit: bisection ------------------------------------------------------------------------


@pytest.mark.parametrize("n,culprit", [(8, 5), (5, 0), (5, 4)])
def test_batch_bisects_to_the_culprit_within_log2_verifications(tmp_path, n, culprit):
    p = make_project(tmp_path)
    start = p.main()
    tids = []
    for i in range(n):
        files = good(f"mod{i}")
        if i == culprit:
            files["BAD"] = "this change breaks the build\n"
        tids.append(p.add_task(i + 1, f"Add module {i}", files, priority=i + 1))
    bad = tids[culprit]

    out = p.queue("--batch", code=1)

    limit = math.ceil(math.log2(n)) + 2
    assert out["verifications"] == len(p.runs()) <= limit, (out["verifications"], limit)
    assert out["failed"] == [bad]
    assert sorted(out["merged"]) == sorted(t for t in tids if t != bad)
    for tid in tids:
        if tid != bad:
            assert_task_done(p, tid)
    review = entry_text(p.text("REVIEW.md"), bad)
    assert review is not None and review.startswith(f"## [RETRY] {bad}:"), review
    assert "BAD marker present in the merged tree" in review, "the failing output is in the notes"
    assert entry_text(p.text("TESTING.md"), bad) is None
    assert p.has_branch(bad) and p.has_worktree(bad), "the reviewer works in the same worktree"
    # main never contained the culprit's change, not even for a moment
    assert not p.in_main(p.tips[bad]) and p.merges_of(bad) == []
    assert_main_only_verified(p, start)  # every commit main ever pointed at had passed verification
    assert_board_consistent(p, tids)


# -- 5. main never moves to an unverified tree ------------------------------------------------------------------


@pytest.mark.parametrize("batch", [False, True])
def test_failed_verification_leaves_main_where_it_was(tmp_path, batch):
    p = make_project(tmp_path)
    before = p.main()
    tracked_before = {k: v for k, v in snapshot(p.root).items() if not k.startswith((".kanban", ".worktrees"))}
    p.add_task(1, "Break things", {"BAD": "broken\n", "src/x.py": "x = 1\n"})
    if batch:
        p.add_task(2, "Break more", {"BAD2": "also broken\n", "src/y.py": "y = 1\n"})

    out = p.queue(*(["--batch"] if batch else []), code=1)

    assert p.main() == before
    assert reflog_of_main(p) == [before]
    assert out["merged"] == []
    assert sorted(out["failed"]) == (["TASK-1", "TASK-2"] if batch else ["TASK-1"])
    assert git(p.root, "rev-parse", "HEAD").strip() == before
    assert not (p.root / "BAD").exists() and not (p.root / "src").exists()
    now = {k: v for k, v in snapshot(p.root).items() if not k.startswith((".kanban", ".worktrees"))}
    assert {k for k in now if now[k] != tracked_before.get(k)} <= {"TESTING.md", "REVIEW.md"}
    assert "BAD marker present" in entry_text(p.text("REVIEW.md"), "TASK-1")


# -- 6. the person's checkout of main --------------------------------------------------------------------------


def test_dirty_main_checkout_touching_incoming_files_blocks_the_merge(tmp_path):
    p = make_project(tmp_path)
    before = p.main()
    p.add_task(1, "Change beta", {"shared.txt": "alpha\nBETA\ngamma\n", "src/new.py": "new = 1\n"})
    (p.root / "shared.txt").write_text("alpha\nbeta (my local edit)\ngamma\n")

    proc = run_cli(p.root, "merge-queue")

    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "waiting to merge: TASK-1 (uncommitted changes in your checkout touch shared.txt;" in proc.stdout, \
        (proc.stdout, proc.stderr)
    assert p.main() == before and git(p.root, "rev-parse", "HEAD").strip() == before
    assert (p.root / "shared.txt").read_text() == "alpha\nbeta (my local edit)\ngamma\n"
    assert not (p.root / "src" / "new.py").exists()
    entry = entry_text(p.text("TESTING.md"), "TASK-1")
    assert entry is not None and "status: ready to merge" in entry and "[RETRY]" not in entry, \
        "a blocked merge is not the task's fault: it stays ready"
    assert changelog_count(p.text("CHANGELOG.md"), "TASK-1") == 0 and p.has_branch("TASK-1")

    # an untracked file in the way of a file the merge brings in blocks too
    (p.root / "shared.txt").write_text("alpha\nbeta\ngamma\n")
    (p.root / "src").mkdir()
    (p.root / "src" / "new.py").write_text("mine, not committed\n")
    proc = run_cli(p.root, "merge-queue")
    assert proc.returncode == 1 and "src/new.py" in proc.stderr + proc.stdout, (proc.stdout, proc.stderr)
    assert p.main() == before and (p.root / "src" / "new.py").read_text() == "mine, not committed\n"

    # once the person moves their work away, the merge goes through
    (p.root / "src" / "new.py").unlink()
    p.queue(code=0)
    assert_task_done(p, "TASK-1")
    assert (p.root / "shared.txt").read_text() == "alpha\nBETA\ngamma\n"


@pytest.mark.parametrize("case", ["ignored file", "staged rename"])
def test_local_work_git_status_hides_still_blocks_the_merge(tmp_path, case):
    """An ignored file in the way (git merge would overwrite it silently), or the source of a staged
    rename (porcelain status shows only its new name): main stays, the file is named."""
    p = make_project(tmp_path, before_commit=lambda root: (root / ".gitignore").write_text(".env\n"))
    before = p.main()
    if case == "ignored file":
        p.add_task(1, "Add env", {"src/a.py": "a = 1\n"})
        wt = p.root / ".worktrees" / "TASK-1"
        (wt / ".env").write_text("FROM_THE_BRANCH=1\n")
        git(wt, "add", "-f", ".env")
        git(wt, "commit", "-q", "-m", "track .env")
        p.tips["TASK-1"] = git(wt, "rev-parse", "HEAD").strip()
        (p.root / ".env").write_text("MY_SECRET=1\n")
        name = ".env"
    else:
        p.add_task(1, "Change beta", {"shared.txt": "alpha\nBETA\ngamma\n"})
        git(p.root, "mv", "shared.txt", "renamed.txt")
        name = "shared.txt"

    proc = run_cli(p.root, "merge-queue")

    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert f"uncommitted changes in your checkout touch {name};" in proc.stdout, (proc.stdout, proc.stderr)
    assert p.main() == before and git(p.root, "rev-parse", "HEAD").strip() == before
    if case == "ignored file":
        assert (p.root / ".env").read_text() == "MY_SECRET=1\n"
    else:
        assert (p.root / "renamed.txt").read_text() == "alpha\nbeta\ngamma\n"
    assert "status: ready to merge" in entry_text(p.text("TESTING.md"), "TASK-1")


def test_skip_worktree_edit_in_the_way_is_named_and_main_stays(tmp_path):
    """A local edit hidden by `git update-index --skip-worktree` passes the status check; git's own
    refusal to fast-forward the checkout stops the queue, and the message names the file."""
    p = make_project(tmp_path)
    before = p.main()
    p.add_task(1, "Change beta", {"shared.txt": "alpha\nBETA\ngamma\n"})
    git(p.root, "update-index", "--skip-worktree", "shared.txt")
    (p.root / "shared.txt").write_text("my local edit\n")

    proc = run_cli(p.root, "merge-queue")

    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "would be overwritten by merge: shared.txt" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert p.main() == before and git(p.root, "rev-parse", "HEAD").strip() == before
    assert (p.root / "shared.txt").read_text() == "my local edit\n"
    assert "status: ready to merge" in entry_text(p.text("TESTING.md"), "TASK-1")


def test_unrelated_local_edits_survive_and_the_checkout_moves_with_main(tmp_path):
    p = make_project(tmp_path)
    p.add_task(1, "Change beta", {"shared.txt": "alpha\nBETA\ngamma\n", "src/new.py": "new = 1\n"})
    p.add_task(2, "Add other", good("other"))
    (p.root / "README.md").write_text("# project\n\nmy unsaved notes\n")
    (p.root / "scratch.txt").write_text("untracked\n")

    p.queue(code=0)

    for tid in ("TASK-1", "TASK-2"):
        assert_task_done(p, tid)
    assert (p.root / "README.md").read_text() == "# project\n\nmy unsaved notes\n"
    assert (p.root / "scratch.txt").read_text() == "untracked\n"
    assert git(p.root, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert git(p.root, "rev-parse", "HEAD").strip() == p.main()
    status = git(p.root, "status", "--porcelain=v1", "--untracked-files=all").splitlines()
    paths = {line[3:]: line[:2] for line in status}
    assert paths.pop("README.md") == " M" and paths.pop("scratch.txt") == "??"
    assert set(paths) <= set(BOARD), f"checkout is stale or disturbed: {status}"
    assert (p.root / "shared.txt").read_text() == "alpha\nBETA\ngamma\n"
    assert (p.root / "src" / "new.py").read_text() == "new = 1\n"
    assert (p.root / "src" / "other.py").exists()


# -- 7. main not checked out: compare-and-swap ---------------------------------------------------------------


@pytest.mark.parametrize("away", ["detached", "other-branch"])
def test_cas_path_notices_a_commit_landing_on_main_and_never_overwrites_it(tmp_path, away):
    p = make_project(tmp_path, hook=LAND_ON_MAIN_HOOK)
    start = p.main()
    if away == "detached":
        git(p.root, "checkout", "-q", "--detach")
    else:
        git(p.root, "checkout", "-q", "-b", "topic")
    head_before = git(p.root, "rev-parse", "HEAD").strip()
    p.add_task(1, "Add one", good("one"), priority=1)
    p.add_task(2, "Add two", good("two"), priority=2)

    out = p.queue(code=0)

    landed = (tmp_path / "landed").read_text()
    assert landed != start
    assert p.in_main(landed), "the commit that landed during the queue was overwritten"
    assert out["merged"] == ["TASK-1", "TASK-2"]
    for tid in ("TASK-1", "TASK-2"):
        assert_task_done(p, tid)
    runs = p.runs()
    assert len(runs) == out["verifications"] == 3, "TASK-1 verified again on the moved main"
    assert not p.in_main(runs[0]["head"]), "the merge built on the old main was not used"
    assert p.merges_of("TASK-1")[0][1][0] == landed, "TASK-1 merged onto the landed commit"
    assert_main_only_verified(p, start, others=(landed,))
    # nobody's checkout moved
    assert git(p.root, "rev-parse", "HEAD").strip() == head_before
    if away == "other-branch":
        assert git(p.root, "symbolic-ref", "HEAD").strip() == "refs/heads/topic"
    assert not (p.root / "src").exists()


# -- 8. branches that touch the board files ---------------------------------------------------------------------


def test_branch_changes_to_board_files_never_reach_main_or_the_live_board(tmp_path):
    p = make_project(tmp_path)
    committed = {name: git(p.root, "show", f"main:{name}") for name in ("TODO.md", "CHANGELOG.md")}
    p.add_task(1, "Add feature", {
        "feature.txt": "feature\n",
        "TODO.md": committed["TODO.md"] + "\n## TASK-99: sneaked in by the branch\n",
        "CHANGELOG.md": committed["CHANGELOG.md"].replace("## [Unreleased]\n", "## [Unreleased]\n\n- branch line\n"),
    })
    p.add_task(2, "Add gadget", {"gadget.txt": "gadget\n", "TODO.md": "# TODO\n\nwiped by the branch\n"})
    # the person's own uncommitted edit to the live TODO.md
    todo_live = p.text("TODO.md") + "\nMy own note, not committed yet.\n"
    (p.root / "TODO.md").write_text(todo_live)
    changelog_live = p.text("CHANGELOG.md")

    p.queue("--batch", code=0)

    for tid in ("TASK-1", "TASK-2"):
        assert_task_done(p, tid)
    assert git(p.root, "show", "main:TODO.md") == committed["TODO.md"], "main's TODO.md changed"
    # main's CHANGELOG.md gained the queue's lines only, one per merge commit, never the branch's
    main_changelog = git(p.root, "show", "main:CHANGELOG.md")
    assert "branch line" not in main_changelog and main_changelog == p.text("CHANGELOG.md")
    assert p.text("TODO.md") == todo_live
    assert "branch line" not in p.text("CHANGELOG.md")
    assert_changelog_gained(p, changelog_live, ["TASK-1", "TASK-2"])
    assert git(p.root, "show", "main:feature.txt") == "feature\n"
    assert git(p.root, "show", "main:gadget.txt") == "gadget\n"
    for tid in ("TASK-1", "TASK-2"):
        sha, parents = p.merges_of(tid)[0]
        changed = git(p.root, "diff", "--name-only", parents[0], sha).split()
        assert set(changed) & set(BOARD) == {"CHANGELOG.md"}, changed  # its own line, nothing else
        diff = git(p.root, "diff", "-U0", parents[0], sha, "--", "CHANGELOG.md")
        added = [line for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]
        assert [line for line in added if line.startswith("+- ")] == [f"+- {tid}: {p.titles[tid]}"], diff


# -- 9. crash recovery -----------------------------------------------------------------------------------------


def merge_like_the_queue(p: Project, tid: str) -> str:
    """What a killed queue had done already: the verified merge commit, main moved to it."""
    tree = git(p.root, "merge-tree", "--write-tree", "main", p.tips[tid]).split()[0]
    commit = git(p.root, "commit-tree", tree, "-p", "main", "-p", p.tips[tid],
                 "-m", f"Merge {tid}: {p.titles[tid]}").strip()
    from kanban.history import History
    from kanban.merge_queue import LANDING

    with History(p.root) as history:  # the queue's own record comes before main moves
        history.event(tid, LANDING, detail=commit)
    git(p.root, "merge", "--ff-only", "-q", commit)
    return commit


def drop_entry(p: Project, tid: str) -> None:
    text = p.text("TESTING.md")
    entry = entry_text(text, tid)
    (p.root / "TESTING.md").write_text(text.replace(entry, ""))


def add_changelog_line(p: Project, tid: str) -> None:
    text = p.text("CHANGELOG.md")
    if "### Added\n\n" not in unreleased(text):
        text = text.replace("## [Unreleased]\n", "## [Unreleased]\n\n### Added\n\n", 1)
    head = "## [Unreleased]\n\n### Added\n\n"
    text = text.replace(head, f"{head}- {tid}: {p.titles[tid]}\n", 1)
    (p.root / "CHANGELOG.md").write_text(text)


def test_recovers_from_every_intermediate_state_without_merging_twice(tmp_path):
    p = make_project(tmp_path)
    start = p.main()
    tids = [p.add_task(n, f"Add module {n}", good(f"mod{n}"), priority=n) for n in range(1, 7)]
    # TASK-1: killed right after main moved (no CHANGELOG line, still in TESTING)
    merge_like_the_queue(p, "TASK-1")
    # TASK-2: killed after the CHANGELOG line, before the TESTING entry went
    merge_like_the_queue(p, "TASK-2")
    add_changelog_line(p, "TASK-2")
    # TASK-3: killed after the entry went, before the worktree and branch went
    merge_like_the_queue(p, "TASK-3")
    add_changelog_line(p, "TASK-3")
    drop_entry(p, "TASK-3")
    # TASK-4: killed between removing the worktree and deleting the branch
    merge_like_the_queue(p, "TASK-4")
    add_changelog_line(p, "TASK-4")
    drop_entry(p, "TASK-4")
    git(p.root, "worktree", "remove", "--force", str(p.root / ".worktrees" / "TASK-4"))
    # TASK-5: a batch landed on main (TASK-5 and TASK-6), killed before either was finished
    merge_like_the_queue(p, "TASK-5")
    merge_like_the_queue(p, "TASK-6")
    merged_main = p.main()
    # and a stale verification worktree from the killed run
    git(p.root, "worktree", "add", "-q", "--detach", str(p.root / ".kanban" / "verify"), start)
    tids.append(p.add_task(7, "Add module 7", good("mod7"), priority=7))

    out = p.queue(code=0)

    assert out["verifications"] == 1, "only TASK-7 needed merging"
    assert p.runs()[0]["head"] == p.main()
    assert p.first_parent_chain(merged_main)[0][2] == "Merge TASK-7: Add module 7"
    for tid in tids:
        assert_task_done(p, tid)
    assert_board_consistent(p, tids)
    assert_main_only_verified(p, start, logged=False)
    assert p.worktree_paths() <= {str(p.root), str(p.root / ".kanban" / "verify"),
                                  str(p.root / ".kanban" / "verify-2")}  # verify-2: the armed one's
    assert git(p.root, "for-each-ref", "refs/heads/kanban/").strip() == ""


@pytest.mark.heavy
def test_survives_being_killed_at_any_moment(tmp_path):
    seed = int(os.environ.get("KANBAN_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    why = f"(reproduce with KANBAN_KILL_SEED={seed})"
    p = make_project(tmp_path, sleep=0.2)
    start = p.main()
    tids = [p.add_task(n, f"Add module {n}", good(f"mod{n}") | ({"BAD": "x\n"} if n == 3 else {}), priority=n)
            for n in range(1, 5)]

    def main_ref() -> str:  # cheap enough to poll every few milliseconds (main's ref stays loose here)
        loose = p.root / ".git" / "refs" / "heads" / "main"
        return loose.read_text() if loose.exists() else p.main()

    def progress() -> tuple:
        # CHANGELOG.md comes with the merge: a checkout killed while git rewrote it may lack it until repaired
        changelog = p.root / "CHANGELOG.md"
        return (main_ref(), len(p.runs()), changelog.read_text().count("\n- TASK-") if changelog.exists() else -1,
                len(re.findall(r"^## .*TASK-\d+:", p.text("TESTING.md"), re.M)))

    def kill_when(changed: int | None, extra: float = 0.0) -> None:
        """Start the queue and SIGKILL it when field `changed` of progress() changes (or at once)."""
        before = progress()
        proc = p.popen_queue()
        try:
            if changed is not None:
                wait_for(lambda: progress()[changed] != before[changed] or proc.poll() is not None, step=0.002)
            time.sleep(extra)
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.wait()
            kill_orphans(p)
        time.sleep(0.05)  # git children of the killed queue finish their step

    kill_when(1, extra=rng.uniform(0, 0.15))  # during a verification
    assert p.main() == start, why
    kill_when(0)  # right after main moved
    kill_when(2)  # right after a CHANGELOG line was written
    kill_when(3)  # right after a TESTING entry went: removing the worktree and branch
    kill_when(None, extra=rng.uniform(0.05, 1.0))  # and at a random instant

    out = p.queue()
    assert out["_proc"].returncode in (0, 1), (out["_proc"].stdout, out["_proc"].stderr, why)
    final = p.queue(code=0)
    assert final["merged"] == final["failed"] == [] and final["verifications"] == 0, why

    assert_board_consistent(p, tids)
    for tid in ("TASK-1", "TASK-2", "TASK-4"):
        assert_task_done(p, tid)
    review = entry_text(p.text("REVIEW.md"), "TASK-3")
    assert review is not None and "BAD marker present" in review, (review, why)
    assert_main_only_verified(p, start)
    assert p.worktree_paths() <= {str(p.root), str(p.root / ".kanban" / "verify"),
                                  str(p.root / ".kanban" / "verify-2"),  # the armed one's
                                  str(p.root / ".worktrees" / "TASK-3")}


# -- 10. pushing to origin ----------------------------------------------------------------------------------------


def make_origin(p: Project) -> Path:
    origin = p.tmp / "origin.git"
    git(p.tmp, "init", "-q", "--bare", "-b", "main", str(origin))
    git(p.root, "remote", "add", "origin", str(origin))
    git(p.root, "push", "-q", "origin", "main")
    return origin


@pytest.mark.parametrize("advice", [True, False])
def test_push_after_each_merge_and_merge_origin_when_it_moved(tmp_path, advice):
    if not advice:  # a common setting: no "Updates were rejected" hints on stderr
        with open(os.environ["GIT_CONFIG_GLOBAL"], "a") as out:
            out.write("[advice]\n\tpushUpdateRejected = false\n\tpushFetchFirst = false\n")
    p = make_project(tmp_path, hook=ORIGIN_HOOK, toml="push = true\n")
    origin = make_origin(p)
    # somebody else pushes to origin meanwhile
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(origin), str(other))
    (other / "theirs.txt").write_text("from another clone\n")
    git(other, "add", "theirs.txt")
    git(other, "commit", "-q", "-m", "their work")
    git(other, "push", "-q", "origin", "main")
    theirs = git(other, "rev-parse", "HEAD").strip()
    p.add_task(1, "Add one", good("one"), priority=1)
    p.add_task(2, "Add two", good("two"), priority=2)

    out = p.queue(code=0)

    assert out["merged"] == ["TASK-1", "TASK-2"]
    final = p.main()
    assert git(origin, "rev-parse", "main").strip() == final, "origin's main is the final main"
    assert p.in_main(theirs) and p.in_main(p.tips["TASK-1"]) and p.in_main(p.tips["TASK-2"])
    runs = p.runs()
    assert len(runs) == out["verifications"] == 3, runs
    # run 2 verified main merged with origin's main; run 3 (TASK-2) started after that was pushed
    subject = git(p.root, "log", "-1", "--format=%s", runs[1]["head"]).strip()
    assert subject == "Merge origin/main", subject
    parents = git(p.root, "log", "-1", "--format=%P", runs[1]["head"]).split()
    assert parents == [p.merges_of("TASK-1")[0][0], theirs]
    assert runs[2]["origin"] == runs[1]["head"], "main was pushed after TASK-1 before TASK-2 was merged"
    assert p.merges_of("TASK-2")[0][1][0] == runs[1]["head"]
    assert (p.root / "theirs.txt").read_text() == "from another clone\n", "the checkout moved with main"
    for tid in ("TASK-1", "TASK-2"):
        assert_task_done(p, tid)


def test_push_refused_by_the_remote_is_an_error_not_a_moved_remote(tmp_path):
    """A hook or protected branch refusing the push (`[remote rejected]`, a message saying "rejected"):
    one clear error; no merge of origin's main (which main already contains) is made or verified."""
    p = make_project(tmp_path, toml="push = true\n")
    origin = make_origin(p)
    hook = origin / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'push rejected: main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    p.add_task(1, "Add one", good("one"))

    out = p.queue(code=1)

    assert "git push origin main failed" in out["_proc"].stderr, out["_proc"].stderr
    assert len(p.runs()) == 1
    pushed = git(origin, "rev-parse", "main").strip()
    assert [subject for _, _, subject in p.first_parent_chain(pushed)] == ["Merge TASK-1: Add one"]
    # main holds the verified merge; once the remote accepts again, the next run finishes the task
    hook.unlink()
    p.queue(code=0)
    assert_task_done(p, "TASK-1")
    assert len(p.runs()) == 1


# -- 11. dry run ------------------------------------------------------------------------------------------------------


def test_dry_run_changes_nothing_and_lists_the_groups(tmp_path):
    p = make_project(tmp_path)
    p.add_task(1, "Change beta", {"shared.txt": "alpha\nB1\ngamma\n"}, priority=1)
    p.add_task(2, "Add two", good("two"), priority=2)
    p.add_task(3, "Change beta again", {"shared.txt": "alpha\nB3\ngamma\n"}, priority=3)
    p.add_task(4, "Add four", good("four"), priority=4)
    run_cli(p.root, "status", check_code=0)  # the tool's own state directory exists already

    def state():
        files = {k: v for k, v in snapshot(p.root).items()
                 if not (k.startswith(".kanban/history.sqlite") or re.fullmatch(r"\.kanban/[a-z]+\.lock", k))}
        return (files, git(p.root, "for-each-ref"), git(p.root, "worktree", "list", "--porcelain"),
                git(p.root, "status", "--porcelain=v1", "--untracked-files=all"))

    before = state()
    batch = p.queue("--dry-run", "--batch", code=0)
    assert batch["lines"] == ["would merge TASK-1 + TASK-2 + TASK-4 as one batch", "would merge TASK-3"]
    serial = p.queue("--dry-run", code=0)
    assert serial["lines"] == [f"would merge TASK-{n}" for n in (1, 2, 3, 4)]
    human = run_cli(p.root, "merge-queue", "--dry-run", "--batch", check_code=0)
    assert "would merge TASK-1 + TASK-2 + TASK-4 as one batch" in human.stdout
    assert state() == before
    for out in (batch, serial):
        assert out["verifications"] == 0 and out["merged"] == out["failed"] == out["conflicts"] == []
    assert p.runs() == []


def test_stale_index_lock_in_the_verify_worktree_does_not_stop_the_queue(tmp_path):
    """A queue killed mid-checkout of .kanban/verify leaves its index.lock; the next queue clears it."""
    from kanban.git import worktree_gitdir

    p = make_project(tmp_path)
    p.add_task(1, "Add parser", good("parser"))
    assert p.queue(code=0)["merged"] == ["TASK-1"]
    lock = worktree_gitdir(p.root / ".kanban" / "verify") / "index.lock"
    lock.write_text("")  # as a killed `git checkout` leaves it
    p.add_task(2, "Add lexer", good("lexer"))
    out = p.queue(code=0)
    assert out["merged"] == ["TASK-2"] and out["failed"] == []
    assert not lock.exists()


# -- what a branch's verification prints is untrusted -----------------------------------------------------

HOSTILE_VERIFY_HOOK = '''\
if BAD:
    sys.stdout.write("\\x1b]52;c;Y2xpcGJvYXJk\\x07\\x1b[2J\\x00NUL here\\n")
    sys.stdout.write("x" * (20 * 1024 * 1024) + "\\n")  # one 20 MB line
    sys.stdout.write("env: " + json.dumps(dict(os.environ)) + "\\n")
    sys.stdout.flush()
'''


def test_verify_output_is_bounded_cleaned_and_holds_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("DEPLOY_SECRET", "s3cr3t-value-4711")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-model-key-4711")  # agents get it; checks do not
    p = make_project(tmp_path, hook=HOSTILE_VERIFY_HOOK)
    p.add_task(1, "Break things", {"BAD": "broken\n"})
    p.queue(code=1)
    review = (p.root / "REVIEW.md").read_bytes()
    assert len(review) < 16 * 1024  # not 20 MiB
    assert b"\x00" not in review and b"\x1b" not in review and b"\x07" not in review
    assert b"s3cr3t-value-4711" not in review  # verification got the filtered environment
    assert b"sk-ant-model-key-4711" not in review
    assert b"BAD marker present" in review
    run_cli(p.root, "status", check_code=0)  # the board still loads

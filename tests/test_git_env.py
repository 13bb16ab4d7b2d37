"""kanban's git works on the repository kanban was given, whatever its caller's environment says.

Run from a git hook (post-commit, pre-push...), kanban inherits GIT_DIR, GIT_WORK_TREE,
GIT_INDEX_FILE and friends that point at the hook's repository. Every git kanban starts
(kanban.git) runs without them, and without `git -c` command-scope config, while the person's
identity and config files stay.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, git

from kanban import git as kgit
from kanban import sandbox

PY = sys.executable


def hostile(other: Path) -> dict[str, str]:
    """A hook's view: everything points at OTHER, the hook's repository."""
    return {
        "GIT_DIR": str(other / ".git"),
        "GIT_WORK_TREE": str(other),
        "GIT_INDEX_FILE": str(other / ".git" / "index"),
        "GIT_OBJECT_DIRECTORY": str(other / ".git" / "objects"),
        "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(other / ".git" / "objects"),
        "GIT_COMMON_DIR": str(other / ".git"),
        "GIT_NAMESPACE": "hook",
        "GIT_CEILING_DIRECTORIES": "/",
        "GIT_PREFIX": "sub/",
        "GIT_QUARANTINE_PATH": str(other / ".git" / "objects" / "incoming"),
        "GIT_REFLOG_ACTION": "hook",
        "GIT_CONFIG_PARAMETERS": "'core.bare'='true'",
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "core.bare",
        "GIT_CONFIG_VALUE_0": "true",
        "GIT_GLOB_PATHSPECS": "1",
    }


def plain_env() -> dict[str, str]:
    """The test's own environment for the checking git: none of the hostile variables."""
    names = set(hostile(Path("/x")))
    return {k: v for k, v in os.environ.items() if k not in names}


def every_byte(path: Path) -> dict[str, bytes]:
    """Every file under PATH, .git included: refs, index, objects, logs, config."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def make_repo(path: Path, text: str) -> str:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text(text)
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", f"initial {text.strip()}")
    return git(path, "rev-parse", "HEAD").strip()


@pytest.fixture
def two(tmp_path):
    """(kanban's repository, its main, the other repository, its main)."""
    root, other = tmp_path / "repo", tmp_path / "other"
    main = make_repo(root, "ours\n")
    theirs = make_repo(other, "theirs\n")
    git(other, "status")  # its index refreshed now, not by whatever runs later
    return root, main, other, theirs


# --- the list --------------------------------------------------------------------------------------


def test_removed_variables_are_gits_local_list_and_the_callers_leftovers():
    local = subprocess.run(["git", "rev-parse", "--local-env-vars"], capture_output=True, text=True, check=True,
                           env=plain_env(), cwd="/").stdout.split()
    assert "GIT_DIR" in local and "GIT_INDEX_FILE" in local
    removed = kgit.removed_variables()
    assert set(local) <= removed
    assert {"GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES",
            "GIT_QUARANTINE_PATH", "GIT_REFLOG_ACTION", "GIT_WORK_TREE", "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_PREFIX"} <= removed
    kept = {"GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_AUTHOR_DATE", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
            "GIT_COMMITTER_DATE", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM", "GIT_CONFIG_NOSYSTEM", "GIT_SSH",
            "GIT_SSH_COMMAND", "GIT_SSL_CAINFO", "GIT_EXEC_PATH", "HOME", "XDG_CONFIG_HOME"}
    assert not kept & removed
    env = kgit.environment({"GIT_INDEX_FILE": "/tmp/own"}, base={
        **hostile(Path("/x")), "GIT_CONFIG_KEY_7": "a.b", "GIT_CONFIG_VALUE_7": "c", "GIT_SSH_COMMAND": "ssh -i k",
        "GIT_CONFIG_GLOBAL": "/g", "HOME": "/h"})
    assert env["GIT_INDEX_FILE"] == "/tmp/own"  # kanban's own, on purpose
    assert {"GIT_SSH_COMMAND": "ssh -i k", "GIT_CONFIG_GLOBAL": "/g", "HOME": "/h"}.items() <= env.items()
    assert kgit.GIT_ENV.items() <= env.items()
    assert not {k for k in env if k.startswith("GIT_CONFIG_") and k != "GIT_CONFIG_GLOBAL"}
    assert not (set(hostile(Path("/x"))) - {"GIT_INDEX_FILE"}) & set(env)


# --- what the child really gets --------------------------------------------------------------------


@pytest.fixture
def spy(tmp_path, monkeypatch):
    """A `git` first on PATH that records each call's environment (env -0), then runs the real one.
    calls() -> [(argv, {name: value})]."""
    real = shutil.which("git")
    bin_dir, calls_dir = tmp_path / "spy-bin", tmp_path / "spy-calls"
    bin_dir.mkdir()
    calls_dir.mkdir()
    script = bin_dir / "git"
    script.write_text(f'#!/bin/sh\nf=$(mktemp "{calls_dir}/call.XXXXXX")\nprintf "%s\\n" "$*" > "$f.argv"\n'
                      f'env -0 > "$f"\nexec "{real}" "$@"\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    def calls() -> list[tuple[str, dict[str, str]]]:
        found = []
        for f in sorted(calls_dir.glob("call.??????")):
            pairs = [item.partition("=") for item in f.read_bytes().decode().split("\0") if item]
            found.append(((f.parent / (f.name + ".argv")).read_text().strip(), {k: v for k, _, v in pairs}))
        for f in calls_dir.iterdir():
            f.unlink()
        return found

    return calls


def test_every_git_child_lacks_the_removed_variables_even_set_empty(two, spy, monkeypatch):
    root, main, other, _ = two
    kgit.removed_variables.cache_clear()  # asked again, through the spy
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    with monkeypatch.context() as m:
        for name, value in hostile(other).items():
            m.setenv(name, value)
        m.setenv("GIT_CONFIG_KEY_1", "user.name")
        m.setenv("GIT_CONFIG_VALUE_1", "Hook")
        m.setenv("GIT_IMPLICIT_WORK_TREE", "")  # empty still means something to git
        m.setenv("GIT_SHALLOW_FILE", "")
        assert kgit.rev_parse(root, "main") == main  # run
        assert kgit.has_commits(root)  # run_status
        blob = kgit.write_blob(root, b"a\r\nb\xff\n")  # _bytes
        assert kgit.read_blob(root, "main", "README.md") == b"ours\n"
        tree = kgit.tree_with_paths_from(root, kgit.tree_of(root, "main"), "main", ["README.md"])  # env=
        assert kgit.version() >= kgit.MIN_VERSION
        status, kind, _ = sandbox._git(kgit.common_dir(root), dict(os.environ), "cat-file", "-t", blob)
        assert (status, kind.strip()) == (0, b"blob")
        calls = spy()
    assert tree == kgit.tree_of(root, "main")
    argvs = [argv for argv, _ in calls]
    assert "rev-parse --local-env-vars" in argvs and any(a.endswith("hash-object -w --stdin") for a in argvs)
    assert any(a.endswith(" version") for a in argvs) and any(" read-tree " in a for a in argvs)
    removed = kgit.removed_variables()
    for argv, env in calls:
        leaked = {k for k in env if k in removed or k.startswith(("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_"))}
        own = {"GIT_INDEX_FILE"} if " read-tree " in argv or " update-index " in argv or argv.endswith("write-tree") \
            else {"GIT_DIR"} if argv.endswith(f"cat-file -t {blob}") else set()
        assert leaked == own, (argv, leaked)
        # the person's identity, config files and ssh settings stay; kanban's own settings are there
        assert env["GIT_AUTHOR_NAME"] == "Test Author" and env["GIT_COMMITTER_EMAIL"] == "committer@example.com"
        assert env["GIT_CONFIG_GLOBAL"] == os.environ["GIT_CONFIG_GLOBAL"] and env["GIT_CONFIG_NOSYSTEM"] == "1"
        assert env["HOME"] == os.environ["HOME"] and env["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"
        if argv not in ("rev-parse --local-env-vars", "version"):  # kanban's probe and GitPython's own
            assert argv.startswith(" ".join(kgit.SAFE_CONFIG)), argv
        assert env["GIT_TERMINAL_PROMPT"] == "0" and env["LC_ALL"] == "C"
    index_calls = [env for argv, env in calls if " read-tree " in argv]
    assert index_calls and all(e["GIT_INDEX_FILE"].endswith("/index") and "kanban-index-" in e["GIT_INDEX_FILE"]
                               for e in index_calls)
    (sandbox_env,) = [env for argv, env in calls if argv.endswith(f"cat-file -t {blob}")]
    assert sandbox_env["GIT_DIR"] == str(kgit.common_dir(root))


# --- it acts on the right repository ---------------------------------------------------------------


def test_kanban_git_acts_on_its_repository_never_the_one_the_environment_names(two, monkeypatch, tmp_path):
    root, main, other, theirs = two
    git(root, "checkout", "-q", "-b", "side")
    (root / "side.txt").write_text("side\n")
    git(root, "add", "side.txt")
    git(root, "commit", "-q", "-m", "side")
    side = git(root, "rev-parse", "HEAD").strip()
    git(root, "checkout", "-q", "main")
    (root / "untracked.txt").write_text("only here\n")
    before = every_byte(other)
    wt = tmp_path / "wt"
    with monkeypatch.context() as m:
        for name, value in hostile(other).items():
            m.setenv(name, value)
        assert kgit.rev_parse(root, "main") == main != theirs
        assert kgit.toplevel(root) == root
        assert kgit.common_dir(root) == root / ".git"
        assert kgit.current_branch(root) == "main"
        assert kgit.branch_exists(root, "side") and not kgit.branch_exists(root, "nope")
        assert kgit.run_status(root, "cat-file", "-e", theirs)[0] != 0  # no alternate into the other store
        assert kgit.status_porcelain(root) == [("??", "untracked.txt")]
        tree, conflicts = kgit.merge_tree(root, main, side)
        assert conflicts == []
        merged = kgit.commit_tree(root, tree, [main, side], "merge side")
        assert kgit.update_ref(root, "refs/heads/main", merged, main)
        assert kgit.rev_parse(root, "main") == merged
        kgit.add_worktree(root, wt, "kanban/TASK-1", "main")
        assert kgit.head(wt) == merged and kgit.worktree_branch(wt) == "kanban/TASK-1"
        assert [w.branch for w in kgit.worktrees(root)] == ["main", "kanban/TASK-1"]
        assert kgit.dirty_paths(wt) == []
        blob = kgit.write_blob(root, b"new\n")
        assert kgit.read_blob(root, "main", "side.txt") == b"side\n"
        new_tree = kgit.tree_with_blob(root, tree, "new.txt", blob)
        assert kgit.file_mode(root, kgit.commit_tree(root, new_tree, [merged], "new"), "new.txt") == "100644"
        remover = kgit.remove_worktree_in_background(root, wt)
        assert remover is not None and remover.args[-1] == str(wt) and remover.wait(timeout=60) == 0
        assert not wt.exists() and [w.branch for w in kgit.worktrees(root)] == ["main"]
    assert every_byte(other) == before  # refs, index, objects, logs: not one byte
    assert git(other, "worktree", "list").count("\n") == 1
    assert git(root, "rev-parse", "main", "kanban/TASK-1").split() == [merged, merged]
    assert git(root, "cat-file", "-t", blob).strip() == "blob"


def test_an_empty_git_dir_is_no_git_dir(two, monkeypatch):
    root, main, _, _ = two
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR"):
        monkeypatch.setenv(name, "")  # git refuses '' for each: "not a git repository: ''"
    assert kgit.rev_parse(root, "main") == main
    assert kgit.status_porcelain(root) == []
    assert kgit.read_blob(root, "main", "README.md") == b"ours\n"


# --- end to end: the command line, from a hook ---------------------------------------------------------


def kanban_project(root: Path) -> None:
    """A kanban project with TASK-1 ready to merge on its own branch."""
    from kanban.commands.init import init

    make_repo(root, "# project\n")
    assert init(root, quiet=True) == 0
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "kanban")
    wt = root / ".worktrees" / "TASK-1"
    git(root, "worktree", "add", "-q", "--no-track", "-b", "kanban/TASK-1", str(wt), "main")
    (wt / "x.txt").write_text("x\n")
    git(wt, "add", "x.txt")
    git(wt, "commit", "-q", "-m", "TASK-1: Add x")
    with (root / "TESTING.md").open("a") as out:
        out.write("\n## TASK-1: Add x\nstatus: ready to merge\n")


def check_outputs(queue: str, status: str) -> None:
    assert json.loads(queue)["lines"] == ["would merge TASK-1"], queue
    data = json.loads(status)
    assert data["error"] is None and data["queue"] == ["TASK-1"], status


def test_kanban_run_from_a_post_commit_hook_reads_its_own_repository(tmp_path):
    root, other = tmp_path / "repo", tmp_path / "other"
    kanban_project(root)
    make_repo(other, "theirs\n")
    out = tmp_path / "out"
    out.mkdir()
    hook = other / ".git" / "hooks" / "post-commit"
    hook.write_text(f'#!/bin/sh\nenv > "{out}/hook.env"\n'
                    f'"{PY}" -m kanban -C "{root}" merge-queue --dry-run --json > "{out}/queue" 2> "{out}/queue.err"\n'
                    f'"{PY}" -m kanban -C "{root}" status --json > "{out}/status" 2> "{out}/status.err"\n')
    hook.chmod(0o755)
    before_root, before_other = every_byte(root / ".git"), every_byte(other / ".git")
    # as a person's tooling commits: --git-dir/--work-tree and -c make git export GIT_DIR,
    # GIT_WORK_TREE and GIT_CONFIG_PARAMETERS to the hook, and commit adds GIT_INDEX_FILE
    subprocess.run(["git", f"--git-dir={other / '.git'}", f"--work-tree={other}", "-c", "user.name=Hooked",
                    "commit", "-q", "--allow-empty", "-m", "hooked"], cwd=tmp_path, check=True, timeout=120)
    hook_env = dict(line.partition("=")[::2] for line in (out / "hook.env").read_text().splitlines() if "=" in line)
    assert Path(hook_env["GIT_DIR"]).resolve() == (other / ".git").resolve()
    assert {"GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_CONFIG_PARAMETERS"} <= set(hook_env)
    check_outputs((out / "queue").read_text(), (out / "status").read_text())
    assert (out / "queue.err").read_text() == ""
    after = every_byte(other / ".git")
    changed = {k for k in set(before_other) | set(after) if before_other.get(k) != after.get(k)}
    commit = {"index", "COMMIT_EDITMSG", "refs/heads/main", "logs/HEAD", "logs/refs/heads/main"}
    assert changed and all(k in commit or k.startswith("objects/") for k in changed), changed  # the hook's own
    now_root = every_byte(root / ".git")
    assert {k: v for k, v in now_root.items() if not k.startswith("kanban")} == \
        {k: v for k, v in before_root.items() if not k.startswith("kanban")}  # a dry run changed nothing


def test_kanban_cli_with_git_dir_and_friends_in_its_environment(tmp_path):
    root, other = tmp_path / "repo", tmp_path / "other"
    kanban_project(root)
    make_repo(other, "theirs\n")
    before = every_byte(other)
    env = {**os.environ, **hostile(other), "GIT_INDEX_FILE": ".git/index"}  # relative, as commit hooks get it

    def cli(*args: str) -> str:
        done = subprocess.run([PY, "-m", "kanban", "-C", str(root), *args], capture_output=True, text=True,
                              timeout=60, env=env, cwd=other, check=False)
        assert done.returncode == 0, (done.stdout, done.stderr)
        return done.stdout

    check_outputs(cli("merge-queue", "--dry-run", "--json"), cli("status", "--json"))
    assert every_byte(other) == before


# --- the supervisor's git, and nothing else starting git ---------------------------------------------


def test_kanban_git_needs_only_the_standard_library():
    """The supervisor (python -I -S: no site-packages) settles a sandboxed run through kanban.git."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from kanban import git, sandbox; "
            "print(git.version() >= git.MIN_VERSION, sorted(m for m in sys.modules if m.split('.')[0] in "
            "('git', 'gitdb', 'tenacity', 'typer', 'rich')))")
    done = subprocess.run([PY, "-I", "-S", "-c", code, str(REPO)], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}, check=False)
    assert done.stdout.strip() == "True []", done.stderr


# Files that still build a `git` argv themselves, and why.
STARTS_ITS_OWN_GIT = {
    "kanban/git.py": "the one place",
    "kanban/demo_agent.py": "the scripted agent: its git is an agent's own, inside its worktree",
    # not converted yet: each to go through kanban.git, then out of this list
    "kanban/commands/demo.py": "builds the demo repository: kanban.git.run",
    "kanban/agents.py": "removes a worktree in the background: kanban.git.remove_worktree_in_background",
}


def test_nothing_outside_git_py_builds_a_git_command_line():
    found = set()
    for path in sorted((REPO / "kanban").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.List, ast.Tuple)) and node.elts and isinstance(node.elts[0], ast.Constant) \
                    and node.elts[0].value == "git":
                found.add(str(path.relative_to(REPO)))
    assert found <= set(STARTS_ITS_OWN_GIT), found - set(STARTS_ITS_OWN_GIT)

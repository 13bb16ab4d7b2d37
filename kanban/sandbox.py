"""The sandbox: `[agent] sandbox = "bwrap"` runs each agent (and the test command) in bubblewrap.

    bwrap --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp ... --unshare-pid --unshare-ipc
          --new-session --die-with-parent --cap-drop ALL --chdir WORKTREE -- <the agent's argv>

The whole machine is read-only to the agent, except:

- its worktree, and its worktree's own git folder (.git/worktrees/<name>: index, HEAD, logs);
- git objects and its branch, quarantined: a private object folder is mounted over
  .git/objects, with the shared store as its (read-only) alternate, and a private folder over
  .git/refs/heads/kanban/ holding a copy of its own branch. After the run the supervisor,
  outside, copies the new objects into the shared store, each one's hash checked, and moves the
  real branch by compare-and-swap (`settle`). So an agent can neither rewrite an object main
  uses, nor move main or another task's branch, nor leave its branch a symbolic ref to main;
- a private /tmp (and $XDG_RUNTIME_DIR), and its CLI's own state folders
  (`presets.Preset.sandbox`), where the files that configure what the CLI runs (settings with
  hooks, MCP servers, instructions) stay read-only, or must stay absent.

Read-only as well: the shared .git/config, hooks, info, packed-refs, refs/heads/<main>, the
worktree's `.git` link and its git folder's commondir, gitdir and config.worktree (those say
where kanban's own git, outside, goes). The agent sees only its own processes (its own pid
namespace and /proc: no kanban or supervisor environment to read), holds no capability even as
root (otherwise it could remount / read-write), cannot push input into a terminal (a new
session), and dies with its supervisor. The network is shared: agents reach their model APIs.

Pure functions build the argv from paths (`bwrap_argv`, `git_mounts`, `cli_mounts`); the
supervisor imports this module with the standard library only (no site-packages), and settles
through kanban.git, which needs no more.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kanban import paths

MODES = ("none", "bwrap")
FLAGS = ("--unshare-pid", "--unshare-ipc", "--new-session", "--die-with-parent", "--cap-drop", "ALL")
# Where the shared object store is seen inside, under the private /tmp, as the private one's alternate.
SHARED_OBJECTS = "/tmp/.kanban-git-objects"
# Daemons whose socket would let an agent start a process outside (connect() works on a
# read-only mount): covered with /dev/null when present.
DAEMON_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock", "/run/containerd/containerd.sock",
                  "/run/podman/podman.sock")
TMP = "/tmp"
# The agent's git inside: no auto gc or maintenance (they would write packed-refs, read-only).
GIT_CONFIG = (("gc.auto", "0"), ("maintenance.auto", "false"))
PROBE_TIMEOUT = 10.0
OBJECT_TYPES = (b"blob", b"tree", b"commit", b"tag")
_HEX = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")

_KIND_ORDER = {"tmpfs": 0, "expose": 1, "rw": 2, "ro": 3, "hide": 4}


@dataclass(frozen=True)
class Mount:
    """One bwrap mount. kind: "tmpfs" (an empty private folder), "expose" (read-only, for what a
    tmpfs would hide), "rw", "ro" (read-only over something bound read-write), "hide" (/dev/null
    over it). source: the host path, when not DEST itself."""

    kind: str
    dest: str
    source: str = ""


def order(mounts: Sequence[Mount]) -> list[Mount]:
    """Parents before what lies inside them (bwrap mounts in argument order, later over
    earlier); at one depth a tmpfs first, then read-only exposures, read-write, read-only
    protections. Duplicates dropped."""
    seen, out = set(), []
    for m in sorted(mounts, key=lambda m: (len(Path(m.dest).parts), _KIND_ORDER[m.kind])):
        if m not in seen:
            seen.add(m)
            out.append(m)
    return out


def bwrap_argv(bwrap: str, mounts: Sequence[Mount], argv: Sequence[str], cwd: str) -> list[str]:
    """The command line that runs ARGV in CWD inside the sandbox MOUNTS describe."""
    out = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", *FLAGS]
    for m in order(mounts):
        if m.kind == "tmpfs":
            out += ["--tmpfs", m.dest]
        elif m.kind == "hide":
            out += ["--ro-bind", "/dev/null", m.dest]
        else:
            out += ["--bind" if m.kind == "rw" else "--ro-bind", m.source or m.dest, m.dest]
    return out + ["--chdir", cwd, "--", *argv]


def under(path: str | Path, folders: Sequence[str]) -> bool:
    path = os.fspath(path)
    return any(path == f or path.startswith(f.rstrip("/") + "/") for f in folders)


def git_mounts(common: Path, admin: Path, worktree: Path, private: Path, branch: str) -> list[Mount]:
    """The git a commit on BRANCH needs, and nothing more: see the module's docstring.

    COMMON is the shared git folder, ADMIN the worktree's own (COMMON/worktrees/<name>),
    PRIVATE the run's folder with objects/, refs/ and logs/ (prepared by `prepare_git`).
    """
    folder = branch_folder(branch)
    return [
        Mount("expose", str(common)),
        Mount("expose", SHARED_OBJECTS, str(common / "objects")),
        Mount("rw", str(common / "objects"), str(private / "objects")),
        Mount("rw", str(common / "refs" / "heads" / folder), str(private / "refs")),
        Mount("rw", str(common / "logs" / "refs" / "heads" / folder), str(private / "logs")),
        Mount("rw", str(admin)),
        Mount("rw", str(worktree)),
        Mount("ro", str(worktree / ".git")),
        *(Mount("ro", str(admin / name)) for name in ("commondir", "gitdir", "config.worktree")
          if (admin / name).exists()),
    ]


def branch_folder(branch: str) -> str:
    """`kanban` for kanban/TASK-1: the folder of refs/heads/ quarantined for the run."""
    folder, _, leaf = branch.rpartition("/")
    if not folder or not leaf or ".." in branch.split("/"):
        raise ValueError(f"branch {branch!r} is not in a folder of refs/heads/ (kanban/<ID>)")
    return folder


def cli_mounts(dirs: Sequence, env: Mapping[str, str]) -> tuple[list[Mount], list[str]]:
    """Mounts for a preset's state folders (presets.SandboxDir), and the read-only entries that
    are absent (to be checked after the run: an agent must not create them)."""
    mounts, absent = [], []
    for d in dirs:
        base = resolve_home(d.where, env)
        if base is None:
            continue
        mounts.append(Mount("rw", str(base)))
        mounts += [Mount("rw", str(base / rel.rstrip("/"))) for rel in d.writable]
        made = [base / rel.rstrip("/") for rel in d.writable]  # made before the run
        for rel in d.readonly:
            path = base / rel.rstrip("/")
            if os.path.lexists(path) or any(m.is_relative_to(path) for m in made):
                mounts.append(Mount("ro", str(path)))
            else:
                absent.append(str(path))
    return mounts, absent


def resolve_home(where: str, env: Mapping[str, str]) -> Path | None:
    """"$VAR|~/.x": $VAR when set, else ~/.x under the agent's HOME."""
    var, _, default = where.rpartition("|")
    if var.startswith("$") and env.get(var[1:]):
        return Path(os.path.realpath(env[var[1:]]))
    home = env.get("HOME")
    if not home or not default.startswith("~/"):
        return None
    return Path(os.path.realpath(home)) / default[2:]


def exposures(paths: Sequence[str | Path], tmpfs: Sequence[str], bound: Sequence[str] = ()) -> list[Mount]:
    """Read-only mounts for the existing PATHS a tmpfs would hide (tests keep everything in /tmp),
    unless they are in a folder BOUND anyway (a report file in the worktree stays writable)."""
    out: list[Mount] = []
    # Both the path as named and where it leads: a venv's python is a link out of the venv, and
    # it still needs the venv's own folder (pyvenv.cfg, site-packages) to start.
    named = {os.path.abspath(p) for p in paths} | {os.path.realpath(p) for p in paths}
    named |= {os.fspath(v) for v in map(_venv_of, list(named)) if v is not None}
    for path in sorted(named, key=lambda p: len(Path(p).parts)):
        if under(path, tmpfs) and path not in tmpfs and os.path.exists(path) and \
                not under(path, [*bound, *(m.dest for m in out)]):
            out.append(Mount("expose", path))
    return out


def _venv_of(path: str) -> Path | None:
    """The virtual environment a program or a bin folder belongs to, if any."""
    for folder in (Path(path).parent.parent, Path(path).parent):
        if (folder / "pyvenv.cfg").is_file():
            return folder
    return None


def git_env(env: Mapping[str, str]) -> dict[str, str]:
    """GIT_CONFIG_COUNT entries for GIT_CONFIG, after the ones ENV already has."""
    try:
        n = int(env.get("GIT_CONFIG_COUNT") or 0)
    except ValueError:
        n = 0
    out = {"GIT_CONFIG_COUNT": str(n + len(GIT_CONFIG))}
    for i, (key, value) in enumerate(GIT_CONFIG, start=n):
        out[f"GIT_CONFIG_KEY_{i}"], out[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return out


# --- a plan for one run -----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What the runner needs to start a sandboxed run, and the supervisor to settle it."""

    bwrap: str
    mounts: tuple[Mount, ...]
    env: dict[str, str] = field(default_factory=dict)  # added to the agent's environment
    git: dict | None = None  # for settle(): paths, branch, its value at the start
    absent: tuple[str, ...] = ()  # paths that must not exist after the run
    # What a machine needs to plan the same sandbox for its own checkout (plan_here): a Ray
    # worker plans it there, since none of this machine's paths exist on it.
    request: dict = field(default_factory=dict)

    def wrap(self, argv: Sequence[str], cwd: Path) -> list[str]:
        return bwrap_argv(self.bwrap, self.mounts, argv, os.fspath(cwd))

    def settle_spec(self, run_dir: Path | None = None) -> dict:
        return {"mode": "bwrap", "git": self.git, "absent": list(self.absent),
                "run_dir": None if run_dir is None else os.fspath(run_dir)}


def find_bwrap() -> str | None:
    """$KANBAN_BWRAP (a bwrap elsewhere, or none at all: "" ), else bwrap on kanban's PATH."""
    if "KANBAN_BWRAP" in os.environ:
        chosen = os.environ["KANBAN_BWRAP"]
        return chosen if chosen and os.access(chosen, os.X_OK) else None
    return shutil.which("bwrap") or next((p for p in ("/usr/bin/bwrap", "/bin/bwrap") if os.access(p, os.X_OK)),
                                         None)


_PROBED: dict[str, tuple[bool, str]] = {}


def available(bwrap: str | None = None) -> tuple[bool, str]:
    """Whether bubblewrap runs here, as the sandbox uses it (really started once, then cached):
    (True, "bwrap at /usr/bin/bwrap, bubblewrap 0.8.0") or (False, why not)."""
    path = bwrap or find_bwrap()
    if path is None:
        chosen = os.environ.get("KANBAN_BWRAP")
        return False, (f"KANBAN_BWRAP={chosen} is not an executable" if chosen
                       else "bwrap (bubblewrap) is not installed")
    if path not in _PROBED:
        _PROBED[path] = _probe(path)
    return _PROBED[path]


def _probe(path: str) -> tuple[bool, str]:
    # Not at the top: kanban.runner imports this module (and the supervisor imports it alone).
    from kanban.runner import run_bounded

    # Inside: its own pid namespace (the shell is pid 2) and a read-only root.
    check = 'test "$$" -le 3 && ! test -w / && test -w /tmp'
    argv = bwrap_argv(path, [Mount("tmpfs", TMP)], ["/bin/sh", "-c", check], "/")
    try:
        done = run_bounded(argv, None, timeout=PROBE_TIMEOUT, keep_tail=True)
        shown = run_bounded([path, "--version"], None, timeout=PROBE_TIMEOUT)
    except OSError as exc:
        return False, f"{path} could not run: {exc}"
    if done.timed_out or shown.timed_out:
        return False, f"{path} could not run: it did not finish within {PROBE_TIMEOUT:g} s"
    version = shown.output.decode(errors="replace").strip()
    if done.returncode != 0:
        said = done.errors.decode(errors="replace").strip().splitlines()
        why = said[-1] if said else f"exit status {done.returncode}"
        return False, (f"{path} cannot make a sandbox here: {why} (unprivileged user namespaces "
                       "may be disabled: kernel.unprivileged_userns_clone, or a container without them)")
    return True, f"{path}" + (f", {version}" if version else "")


def plan_for_run(root: Path, config, role: str, task_id: str, worktree: Path, run_dir: Path,
                 argv: Sequence[str], env: Mapping[str, str]) -> Plan | None:
    """The sandbox of one run (None when its role's `sandbox` is "none"). Role "test" is the
    test command, which runs sandboxed when the tester does. With an executor that runs it
    elsewhere (Ray), only the request: the worker plans it for its own checkout."""
    from kanban.ids import branch_name
    from kanban.presets import preset_for

    agent = config.agent_for("tester" if role == "test" else role)
    if getattr(agent, "sandbox", "none") != "bwrap":
        return None
    preset = preset_for(agent) if role != "test" else None
    request = {"branch": branch_name(task_id),
               "cli": [{"where": d.where, "readonly": list(d.readonly), "writable": list(d.writable)}
                       for d in (preset.sandbox if preset else ())]}
    if config.executor.kind != "local":
        return Plan(bwrap="bwrap", mounts=(), request=request)
    return plan_here(root, worktree, run_dir, private_dir(root, run_dir), request, argv, env)


def plan_here(root: Path, worktree: Path, run_dir: Path, private: Path, request: Mapping,
              argv: Sequence[str], env: Mapping[str, str]) -> Plan:
    """The sandbox REQUEST asks for (plan_for_run), planned on this machine: the run in WORKTREE
    (a worktree of ROOT's repository, on the request's branch) with its files in RUN_DIR, its
    private git objects and refs in PRIVATE."""
    from kanban.errors import KanbanError
    from kanban.presets import SandboxDir

    ok, why = available()
    if not ok:
        raise KanbanError(f"sandbox = \"bwrap\", but {why}",
                          hint="install bubblewrap (apt-get install bubblewrap), or set sandbox = \"none\"")
    tmpfs = [TMP] + [d for d in [env.get("XDG_RUNTIME_DIR")] if d and os.path.isdir(d)]
    worktree, run_dir = Path(os.path.realpath(worktree)), Path(os.path.realpath(run_dir))
    git = prepare_git(root, worktree, private, str(request["branch"]))
    mounts = [Mount("tmpfs", os.path.realpath(d)) for d in tmpfs]
    mounts += git_mounts(Path(git["common"]), Path(git["admin"]), worktree, private, git["branch"])
    dirs = [SandboxDir(str(d["where"]), readonly=tuple(map(str, d.get("readonly", ()))),
                       writable=tuple(map(str, d.get("writable", ())))) for d in request.get("cli", ())]
    cli, absent = cli_mounts(dirs, env)
    for m in cli:
        if m.kind == "rw":
            Path(m.dest).mkdir(parents=True, exist_ok=True)  # a bind needs it; the CLI would make it
    mounts += cli
    # What a tmpfs hides but the agent must read: its HOME, programs, PATH, the run's files.
    wanted = [env.get("HOME", ""), *[a for a in argv if os.path.isabs(a)],
              *env.get("PATH", "").split(os.pathsep), run_dir, *git["alternates"]]
    mounts += exposures([p for p in wanted if p], [os.path.realpath(d) for d in tmpfs],
                        [m.dest for m in mounts if m.kind != "tmpfs"])
    mounts += [Mount("hide", s) for s in DAEMON_SOCKETS if _is_socket(s)]
    return Plan(bwrap=find_bwrap() or "bwrap", mounts=tuple(mounts), env={"TMPDIR": TMP, **git_env(env)},
                git=git, absent=tuple(absent), request=dict(request))


def private_dir(root: Path, run_dir: Path) -> Path:
    """.kanban/sandbox/<ID>/<role>-<attempt> (kanban.paths.sandbox_private), from the real root."""
    return paths.sandbox_private(Path(os.path.realpath(root)), run_dir)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def prepare_git(root: Path, worktree: Path, private: Path, branch: str) -> dict:
    """The private objects/, refs/ and logs/ of a run (under PRIVATE), and what settle() needs.

    The worktree's git folder is found from kanban's own records (the shared git folder's
    worktrees/), and must point back at the worktree: a `.git` an agent rewrote is refused.
    """
    from kanban import git as kgit
    from kanban.errors import KanbanError

    folder = branch_folder(branch)
    common = Path(os.path.realpath(kgit.common_dir(root)))
    admin = kgit.worktree_gitdir(worktree)
    admin = Path(os.path.realpath(admin)) if admin else None
    back = _read_small(admin / "gitdir") if admin else ""
    if admin is None or admin.parent != common / "worktrees" or \
            os.path.realpath(back.strip()) != os.path.realpath(worktree / ".git"):
        raise KanbanError(f"worktree {worktree} does not lead back to {common / 'worktrees'}",
                          hint="remove the worktree (git worktree remove --force) so kanban recreates it")
    # Empty, then read-only inside: with extensions.worktreeConfig git would read it as this
    # worktree's configuration outside too (filters, sshCommand: code kanban's own git would run).
    if not os.path.lexists(admin / "config.worktree"):
        (admin / "config.worktree").touch()
    if private.exists():
        shutil.rmtree(private)
    for name in ("objects/info", "objects/pack", "refs", "logs"):
        (private / name).mkdir(parents=True)
    alternates = [SHARED_OBJECTS] + _alternates(common / "objects")
    (private / "objects" / "info" / "alternates").write_text("".join(a + "\n" for a in alternates))
    # Mount points on the host (git makes them itself at the branch's first commit).
    for path in (common / "refs" / "heads" / folder, common / "logs" / "refs" / "heads" / folder):
        path.mkdir(parents=True, exist_ok=True)
    loose = common / "refs" / "heads" / branch
    leaf = branch.rpartition("/")[2]
    if loose.is_file() and not loose.is_symlink():
        shutil.copyfile(loose, private / "refs" / leaf)
    status, out, _ = kgit.run_status(root, "rev-parse", "--verify", "-q", f"refs/heads/{branch}")
    return {"common": str(common), "admin": str(admin), "branch": branch,
            "start": out.strip() if status == 0 else None,
            "objects": str(private / "objects"), "refs": str(private / "refs"), "logs": str(private / "logs"),
            "private": str(private), "alternates": alternates[1:]}


def _alternates(objects: Path) -> list[str]:
    """The shared store's own alternates, as absolute paths (a relative one would be resolved
    against SHARED_OBJECTS inside)."""
    try:
        lines = (objects / "info" / "alternates").read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [os.path.realpath(objects / line.strip()) for line in lines
            if line.strip() and not line.startswith("#")]


def _read_small(path: Path, limit: int = 4096) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return ""
        return f.read(limit).decode("utf-8", errors="replace")


# --- after the run (in the supervisor, outside the sandbox, once nothing of the run is left) ------


def settle(spec: Mapping, env: Mapping[str, str]) -> list[str]:
    """Bring a finished sandboxed run's git work out; what went wrong, for the run's error.

    New objects go into the shared store (each hash checked, never over an existing object),
    then the real branch moves to the private branch's commit if it changed (compare-and-swap
    with its value at the start). A private branch that is not a plain commit id (a symbolic
    ref, a link) is refused; so is a worktree left on another branch, and any of the CLI's
    configuration files that had to stay absent (moved aside into the run's folder).
    """
    problems: list[str] = []
    git = spec.get("git")
    aside = Path(spec.get("run_dir") or (git or {}).get("private") or "/nonexistent") / "created-by-agent"
    if git:
        problems += absorb_objects(Path(git["objects"]), Path(git["common"]), env)
        if not problems:
            problems += move_branch(git, env)
        problems += _check_head(git)
        if not problems:
            shutil.rmtree(git["private"], ignore_errors=True)
    for path in spec.get("absent") or ():
        if os.path.lexists(path):
            aside.mkdir(parents=True, exist_ok=True)
            target = aside / path.strip("/").replace("/", "_")
            shutil.move(path, target)
            problems.append(f"the agent created {path}, which configures its CLI outside the sandbox "
                            f"(moved to {target})")
    return problems


def absorb_objects(private: Path, common: Path, env: Mapping[str, str]) -> list[str]:
    """Copy PRIVATE's loose objects (hash checked) and packs (unpacked by git, which hashes
    every object) into COMMON/objects; never replaces an object that is there."""
    problems, shared = [], common / "objects"
    try:
        entries = sorted(os.scandir(private), key=lambda e: e.name)
    except FileNotFoundError:
        return []
    for entry in entries:
        if len(entry.name) == 2 and all(c in "0123456789abcdef" for c in entry.name) and \
                entry.is_dir(follow_symlinks=False):
            for obj in sorted(os.scandir(entry.path), key=lambda e: e.name):
                if obj.name.startswith("tmp_"):
                    continue  # git's own half-written object
                why = absorb_loose(Path(obj.path), entry.name + obj.name, shared)
                if why:
                    problems.append(why)
    pack = private / "pack"
    if pack.is_dir() and not pack.is_symlink():
        for p in sorted(pack.glob("*.pack")):
            why = _unpack(p, common, env)
            if why:
                problems.append(why)
    return problems


def absorb_loose(path: Path, name: str, shared: Path) -> str | None:
    """One loose object into SHARED, if its content hashes to NAME; None, or what was wrong."""
    algo = {40: "sha1", 64: "sha256"}.get(len(name))
    if algo is None or not _HEX.fullmatch(name):
        return f"a file that is no git object in the sandbox's objects: {path.name}"
    dest = shared / name[:2] / name[2:]
    if os.path.lexists(dest):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"object {name} unreadable: {exc.strerror}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f"tmp_obj_kanban_{os.getpid()}_{name[2:10]}"
    digest, inflate = hashlib.new(algo), zlib.decompressobj()
    header, total = b"", 0
    try:
        with os.fdopen(fd, "rb") as src, open(tmp, "wb") as out:
            if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
                raise ValueError("not a regular file")
            while chunk := src.read(1 << 16):
                out.write(chunk)
                data = inflate.decompress(chunk)
                if len(header) < 64 and b"\0" not in header:
                    header += data[:64]
                digest.update(data)
                total += len(data)
            data = inflate.flush()
            digest.update(data)
            total += len(data)
            if not inflate.eof:
                raise ValueError("truncated")
        kind, _, rest = header.partition(b" ")
        size, nul, _ = rest.partition(b"\0")
        if kind not in OBJECT_TYPES or not nul or not size.isdigit() or \
                total != len(kind) + 1 + len(size) + 1 + int(size):
            raise ValueError("not a git object")
        if digest.hexdigest() != name:
            raise ValueError("its content does not hash to its name")
        os.chmod(tmp, 0o444)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            pass
    except (OSError, ValueError, zlib.error) as exc:
        return f"object {name} from the sandbox refused: {exc}"
    finally:
        tmp.unlink(missing_ok=True)
    return None


def _git(common: Path, env: Mapping[str, str], *args: str,
         stdin: IO[bytes] | None = None) -> tuple[int, bytes, bytes]:
    """git on the shared folder, outside the sandbox, as kanban's own git runs (kanban.git: no
    hooks, no fsmonitor, none of the variables that would point it elsewhere), from the agent's
    environment ENV: (status, stdout, stderr)."""
    from kanban import git as kgit

    return kgit.run_bytes(common, args, stdin=stdin, base=env, env={"GIT_DIR": str(common)}, timeout=600)


def _unpack(pack: Path, common: Path, env: Mapping[str, str]) -> str | None:
    try:
        fd = os.open(pack, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        return f"pack {pack.name} unreadable: {exc.strerror}"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return f"pack {pack.name} is not a regular file"
        status, _, err = _git(common, env, "unpack-objects", "-q", stdin=f)
    if status != 0:
        return f"pack {pack.name} from the sandbox refused: {err.decode(errors='replace').strip()[:200]}"
    return None


def move_branch(git: Mapping, env: Mapping[str, str]) -> list[str]:
    """The real branch to the private branch's commit, if that changed and is a commit."""
    branch, start = git["branch"], git.get("start")
    leaf = Path(git["refs"]) / branch.rpartition("/")[2]
    try:
        st = os.lstat(leaf)
    except FileNotFoundError:
        return []  # deleted inside (or packed and never moved): the real branch stays
    value = _read_small(leaf, 200).strip() if stat.S_ISREG(st.st_mode) else ""
    if not _HEX.fullmatch(value):
        shown = os.readlink(leaf) if stat.S_ISLNK(st.st_mode) else value[:80]
        return [(f"the agent made its branch {branch} point at {shown!r}, not at a commit; "
                 f"kanban left the branch at {(start or 'nothing')[:12]}")]
    if value == start:
        return []
    status, kind, _ = _git(Path(git["common"]), env, "cat-file", "-t", value)
    if status != 0 or kind.strip() != b"commit":
        return [f"the agent's branch {branch} points at {value[:12]}, which is no commit"]
    status, _, err = _git(Path(git["common"]), env, "update-ref", "-m", "kanban: commit in the sandbox",
                          f"refs/heads/{branch}", value, start or "")
    if status != 0:
        return [(f"could not move {branch} to the agent's {value[:12]}: "
                 f"{err.decode(errors='replace').strip()[:200]}")]
    return []


def _check_head(git: Mapping) -> list[str]:
    head = _read_small(Path(git["admin"]) / "HEAD", 300).strip()
    if head == f"ref: refs/heads/{git['branch']}":
        return []
    return [f"the agent left its worktree on {head[:80]!r}, not on its branch {git['branch']}"]

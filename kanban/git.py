"""All git access: nothing else in kanban starts git.

Flat functions over argv, reading machine output (`-z`, `--porcelain`), through GitPython
(`run`, `run_status`) or, for exact bytes in and out, a plain subprocess (`run_bytes`). Git
runs with a cleaned environment: nothing ever waits for a password or an editor, and no
variable left by a caller (a git hook's GIT_DIR, GIT_INDEX_FILE, `git -c`...) can point it at
another repository than the one kanban names. Transient lock contention is retried with
tenacity; everything else raises GitError with git's own message. Where a plain file says it
(a loose ref, a worktree's HEAD), it is read without starting git at all.

Importable with the standard library only (GitPython and tenacity load on first use): the
supervisor, started with `python -I -S`, settles a sandboxed run's objects and branch through
`run_bytes` (kanban.sandbox).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

from kanban import locks, paths
from kanban.errors import KanbanError

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_MERGE_AUTOEDIT": "no",
    "GIT_ASKPASS": "",
    "SSH_ASKPASS": "",
    "GIT_OPTIONAL_LOCKS": "0",
    "LC_ALL": "C",
    "LANGUAGE": "C",
}
# Code an agent may have written into the shared .git never runs in kanban's own git: no hooks
# (core.hooksPath=/dev/null also hides .git/hooks), no fsmonitor daemon. Aliases cannot shadow
# the built-in commands kanban runs; filters and the rest are put back after each run (gitguard).
SAFE_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
MIN_VERSION = (2, 38)  # merge-tree --write-tree
_TRANSIENT = re.compile(r"index\.lock|cannot lock ref|Unable to create .*\.lock|File exists", re.IGNORECASE)
_ATTEMPTS = 6  # a transient failure is retried after 0.05, 0.1, 0.2, 0.4, 0.8 s

# Variables that say which repository git works on, and how: never inherited by kanban's git.
# `git rev-parse --local-env-vars` names the repository-local ones (git clears the same list
# before it enters a submodule); these are that list as of git 2.39, in case it cannot be asked,
# and the others a caller can leave behind: a pre-receive hook's quarantine, a namespace, a
# ceiling, a rebase's reflog action, pathspec magic that would change what kanban's `-- PATH`
# arguments mean, and `git -c`/GIT_CONFIG_COUNT command-scope config (GIT_CONFIG_KEY_<n> and
# GIT_CONFIG_VALUE_<n>, by prefix). The person's identity (GIT_AUTHOR_*, GIT_COMMITTER_*), their
# config files (HOME, XDG_CONFIG_HOME, GIT_CONFIG_GLOBAL, GIT_CONFIG_SYSTEM, GIT_CONFIG_NOSYSTEM),
# SSH and TLS settings (GIT_SSH_COMMAND, GIT_SSL_*) and git's own GIT_EXEC_PATH stay.
LOCAL_ENV_FALLBACK = (
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT",
    "GIT_OBJECT_DIRECTORY", "GIT_DIR", "GIT_WORK_TREE", "GIT_IMPLICIT_WORK_TREE", "GIT_GRAFT_FILE",
    "GIT_INDEX_FILE", "GIT_NO_REPLACE_OBJECTS", "GIT_REPLACE_REF_BASE", "GIT_PREFIX",
    "GIT_INTERNAL_SUPER_PREFIX", "GIT_SHALLOW_FILE", "GIT_COMMON_DIR",
)  # fmt: skip
ALSO_REMOVED = (
    "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_NAMESPACE", "GIT_CEILING_DIRECTORIES",
    "GIT_QUARANTINE_PATH", "GIT_REFLOG_ACTION", "GIT_LITERAL_PATHSPECS", "GIT_GLOB_PATHSPECS",
    "GIT_NOGLOB_PATHSPECS", "GIT_ICASE_PATHSPECS",
)  # fmt: skip
REMOVED_PREFIXES = ("GIT_CONFIG_KEY_", "GIT_CONFIG_VALUE_")


class GitError(KanbanError):
    def __init__(self, message: str, *, stderr: str = "", status: int | None = None) -> None:
        super().__init__(message, code=1)
        self.stderr = stderr
        self.status = status


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, GitError) and bool(_TRANSIENT.search(exc.stderr))


@functools.lru_cache(maxsize=1)
def removed_variables() -> frozenset[str]:
    """The names `environment` removes (GIT_CONFIG_KEY_<n>/GIT_CONFIG_VALUE_<n> go by prefix):
    what this git calls repository-local, asked once per process, and the others above."""
    names = set(LOCAL_ENV_FALLBACK) | set(ALSO_REMOVED)
    base = {k: v for k, v in os.environ.items() if k not in names and not k.startswith(REMOVED_PREFIXES)}
    try:
        done = subprocess.run(["git", "rev-parse", "--local-env-vars"], cwd="/", env={**base, **GIT_ENV},
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return frozenset(names)
    if done.returncode == 0:
        names.update(n for n in os.fsdecode(done.stdout).split() if n.startswith("GIT_"))
    return frozenset(names)


def environment(env: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git kanban starts: BASE (os.environ unless given) without the
    `removed_variables`, then GIT_ENV, then ENV: what kanban itself sets on purpose (a
    temporary GIT_INDEX_FILE, the sandbox's GIT_DIR) wins over everything."""
    removed = removed_variables()
    source = os.environ if base is None else base
    out = {k: v for k, v in source.items() if k not in removed and not k.startswith(REMOVED_PREFIXES)}
    out.update(GIT_ENV)
    out.update(env or {})
    return out


def _exec(cwd: Path | str | None, args: Sequence[str], *, stdin: bytes | IO[bytes] | None = None,
          env: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None,
          timeout: float | None = None) -> tuple[int, bytes, bytes]:
    """`git SAFE_CONFIG ARGS` in CWD: (status, stdout, stderr). Status 128 (git's own for a
    fatal error) with the reason as stderr when git cannot start there at all."""
    if cwd is not None:
        _check_dot_git(cwd)
    data = stdin if isinstance(stdin, bytes) else None
    source = None if isinstance(stdin, bytes) else (stdin if stdin is not None else subprocess.DEVNULL)
    try:
        done = subprocess.run(["git", *SAFE_CONFIG, *args], cwd=cwd, input=data, stdin=source,
                              capture_output=True, env=environment(env, base=base), timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise GitError(f"git {' '.join(args[:3])} timed out after {timeout:g} s", stderr="timed out") from None
    except OSError as exc:
        where = f" in {cwd}" if cwd is not None else ""
        return 128, b"", os.fsencode(f"fatal: cannot run git{where}: {exc.strerror or exc}")
    return done.returncode, done.stdout, done.stderr


def _text(data: bytes) -> str:
    return os.fsdecode(data)  # the file system's encoding, undecodable bytes kept as surrogates


def _scrub_environ() -> None:
    """Drop the `removed_variables` from this process's own environment. Agents' environments
    are filtered from os.environ, and a library's git would build on it: kanban never
    wants a caller's repository variables (a hook's GIT_DIR would point every git it runs, and
    every agent, at another repository), so they leave the process the first time git runs."""
    removed = removed_variables()
    for name in [k for k in os.environ if k in removed or k.startswith(REMOVED_PREFIXES)]:
        os.environ.pop(name, None)


def _git_text(cwd: Path | str, args: Sequence[str], env: Mapping[str, str] | None) -> tuple[int, str, str]:
    """`git SAFE_CONFIG ARGS` in CWD through GitPython, as text: (status, stdout, stderr)."""
    _scrub_environ()  # before GitPython's import, which runs `git version` itself
    import git as gitpython  # GitPython; imported on first use (the supervisor imports this module under -I -S)

    _check_dot_git(cwd)
    if not os.path.isdir(cwd):  # GitPython would fall back to this process's own directory
        return 128, "", f"fatal: cannot change to '{cwd}': No such file or directory"
    status, out, err = gitpython.Git(str(cwd)).execute(
        ["git", *SAFE_CONFIG, *args], env={**GIT_ENV, **(env or {})}, istream=subprocess.DEVNULL,
        with_extended_output=True, with_exceptions=False, strip_newline_in_stdout=False)
    return int(status), out, err


def run(cwd: Path | str, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run `git ARGS...` in cwd and return stdout. Flags are passed positionally, as given.
    Transient lock contention (another git holding index.lock a moment) is retried with
    tenacity, after 0.05, 0.1, 0.2, 0.4 and 0.8 s; the last error is raised."""
    from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

    for attempt in Retrying(retry=retry_if_exception(_is_transient), stop=stop_after_attempt(_ATTEMPTS),
                            wait=wait_exponential(multiplier=0.05, max=1.0), reraise=True):
        with attempt:
            status, out, err = _git_text(cwd, args, env)
            if status == 0 or not check:
                return out if status == 0 else ""
            stderr = err.strip()
            first = stderr.splitlines()[0] if stderr else f"exit status {status}"
            raise GitError(f"git {' '.join(args[:3])} failed: {first}", stderr=stderr, status=status)
    raise AssertionError("unreachable")  # Retrying re-raises the last error


def run_status(cwd: Path | str, *args: str) -> tuple[int, str, str]:
    """Run git and return (status, stdout, stderr) without raising on a non-zero status."""
    status, out, err = _git_text(cwd, args, None)
    return status, out, err.removesuffix("\n")


def run_bytes(cwd: Path | str | None, args: Sequence[str], *, stdin: bytes | IO[bytes] | None = None,
              env: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None,
              timeout: float | None = None) -> tuple[int, bytes, bytes]:
    """git with bytes in and out (blobs keep their exact bytes: CRLF, no UTF-8): (status,
    stdout, stderr), never raising for a status. STDIN is bytes or an open file; BASE replaces
    os.environ as the environment cleaned (the supervisor passes the agent's)."""
    return _exec(cwd, args, stdin=stdin, env=env, base=base, timeout=timeout)


def _small_file(path: Path) -> str:
    """A small file an agent can write (its worktree's `.git`, HEAD): never blocks, never
    follows a link, never reads more than a pointer needs; '' when it is not a regular file."""
    from kanban.untrusted import read_capped

    return read_capped(path, 4096)


def _check_dot_git(cwd: Path | str) -> None:
    """Refuse a `.git` that is a FIFO, socket or device (or leads to one): git would block
    on it or read it without end. An agent owns its worktree, `.git` file included."""
    import stat

    path = os.path.join(cwd, ".git")
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            mode = os.stat(path).st_mode
    except OSError:
        return  # none here (or a dangling link): git looks further up, as usual
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise GitError(f"{path} is not a file or directory git can use", stderr="not a regular .git")


def version() -> tuple[int, ...]:
    """git's version from `git version` ("git version 2.39.5" -> (2, 39, 5)); () if it will not run."""
    status, out, _ = _exec("/", ["version"])
    words = _text(out).split()
    numbers = words[2].split(".") if status == 0 and len(words) > 2 else []
    return tuple(int(n) for n in numbers[:3] if n.isdigit())


def toplevel(path: Path) -> Path | None:
    """The checkout's top folder, or None outside one; its shared git directory is asked in the
    same process and remembered (`common_dir`, `branch_exists`)."""
    status, out, _ = run_status(path, "rev-parse", "--show-toplevel", "--git-common-dir")
    if status != 0:
        return None
    lines = out.removesuffix("\n").split("\n")
    if len(lines) != 2:  # a newline in a path: the top level alone
        status, out, _ = run_status(path, "rev-parse", "--show-toplevel")
        return Path(out.strip()) if status == 0 else None
    common = lines[1].strip()
    _COMMON_DIRS[os.path.abspath(path)] = Path(common) if os.path.isabs(common) else (path / common).resolve()
    return Path(lines[0].strip())


_COMMON_DIRS: dict[str, Path] = {}


def common_dir(root: Path) -> Path:
    """The repository's shared git directory; asked once per checkout and process (every worktree
    lock needs it), again only if the one remembered is gone."""
    key = os.path.abspath(root)
    known = _COMMON_DIRS.get(key)
    if known is not None and known.is_dir():
        return known
    out = run(root, "rev-parse", "--git-common-dir").strip()
    found = (root / out).resolve() if not os.path.isabs(out) else Path(out)
    _COMMON_DIRS[key] = found
    return found


def has_commits(root: Path) -> bool:
    return run_status(root, "rev-parse", "--verify", "-q", "HEAD^{commit}")[0] == 0


def branch_exists(root: Path, branch: str) -> bool:
    """What `rev-parse --verify refs/heads/BRANCH` says, from the ref files where they can tell."""
    ref = f"refs/heads/{branch}"
    found = _refs_from_files(common_dir(root), ref)
    if found is not None:
        return ref in found
    return run_status(root, "rev-parse", "--verify", "-q", ref)[0] == 0


def current_branch(root: Path) -> str | None:
    gitdir = _gitdir_from_files(root)
    if gitdir is not None:  # HEAD read from its file when it is a plain one (no process)
        try:
            head = _small_file(gitdir / "HEAD").strip()
        except (OSError, UnicodeDecodeError):
            head = ""
        if head.startswith("ref: refs/heads/"):
            return head.removeprefix("ref: refs/heads/")
        if _SHA.fullmatch(head):
            return None  # detached
    status, out, _ = run_status(root, "symbolic-ref", "-q", "--short", "HEAD")
    return out.strip() if status == 0 else None


def rev_parse(root: Path, rev: str) -> str:
    return run(root, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}").strip()


def status_porcelain(root: Path) -> list[tuple[str, str]]:
    """(XY status, path) for every changed or untracked path in the checkout."""
    out = run(root, "status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames")  # both sides of a rename
    items, parts = [], out.split("\0")
    i = 0
    while i < len(parts):
        rec = parts[i]
        if not rec:
            i += 1
            continue
        code, path = rec[:2], rec[3:]
        if code[0] in "RC":
            i += 1  # the rename source follows
        items.append((code, path))
        i += 1
    return items


def add_exclude(root: Path, patterns: list[str]) -> list[str]:
    """Append patterns to .git/info/exclude if missing. Returns what was added."""
    path = common_dir(root) / "info" / "exclude"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [p for p in patterns if p not in present]
    if missing:
        sep = "" if not text or text.endswith("\n") else "\n"
        with path.open("a", encoding="utf-8") as out:
            out.write(sep + "".join(p + "\n" for p in missing))
    return missing


def is_ignored(root: Path, rel: str) -> bool:
    return run_status(root, "check-ignore", "-q", "--no-index", rel)[0] == 0


class Worktree(tuple):
    __slots__ = ()
    path = property(lambda self: self[0])
    branch = property(lambda self: self[1])
    head = property(lambda self: self[2])
    locked = property(lambda self: self[3])


def worktrees(root: Path) -> list[Worktree]:
    """The repository's worktrees, as `git worktree list --porcelain -z` gives them: the main one
    first. Every pick asks, so they are read from git's own files (each linked worktree's record
    under <common dir>/worktrees/), as git reads them, and git is asked wherever those might not
    be the whole story (see _worktrees_from_files)."""
    found = _worktrees_from_files(root)
    return found if found is not None else _listed_worktrees(root)


def _listed_worktrees(root: Path) -> list[Worktree]:
    out = run(root, "worktree", "list", "--porcelain", "-z")
    found: list[Worktree] = []
    for record in _records(out):
        path = Path(record.get("worktree", ""))
        branch = record.get("branch", "").removeprefix("refs/heads/") or None
        found.append(Worktree((path, branch, record.get("HEAD"), "locked" in record)))
    return found


def _worktrees_from_files(root: Path) -> list[Worktree] | None:
    """None (ask git) unless ROOT is the main worktree of a plain repository whose records all read
    plainly: a gitdir file naming "<path>/.git", a HEAD that is a commit id or a branch whose tip
    the ref files give (an unborn branch, a symbolic HEAD elsewhere, a bare repository: git)."""
    dotgit = Path(root) / ".git"
    try:
        if not dotgit.is_dir() or dotgit.is_symlink():
            return None
        common = dotgit.resolve()
        records = sorted(os.scandir(common / "worktrees"), key=lambda e: e.name) \
            if (common / "worktrees").is_dir() else []
        main = _worktree_record(common, common, Path(os.path.realpath(root)))
        if main is None:
            return None
        found = [main]
        for entry in records:
            if not entry.is_dir(follow_symlinks=False):
                continue
            admin = Path(entry.path)
            pointer = _small_file(admin / "gitdir").rstrip("\n")
            if not pointer.endswith("/.git") or not os.path.isabs(pointer):
                return None
            record = _worktree_record(common, admin, Path(pointer[: -len("/.git")]))
            if record is None:
                return None
            found.append(record)
    except (OSError, UnicodeDecodeError):
        return None
    return found


def _worktree_record(common: Path, admin: Path, path: Path) -> Worktree | None:
    head = _small_file(admin / "HEAD").strip()
    if _SHA.fullmatch(head):
        return Worktree((path, None, head, (admin / "locked").exists()))
    if not head.startswith("ref: refs/heads/"):
        return None
    ref = head.removeprefix("ref: ")
    sha = _refs_from_files(common, ref)
    if not sha or ref not in sha:
        return None
    return Worktree((path, ref.removeprefix("refs/heads/"), sha[ref], (admin / "locked").exists()))


def _records(out: str) -> Iterator[dict[str, str]]:
    record: dict[str, str] = {}
    for field in out.split("\0"):
        if not field:
            if record:
                yield record
            record = {}
            continue
        key, _, value = field.partition(" ")
        record[key] = value
    if record:
        yield record


def branches(root: Path, pattern: str = "refs/heads/") -> list[str]:
    return sorted(branch_shas(root, pattern))


# -- worktrees and branches for tasks ---------------------------------------------


def _worktree_lock(root: Path):
    """Serialise worktree add/remove/prune: concurrent `worktree add -b` races on config."""
    return locks.hold(paths.worktree_lock(common_dir(root)))


def add_worktree(root: Path, path: Path, branch: str, base: str) -> None:
    """Create `path` on `branch`: a new branch from `base`, or the existing branch (after a crash)."""
    with _worktree_lock(root):
        args = [str(path), branch] if branch_exists(root, branch) else ["--no-track", "-b", branch, str(path), base]
        try:
            run(root, "worktree", "add", *args)
        except GitError:
            run(root, "worktree", "prune")  # a stale registration (worktree deleted by hand): clear, try again
            run(root, "worktree", "add", *args)


def add_detached_worktree(root: Path, path: Path, commit: str) -> None:
    """Create `path` with COMMIT checked out, on no branch (a checkout whose commits go nowhere)."""
    with _worktree_lock(root):
        try:
            run(root, "worktree", "add", "--detach", str(path), commit)
        except GitError:
            run(root, "worktree", "prune")  # a stale registration (worktree deleted by hand): clear, try again
            run(root, "worktree", "add", "--detach", str(path), commit)


def worktree_gitdir(path: Path) -> Path | None:
    """The private git directory of a linked worktree, read from its `.git` file."""
    text = _small_file(path / ".git")
    if not text.startswith("gitdir: "):
        return None
    gitdir = Path(text[len("gitdir: "):].strip())
    return gitdir if gitdir.is_absolute() else (path / gitdir).resolve()


def worktree_branch(path: Path) -> str | None:
    """The branch a linked worktree has checked out, read from its files (no git process).

    None unless `path/.git` points at an admin dir that points back at it.
    """
    admin = worktree_gitdir(path)
    if admin is None:
        return None
    try:
        back = Path(_small_file(admin / "gitdir").strip())
        if back.resolve() != (path / ".git").resolve():
            return None
    except (OSError, ValueError):
        return None
    head = _small_file(admin / "HEAD").strip()
    return head.removeprefix("ref: refs/heads/") if head.startswith("ref: refs/heads/") else None


def remove_worktree(root: Path, path: Path) -> None:
    with _worktree_lock(root):
        if path.exists():
            run(root, "worktree", "remove", "--force", "--force", str(path), check=False)
        run(root, "worktree", "prune")


def remove_worktree_in_background(root: Path, path: Path) -> subprocess.Popen | None:
    """Start `git worktree remove --force --force PATH` and return at once: its own session, no
    output; the caller reaps it (its `args[-1]` is PATH). None when git cannot be started."""
    _check_dot_git(root)
    try:
        return subprocess.Popen(["git", *SAFE_CONFIG, "worktree", "remove", "--force", "--force", str(path)],
                                cwd=root, env=environment(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        return None


def delete_branch(root: Path, branch: str) -> None:
    delete_branches(root, [branch])


def delete_branches(root: Path, names: list[str]) -> None:
    if not names:
        return
    if run_status(root, "branch", "-D", *names)[0] == 0:  # the common case: they all exist
        return
    existing = [b for b in names if b in branch_shas(root, "refs/heads/")]  # some were gone already
    if existing:
        run(root, "branch", "-D", *existing)


def remove_worktrees(root: Path, paths: list[Path]) -> None:
    """Remove several worktrees (their files, then one prune): finished tasks, changes discarded."""
    import shutil

    with _worktree_lock(root):
        for path in paths:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
        run(root, "worktree", "prune")


def branch_shas(root: Path, pattern: str) -> dict[str, str]:
    """{branch name: commit} for the branches under a ref prefix (`for-each-ref`'s meaning: the
    ref itself, or the refs in that folder), read from the ref files where they say it all."""
    return {ref.removeprefix("refs/heads/"): sha for ref, sha in ref_shas(root, pattern).items()}


def branch_sha(root: Path, branch: str) -> str:
    """The commit BRANCH points at (`rev-parse` without a process where the ref files say it);
    GitError when there is no such branch."""
    ref = f"refs/heads/{branch}"
    sha = ref_shas(root, ref).get(ref)
    return sha if sha is not None else rev_parse(root, ref)


def ref_shas(root: Path, pattern: str) -> dict[str, str]:
    """{ref: commit id} for the refs PATTERN names (a ref, or a folder of refs such as
    "refs/heads/kanban/"). The merge queue asks this of every ready task on every pass, so it
    reads the files git keeps refs in (loose refs over packed-refs), as git itself does, and
    asks git (`for-each-ref`) wherever they might not be the whole story: refs kept as a
    reftable, a symbolic or broken loose ref, a link, a file being rewritten right now."""
    found = _refs_from_files(common_dir(root), pattern.rstrip("/"))
    if found is not None:
        return found
    out = run(root, "for-each-ref", "--format=%(objectname) %(refname)", pattern)
    found = {}
    for line in out.splitlines():
        sha, _, ref = line.partition(" ")
        found[ref] = sha
    return found


_PACKED: dict[str, tuple[tuple[int, int, int], dict[str, str]]] = {}  # packed-refs parsed, by its file
_PACKED_LIMIT = 64 << 20


def _refs_from_files(common: Path, name: str) -> dict[str, str] | None:
    """The refs under NAME from the files, or None: ask git."""
    if not name.startswith("refs/") or ".." in name.split("/") or (common / "reftable").exists():
        return None
    packed = _packed_refs(common)
    if packed is None:
        return None
    found = {ref: sha for ref, sha in packed.items() if ref == name or ref.startswith(name + "/")}
    loose = _loose_refs(common, name)
    if loose is None:
        return None
    found.update(loose)
    return found


def _packed_refs(common: Path) -> dict[str, str] | None:
    path = common / "packed-refs"
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return {}
    except OSError:
        return None
    import stat

    if not stat.S_ISREG(info.st_mode) or info.st_size > _PACKED_LIMIT:
        return None
    key = (info.st_ino, info.st_size, info.st_mtime_ns)
    known = _PACKED.get(str(path))
    if known is not None and known[0] == key:
        return known[1]
    from kanban.untrusted import read_capped

    refs: dict[str, str] = {}
    for line in read_capped(path, _PACKED_LIMIT).splitlines():
        if not line or line[0] in "#^":  # the header; a peeled tag's target
            continue
        sha, _, ref = line.partition(" ")
        if not _SHA.fullmatch(sha) or not ref.startswith("refs/"):
            return None
        refs[ref] = sha
    _PACKED[str(path)] = (key, refs)
    return refs


def _loose_refs(common: Path, name: str) -> dict[str, str] | None:
    """The loose refs at NAME (a file) or under it (a folder); None at anything git might read
    differently: a link, a symbolic or broken ref, one that vanished while being read."""
    found: dict[str, str] = {}
    todo = [name]
    while todo:
        ref = todo.pop()
        try:
            entries = list(os.scandir(common / ref))
        except NotADirectoryError:
            if ref != name:
                return None
            sha = _small_file(common / ref).strip()
            if not _SHA.fullmatch(sha):
                return None
            found[ref] = sha
            continue
        except FileNotFoundError:
            continue
        except OSError:
            return None
        for entry in entries:
            if entry.name.endswith(".lock"):  # git's next value, not yet the ref's
                continue
            if entry.is_symlink():
                return None
            if entry.is_dir(follow_symlinks=False):
                todo.append(f"{ref}/{entry.name}")
                continue
            sha = _small_file(Path(entry.path)).strip()
            if not _SHA.fullmatch(sha):
                return None
            found[f"{ref}/{entry.name}"] = sha
    return found


def merged_tips(root: Path, commit: str, pattern: str) -> dict[str, str]:
    """branches_merged_into's answer, asking git only about tips it was not asked about before
    with this COMMIT (the merge queue asks on every pass; main and the tips rarely moved since).
    A tip that moved while git was asked is not remembered."""
    tips = {ref.removeprefix("refs/heads/"): sha for ref, sha in ref_shas(root, pattern).items()}
    key = str(root)
    if not _FULL_ID.fullmatch(commit):
        return branches_merged_into(root, commit, pattern)
    if any(("is_ancestor", key, sha, commit) not in _KNOWN for sha in tips.values()):
        merged = branches_merged_into(root, commit, pattern)
        after = {ref.removeprefix("refs/heads/"): sha for ref, sha in ref_shas(root, pattern).items()}
        if len(_KNOWN) >= _KNOWN_LIMIT:
            _KNOWN.clear()
        for branch, sha in tips.items():
            if after.get(branch) == sha and _FULL_ID.fullmatch(sha):
                _KNOWN[("is_ancestor", key, sha, commit)] = merged.get(branch) == sha
        return merged
    answers = {b: _KNOWN.get(("is_ancestor", key, sha, commit)) for b, sha in tips.items()}
    if None in answers.values():  # forgotten meanwhile (the cache was full, on another thread)
        return branches_merged_into(root, commit, pattern)
    return {b: sha for b, sha in tips.items() if answers[b]}


def branches_merged_into(root: Path, commit: str, pattern: str) -> dict[str, str]:
    """{branch: tip} for the branches under a ref prefix whose tip COMMIT contains, in one call."""
    out = run(root, "for-each-ref", f"--merged={commit}", "--format=%(objectname) %(refname)", pattern)
    found = {}
    for line in out.splitlines():
        sha, _, ref = line.partition(" ")
        found[ref.removeprefix("refs/heads/")] = sha
    return found


def head(path: Path) -> str:
    """The commit checked out at `path`; read from the ref files when they are plain (no process)."""
    return _head_from_files(path) or run(path, "rev-parse", "HEAD").strip()


_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def _head_from_files(path: Path) -> str | None:
    try:
        pointer = _small_file(path / ".git").strip()
        admin = Path(pointer.removeprefix("gitdir: ")) if pointer.startswith("gitdir: ") else None
        if admin is None:
            return None
        admin = admin if admin.is_absolute() else (path / admin).resolve()
        head = _small_file(admin / "HEAD").strip()
        if _SHA.fullmatch(head):
            return head
        if not head.startswith("ref: refs/heads/"):
            return None
        common = (admin / _small_file(admin / "commondir").strip()).resolve()
        sha = _small_file(common / head.removeprefix("ref: ")).strip()
    except (OSError, UnicodeDecodeError):
        return None  # packed refs, symlinks, odd layouts: ask git
    return sha if _SHA.fullmatch(sha) else None


def loose_ref(common: Path, ref: str) -> str | None:
    """The commit id in REF's loose file under the shared git directory COMMON, read without a
    process (git reads a loose ref before the packed ones); None where git must be asked: a
    packed, symbolic or linked ref, none at all, or refs kept another way (reftable)."""
    return (_loose_refs(common, ref) or {}).get(ref)


# Answers about commits named by their full id never change: asked once per process. A merge
# queue pass asks them of every ready task, and most passes find nothing new.
_FULL_ID = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")
_KNOWN: dict[tuple, object] = {}
_KNOWN_LIMIT = 20000


def _remembered(key: tuple, ids: tuple[str, ...], ask):
    if not all(_FULL_ID.fullmatch(i) for i in ids):
        return ask()
    try:
        return _KNOWN[key]
    except KeyError:
        pass
    answer = ask()
    if len(_KNOWN) >= _KNOWN_LIMIT:
        _KNOWN.clear()
    _KNOWN[key] = answer
    return answer


def is_ancestor(root: Path, a: str, b: str) -> bool:
    return _remembered(("is_ancestor", str(root), a, b), (a, b),
                       lambda: run_status(root, "merge-base", "--is-ancestor", a, b)[0] == 0)


def changed_files(path: Path, base: str) -> list[str]:
    """Files the branch checked out at `path` changed since it left `base`."""
    out = run(path, "diff", "--name-only", "-z", f"{base}...HEAD")
    return [p for p in out.split("\0") if p]


def tracked_files(path: Path, paths: list[str] | None = None) -> list[str]:
    """Files in the index of the checkout at PATH (of those in PATHS, when given)."""
    if paths is not None and not paths:
        return []
    if paths is not None and len(paths) > 500:  # past what a command line should carry: list all, then pick
        wanted = set(paths)
        return [p for p in tracked_files(path) if p in wanted]
    spec = ["--", *(f":(literal){p}" for p in paths)] if paths is not None else []
    return [p for p in run(path, "ls-files", "-z", *spec).split("\0") if p]


def tracked_matching(path: Path, pathspecs: list[str]) -> list[str]:
    """Files in the index of the checkout at PATH that match one of PATHSPECS (magic included)."""
    if not pathspecs:
        return []
    return [p for p in run(path, "ls-files", "-z", "--", *pathspecs).split("\0") if p]


def merge_in_progress(path: Path) -> bool:
    gitdir = checkout_gitdir(path)
    if gitdir is not None and gitdir.is_dir() and not os.path.lexists(gitdir / "MERGE_HEAD"):
        return False  # git keeps MERGE_HEAD as a file in the checkout's own git folder: none, no merge
    return run_status(path, "rev-parse", "-q", "--verify", "MERGE_HEAD")[0] == 0


def unmerged_files(path: Path) -> list[str]:
    out = run(path, "diff", "--name-only", "-z", "--diff-filter=U")
    return [p for p in out.split("\0") if p]


def merge_main_into(path: Path, main: str) -> list[str]:
    """Merge `main` into the worktree's branch. Returns conflicted files, left for the tester."""
    if merge_in_progress(path):
        return unmerged_files(path)
    status, _, err = run_status(path, "merge", "--no-edit", "--no-ff", main)
    if status == 0:
        return []
    conflicted = unmerged_files(path)
    if not conflicted:  # the merge failed for another reason (dirty tree): say so
        run_status(path, "merge", "--abort")
        raise GitError(f"could not merge {main} into {path.name}: {err.strip().splitlines()[0] if err else status}",
                       stderr=err)
    return conflicted


# -- merging without touching anyone's checkout ---------------------------------------


def merge_tree(root: Path, ours: str, theirs: str) -> tuple[str, list[str]]:
    """(tree, conflicted paths) of merging two commits; never touches a worktree.

    With conflicts the tree holds conflict markers: it must never be committed.
    """
    status, out, err = run_status(root, "merge-tree", "--write-tree", "-z", "--name-only", "--no-messages",
                                  ours, theirs)
    if status not in (0, 1):
        raise GitError(f"git merge-tree failed: {err.strip().splitlines()[0] if err.strip() else status}",
                       stderr=err)
    fields = out.split("\0")
    tree, conflicts = fields[0].strip(), []
    if status == 1:
        conflicts = list(dict.fromkeys(f for f in fields[1:] if f))
    return tree, conflicts


def commit_tree(root: Path, tree: str, parents: list[str], message: str) -> str:
    args = ["commit-tree", tree]
    for parent in parents:
        args += ["-p", parent]
    return run(root, *args, "-m", message).strip()


def tree_of(root: Path, rev: str) -> str:
    return run(root, "rev-parse", f"{rev}^{{tree}}").strip()


def tree_with_paths_from(root: Path, tree: str, source: str, paths: list[str]) -> str:
    """`tree` with `paths` set as they are in commit `source` (removed where `source` lacks them)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kanban-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run(root, "read-tree", tree, env=env)
        for path in paths:
            listed = run(root, "ls-tree", "-z", source, "--", path).strip("\0")
            if listed:
                meta, _, name = listed.partition("\t")
                mode, _, sha = meta.split(" ")
                run(root, "update-index", "--add", "--cacheinfo", f"{mode},{sha},{name}", env=env)
            else:
                run(root, "update-index", "--force-remove", "--", path, env=env)
        return run(root, "write-tree", env=env).strip()


def _bytes(root: Path, args: list[str], data: bytes | None = None) -> tuple[int, bytes]:
    """git with bytes in and out: (status, stdout)."""
    status, out, _ = _exec(root, args, stdin=data)
    return status, out


def read_blob(root: Path, rev: str, path: str) -> bytes | None:
    """The bytes of PATH in commit REV, or None where REV has no such file."""
    status, out = _bytes(root, ["cat-file", "blob", f"{rev}:{path}"])
    return out if status == 0 else None


def write_blob(root: Path, data: bytes, *, write: bool = True) -> str:
    """The blob id of DATA, stored in the object database unless WRITE is false."""
    status, out = _bytes(root, ["hash-object", *(["-w"] if write else []), "--stdin"], data)
    if status != 0:
        raise GitError("git hash-object failed: could not store a blob")
    return out.decode().strip()


def tree_with_blob(root: Path, tree: str, path: str, blob: str, mode: str | None = "100644") -> str:
    """`tree` with PATH set to BLOB (MODE None: the mode PATH has in TREE, else a plain file's)."""
    if "/" not in path:  # a file at the top: the tree's own listing (bytes: any name), changed, written again
        status, out = _bytes(root, ["ls-tree", "-z", tree])
        if status != 0:
            raise GitError(f"git ls-tree {tree} failed")
        name = os.fsencode(path)
        entries = [e for e in out.split(b"\0") if e]
        kept = [e for e in entries if e.partition(b"\t")[2] != name]
        if mode is None:
            mine = [e for e in entries if e.partition(b"\t")[2] == name]
            mode = mine[0].split(b" ", 1)[0].decode() if mine and mine[0].startswith(b"100") else "100644"
        kept.append(f"{mode} blob {blob}\t".encode() + name)
        status, out = _bytes(root, ["mktree", "-z"], b"\0".join(kept) + b"\0")
        if status != 0:
            raise GitError("git mktree failed: could not write a tree")
        return out.decode().strip()
    import tempfile

    if mode is None:
        mode = file_mode(root, tree, path) or "100644"
    with tempfile.TemporaryDirectory(prefix="kanban-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        run(root, "read-tree", tree, env=env)
        run(root, "update-index", "--add", "--cacheinfo", f"{mode},{blob},{path}", env=env)
        return run(root, "write-tree", env=env).strip()


def file_mode(root: Path, rev: str, path: str) -> str | None:
    listed = run(root, "ls-tree", "-z", rev, "--", path).strip("\0")
    return listed.split(" ", 1)[0] if listed else None


def merge_file(root: Path, current: bytes, base: bytes, other: bytes, *, union: bool = False) -> bytes | None:
    """Three-way merge of one file's bytes (`git merge-file`): None on a conflict. UNION keeps both
    sides' lines where they conflict (right for a changelog: two lines added at one place)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kanban-merge-") as tmp:
        names = []
        for name, data in (("current", current), ("base", base), ("other", other)):
            (Path(tmp) / name).write_bytes(data)
            names.append(str(Path(tmp) / name))
        status, out = _bytes(root, ["merge-file", "-p", "-q", *(["--union"] if union else []), *names])
    return out if status == 0 else None


def diff_names(root: Path, a: str, b: str | None) -> list[str]:
    """Paths that differ between two commits (or, with b None, over a range like `A...B`)."""
    def ask() -> tuple[str, ...]:
        out = run(root, "diff", "--name-only", "-z", "--no-renames", a, *([b] if b else []))
        return tuple(p for p in out.split("\0") if p)

    ids: tuple[str, ...] = (b,) if b else ()
    ids += tuple(a.split("...")) if b is None and "..." in a else (a,)
    return list(_remembered(("diff_names", str(root), a, b), ids, ask))


def diff_status(root: Path, a: str, b: str) -> list[tuple[str, str]]:
    """(status letter, path) for each path that differs between commits A and B: A added, D
    deleted, M modified, T type changed (no renames: both sides of one are listed)."""
    def ask() -> tuple[tuple[str, str], ...]:
        fields = run(root, "diff", "--name-status", "-z", "--no-renames", a, b).split("\0")
        return tuple((fields[i][:1], fields[i + 1]) for i in range(0, len(fields) - 1, 2) if fields[i])

    return list(_remembered(("diff_status", str(root), a, b), (a, b), ask))


def merge_base(root: Path, a: str, b: str) -> str | None:
    status, out, _ = run_status(root, "merge-base", a, b)
    return out.strip() if status == 0 else None


def update_ref(root: Path, ref: str, new: str, old: str) -> bool:
    """Compare-and-swap a ref: moves only if it still points at `old`."""
    return run_status(root, "update-ref", "-m", "kanban merge-queue", ref, new, old)[0] == 0


def checkout_of(root: Path, branch: str) -> Path | None:
    """The worktree (the person's checkout or another) that has `branch` checked out."""
    found = _checkouts_from_files(root, branch)
    if found is not None:
        return found.get(branch)
    for w in worktrees(root):
        if w.branch == branch:
            return w.path
    return None


def _checkouts_from_files(root: Path, wanted: str | None = None) -> dict[str, Path] | None:
    """{branch: worktree} read from the HEAD files `git worktree list` reads, for a plain
    repository whose main worktree is ROOT; None for anything else (git is asked then).
    With WANTED, it stops at the worktree that has it (git checks a branch out once)."""
    def admins():
        yield Path(root), common / "HEAD"
        admin_root = common / "worktrees"
        for admin in sorted(admin_root.iterdir()) if admin_root.is_dir() else ():
            back = _small_file(admin / "gitdir").strip()
            if not back:
                raise ValueError("a worktree record without its gitdir")
            yield Path(back).parent, admin / "HEAD"

    try:
        common = common_dir(root)
        if common != (Path(root) / ".git").resolve() or not common.is_dir():
            return None
        found: dict[str, Path] = {}
        for where, head_file in admins():
            head = _small_file(head_file).strip()
            if head.startswith("ref: refs/heads/"):
                name = head.removeprefix("ref: refs/heads/")
                found.setdefault(name, where)
                if name == wanted:
                    return found
            elif not _SHA.fullmatch(head):
                return None  # something git knows better (a reftable, a half-written file)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return found


def dirty_paths(path: Path) -> list[str]:
    """Tracked files with uncommitted changes, and untracked files, in a checkout."""
    return [p for _, p in status_porcelain(path)]


def fast_forward_checkout(path: Path, new: str) -> tuple[bool, str]:
    """`git merge --ff-only` in a checkout: moves its branch and files together, keeping local edits."""
    status, _, err = run_status(path, "merge", "--ff-only", "--no-edit", "-q", new)
    return status == 0, err.strip()


def _gitdir_from_files(path: Path) -> Path | None:
    """The git folder of the checkout at PATH: its `.git` folder, or where its `.git` file points."""
    dot = Path(path) / ".git"
    if dot.is_dir() and not dot.is_symlink():
        return dot.resolve()
    return worktree_gitdir(Path(path)) if dot.is_file() else None


def operation_in_progress(path: Path, branch: str) -> str | None:
    """A rebase of `branch`, or a merge, cherry-pick or revert, under way in the checkout at `path`."""
    gitdir = _gitdir_from_files(path)
    if gitdir is None:
        status, out, _ = run_status(path, "rev-parse", "--absolute-git-dir")
        if status != 0:
            return None
        gitdir = Path(out.strip())
    for name in ("rebase-merge", "rebase-apply"):
        if (gitdir / name).is_dir():
            try:
                head = (gitdir / name / "head-name").read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                head = ""
            if head in ("", f"refs/heads/{branch}") or current_branch(path) == branch:
                return "rebase"
    if current_branch(path) == branch:
        for name, what in (("MERGE_HEAD", "merge"), ("CHERRY_PICK_HEAD", "cherry-pick"), ("REVERT_HEAD", "revert")):
            if (gitdir / name).exists():
                return what
    return None


def checkout_gitdir(path: Path) -> Path | None:
    """The git directory holding a checkout's index: `.git` of a main checkout, or a linked worktree's."""
    return (path / ".git") if (path / ".git").is_dir() else worktree_gitdir(path)


def blobs_in_commit(root: Path, commit: str, paths: list[str]) -> dict[str, str]:
    """{path: blob} for those of PATHS that exist in COMMIT."""
    out = run(root, "ls-tree", "-r", "-z", commit, "--", *paths) if paths else ""
    return {name: meta[2] for meta, name in _tab_records(out)}  # mode type blob


def blobs_in_index(path: Path, paths: list[str]) -> dict[str, str]:
    """{path: blob} for those of PATHS staged (stage 0) in the checkout's index."""
    out = run(path, "ls-files", "-s", "-z", "--", *paths) if paths else ""
    return {name: meta[1] for meta, name in _tab_records(out) if meta[2] == "0"}  # mode blob stage


def _tab_records(out: str) -> Iterator[tuple[list[str], str]]:
    """NUL-separated `FIELDS<TAB>PATH` records (ls-tree, ls-files -s): (fields, path)."""
    for rec in out.split("\0"):
        if rec:
            meta, _, name = rec.partition("\t")
            yield meta.split(), name


def blobs_in_worktree(path: Path, paths: list[str]) -> dict[str, str]:
    """{path: blob} for those of PATHS present as files in the checkout (what `git add` would store)."""
    present = [p for p in paths if (path / p).is_file() or (path / p).is_symlink()]
    if not present:
        return {}
    out = run(path, "hash-object", "--", *present)
    return dict(zip(present, out.split()))


# -- the shared remote of the Ray executor (kanban.executors) -----------------------------

REMOTE_TIMEOUT = 300.0  # seconds a push or fetch of one run's refs may take


def _remote(cwd: Path | str | None, args: list[str], what: str, timeout: float) -> str:
    status, out, err = run_bytes(cwd, args, env={"GIT_TERMINAL_PROMPT": "0"}, timeout=timeout)
    if status != 0:
        stderr = _text(err).strip()
        first = stderr.splitlines()[-1] if stderr else f"exit status {status}"
        raise GitError(f"git {what} failed: {first}", stderr=stderr, status=status)
    return _text(out)


def push_refs(cwd: Path | str, remote: str, refspecs: list[str], *, timeout: float = REMOTE_TIMEOUT) -> None:
    """Push REFSPECS ("<sha>:refs/kanban/...", forced) to REMOTE (a URL: no remote is added to
    the repository's config, which kanban.gitguard watches)."""
    _remote(cwd, ["push", "--quiet", "--force", "--no-verify", remote, *refspecs], "push", timeout)


def fetch_ref(cwd: Path | str, remote: str, ref: str, *, timeout: float = REMOTE_TIMEOUT) -> str:
    """Fetch REF from REMOTE into CWD's FETCH_HEAD (no ref of the repository changes); its commit."""
    _remote(cwd, ["fetch", "--quiet", "--no-tags", remote, ref], "fetch", timeout)
    return run(cwd, "rev-parse", "--verify", "--end-of-options", "FETCH_HEAD^{commit}").strip()


def remote_refs(cwd: Path | str | None, remote: str, pattern: str = "refs/kanban/*", *,
                timeout: float = 30.0) -> dict[str, str]:
    """{ref: sha} of REMOTE's refs matching PATTERN (`git ls-remote`): whether it is reachable at all."""
    out = _remote(cwd, ["ls-remote", remote, pattern], "ls-remote", timeout)
    found = {}
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref:
            found[ref] = sha
    return found


def reset_hard(path: Path, sha: str) -> None:
    """Move the worktree's checkout (its branch, if one is checked out) to SHA, files and all."""
    run(path, "reset", "--quiet", "--hard", sha)

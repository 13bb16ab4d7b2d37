"""All git access. The only module that imports GitPython; nothing else runs git.

Flat functions over argv, reading machine output (`-z`, `--porcelain`). Git
runs with a cleaned environment so nothing ever waits for a password or an
editor. Transient lock contention is retried with tenacity; everything else
raises GitError with git's own message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import git as gitpython
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from kanban.errors import KanbanError

GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true",
    "GIT_MERGE_AUTOEDIT": "no",
    "GIT_ASKPASS": "",
    "SSH_ASKPASS": "",
    "GIT_OPTIONAL_LOCKS": "0",
    "LC_ALL": "C",
}
# Code an agent may have written into the shared .git never runs in kanban's own git: no hooks
# (core.hooksPath=/dev/null also hides .git/hooks), no fsmonitor daemon. Aliases cannot shadow
# the built-in commands kanban runs; filters and the rest are put back after each run (gitguard).
SAFE_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")
MIN_VERSION = (2, 38)  # merge-tree --write-tree
_TRANSIENT = re.compile(r"index\.lock|cannot lock ref|Unable to create .*\.lock|File exists", re.I)


class GitError(KanbanError):
    def __init__(self, message: str, *, stderr: str = "", status: int | None = None) -> None:
        super().__init__(message, code=1)
        self.stderr = stderr
        self.status = status


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, GitError) and bool(_TRANSIENT.search(exc.stderr))


@retry(
    retry=retry_if_exception(_is_transient),
    stop=stop_after_attempt(6),
    wait=wait_exponential(multiplier=0.05, max=1.0),
    reraise=True,
)
def run(cwd: Path | str, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    """Run `git ARGS...` in cwd and return stdout. Flags are passed positionally, as given."""
    _check_dot_git(cwd)
    g = gitpython.Git(str(cwd))
    try:
        out = g.execute(
            ["git", *SAFE_CONFIG, *args],
            env={**GIT_ENV, **(env or {})},
            istream=None,
            stdout_as_string=True,
            strip_newline_in_stdout=False,
            with_extended_output=False,
        )
    except gitpython.GitCommandError as exc:
        if not check:
            return ""
        stderr = (exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
        first = stderr.splitlines()[0] if stderr else f"exit status {exc.status}"
        raise GitError(f"git {' '.join(args[:3])} failed: {first}", stderr=stderr,
                       status=exc.status if isinstance(exc.status, int) else None) from None
    return out if isinstance(out, str) else out.decode()


def run_status(cwd: Path | str, *args: str) -> tuple[int, str, str]:
    """Run git and return (status, stdout, stderr) without raising on a non-zero status."""
    _check_dot_git(cwd)
    g = gitpython.Git(str(cwd))
    status, out, err = g.execute(
        ["git", *SAFE_CONFIG, *args], env=GIT_ENV, with_extended_output=True, with_exceptions=False,
        strip_newline_in_stdout=False,
    )
    return status, out, err


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
    info = gitpython.Git().version_info
    return tuple(info[:3])


def toplevel(path: Path) -> Path | None:
    status, out, _ = run_status(path, "rev-parse", "--show-toplevel")
    return Path(out.strip()) if status == 0 else None


def common_dir(root: Path) -> Path:
    out = run(root, "rev-parse", "--git-common-dir").strip()
    return (root / out).resolve() if not os.path.isabs(out) else Path(out)


def has_commits(root: Path) -> bool:
    return run_status(root, "rev-parse", "--verify", "-q", "HEAD^{commit}")[0] == 0


def branch_exists(root: Path, branch: str) -> bool:
    return run_status(root, "rev-parse", "--verify", "-q", f"refs/heads/{branch}")[0] == 0


def current_branch(root: Path) -> str | None:
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
    """The repository's worktrees from `git worktree list --porcelain -z`."""
    out = run(root, "worktree", "list", "--porcelain", "-z")
    found: list[Worktree] = []
    for record in _records(out):
        path = Path(record.get("worktree", ""))
        branch = record.get("branch", "").removeprefix("refs/heads/") or None
        found.append(Worktree((path, branch, record.get("HEAD"), "locked" in record)))
    return found


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
    out = run(root, "for-each-ref", "--format=%(refname)", pattern)
    return [line.removeprefix("refs/heads/") for line in out.splitlines() if line]


# -- worktrees and branches for tasks ---------------------------------------------


def _worktree_lock(root: Path):
    """Serialise worktree add/remove/prune: concurrent `worktree add -b` races on config."""
    import contextlib
    import fcntl

    @contextlib.contextmanager
    def held():
        path = common_dir(root) / "kanban-worktree.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    return held()


def add_worktree(root: Path, path: Path, branch: str, base: str) -> None:
    """Create `path` on `branch`: a new branch from `base`, or the existing branch (after a crash)."""
    with _worktree_lock(root):
        args = [str(path), branch] if branch_exists(root, branch) else ["--no-track", "-b", branch, str(path), base]
        try:
            run(root, "worktree", "add", *args)
        except GitError:
            run(root, "worktree", "prune")  # a stale registration (worktree deleted by hand): clear, try again
            run(root, "worktree", "add", *args)


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


def delete_branch(root: Path, branch: str) -> None:
    delete_branches(root, [branch])


def delete_branches(root: Path, names: list[str]) -> None:
    existing = [b for b in names if b in branch_shas(root, "refs/heads/")]
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
    """{branch name: commit} for the branches under a ref prefix, in one call."""
    out = run(root, "for-each-ref", "--format=%(objectname) %(refname)", pattern)
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


def is_ancestor(root: Path, a: str, b: str) -> bool:
    return run_status(root, "merge-base", "--is-ancestor", a, b)[0] == 0


def changed_files(path: Path, base: str) -> list[str]:
    """Files the branch checked out at `path` changed since it left `base`."""
    out = run(path, "diff", "--name-only", "-z", f"{base}...HEAD")
    return [p for p in out.split("\0") if p]


def tracked_files(path: Path) -> list[str]:
    return [p for p in run(path, "ls-files", "-z").split("\0") if p]


def merge_in_progress(path: Path) -> bool:
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
    """git with bytes in and out (blobs keep their exact bytes: CRLF, no UTF-8)."""
    import subprocess

    _check_dot_git(root)
    proc = subprocess.run(["git", *SAFE_CONFIG, *args], cwd=root, input=data, capture_output=True,
                          env={**os.environ, **GIT_ENV}, stdin=None if data is not None else subprocess.DEVNULL)
    return proc.returncode, proc.stdout


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


def tree_with_blob(root: Path, tree: str, path: str, blob: str, mode: str = "100644") -> str:
    """`tree` with PATH set to BLOB."""
    import tempfile

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
    out = run(root, "diff", "--name-only", "-z", "--no-renames", a, *([b] if b else []))
    return [p for p in out.split("\0") if p]


def merge_base(root: Path, a: str, b: str) -> str | None:
    status, out, _ = run_status(root, "merge-base", a, b)
    return out.strip() if status == 0 else None


def update_ref(root: Path, ref: str, new: str, old: str) -> bool:
    """Compare-and-swap a ref: moves only if it still points at `old`."""
    return run_status(root, "update-ref", "-m", "kanban merge-queue", ref, new, old)[0] == 0


def checkout_of(root: Path, branch: str) -> Path | None:
    """The worktree (the person's checkout or another) that has `branch` checked out."""
    for w in worktrees(root):
        if w.branch == branch:
            return w.path
    return None


def dirty_paths(path: Path) -> list[str]:
    """Tracked files with uncommitted changes, and untracked files, in a checkout."""
    return [p for _, p in status_porcelain(path)]


def fast_forward_checkout(path: Path, new: str) -> tuple[bool, str]:
    """`git merge --ff-only` in a checkout: moves its branch and files together, keeping local edits."""
    status, _, err = run_status(path, "merge", "--ff-only", "--no-edit", "-q", new)
    return status == 0, err.strip()


def operation_in_progress(path: Path, branch: str) -> str | None:
    """A rebase of `branch`, or a merge, cherry-pick or revert, under way in the checkout at `path`."""
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

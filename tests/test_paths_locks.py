"""One owner each: kanban.paths for the state paths, kanban.locks for flock, kanban.atomic for
whole-file writes. The source checks keep it so; the rest checks that each one does its job."""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kanban import atomic, locks, paths
from kanban.errors import KanbanError

PACKAGE = Path(__file__).resolve().parents[1] / "kanban"
# os.replace outside kanban.atomic, and why each is not a whole-file write:
REPLACE_ALLOWED = {
    ("store.py", "_link_new"): "the board's exchange: the fallback where renameat2 is unsupported",
    ("store.py", "_swap"): "the board's exchange: check-then-rename where the exchange is unsupported",
    ("store.py", "_undo"): "the board's exchange: undoing one file of a save that met a hand edit",
    ("agents.py", "_switch"): "moves an existing set-up record aside; writes nothing",
}


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants in TREE (the module's, each class's and function's)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _functions(tree: ast.AST) -> dict[int, str]:
    """id of every node -> the name of the innermost function around it."""
    owner: dict[int, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            owner[id(child)] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return owner


def _calls(tree: ast.AST, module: str, name: str) -> list[ast.AST]:
    """Uses of MODULE.NAME (an attribute of the imported module), or of NAME imported from it."""
    found = [n for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and n.attr == name
             and isinstance(n.value, ast.Name) and n.value.id == module]
    found += [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == module
              and any(a.name == name for a in n.names)]
    return found


def test_state_paths_are_spelled_only_in_paths_py():
    spelled = []
    for path in _modules():
        if path.name == "paths.py" and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                    and (node.value == paths.STATE_DIR or node.value.startswith(paths.STATE_DIR + "/"))):
                spelled.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value!r}")
    assert spelled == [], "use kanban.paths:\n" + "\n".join(spelled)


def test_only_locks_py_calls_flock():
    found = [f"{p.relative_to(PACKAGE.parent)}:{n.lineno}" for p in _modules() if p.name != "locks.py"
             for n in _calls(ast.parse(p.read_text(encoding="utf-8")), "fcntl", "flock")]
    assert found == [], "use kanban.locks:\n" + "\n".join(found)


def test_only_atomic_py_replaces_files():
    found = []
    for path in _modules():
        if path.name == "atomic.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        owner = _functions(tree)
        for node in _calls(tree, "os", "replace"):
            if (path.name, owner.get(id(node))) not in REPLACE_ALLOWED:
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} in {owner.get(id(node))}")
    assert found == [], "use kanban.atomic (or list the exception here, with its reason):\n" + "\n".join(found)


def test_the_three_modules_need_only_the_standard_library():
    """git.py and the supervisor (`python -I -S`) import them before GitPython could be there."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import kanban.paths, kanban.locks, kanban.atomic; "
            "kanban.paths.run_dir(kanban.paths.Path('/r'), 'T-1', 'task', 1); "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] not in sys.stdlib_module_names)))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(PACKAGE.parent)],
                         capture_output=True, text=True, check=True).stdout
    assert set(out.split()) - {"__main__"} <= {"kanban", "kanban.paths", "kanban.locks", "kanban.atomic",
                                                "kanban.ids", "kanban.errors"}, out


# -- paths ------------------------------------------------------------------------------


def test_paths_under_the_state_dir(tmp_path):
    state = tmp_path / ".kanban"
    assert paths.state_dir(tmp_path) == state
    assert paths.run_dir(tmp_path, "T-3", "reviewer", 2) == state / "runs" / "T-3" / "reviewer-2"
    assert [paths.verify_slot(tmp_path, n).name for n in range(3)] == ["verify", "verify-2", "verify-3"]
    assert paths.sandbox_private(tmp_path, paths.run_dir(tmp_path, "T-3", "task", 1)) == \
        state / "sandbox" / "T-3" / "task-1"
    assert paths.worktree_path(tmp_path, "wt/x", "T-3") == tmp_path / "wt" / "x" / "T-3"
    assert paths.idle_dir(tmp_path, ".worktrees") == tmp_path / ".worktrees" / ".idle"
    assert not state.exists()  # pure: nothing is created


@pytest.mark.parametrize("bad", ["../x-1", "T-1/..", "", "T_1"])
def test_ids_are_checked_before_they_become_path_segments(tmp_path, bad):
    with pytest.raises(KanbanError, match="not a valid ID"):
        paths.run_dir(tmp_path, bad, "task", 1)
    with pytest.raises(KanbanError, match="not a valid ID"):
        paths.worktree_path(tmp_path, ".worktrees", bad)


# -- locks ------------------------------------------------------------------------------

_HOLDER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from kanban import locks
with locks.hold(Path(sys.argv[2]), shared=sys.argv[3] == "shared") as got:
    print("held" if got else "busy", flush=True)
    sys.stdin.readline()
"""


@pytest.fixture
def holder(tmp_path):
    """holder(path, shared): another process holding the lock on PATH until the test ends."""
    procs = []

    def start(path: Path, shared: bool = False) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(PACKAGE.parent), str(path),
                                 "shared" if shared else "exclusive"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.communicate("\n", timeout=10)


def test_an_exclusive_lock_excludes_another_process(tmp_path, holder):
    lock = tmp_path / "x.lock"
    holder(lock)
    assert locks.is_held(lock)
    with locks.hold(lock, timeout=0) as got:
        assert got is False
    with locks.hold(lock, shared=True, timeout=0) as got:
        assert got is False


def test_a_timeout_waits_then_gives_up(tmp_path, holder):
    lock = tmp_path / "x.lock"
    holder(lock)
    began = time.monotonic()
    with locks.hold(lock, timeout=0.3) as got:
        assert got is False
    assert 0.3 <= time.monotonic() - began < 5


def test_shared_locks_coexist_and_keep_a_writer_out(tmp_path, holder):
    lock = tmp_path / "x.lock"
    holder(lock, shared=True)
    assert not locks.is_held(lock)  # the probe asks for a shared lock: readers do not count
    with locks.hold(lock, shared=True, timeout=0) as got:
        assert got is True
    with locks.hold(lock, timeout=0) as got:
        assert got is False


def test_a_lock_is_free_again_once_its_holder_is_gone(tmp_path, holder):
    lock = tmp_path / "x.lock"
    proc = holder(lock)
    proc.communicate("\n", timeout=10)
    assert not locks.is_held(lock)
    with locks.hold(lock, timeout=0) as got:
        assert got is True
    assert stat.S_IMODE(lock.stat().st_mode) == 0o644 & ~_umask()


def test_waiting_without_a_timeout_gets_the_lock_when_it_is_released(tmp_path, holder):
    lock = tmp_path / "x.lock"
    proc = holder(lock)
    release = threading.Timer(0.3, proc.communicate, ["\n"])
    release.start()
    began = time.monotonic()
    try:
        with locks.hold(lock) as got:  # no timeout: blocks until the holder ends
            assert got is True
            assert time.monotonic() - began >= 0.25
    finally:
        release.join()


def test_is_held_never_creates_the_file(tmp_path):
    assert not locks.is_held(tmp_path / "none.lock")
    assert not (tmp_path / "none.lock").exists()


def test_a_lock_file_that_is_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "x.lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError), locks.hold(tmp_path / "x.lock", timeout=0):
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- atomic writes ----------------------------------------------------------------------


def _temps(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_write_leaves_the_file_and_no_temp_file(tmp_path, monkeypatch):
    from kanban.repair import TMP_RUN

    target = tmp_path / "result.json"
    renamed = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renamed.append(Path(src).name), real(src, dst)))
    atomic.write_json_atomic(target, {"a": 1})
    atomic.write_bytes_atomic(target, b"second", durable=True)
    assert target.read_bytes() == b"second"
    assert _temps(tmp_path) == []
    # the temp file's name tells repair whose it was (a dead writer's is removed)
    assert all(int(TMP_RUN.match(name).group(1)) == os.getpid() for name in renamed), renamed
    assert len(set(renamed)) == 2  # never the same name twice: threads of one process do not collide


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "record"
    target.write_text("old")

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="No space"):
        atomic.write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert _temps(tmp_path) == []


def test_a_write_over_a_directory_fails_cleanly(tmp_path):
    (tmp_path / "d" / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        atomic.write_text_atomic(tmp_path / "d", "x")
    assert _temps(tmp_path) == [] and (tmp_path / "d" / "inside").is_dir()


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o755])
def test_the_mode_is_set_exactly(tmp_path, mode):
    target = tmp_path / "f"
    atomic.write_text_atomic(target, "x", mode=mode)
    assert stat.S_IMODE(target.stat().st_mode) == mode


def test_mode_none_keeps_the_files_mode(tmp_path):
    target = tmp_path / "f"
    atomic.write_text_atomic(target, "x", mode=None)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    os.chmod(target, 0o640)
    atomic.write_text_atomic(target, "y", mode=None)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 and target.read_text() == "y"


def test_a_write_replaces_a_link_instead_of_writing_through_it(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("keep")
    (tmp_path / "link").symlink_to(secret)
    atomic.write_text_atomic(tmp_path / "link", "new")
    assert secret.read_text() == "keep"
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link").read_text() == "new"

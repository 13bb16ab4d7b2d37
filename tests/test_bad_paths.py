"""Files that are not what they seem, and file systems that say no: one clear line, never a hang or exit 3.

- kanban.toml, pyproject.toml or a prompt template that is a FIFO, a device, a
  link loop, a dangling link, a link leading outside the repository or too big
  is refused (exit 2) without being opened for long: a FIFO used to hang every
  command.
- A read-only file system or a full disk (bubblewrap gives both without root
  tricks) is one line naming the file and what to do, exit 2 or 1, never
  "internal error" (exit 3); status, logs and report keep working read-only.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import git, snapshot

from kanban.errors import from_environment

pytestmark = pytest.mark.heavy  # many full-pipeline runs under bwrap: CI runs them with -m heavy

BWRAP = shutil.which("bwrap")


def _cli(root: Path, *args: str, timeout: float = 20, wrap: list[str] | None = None) -> subprocess.CompletedProcess:
    """The real entry point, with a short timeout: a command blocked on a FIFO fails fast."""
    argv = [*(wrap or []), sys.executable, "-m", "kanban", "-C", str(root), *args]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def _one_line(proc, code: int = 2) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _files(root: Path) -> dict[str, bytes]:
    found = snapshot(root)
    found.pop(".kanban/board.lock", None)  # a board command's lock, created empty
    return found


def _project(repo: Path) -> None:
    (repo / "kanban.toml").write_text('main_branch = "main"\n[agent]\ncommand = ["true"]\n')
    (repo / "TODO.md").write_text("## TASK-1: a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project")


# --- config and prompt files that are not regular files ----------------------------------------


@pytest.mark.parametrize("command", [("status",), ("tick",), ("preflight",), ("merge-queue",)])
def test_fifo_as_kanban_toml_is_refused_not_waited_on(repo, command):
    os.mkfifo(repo / "kanban.toml")
    line = _one_line(_cli(repo, *command, timeout=15))
    assert line == ("error: kanban.toml: cannot read kanban.toml: it is a FIFO (named pipe), not a regular file;"
                    " replace it with a regular file")


@pytest.mark.parametrize("command", [("status",), ("init",)])
def test_fifo_as_pyproject_toml_is_refused(repo, command):
    os.mkfifo(repo / "pyproject.toml")
    line = _one_line(_cli(repo, *command, timeout=15))
    assert line.startswith("error: pyproject.toml: cannot read pyproject.toml: it is a FIFO")


def _loop(repo: Path) -> None:
    os.symlink("kanban.toml", repo / "kanban.toml")


def _dangling(repo: Path) -> None:
    os.symlink("nowhere.toml", repo / "kanban.toml")


def _device(repo: Path) -> None:
    os.symlink("/dev/zero", repo / "kanban.toml")


def _outside(repo: Path) -> None:
    outside = repo.parent / "shared.toml"
    outside.write_text("pool_size = 2\n")
    os.symlink(outside, repo / "kanban.toml")


def _huge(repo: Path) -> None:
    (repo / "kanban.toml").write_text("# padding\n" * 200_000 + "pool_size = 2\n")


BAD_CONFIG_FILES = [
    (_loop, "is a symbolic link loop"),
    (_dangling, "is a symbolic link to 'nowhere.toml', which does not exist"),
    (_device, "is a character device, not a regular file"),
    (_outside, "outside the repository"),
    (_huge, "over the 1.0 MiB limit; make it shorter"),
]


@pytest.mark.parametrize("make,says", BAD_CONFIG_FILES, ids=[m[0].__name__.strip("_") for m in BAD_CONFIG_FILES])
def test_kanban_toml_that_is_not_a_regular_file(repo, make, says):
    make(repo)
    before = _files(repo)
    line = _one_line(_cli(repo, "status"))
    assert line.startswith("error: kanban.toml: cannot read kanban.toml: it ") and says in line, line
    assert _files(repo) == before


def test_kanban_toml_symlink_loop_stops_tick(repo):
    _loop(repo)
    before = _files(repo)
    line = _one_line(_cli(repo, "tick"))
    assert line.startswith("error: kanban.toml: cannot read kanban.toml: it is a symbolic link loop"), line
    assert _files(repo) == before


def test_kanban_toml_linked_to_a_file_inside_the_repository_is_read(repo):
    (repo / "config").mkdir()
    (repo / "config" / "kanban.toml").write_text("pool_size = 2\n")
    os.symlink("config/kanban.toml", repo / "kanban.toml")
    assert _cli(repo, "status").returncode == 0


def _prompt_fifo(repo: Path) -> None:
    os.mkfifo(repo / "prompts" / "task.md")


def _prompt_device(repo: Path) -> None:
    os.symlink("/dev/zero", repo / "prompts" / "task.md")


def _prompt_secret(repo: Path) -> None:
    secret = repo.parent / "secret.txt"
    secret.write_text("SECRET-TOKEN-4711 {{ title }}\n")
    os.symlink(secret, repo / "prompts" / "task.md")


def _prompt_huge(repo: Path) -> None:
    (repo / "prompts" / "task.md").write_text("Do the task {{ title }}.\n" * 20_000)


def _prompt_binary(repo: Path) -> None:
    (repo / "prompts" / "task.md").write_bytes(b"Do it \xff\xfe\n")


BAD_PROMPTS = [
    (_prompt_fifo, "prompt template is a FIFO (named pipe), not a regular file"),
    (_prompt_device, "prompt template is a character device"),
    (_prompt_secret, "prompt template is a symbolic link to"),
    (_prompt_huge, "prompt template is 488 KiB, over the 256 KiB limit"),
    (_prompt_binary, "prompt template is not valid UTF-8 (byte 7)"),
]


@pytest.mark.parametrize("make,says", BAD_PROMPTS, ids=[m[0].__name__.strip("_") for m in BAD_PROMPTS])
def test_prompt_template_that_is_not_a_regular_file_stops_the_pass_before_anything_moves(repo, make, says):
    _project(repo)
    run_cli_init(repo)
    (repo / "prompts" / "task.md").unlink()
    make(repo)
    before = _files(repo)
    line = _one_line(_cli(repo, "tick", timeout=15))
    assert line.startswith("error: prompts/task.md") and says in line, line
    assert _files(repo) == before  # nothing picked, no worktree, no run
    assert not (repo / ".worktrees").exists()
    assert "kanban/TASK-1" not in git(repo, "branch", "--list")


def run_cli_init(repo: Path) -> None:
    proc = _cli(repo, "init")
    assert proc.returncode == 0, proc.stderr
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")


# --- a read-only file system ----------------------------------------------------------------------


def _bwrap_works() -> bool:
    if BWRAP is None:
        return False
    probe = subprocess.run([BWRAP, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--", "true"],
                           check=False, capture_output=True)
    return probe.returncode == 0


needs_bwrap = pytest.mark.skipif(
    not _bwrap_works(),
    reason="bubblewrap cannot run here (apt-get install bubblewrap; it needs unprivileged user namespaces)")
READ_ONLY = [BWRAP or "bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--"]


def _with_history(repo: Path) -> Path:
    """A project with one finished and one failed run recorded, as a tick leaves them."""
    from kanban.history import History

    _project(repo)
    run_cli_init(repo)
    log = repo / ".kanban" / "runs" / "TASK-1" / "task-1" / "agent.log"
    log.parent.mkdir(parents=True)
    log.write_text("the agent's log\nall done\n")
    with History(repo) as history:
        run = history.start_run(task="TASK-1", role="task", attempt=1, run_dir=str(log.parent), log=str(log),
                                timeout=60, head_before=None)
        history.finish_run(run, outcome="failed", result={"exit_code": 1}, reason="exit 1")
        history.event("TASK-1", "picked", "TODO", "IN_PROGRESS")
    return log


@needs_bwrap
@pytest.mark.parametrize("wal", [False, True], ids=["checkpointed", "wal-open"])
def test_read_commands_work_on_a_read_only_file_system(repo, wal):
    _with_history(repo)
    writer = None
    if wal:  # a writer still open: the -wal and -shm files are there, with the latest rows in the WAL
        writer = sqlite3.connect(repo / ".kanban" / "history.sqlite", isolation_level=None)
        writer.execute("PRAGMA journal_mode=WAL")
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("INSERT INTO events (time, task, kind) VALUES (1, 'TASK-1', 'wal-only')")
        assert (repo / ".kanban" / "history.sqlite-wal").stat().st_size > 0
    try:
        before = snapshot(repo)
        status = _cli(repo, "status", wrap=READ_ONLY)
        assert status.returncode == 0 and "TASK-1" in status.stdout, status.stderr
        data = json.loads(_cli(repo, "status", "--json", wrap=READ_ONLY).stdout)
        assert data["columns"]["TODO"]["tasks"][0]["id"] == "TASK-1"
        report = _cli(repo, "report", wrap=READ_ONLY)
        assert report.returncode == 0 and "TASK-1 task attempt 1: exit 1" in report.stdout, report.stderr
        logs = _cli(repo, "logs", "TASK-1", wrap=READ_ONLY)
        assert logs.returncode == 0 and "all done" in logs.stdout, logs.stderr
        assert snapshot(repo) == before
    finally:
        if writer is not None:
            writer.close()


@needs_bwrap
def test_status_and_logs_on_a_read_only_file_system_without_a_history(repo):
    _project(repo)
    assert _cli(repo, "status", wrap=READ_ONLY).returncode == 0
    assert _cli(repo, "report", wrap=READ_ONLY).returncode == 0
    line = _one_line(_cli(repo, "logs", "TASK-1", wrap=READ_ONLY))
    assert "no agent runs recorded for TASK-1" in line
    assert not (repo / ".kanban").exists()  # nothing created


@needs_bwrap
@pytest.mark.parametrize("command,names", [
    (("tick",), ".kanban/"), (("merge-queue",), ".kanban/"), (("add", "more"), "board.lock"),
    (("retry", "TASK-1"), "board.lock"), (("stop", "TASK-1"), ".kanban/history.sqlite"),
    (("preflight", "--repair"), ".kanban/"),
])
def test_writing_commands_on_a_read_only_file_system_say_so_in_one_line(repo, command, names):
    _with_history(repo)
    before = snapshot(repo)
    line = _one_line(_cli(repo, *command, wrap=READ_ONLY), code=2)
    assert names in line and "read-only" in line, line
    assert snapshot(repo) == before


# --- a full disk ----------------------------------------------------------------------------------


def _full_disk(state: Path, left: int) -> list[str]:
    """bwrap with a small tmpfs as STATE, filled but for LEFT bytes, then the command."""
    size = 1 << 20
    fill = f"head -c {size - left} /dev/zero > {state}/fill 2>/dev/null; exec \"$@\""
    return [BWRAP or "bwrap", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--size", str(size), "--tmpfs", str(state), "--", "sh", "-c", fill, "sh"]


@needs_bwrap
@pytest.mark.parametrize("left", [0, 24_000, 60_000])
def test_a_full_disk_is_one_line_not_an_internal_error(repo, left):
    _project(repo)
    run_cli_init(repo)
    proc = _cli(repo, "tick", wrap=_full_disk(repo / ".kanban", left))
    line = _one_line(proc, code=1)
    assert "no space left on the device" in line and "free some disk space" in line, line
    status = _cli(repo, "status", wrap=_full_disk(repo / ".kanban", left))
    assert status.returncode == 0, status.stderr


# --- the mapping itself, and the last line of defence -------------------------------------------


def test_environment_errors_map_to_one_line_and_an_exit_code(tmp_path):
    cases = [
        (OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".kanban" / "x")), 2,
         ".kanban/x: cannot write: the file system is read-only"),
        (OSError(errno.ENOSPC, "No space left on device"), 1, "cannot write a file: no space left on the device"),
        (OSError(errno.EDQUOT, "Disk quota exceeded", "/elsewhere/f"), 1, "/elsewhere/f: cannot write: the disk quota"),
        (PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "TODO.md")), 2,
         "TODO.md: cannot access: permission denied"),
        (OSError(errno.ELOOP, "Too many levels of symbolic links", str(tmp_path / "a")), 2,
         "a: cannot open: a symbolic"),
    ]
    for exc, code, text in cases:
        found = from_environment(exc, tmp_path)
        assert found is not None and found.code == code and str(found).startswith(text), (exc, str(found))
        assert "\n" not in str(found)
    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert from_environment(wrapped).code == 1
    assert from_environment(OSError(errno.ENOENT, "No such file")) is None  # not the environment: a bug or a race
    assert from_environment(ValueError("x")) is None
    db = sqlite3.connect(":memory:")
    with pytest.raises(sqlite3.OperationalError) as caught:
        db.execute("SELECT * FROM nowhere")
    assert from_environment(caught.value) is None  # an SQL mistake stays an internal error


def test_crash_report_is_one_line_even_when_tmp_cannot_be_written(monkeypatch, capsys):
    import tempfile

    from kanban.cli import _report_crash

    monkeypatch.setattr(tempfile, "tempdir", "/nonexistent/kanban-test")
    assert _report_crash(RuntimeError("boom\nsecond line")) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: internal error: RuntimeError: boom second line")
    assert "could not save the details" in err

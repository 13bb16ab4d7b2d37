"""Hostile input beyond tests/test_validation.py: a clear error (exit 2, one line, no traceback), nothing changed.

The CLI cases run the real entry point in this process (conftest.run_inproc); a few go through a
real `python -m kanban` (run_cli) so that the process boundary stays tested: exit 2
(test_configured_worktree_dir_symlink_leading_outside), exit 0 (test_one_megabyte_single_line) and
a real tick (test_task_worktree_symlink_leading_outside).

Covered there and not repeated here: hostile `depends` values and `add --depends`
arguments, hostile heading text, invalid UTF-8 and NUL bytes, a board file that
is a directory or a symlink leading outside the repository.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest
from conftest import git, run_cli, run_inproc, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kanban.board import MAX_FILE_BYTES
from kanban.config import load_config
from kanban.errors import KanbanError
from kanban.store import load_board

BOARD_FILES = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md")


def _one_line_exit_2(proc) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def _unchanged(before: dict, root: Path) -> None:
    after = snapshot(root)
    for name in (".kanban/board.lock", ".kanban/history.db", ".kanban/history.db-wal", ".kanban/history.db-shm"):
        after.pop(name, None)
        before.pop(name, None)
    assert after == before


# --- command arguments ---------------------------------------------------------------

HOSTILE_IDS = ["../x", "../../etc/passwd", "TASK-1/..", "a b", "-rf", "--force-x", "TASK-1;ls", "TASK-1|cat",
               "$(id)", "`id`", "TASK-1&&x", "TАSK-1",  # Cyrillic А
               "ТASK-1", "TASK‐1",  # Cyrillic Т, unicode hyphen
               "TASK-１", "TASK-1\n", "x" * 70 + "-1", ""]


@pytest.mark.parametrize("command", ["logs", "stop", "retry"])
@pytest.mark.parametrize("bad", HOSTILE_IDS, ids=[repr(b) for b in HOSTILE_IDS])
def test_command_id_arguments_are_refused(repo, command, bad):
    (repo / "TODO.md").write_text("## TASK-1: a\n")
    before = snapshot(repo)
    line = _one_line_exit_2(run_inproc(repo, command, "--", bad))
    assert "not a valid ID" in line
    _unchanged(before, repo)


def test_leading_dash_argument_is_a_usage_error_not_an_id(repo):
    """`kanban stop -rf` without `--`: the parser refuses the option, exit 2, nothing runs."""
    before = snapshot(repo)
    proc = run_inproc(repo, "stop", "-rf")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    _unchanged(before, repo)


# --- binary garbage ------------------------------------------------------------------

def _garbage(seed: int, size: int = 4096) -> bytes:
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(size))
    return data if b"\x00" in data or b"\xff" in data else data + b"\xff\x00"


@pytest.mark.parametrize("name", BOARD_FILES)
@pytest.mark.parametrize("command", [("status",), ("add", "x"), ("tick",)])
def test_binary_garbage_board_file(repo, name, command):
    (repo / name).write_bytes(_garbage(hash(name) & 0xFFFF))
    before = snapshot(repo)
    line = _one_line_exit_2(run_inproc(repo, *command))
    if name != "CHANGELOG.md":
        assert name in line
    _unchanged(before, repo)


@pytest.mark.parametrize("name", ["kanban.toml", "pyproject.toml"])
@pytest.mark.parametrize("command", ["tick", "preflight"])
def test_binary_garbage_config(repo, name, command):
    (repo / name).write_bytes(_garbage(7))
    before = snapshot(repo)
    line = _one_line_exit_2(run_inproc(repo, command))
    assert name in line
    _unchanged(before, repo)


# --- malformed config, through the real CLI -------------------------------------------

BAD_CONFIGS = [
    ("syntax", "main_branch = \n"),
    ("unclosed-table", "[agent\n"),
    ("unclosed-string", 'main_branch = "main\n'),
    ("duplicate-key", 'pool_size = 2\npool_size = 3\n'),
    ("unknown-top-key", "pool_sise = 2\n"),
    ("unknown-agent-key", "[agent]\ntimout = \"1m\"\n"),
    ("pool-string", 'pool_size = "six"\n'),
    ("pool-zero", "pool_size = 0\n"),
    ("pool-huge", "pool_size = 100000\n"),
    ("pool-float", "pool_size = 2.5\n"),
    ("pool-bool", "pool_size = true\n"),
    ("main-list", 'main_branch = ["main"]\n'),
    ("main-hostile", 'main_branch = "../main;rm"\n'),
    ("worktree-absolute", 'worktree_dir = "/tmp/wt"\n'),
    ("worktree-dotdot", 'worktree_dir = "../wt"\n'),
    ("worktree-home", 'worktree_dir = "~/wt"\n'),
    ("preset-unknown", '[agent]\npreset = "gpt-9"\n'),
    ("command-string", '[agent]\ncommand = "rm -rf /"\n'),
    ("command-empty", "[agent]\ncommand = []\n"),
    ("timeout-word", '[agent]\ntimeout = "forever"\n'),
    ("timeout-negative", "[agent]\ntimeout = -5\n"),
    ("timeout-huge", '[agent]\ntimeout = "99999h"\n'),
    ("role-unknown", "[agent.janitor]\ntimeout = \"1m\"\n"),
    ("agent-not-table", 'agent = "claude"\n'),
    ("merge-mode", '[merge]\nmode = "octopus"\n'),
    ("merge-verify-int", "[merge]\nverify = 3\n"),
    ("push-string", '[merge]\npush = "yes"\n'),
    ("env-allow-string", '[env]\nallow = "PATH"\n'),
    ("env-deny-ints", "[env]\ndeny = [1, 2]\n"),
    ("check-no-name", '[[preflight.check]]\nurl = "http://x"\n'),
    ("check-two-kinds", '[[preflight.check]]\nname = "a"\nurl = "http://x"\ntcp = "x:1"\n'),
    ("check-bad-tcp", '[[preflight.check]]\nname = "a"\ntcp = "nohost"\n'),
    ("setup-nested-bad", "[worktree]\nsetup = [[1, 2]]\n"),
    ("copy-outside", '[worktree]\ncopy = ["../../.ssh"]\n'),
    ("port-low", "port_base = 80\n"),
    ("deep-nesting", "x = " + "[" * 2000 + "]" * 2000 + "\n"),
    ("long-number", "pool_size = " + "9" * 5000 + "\n"),
    ("control-chars", 'main_branch = "ma\\u0000in"\n'),
    ("bom-garbage", "\ufeff\x01\x02 = \n"),
]


@pytest.mark.parametrize("kind", ["kanban.toml", "pyproject.toml"])
@pytest.mark.parametrize("name,text", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_malformed_config_is_one_line_exit_2(repo, kind, name, text):
    if kind == "pyproject.toml":
        body = text
        # put every table under [tool.kanban]
        body = body.replace("[[preflight", "[[tool.kanban.preflight").replace("[agent", "[tool.kanban.agent")
        for table in ("[merge]", "[env]", "[worktree]"):
            body = body.replace(table, "[tool.kanban." + table[1:])
        text = '[project]\nname = "x"\n\n[tool.kanban]\n' + body
    (repo / kind).write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "config")
    before = snapshot(repo)
    line = _one_line_exit_2(run_inproc(repo, "tick"))
    assert kind in line
    _unchanged(before, repo)


# --- symlinks leading outside ----------------------------------------------------------

def _project(repo: Path, extra: str = "") -> None:
    (repo / "kanban.toml").write_text('main_branch = "main"\n' + extra + '[agent]\ncommand = ["true"]\n')
    (repo / "TODO.md").write_text("## TASK-1: a\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "project")


def _listing(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_task_worktree_symlink_leading_outside(repo, tmp_path):
    _project(repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("mine\n")
    (repo / ".worktrees").mkdir()
    os.symlink(elsewhere, repo / ".worktrees" / "TASK-1")
    proc = run_cli(repo, "tick")
    assert "Traceback" not in proc.stderr
    assert "TASK-1" in proc.stdout + proc.stderr and "symbolic link" in proc.stdout + proc.stderr
    assert _listing(elsewhere) == ["keep.txt"] and (elsewhere / "keep.txt").read_text() == "mine\n"
    assert "kanban/TASK-1" not in git(repo, "worktree", "list")


def test_worktree_dir_symlink_leading_outside(repo, tmp_path):
    _project(repo)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, repo / ".worktrees")
    before = snapshot(repo)
    for command in ("tick", "merge-queue"):
        line = _one_line_exit_2(run_inproc(repo, command))
        assert "worktree_dir" in line and "outside the repository" in line
    _unchanged(before, repo)
    assert _listing(elsewhere) == []
    assert "kanban/TASK-1" not in git(repo, "worktree", "list")


def test_configured_worktree_dir_symlink_leading_outside(repo, tmp_path):
    _project(repo, 'worktree_dir = "wt"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, repo / "wt")
    before = snapshot(repo)
    line = _one_line_exit_2(run_cli(repo, "tick"))
    assert line.startswith("error: kanban.toml: worktree_dir 'wt' leads to") and "outside the repository" in line
    _unchanged(before, repo)
    assert _listing(elsewhere) == []


def test_worktree_dir_swapped_for_a_symlink_after_start_is_refused_per_task(repo, tmp_path, monkeypatch):
    """Defence in depth: the per-task check in ensure_worktree, should the directory change under a run."""
    from kanban.agents import ensure_worktree
    from kanban.config import Config

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, repo / ".worktrees")
    with pytest.raises(KanbanError, match="outside the repository"):
        ensure_worktree(repo, Config(), "TASK-1")
    assert _listing(elsewhere) == []


# --- very long lines and big files ----------------------------------------------------

def test_one_megabyte_single_line(tmp_path):
    long = "x" * (1024 * 1024)
    text = f"# TODO\n\n## TASK-1: {long}\n\n{long}\n"
    (tmp_path / "TODO.md").write_text(text)
    run_cli(tmp_path, "add", "second", check_code=0)
    after = (tmp_path / "TODO.md").read_text()
    assert after.startswith(text) and "## TASK-2: second" in after
    proc = run_cli(tmp_path, "status", "--json", check_code=0)
    assert "TASK-1" in proc.stdout


def _big_board(size: int) -> bytes:
    out, n = bytearray(b"# Changelog\n\n## [Unreleased]\n\n"), 0
    while len(out) < size:
        n += 1
        out += (f"### TASK-{n}: finished item {n}\n\n" + "Some prose about the change, " * 10 + "\n\n").encode()
    return bytes(out)


def test_ten_megabyte_board_file_is_handled(tmp_path):
    data = _big_board(10 * 1024 * 1024)
    (tmp_path / "CHANGELOG.md").write_bytes(data)
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    start = time.monotonic()
    run_inproc(tmp_path, "status", check_code=0)
    assert time.monotonic() - start < 50  # generous: must not hang, not a speed benchmark
    assert (tmp_path / "CHANGELOG.md").read_bytes() == data


def test_ten_megabyte_todo_file_no_op_is_byte_identical(tmp_path):
    body = ("Line of prose in the person's own notes.\n" * 250000).encode()
    data = b"# TODO\n\n" + body + b"\n## TASK-1: a\n"
    (tmp_path / "TODO.md").write_bytes(data)
    run_inproc(tmp_path, "status", check_code=0)
    assert (tmp_path / "TODO.md").read_bytes() == data


def test_board_file_over_the_limit_is_refused(tmp_path):
    data = b"# TODO\n\n" + b"x" * (20 * 1024 * 1024) + b"\n"
    assert len(data) > MAX_FILE_BYTES
    (tmp_path / "TODO.md").write_bytes(data)
    before = snapshot(tmp_path)
    line = _one_line_exit_2(run_inproc(tmp_path, "status"))
    assert "TODO.md" in line and "over the 16 MiB limit" in line
    _unchanged(before, tmp_path)


# --- fuzz: only KanbanError may escape the loaders ----------------------------------------

MD_LINES = st.sampled_from([
    "## TASK-1: a", "## TASK-2: b", "## [RETRY] TASK-3: c", "## [ESCALATED] TASK-1: d", "# Title", "### Notes",
    "priority: 1", "priority: x", "depends: TASK-2", "depends: ../x", "depends: TASK-1", "files: a.py",
    "files: ../../x", "status: ready", "```", "~~~", "<!--", "-->", "## Fix: no id", "", "- 2026 note",
    "## [Unreleased]", "\ufeff## TASK-9: bom", "## TАSK-1: lookalike", "## TASK-1;ls: x", "track: a",
])
LINE = st.one_of(MD_LINES, st.text(max_size=40)).map(lambda s: s.encode("utf-8", "surrogatepass"))
CHUNK = st.one_of(LINE, st.binary(max_size=20))
ENDING = st.sampled_from([b"\n", b"\r\n", b"\r", b""])
BOARD_BYTES = st.lists(st.tuples(CHUNK, ENDING).map(lambda t: t[0] + t[1]), max_size=25).map(b"".join)

TOML_LINES = st.sampled_from([
    'main_branch = "main"', "pool_size = 3", "pool_size = -1", 'worktree_dir = "../x"', "[agent]",
    '[agent.reviewer]', 'timeout = "15m"', 'timeout = "x"', "command = []", 'command = ["a", "{prompt_file}"]',
    "[merge]", 'mode = "batch"', "verify = [1]", "[env]", 'allow = ["PATH"]', "deny = 3", "[[preflight.check]]",
    'name = "a"', 'url = "http://x"', 'tcp = "h:1"', "[worktree]", "setup = [[]]", "copy = ['.env']",
    "[tool.kanban]", "x = {", "'''", '"""', "a.b.c = 1", "[agent.task]", "preset = 'demo'", "stall = 0",
])
TOML_BYTES = st.lists(st.one_of(TOML_LINES.map(str.encode), st.binary(max_size=12),
                                st.text(max_size=20).map(lambda s: s.encode("utf-8", "surrogatepass"))),
                      max_size=20).map(lambda ls: b"\n".join(ls))


def _load_board_only_kanban_error(root: Path, name: str, data: bytes) -> None:
    for other in BOARD_FILES:
        (root / other).unlink(missing_ok=True)
    (root / name).write_bytes(data)
    try:
        load_board(root)
    except KanbanError as exc:
        assert "\n" not in str(exc), str(exc)  # one line


def _load_config_only_kanban_error(root: Path, name: str, data: bytes) -> None:
    for other in ("kanban.toml", "pyproject.toml"):
        (root / other).unlink(missing_ok=True)
    if name == "pyproject.toml":
        data = b"[tool.kanban]\n" + data
    (root / name).write_bytes(data)
    try:
        load_config(root)
    except KanbanError as exc:
        assert "\n" not in str(exc), str(exc)


def _fuzz_dir(factory, name: str) -> Path:
    path = factory.getbasetemp() / f"fuzz-{os.getpid()}-{name}"
    path.mkdir(exist_ok=True)
    return path


def _fuzz(examples: int):
    return settings(max_examples=examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])


@_fuzz(300)
@given(name=st.sampled_from(BOARD_FILES), data=BOARD_BYTES)
def test_fuzz_board_bytes_only_kanban_error(tmp_path_factory, name, data):
    _load_board_only_kanban_error(_fuzz_dir(tmp_path_factory, name), name, data)


@_fuzz(300)
@given(name=st.sampled_from(["kanban.toml", "pyproject.toml"]), data=TOML_BYTES)
def test_fuzz_config_bytes_only_kanban_error(tmp_path_factory, name, data):
    _load_config_only_kanban_error(_fuzz_dir(tmp_path_factory, name), name, data)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@_fuzz(5000)
@given(name=st.sampled_from(BOARD_FILES), data=BOARD_BYTES)
def test_fuzz_board_bytes_soak(tmp_path_factory, name, data):
    _load_board_only_kanban_error(_fuzz_dir(tmp_path_factory, name), name, data)


@pytest.mark.slow
@pytest.mark.timeout(3600)
@_fuzz(5000)
@given(name=st.sampled_from(["kanban.toml", "pyproject.toml"]), data=TOML_BYTES)
def test_fuzz_config_bytes_soak(tmp_path_factory, name, data):
    _load_config_only_kanban_error(_fuzz_dir(tmp_path_factory, name), name, data)

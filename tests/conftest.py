"""Hermetic tests: a sealed HOME and git config, real git repositories in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: this machine is shared, and a slow example is not a wrong one.
settings.register_profile("kanban", deadline=None)
settings.load_profile("kanban")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _sealed_env(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.com")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "committer@example.com")
    monkeypatch.setenv("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
    monkeypatch.setenv("GIT_EDITOR", "false")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("COLUMNS", "120")
    (home / ".gitconfig").write_text("[init]\n\tdefaultBranch = main\n[protocol \"file\"]\n\tallow = always\n")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository with one commit on main."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("# project\n")
    git(root, "add", "README.md")
    git(root, "commit", "-q", "-m", "initial")
    return root


def run_cli(root: Path, *args: str, check_code: int | None = None) -> subprocess.CompletedProcess:
    """The real console entry point in a subprocess (exit codes and stderr as a user sees them)."""
    proc = subprocess.run([sys.executable, "-m", "kanban", "-C", str(root), *args],
                          capture_output=True, text=True, timeout=60, env=os.environ.copy())
    if check_code is not None:
        assert proc.returncode == check_code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def run_inproc(root: Path, *args: str, check_code: int | None = None) -> subprocess.CompletedProcess:
    """run_cli's twin without the ~0.35 s interpreter start: the real entry point, kanban.cli.main,
    called in this process with argv `kanban -C ROOT ARGS`; exit code, stdout and stderr as run_cli
    returns them (stdout and stderr are text streams of the kind a process has on a pipe, decoded
    as subprocess decodes them). Same environment as run_cli (COLUMNS from _sealed_env), stdin
    at /dev/null as pytest gives a subprocess; what a run could leave behind in this process (the
    caches, among them rich's Consoles that bind the terminal's width and kind when made, the
    argv, cwd, environment, signal handlers, excepthook) is reset before and after. What main()
    lets through other than SystemExit propagates: a case that would crash the process fails.
    Not for commands whose children write to fd 1 or 2 directly (kanban captures its own)."""
    import io
    import locale
    import signal

    from kanban import cli

    encoding = getattr(sys.__stdout__, "encoding", None) or "utf-8"
    out_errors = getattr(sys.__stdout__, "errors", None) or "strict"
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors=out_errors)
    err = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="backslashreplace", line_buffering=True)
    argv = ["kanban", "-C", str(root), *args]
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_argv, saved_cwd, saved_env, saved_hook = sys.argv, os.getcwd(), dict(os.environ), sys.excepthook
    handlers = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGCHLD", "SIGPIPE", "SIGUSR1", "SIGUSR2"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) is not None:
            handlers[sig] = signal.getsignal(sig)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    _reset_process_state(cli)
    code: object = 0
    try:
        with open(os.devnull, encoding=encoding) as stdin:
            sys.stdin, sys.stdout, sys.stderr, sys.argv = stdin, out, err, argv
            try:
                cli.main()
            except SystemExit as exc:
                code = exc.code
            if code is None:
                code = 0
            elif not isinstance(code, int):  # as the interpreter does: printed, exit status 1
                print(code, file=sys.stderr)
                code = 1
            out.flush()
            err.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv, sys.excepthook = saved_argv, saved_hook
        os.chdir(saved_cwd)
        for key in set(os.environ) - set(saved_env):
            del os.environ[key]
        for key, value in saved_env.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        _reset_process_state(cli)

    def text(stream: io.TextIOWrapper) -> str:  # subprocess.run(text=True): locale encoding, universal newlines
        data = stream.buffer.getvalue()
        return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")

    proc = subprocess.CompletedProcess(argv, code & 0xFF, text(out), text(err))  # sys.exit(-1) is status 255
    if check_code is not None:
        assert proc.returncode == check_code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def _reset_process_state(cli) -> None:
    """What a fresh `python -m kanban` starts without: every cache in kanban's modules, that is
    every module-level functools cache (rich's Consoles in kanban.output among them) and every
    module-level object whose class has a cache_clear() (the parse caches), the -C root the last
    run set, the sandbox probe."""
    import types

    cli._ROOT["path"] = None
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "kanban" or name.startswith("kanban.")):
            continue
        for value in list(vars(module).values()):
            # functools' caches and the parse caches alike; looked up on the class, so never a mock's
            clear = None if isinstance(value, (type, types.ModuleType)) else getattr(type(value), "cache_clear", None)
            if callable(clear):
                value.cache_clear()
    sandbox = sys.modules.get("kanban.sandbox")
    if sandbox is not None:
        sandbox._PROBED.clear()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root except .git, for checking that nothing changed."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".git" not in p.relative_to(root).parts}


@pytest.fixture
def kit(repo, tmp_path):
    """make(tasks, **options) -> agents_kit.Project; at teardown every process a run started is killed."""
    from agents_kit import make_project

    made = []

    def make(tasks: str, **options):
        project = make_project(repo, tmp_path / "kit", tasks, **options)
        made.append(project)
        return project

    yield make
    for project in made:
        project.kill_everything()

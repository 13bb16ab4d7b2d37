"""What every command line tool is expected to have: --version, -h, completion, whole help
texts, plain usage lines, a "did you mean" for a typo. And a wheel that installs and runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import typer
from conftest import REPO, git
from typer.testing import CliRunner

import kanban
from kanban.cli import app


def _kanban(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kanban", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL)


def _commands() -> dict:
    return typer.main.get_command(app).commands


def _help(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, prog_name="kanban")
    assert result.exit_code == 0, (args, result.output)
    return result.output


# --- --version -----------------------------------------------------------------------------------


def test_version_prints_the_package_version():
    proc = _kanban("--version")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == f"kanban {kanban.version()}\n"
    assert re.fullmatch(r"kanban \d+\.\d+\.\d+\S*\n", proc.stdout)


def test_pyproject_names_the_distribution_and_its_version():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == kanban.DISTRIBUTION != "kanban"  # "kanban" on PyPI is someone else's
    assert project["version"] == kanban.__version__  # the fallback when run from a source tree
    assert project["scripts"] == {"kanban": "kanban.cli:main"}


# --- help ----------------------------------------------------------------------------------------


def test_dash_h_is_help_for_every_command(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    assert _help(["-h"]) == _help(["--help"])
    for name in _commands():
        short = _help([name, "-h"])
        assert short == _help([name, "--help"]) and short.startswith(f"Usage: kanban {name} "), name
    proc = _kanban("status", "-h")  # the real entry point too
    assert proc.returncode == 0 and "Usage: kanban status [OPTIONS]" in proc.stdout


@pytest.mark.parametrize("columns", ["100", "80"])
def test_help_texts_are_whole_at_usual_widths(monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", columns)
    top = _help(["--help"])
    flat = " ".join(top.split())
    for name, cmd in _commands().items():
        summary = cmd.get_short_help_str(limit=10_000)
        assert summary and not summary.endswith("...") and summary in flat, (name, summary)  # whole, wrapped
        text = _help([name, "--help"])
        assert " ".join(cmd.help.split()) in " ".join(text.split())
        for param in cmd.params:
            if param.help:
                assert " ".join(param.help.split()) in " ".join(text.split()), (name, param.name)
        for output in (top, text):
            assert "…" not in output
            assert all(len(line) <= int(columns) for line in output.splitlines()), output
            assert not [ln for ln in output.splitlines() if ln.rstrip().endswith("...")
                        and not ln.startswith("Usage:")], output


def test_usage_lines_are_plain():
    for name in _commands():
        usage = _help([name, "--help"]).splitlines()[0]
        assert "{" not in usage and "}" not in usage and "<" not in usage, usage
        assert usage.startswith(f"Usage: kanban {name} [OPTIONS]"), usage
    assert _help(["add", "--help"]).splitlines()[0] == "Usage: kanban add [OPTIONS] TITLE"
    assert _help(["logs", "--help"]).splitlines()[0] == "Usage: kanban logs [OPTIONS] ID"
    proc = _kanban("add")  # a usage error shows the same line
    assert proc.returncode == 2 and "Usage: kanban add [OPTIONS] TITLE" in proc.stderr


# --- a typo ----------------------------------------------------------------------------------------


def test_unknown_command_says_what_was_meant(tmp_path):
    proc = _kanban("stauts", "--json", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: no command 'stauts'. Did you mean 'status'?\n"
    proc = _kanban("merge_queue", cwd=tmp_path)
    assert proc.stderr == "error: no command 'merge_queue'. Did you mean 'merge-queue'?\n"
    proc = _kanban("xyzzy", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr == "error: no command 'xyzzy'; run 'kanban --help' for the list\n"
    assert os.listdir(tmp_path) == []


# --- shell completion ------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_shell_completion_script_and_completions(tmp_path):
    # From a bash (shell detection looks at the parent process); '; true' keeps bash the parent.
    proc = subprocess.run(["bash", "-c", '"$0" -m kanban --show-completion; true', sys.executable],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "SHELL": "/bin/bash"})
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    assert "_KANBAN_COMPLETE=complete_bash" in script and "complete -o default -F _kanban_completion kanban" in script
    # The protocol the script speaks, answered by the real entry point.
    env = {**os.environ, "_KANBAN_COMPLETE": "complete_bash", "COMP_WORDS": "kanban sta", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "kanban"], capture_output=True, text=True, timeout=60, env=env)
    assert done.stdout.split() == ["status"], (done.stdout, done.stderr)
    env.update(COMP_WORDS="kanban merge-queue --", COMP_CWORD="2")
    done = subprocess.run([sys.executable, "-m", "kanban"], capture_output=True, text=True, timeout=60, env=env)
    assert {"--batch", "--dry-run", "--json"} <= set(done.stdout.split())


# --- the wheel -------------------------------------------------------------------------------------


def _dependency_dirs() -> list[str]:
    """Where this interpreter finds kanban's dependencies (lent to the fresh venv)."""
    import git as gitpython
    import mistune
    import rich
    import tenacity

    return sorted({str(Path(m.__file__).resolve().parents[1]) for m in (typer, rich, mistune, gitpython, tenacity)})


@pytest.mark.heavy
def test_the_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    # Build from a copy: a wheel of exactly this tree, with a version only its metadata knows,
    # so `kanban --version` shows that it reads the installed distribution under its PyPI name.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "kanban", src / "kanban", ignore=ignore)
    shutil.copytree(REPO / "prompts", src / "prompts", ignore=ignore)
    shutil.copy(REPO / "README.md", src / "README.md")
    pyproject = (REPO / "pyproject.toml").read_text()
    assert f'version = "{kanban.__version__}"' in pyproject
    (src / "pyproject.toml").write_text(pyproject.replace(f'version = "{kanban.__version__}"', 'version = "9.8.7"', 1))
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == "kanban_agents-9.8.7-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert {"kanban/prompts/task.md", "kanban/prompts/reviewer.md", "kanban/prompts/tester.md",
            "kanban/cli.py", "kanban/demo_agent.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "bench/"))]

    # A fresh venv, the wheel alone in it; the dependencies come from this one's site-packages.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_kanban_test_deps.pth").write_text("\n".join(_dependency_dirs()) + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    where = tmp_path / "elsewhere"  # not the source tree: nothing imports from it
    where.mkdir()
    exe = str(venv / "bin" / "kanban")

    def run(*args: str, env: dict = env) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=where, env=env,
                              stdin=subprocess.DEVNULL)

    assert run("--version").stdout == "kanban 9.8.7\n"
    helped = run("--help")
    assert helped.returncode == 0 and "Usage: kanban [OPTIONS] COMMAND" in helped.stdout
    origin = subprocess.run([python, "-c",
                             "import kanban.prompts as p; print(p.__file__); print(p.packaged_prompts_dir())"],
                            capture_output=True, text=True, cwd=where, env=env, check=True).stdout.split()
    assert all(line.startswith(purelib) for line in origin), origin

    # The packaged prompts are what `kanban init` copies into a repository.
    project = where / "project"
    project.mkdir()
    git(project, "init", "-q", "-b", "main")
    assert run("-C", str(project), "init").returncode == 0
    for name in ("task.md", "reviewer.md", "tester.md"):
        assert (project / "prompts" / name).read_bytes() == (REPO / "prompts" / name).read_bytes()

    # The README's first command, from the installed wheel: the demo runs offline and, with
    # --keep, leaves its repository where it says.
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    demo = run("demo", "--keep", env={**env, "TMPDIR": str(tmp)})
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    (kept,) = tmp.iterdir()
    assert (kept / "repo" / "CHANGELOG.md").read_text().count("- TASK-") == 8
    assert f"the demo repository stays in {kept / 'repo'}: try 'kanban -C {kept / 'repo'} status'" in demo.stdout
    assert f"remove it with: rm -rf {kept}" in demo.stdout


def test_an_unknown_preset_says_what_was_meant(repo):
    from conftest import run_cli

    (repo / "kanban.toml").write_text('[agent]\npreset = "claud"\n')
    proc = run_cli(repo, "status", check_code=2)
    assert proc.stderr == ('error: kanban.toml:2: agent.preset must be one of claude, codex, aider, demo, '
                           'got "claud"; did you mean "claude"?\n'), proc.stderr
    (repo / "kanban.toml").write_text('[agent]\npreset = "zzz"\n')
    proc = run_cli(repo, "status", check_code=2)
    assert "did you mean" not in proc.stderr and 'allowed: "claude"' in proc.stderr, proc.stderr

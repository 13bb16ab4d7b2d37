"""Secrets in kanban's own environment never reach agents, logs, prompts, notes or the history.

A real agent run through the real CLI: the agent dumps its whole environment to
its log and to its report file (which becomes the task's notes), then commits.
The denied secrets must then be absent from every file kanban wrote; a variable
named in `[env] allow` must reach the agent.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import sys
import time
from pathlib import Path

import pytest
from conftest import git, run_cli

SECRETS = {
    "MY_SERVICE_TOKEN": "sekret123-token",
    "AWS_SECRET_ACCESS_KEY": "sekret123-aws",
    "AWS_ACCESS_KEY_ID": "sekret123-awsid",
    "DB_PASSWORD": "sekret123-db",
    "GITHUB_TOKEN": "sekret123-gh",
    "STRIPE_SECRET_KEY": "sekret123-stripe",
}

AGENT = r'''
import os, subprocess, sys
from pathlib import Path
dump = "\n".join(f"{k}={v}" for k, v in sorted(os.environ.items()))
print(dump, flush=True)
Path(os.environ["KANBAN_REPORT_FILE"]).write_text("environment I saw:\n" + dump + "\n")
if os.environ["KANBAN_ROLE"] == "task":
    Path("work.txt").write_text("done\n")
    subprocess.run(["git", "add", "work.txt"], check=True)
    subprocess.run(["git", "commit", "-q", "-m", "work"], check=True)
'''


def _project(root: Path, kit: Path, env_toml: str = "") -> None:
    kit.mkdir()
    (kit / "agent.py").write_text(AGENT)
    command = json.dumps([sys.executable, str(kit / "agent.py"), "{prompt_file}"])
    (root / "kanban.toml").write_text(f'main_branch = "main"\n[agent]\ncommand = {command}\ntimeout = "30s"\n'
                                      + env_toml)
    (root / "TODO.md").write_text("# TODO\n\n## TASK-1: do it\n\nThe work.\n")
    (root / ".gitignore").write_text(".kanban/\n.worktrees/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "project")


def _tick_until(root: Path, done, timeout: float = 40.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        proc = run_cli(root, "tick")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        if done():
            return
        time.sleep(0.2)
    raise AssertionError("the task did not reach the expected state")


def _reviewed(root: Path) -> bool:
    return (root / "TESTING.md").exists() and "TASK-1" in (root / "TESTING.md").read_text()


def _every_file(root: Path) -> list[Path]:
    found = [p for p in (root / ".kanban").rglob("*") if p.is_file()]
    found += [root / name for name in ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md")
              if (root / name).exists()]
    return found


def _history_text(root: Path) -> str:
    from kanban.history import History

    with History(root) as history:
        db = history.path
    with sqlite3.connect(db) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type='table'")]
        return "\n".join(repr(row) for t in tables for row in conn.execute(f'select * from "{t}"'))


def test_denied_secrets_reach_no_agent_log_prompt_note_or_history(repo, tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    _project(repo, tmp_path / "kit")
    _tick_until(repo, lambda: _reviewed(repo))
    logs = list((repo / ".kanban").rglob("*.log"))
    assert logs and any("KANBAN_TASK_ID=TASK-1" in p.read_text(errors="replace") for p in logs)
    assert any("PATH=" in p.read_text(errors="replace") for p in logs)  # the dump did happen
    files = _every_file(repo)
    assert any(p.name == "prompt.md" for p in files) and any(p.name == "spec.json" for p in files)
    for path in files:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name} leaked into {path}"
    history = _history_text(repo)
    assert history
    for name, value in SECRETS.items():
        assert value not in history, f"{name} leaked into the history"
    for spec in (repo / ".kanban").rglob("spec.json"):
        assert stat.S_IMODE(spec.stat().st_mode) == 0o600  # holds the (filtered) agent environment


@pytest.mark.heavy
def test_allow_passes_a_named_variable(repo, tmp_path, monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    _project(repo, tmp_path / "kit", '[env]\nallow = ["PATH", "HOME", "GIT_*", "MY_SERVICE_TOKEN"]\n')
    _tick_until(repo, lambda: _reviewed(repo))
    seen = "\n".join(p.read_text(errors="replace") for p in (repo / ".kanban").rglob("*.log"))
    assert "MY_SERVICE_TOKEN=sekret123-token" in seen
    for name, value in SECRETS.items():
        if name != "MY_SERVICE_TOKEN":
            assert value not in seen, name


def test_agent_env_filters_the_process_environment(monkeypatch, tmp_path):
    from kanban.agents import Launch, agent_env
    from kanban.config import Config

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "agent-needs-this")
    launch = Launch("TASK-1", "task", 1, "t", "", {}, "", 20001)
    env = agent_env(Config(), launch, tmp_path, tmp_path / "p", tmp_path / "r", {})
    assert not set(SECRETS) & set(env)
    assert env["ANTHROPIC_API_KEY"] == "agent-needs-this" and env["PATH"] == os.environ["PATH"]


@pytest.fixture(autouse=True)
def _no_stray_agents(repo):
    yield
    deadline = time.monotonic() + 20
    runs = repo / ".kanban" / "runs"
    while runs.is_dir() and time.monotonic() < deadline:
        if all((p.parent / "result.json").exists() for p in runs.rglob("agent.json")):
            break
        time.sleep(0.1)

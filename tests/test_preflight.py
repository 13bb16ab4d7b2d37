"""`kanban preflight` against real repositories and real local services."""

from __future__ import annotations

import http.server
import json
import socket
import threading

import pytest
from conftest import git, run_cli


@pytest.fixture
def board_repo(repo):
    run_cli(repo, "init", check_code=0)
    (repo / "kanban.toml").write_text('[agent]\npreset = "demo"\n')
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "board")
    return repo


def _checks(root):
    proc = run_cli(root, "preflight", "--json")
    data = json.loads(proc.stdout)
    return proc.returncode, {c["name"]: c for c in data["checks"]}


def test_all_pass_on_a_clean_repository(board_repo):
    code, checks = _checks(board_repo)
    assert code == 0, checks
    assert {"git", "main branch", "clean checkout", "ignored state", "capacity", "stale worktrees"} <= set(checks)
    human = run_cli(board_repo, "preflight", check_code=0).stdout
    assert "pass  clean checkout" in human and "0 failed" in human


def test_dirty_checkout_fails_but_board_edits_do_not(board_repo):
    (board_repo / "TODO.md").write_text("## TASK-1: edited by hand\n")
    assert _checks(board_repo)[1]["clean checkout"]["ok"]
    (board_repo / "README.md").write_text("changed\n")
    code, checks = _checks(board_repo)
    assert code == 1
    assert not checks["clean checkout"]["ok"] and "README.md" in checks["clean checkout"]["detail"]


def test_stale_branch_and_missing_main(board_repo):
    git(board_repo, "branch", "kanban/TASK-9")
    code, checks = _checks(board_repo)
    assert code == 1 and "branch kanban/TASK-9" in checks["stale worktrees"]["detail"]
    (board_repo / "kanban.toml").write_text('main_branch = "trunk"\n[agent]\npreset = "demo"\n')
    assert "no branch 'trunk'" in _checks(board_repo)[1]["main branch"]["detail"]


def test_missing_agent_cli(board_repo):
    (board_repo / "kanban.toml").write_text('[agent]\ncommand = ["no-such-agent-cli", "{prompt_file}"]\n')
    code, checks = _checks(board_repo)
    assert code == 1 and not checks["agent no-such-agent-cli"]["ok"]


def test_not_a_git_repository(tmp_path):
    code, checks = _checks(tmp_path)
    assert code == 1 and "not a git repository" in checks["repository"]["detail"]


def test_service_checks_url_tcp_command(board_repo):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    port = server.server_address[1]
    (board_repo / "kanban.toml").write_text(
        '[agent]\npreset = "demo"\n'
        f'[[preflight.check]]\nname = "web"\nurl = "http://127.0.0.1:{port}/"\n'
        f'[[preflight.check]]\nname = "web404"\nurl = "http://127.0.0.1:{port}/nope"\n'
        f'[[preflight.check]]\nname = "db"\ntcp = "127.0.0.1:{port}"\n'
        f'[[preflight.check]]\nname = "down"\ntcp = "127.0.0.1:{closed_port}"\ntimeout = "1s"\n'
        '[[preflight.check]]\nname = "ok"\ncommand = ["true"]\n'
        '[[preflight.check]]\nname = "bad"\ncommand = ["sh", "-c", "echo broken >&2; exit 3"]\n'
        '[[preflight.check]]\nname = "slow"\ncommand = ["sleep", "5"]\ntimeout = "0.3s"\n'
    )
    try:
        code, checks = _checks(board_repo)
    finally:
        server.shutdown()
    assert code == 1
    assert checks["service web"]["ok"] and checks["service db"]["ok"] and checks["service ok"]["ok"]
    assert not checks["service web404"]["ok"] and "404" in checks["service web404"]["detail"]
    assert not checks["service down"]["ok"]
    assert not checks["service bad"]["ok"] and "exited 3: broken" in checks["service bad"]["detail"]
    assert not checks["service slow"]["ok"] and "did not finish" in checks["service slow"]["detail"]


def test_bad_config_is_exit_2_one_line(board_repo):
    (board_repo / "kanban.toml").write_text("[agent]\ntimout = '5m'\n")
    proc = run_cli(board_repo, "preflight")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        'error: kanban.toml:2: unknown key agent.timout; did you mean "timeout"?']

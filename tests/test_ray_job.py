"""The Ray job wrapper on its own (no Ray): `python -m kanban.executors.ray_job` as a worker runs it,
from a spec in its environment, against a bare repository as the shared remote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kanban.executors.ray_job import encode_spec


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def spec_for(repo: Path, tmp_path: Path, argv: list[str], **extra) -> dict:
    remote = tmp_path / "runs.git"
    if not remote.exists():
        git(tmp_path, "init", "-q", "--bare", str(remote))
    head = git(repo, "rev-parse", "HEAD")
    git(repo, "push", "-q", str(remote), f"{head}:refs/kanban/runs/r1/in", f"{head}:refs/kanban/runs/r1/main")
    local_wt, local_rd = repo / ".worktrees" / "TASK-1", repo / ".kanban" / "runs" / "TASK-1" / "task-1"
    return {
        "v": 1, "nonce": "n0nce", "remote": str(remote), "workspace": str(tmp_path / "ws"),
        "in_ref": "refs/kanban/runs/r1/in", "main_ref": "refs/kanban/runs/r1/main", "main_branch": "main",
        "merge_ref": None, "out_ref": "refs/kanban/runs/r1/out-1", "branch": "kanban/TASK-1", "slot": "TASK-1",
        "name": "r1-t1", "argv": argv, "secrets": ["WORKER_ONLY_TOKEN"], "secret_dir": "",
        "env": {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"], "KANBAN_WORKTREE": str(local_wt),
                "KANBAN_PROMPT_FILE": str(local_rd / "prompt.md"), "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b",
                "GIT_COMMITTER_NAME": "c", "GIT_COMMITTER_EMAIL": "c@d"},
        "timeout": 30, "stall": None, "grace": 0.3, "idle_lines": [], "retry_limit": None,
        "paths": {"worktree": str(local_wt), "run_dir": str(local_rd)},
        "files": {"prompt.md": [0o644, __import__("base64").b64encode(f"work in {local_wt}\n".encode()).decode()]},
        "identity": {}, "setup": [], "setup_inputs": [], **extra,
    }


def run_job(spec: dict, **env) -> tuple[str, dict]:
    done = subprocess.run([sys.executable, "-m", "kanban.executors.ray_job"], capture_output=True, text=True,
                          env={**os.environ, "KANBAN_RAY_JOB": encode_spec(spec), **env}, timeout=120)
    assert done.returncode == 0, done.stderr
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("n0nce result ")][-1]
    return done.stdout, json.loads(line[len("n0nce result "):])


AGENT = ("import os, subprocess, pathlib; print('cwd', os.getcwd()); "
         "print('prompt', pathlib.Path(os.environ['KANBAN_PROMPT_FILE']).read_text().strip()); "
         "print('secret', os.environ.get('WORKER_ONLY_TOKEN')); "
         "print('main', subprocess.run(['git', 'rev-parse', 'main'], capture_output=True, text=True).stdout.strip()); "
         "pathlib.Path('new.txt').write_text('x'); subprocess.run(['git', 'add', 'new.txt']); "
         "subprocess.run(['git', 'commit', '-qm', 'agent']); "
         "pathlib.Path('.kanban-run/report.md').write_text('verdict: approve\\n')")


def test_the_wrapper_runs_the_agent_in_a_warm_worktree_and_pushes_its_head_back(repo, tmp_path):
    spec = spec_for(repo, tmp_path, [sys.executable, "-c", AGENT],
                    setup=[[sys.executable, "-c", "print('setting up')"]])
    out, outcome = run_job(spec, WORKER_ONLY_TOKEN="from-the-worker")
    node_wt = next((tmp_path / "ws").glob("*/wt/TASK-1"))
    assert f"cwd {node_wt}" in out and f"prompt work in {node_wt}" in out  # the person's paths became the node's
    assert "secret from-the-worker" in out  # by name, from the worker's environment
    assert f"main {git(repo, 'rev-parse', 'main')}" in out  # the node's main is the person's
    assert "setting up" in out
    assert outcome["result"]["exit_code"] == 0 and outcome["report"] == "verdict: approve\n"
    pushed = git(tmp_path / "runs.git", "rev-parse", "refs/kanban/runs/r1/out-1")
    assert pushed == outcome["head"] != git(repo, "rev-parse", "HEAD")
    assert git(tmp_path / "runs.git", "for-each-ref", "refs/heads/") == ""  # no branch written on the remote
    # the second run in the same worktree: kept warm, set-up not run again (same inputs), files reset
    out, outcome = run_job(spec)
    assert "setting up" not in out and outcome["result"]["exit_code"] == 0
    assert "secret None" in out


def test_a_failing_setup_fails_the_run_not_the_node(repo, tmp_path):
    spec = spec_for(repo, tmp_path, [sys.executable, "-c", "print('never')"],
                    setup=[[sys.executable, "-c", "import sys; sys.exit(3)"]])
    out, outcome = run_job(spec)
    assert "never" not in out and "exited 3" in outcome["result"]["error"] and "setup_error" not in outcome


def test_an_unreachable_remote_is_the_infrastructures_fault(repo, tmp_path):
    spec = spec_for(repo, tmp_path, [sys.executable, "-c", "print('never')"])
    spec["remote"] = str(tmp_path / "nowhere.git")
    _, outcome = run_job(spec)
    assert "setup_error" in outcome and "result" not in outcome


def test_the_probe_names_missing_secrets_only(tmp_path):
    remote = tmp_path / "r.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    done = subprocess.run([sys.executable, "-m", "kanban.executors.ray_job", "--probe", str(remote), "HAVE_IT",
                           "LACK_IT"], capture_output=True, text=True, env={**os.environ, "HAVE_IT": "v4lue"},
                          timeout=60)
    found = json.loads(done.stdout.split("kanban-probe ", 1)[1])
    assert found["remote"] and found["missing"] == ["LACK_IT"] and "v4lue" not in done.stdout
    from kanban.sandbox import available

    assert (found["sandbox"], found["sandbox_detail"]) == tuple(available())  # bubblewrap on this worker
    lacking = subprocess.run([sys.executable, "-m", "kanban.executors.ray_job", "--probe", str(remote)],
                             capture_output=True, text=True, env={**os.environ, "KANBAN_BWRAP": ""}, timeout=60)
    found = json.loads(lacking.stdout.split("kanban-probe ", 1)[1])
    assert found["sandbox"] is False and "not installed" in found["sandbox_detail"]

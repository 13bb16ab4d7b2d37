"""`[executor]` (issue 13): the Ray executor's configuration, its errors, and what it sends.

No cluster here: tests/test_ray.py runs the executor on a real one."""

from __future__ import annotations

import pytest
from test_budget import error_of, load  # the same kanban.toml helpers

from kanban.config import Config, ExecutorConfig, Placement
from kanban.errors import BAD_INPUT, KanbanError


def test_the_default_is_the_local_executor(tmp_path):
    assert Config().executor == ExecutorConfig()
    assert load(tmp_path, "pool_size = 3\n").executor.kind == "local"


def test_a_whole_ray_section(tmp_path):
    ex = load(tmp_path, """\
[executor]
kind = "ray"
address = "http://head:8265"
remote = "git@forge.example.com:team/runs.git"
workspace = "/var/lib/kanban-ray"
python = "/opt/venv/bin/python"
infra_retries = 4
secrets = ["MY_SERVICE_TOKEN"]
secret_dir = "/run/secrets/kanban"

[executor.pool]
task = 40
verify = 2

[executor.test]
num_cpus = 4
memory = "8GiB"
resources = { agent_slot = 1, big_disk = 0.5 }
""").executor
    assert (ex.kind, ex.address, ex.infra_retries, ex.secrets, ex.pool) == (
        "ray", "http://head:8265", 4, ("MY_SERVICE_TOKEN",), {"task": 40, "verify": 2})
    assert ex.placement_for("test") == Placement(4.0, 8 << 30, (("agent_slot", 1.0), ("big_disk", 0.5)))
    assert ex.placement_for("task") == Placement()  # agent_slot = 1


@pytest.mark.parametrize("text, line, words", [
    ('[executor]\nkind = "ray"\n', 2, 'needs a shared git remote'),
    ('[executor]\nkind = "kubernetes"\n', 2, 'executor.kind must be one of local, ray'),
    ('[executor]\nkind = "ray"\nremote = "/r"\naddress = "head:8265"\n', 4, 'must be "auto" or a Ray address'),
    ('[executor]\nremote = "/r"\nsecrets = ["NOT A NAME"]\n', 3, 'not a variable name'),
    ('[executor]\ninfra_retries = 99\n', 2, 'between 0 and 10'),
    ('[executor]\npool = { task = 0 }\n', 2, 'between 1 and 4096'),
    ('[executor.pool]\nplanner = 2\n', 2, 'unknown key executor.pool.planner'),
    ('[executor.task]\nmemory = "lots"\n', 2, 'must be an amount of memory'),
    ('[executor.task]\nresources = { agent_slot = -1 }\n', 2, 'must be a positive amount'),
    ('[executor.task]\nnum_cpus = "two"\n', 2, 'a number of CPUs'),
    ('[executor]\nkidn = "ray"\n', 2, 'unknown key executor.kidn'),
])
def test_bad_executor_config_is_one_line_with_file_and_line(tmp_path, text, line, words):
    err = error_of(tmp_path, text)
    assert err.code == BAD_INPUT
    assert err.line == line, (err.line, str(err))
    assert words in str(err), str(err)
    assert "\n" not in str(err)


def test_the_sandbox_on_ray_is_a_request_the_worker_plans(tmp_path):
    """With Ray the sandbox is planned on the worker, for its checkout: here only the request
    (the branch, the preset's state folders), no local bubblewrap needed, nothing prepared here."""
    from kanban.sandbox import plan_for_run

    config = load(tmp_path, '[agent]\npreset = "claude"\nsandbox = "bwrap"\n[executor]\nkind = "ray"\nremote = "/r"\n')
    plan = plan_for_run(tmp_path, config, "task", "TASK-7", tmp_path / "wt", tmp_path / "run", ["claude"], {})
    assert plan is not None and plan.mounts == () and plan.git is None
    assert plan.request["branch"] == "kanban/TASK-7"
    assert {d["where"] for d in plan.request["cli"]} and all(set(d) == {"where", "readonly", "writable"}
                                                             for d in plan.request["cli"])
    assert not (tmp_path / ".kanban").exists()
    off = load(tmp_path, '[executor]\nkind = "ray"\nremote = "/r"\n')
    assert plan_for_run(tmp_path, off, "task", "TASK-7", tmp_path / "wt", tmp_path / "run", ["claude"], {}) is None


def test_credentials_travel_by_name_only():
    from kanban.executors.ray_runner import RayRunner

    config = Config(executor=ExecutorConfig(kind="ray", remote="/r", secrets=("EXTRA_ONE",)))
    runner = RayRunner(None, config, client=object())
    env = {"PATH": "/bin", "GIT_AUTHOR_NAME": "a", "ANTHROPIC_API_KEY": "sk-1", "DB_PASSWORD": "p",
           "CLAUDE_CODE_OAUTH_TOKEN": "t", "KANBAN_WORKTREE": "/w"}
    shown, names = runner._split_secrets(env)
    assert shown == {"PATH": "/bin", "GIT_AUTHOR_NAME": "a", "KANBAN_WORKTREE": "/w"}
    assert names == ["ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "DB_PASSWORD", "EXTRA_ONE"]
    sending = RayRunner(None, Config(executor=ExecutorConfig(kind="ray", remote="/r", send_secrets=True)),
                        client=object())
    assert sending._split_secrets(env) == (env, [])


def test_the_entrypoint_is_built_from_an_argv_and_checked():
    from kanban.executors.ray_runner import _entrypoint

    assert _entrypoint(["/opt/my python/bin/python", "-m", "kanban.executors.ray_job"]) == \
        "'/opt/my python/bin/python' -m kanban.executors.ray_job"
    assert _entrypoint(["python3; rm -rf /", "-m", "x"]) == "'python3; rm -rf /' -m x"
    with pytest.raises(KanbanError):
        _entrypoint(["python3\nrm -rf /"])


def test_the_job_spec_round_trips_and_the_paths_turn_into_the_nodes():
    from kanban.executors.ray_job import Job, decode_spec, encode_spec

    spec = {"v": 1, "nonce": "n", "remote": "/r", "workspace": "/ws", "slot": "TASK-1", "name": "run-t1",
            "paths": {"worktree": "/repo/.worktrees/TASK-1", "run_dir": "/repo/.kanban/runs/TASK-1/task-1"},
            "env": {"KANBAN_WORKTREE": "/repo/.worktrees/TASK-1",
                    "KANBAN_PROMPT_FILE": "/repo/.kanban/runs/TASK-1/task-1/prompt.md"}}
    assert decode_spec(encode_spec(spec)) == spec
    job = Job(spec)
    env, missing = job.environment()
    assert env["KANBAN_WORKTREE"] == str(job.worktree) and str(job.worktree).startswith("/ws/")
    assert env["KANBAN_PROMPT_FILE"] == str(job.run_dir / "prompt.md")
    assert missing == []


def test_the_agents_output_is_cut_out_of_the_jobs_log():
    from kanban.executors.ray_runner import _agent_output, _result_line

    log = ("2026-12-01 23:34:58,809\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
           "n0 start {}\nhello\nRunning entrypoint for job j1: python3 -m x\nn0 warning {}\nworld\n"
           'n0 result {"result": {"exit_code": 0}}\n')
    assert _agent_output(log, "n0", "j1") == "hello\nworld\n"
    assert _result_line(log, "n0") == {"result": {"exit_code": 0}}
    assert _result_line(log.replace("n0 result", "forged result"), "n0") is None


def test_ray_without_the_extra_is_one_clear_line(tmp_path, monkeypatch):
    import importlib.util

    from kanban.executors import runner_for

    config = load(tmp_path, '[executor]\nkind = "ray"\nremote = "/r"\n')
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(KanbanError) as info:
        runner_for(tmp_path, config)
    assert info.value.code == BAD_INPUT and "needs Ray" in str(info.value) and "kanban-agents[ray]" in str(info.value)

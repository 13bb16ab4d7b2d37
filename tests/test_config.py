"""kanban.toml / [tool.kanban] loading: every valid form and every error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kanban.config import (
    DEFAULT_ENV_ALLOW,
    DEFAULT_ENV_DENY,
    DURATION_HINT,
    AgentConfig,
    Config,
    EnvConfig,
    MergeConfig,
    ServiceCheck,
    WorktreeConfig,
    dump_default_config,
    load_config,
    parse_duration,
)
from kanban.errors import BAD_INPUT, KanbanError
from kanban.model import Role


def load(root: Path, text: str, name: str = "kanban.toml") -> Config:
    (root / name).write_text(text, encoding="utf-8")
    return load_config(root)


def error_of(root: Path, text: str, name: str = "kanban.toml") -> KanbanError:
    with pytest.raises(KanbanError) as info:
        load(root, text, name)
    return info.value


def check_error(
    err: KanbanError, *, key: str, hint: str, line: int | None, file: str = "kanban.toml"
) -> None:
    assert key in err.message, err
    assert err.hint is not None and hint in err.hint, err
    assert err.file == file, err
    assert err.line == line, err
    assert err.code == BAD_INPUT


# --- durations ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("15m", 900), ("90s", 90), ("1h30m", 5400), ("500ms", 0.5), ("2.5s", 2.5),
        ("1h", 3600), ("1m30s", 90), ("1s500ms", 1.5), ("1h0m5s", 3605), ("0.5h", 1800),
        (900, 900), (2.5, 2.5), (1, 1),
    ],
)  # fmt: skip
def test_parse_duration_accepts(text, seconds):
    assert parse_duration(text, key="agent.timeout", file="kanban.toml") == seconds


@pytest.mark.parametrize(
    "text",
    ["", " ", "15 minutes", "m5", "5", "90", "0s", "0", "-5s", "5d", "15M", "30m1h", "1h1h",
     "1e3s", ".5s", "5.s", " 15m", "15m ", "1h 30m", "ms", "5mss",
     0, -1, -2.5, 0.0, float("nan"), float("inf"), True, False, None, [1], 10**400, -(10**400),
     "1000h", 31 * 24 * 3600],
)  # fmt: skip
def test_parse_duration_rejects(text):
    with pytest.raises(KanbanError) as info:
        parse_duration(text, key="agent.reviewer.timeout", file="kanban.toml")
    err = info.value
    assert "agent.reviewer.timeout" in err.message
    assert err.hint == DURATION_HINT
    assert err.file == "kanban.toml"


def test_parse_duration_passes_line():
    with pytest.raises(KanbanError) as info:
        parse_duration("soon", key="stall", file="kanban.toml", line=7)
    assert str(info.value) == (
        'kanban.toml:7: stall must be a duration, got "soon"; ' + DURATION_HINT
    )


# --- defaults and valid forms -------------------------------------------------


def test_no_files_gives_defaults(tmp_path):
    config = load_config(tmp_path)
    assert config == Config()
    assert config.source is None
    assert (config.main_branch, config.pool_size, config.worktree_dir, config.port_base) == (
        "main", 6, ".worktrees", 20000,
    )  # fmt: skip
    assert config.agent == AgentConfig()
    assert config.agent.timeout == 900 and config.agent.stall == 300
    assert config.agent.kill_grace == 5.0 and config.agent.preset == "claude"
    assert set(config.roles) == {"task", "reviewer", "tester", "planner"}
    assert all(agent == config.agent for agent in config.roles.values())
    assert config.env.allow == DEFAULT_ENV_ALLOW and config.env.deny == DEFAULT_ENV_DENY
    assert config.checks == ()


def test_agent_for_accepts_names_and_roles(tmp_path):
    config = load(tmp_path, '[agent.reviewer]\ntimeout = "10m"\n')
    assert config.agent_for("reviewer").timeout == 600
    assert config.agent_for(Role.REVIEWER).timeout == 600
    assert config.agent_for(Role.TASK).timeout == 900
    with pytest.raises(ValueError):
        config.agent_for("boss")


def test_config_built_in_code_fills_roles_from_agent():
    agent = AgentConfig(preset="demo")
    config = Config(agent=agent, roles={"tester": AgentConfig(preset="aider")})
    assert config.agent_for("task") == agent
    assert config.agent_for("tester").preset == "aider"


def test_default_file_loads_back_to_defaults(tmp_path):
    text = dump_default_config()
    config = load(tmp_path, text)
    assert dataclasses.replace(config, source=None) == Config()
    assert config.source == str(tmp_path / "kanban.toml")
    assert 'preset = "claude"' in text
    assert "# [[preflight.check]]" in text
    for key in ("main_branch", "pool_size", "worktree_dir", "port_base", "timeout", "stall",
                "kill_grace", "copy", "setup", "mode", "verify", "push", "remote", "allow",
                "deny", "[agent.task]", "[agent.reviewer]", "[agent.tester]"):  # fmt: skip
        assert key in text


def test_default_file_example_checks_are_valid(tmp_path):
    lines = dump_default_config().splitlines()
    start = lines.index("# [[preflight.check]]")
    uncommented = lines[:start] + [line.removeprefix("# ") for line in lines[start:]]
    config = load(tmp_path, "\n".join(uncommented) + "\n")
    assert config.checks == (
        ServiceCheck(name="qdrant", url="http://localhost:6333/readyz", timeout=3.0),
        ServiceCheck(name="postgres", tcp="localhost:5432"),
        ServiceCheck(name="redis", command=("redis-cli", "ping")),
    )


FULL = """\
main_branch = "trunk"
pool_size = 3
worktree_dir = "build/trees"
port_base = 30000

[agent]
preset = "aider"
model = "sonnet"
extra_args = ["--no-auto-commits"]
timeout = "20m"
stall = 120
kill_grace = "2.5s"

[agent.task]
command = ["my-agent", "--prompt-file", "{prompt_file}"]

[agent.reviewer]
preset = "codex"
timeout = "10m"

[agent.tester]
stall = "1h30m"

[worktree]
copy = [".env", "config/local.json"]
setup = [["npm", "ci"], ["make", "build"]]

[merge]
mode = "batch"
verify = ["pytest", "-q"]
push = true
remote = "upstream"

[env]
allow = ["PATH", "MY_*", "GITHUB_TOKEN"]
deny = ["*_TOKEN"]

[[preflight.check]]
name = "qdrant"
url = "https://localhost:6333/readyz"

[[preflight.check]]
name = "postgres"
tcp = "db.local:5432"
timeout = "500ms"

[[preflight.check]]
name = "redis"
command = ["redis-cli", "ping"]
"""


def test_full_config(tmp_path):
    config = load(tmp_path, FULL)
    assert (config.main_branch, config.pool_size, config.worktree_dir, config.port_base) == (
        "trunk", 3, "build/trees", 30000,
    )  # fmt: skip
    base = AgentConfig(
        preset="aider", model="sonnet", extra_args=("--no-auto-commits",),
        timeout=1200, stall=120, kill_grace=2.5,
    )  # fmt: skip
    assert config.agent == base
    assert config.agent_for("task") == dataclasses.replace(
        base, command=("my-agent", "--prompt-file", "{prompt_file}")
    )
    assert config.agent_for("reviewer") == dataclasses.replace(base, preset="codex", timeout=600)
    assert config.agent_for("tester") == dataclasses.replace(base, stall=5400)
    assert config.worktree == WorktreeConfig(
        copy=(".env", "config/local.json"), setup=(("npm", "ci"), ("make", "build"))
    )
    assert config.merge == MergeConfig(
        mode="batch", verify=("pytest", "-q"), push=True, remote="upstream"
    )
    assert config.env == EnvConfig(allow=("PATH", "MY_*", "GITHUB_TOKEN"), deny=("*_TOKEN",))
    assert config.checks == (
        ServiceCheck(name="qdrant", url="https://localhost:6333/readyz"),
        ServiceCheck(name="postgres", tcp="db.local:5432", timeout=0.5),
        ServiceCheck(name="redis", command=("redis-cli", "ping")),
    )


def test_role_preset_drops_inherited_command(tmp_path):
    config = load(
        tmp_path,
        '[agent]\ncommand = ["x"]\n[agent.reviewer]\npreset = "codex"\n'
        '[agent.tester]\nstall = "1m"\n',
    )
    assert config.agent.command == ("x",)
    assert config.agent_for("reviewer").command is None
    assert config.agent_for("reviewer").preset == "codex"
    assert config.agent_for("tester").command == ("x",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["npm", "ci"]', (("npm", "ci"),)),
        ('[["npm", "ci"]]', (("npm", "ci"),)),
        ('[["npm", "ci"], ["make"]]', (("npm", "ci"), ("make",))),
        ("[]", ()),
        ('[\n  ["npm", "ci"],\n  ["make"],\n]', (("npm", "ci"), ("make",))),
    ],
)
def test_setup_forms(tmp_path, value, expected):
    assert load(tmp_path, f"[worktree]\nsetup = {value}\n").worktree.setup == expected


def test_dotted_and_inline_forms(tmp_path):
    config = load(
        tmp_path,
        'agent.timeout = "1m"\nagent.reviewer = { stall = "30s" }\n'
        'merge = { mode = "batch" }\npreflight.check = [{ name = "a", tcp = "[::1]:80" }]\n',
    )
    assert config.agent.timeout == 60
    assert config.agent_for("reviewer").stall == 30
    assert config.merge.mode == "batch"
    assert config.checks == (ServiceCheck(name="a", tcp="[::1]:80"),)


def test_bom_and_crlf(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "kanban.toml").write_bytes(bom + b'pool_size = 2\r\n[agent]\r\nstall = "1m"\r\n')
    config = load_config(tmp_path)
    assert config.pool_size == 2 and config.agent.stall == 60
    (tmp_path / "kanban.toml").write_bytes(b'pool_size = 2\r\n[agent]\r\nstal = "1m"\r\n')
    check_error(load_config_error(tmp_path), key="agent.stal", hint='"stall"', line=3)


def load_config_error(root: Path) -> KanbanError:
    with pytest.raises(KanbanError) as info:
        load_config(root)
    return info.value


# --- pyproject.toml ---------------------------------------------------------


def test_pyproject_tool_kanban(tmp_path):
    text = (
        '[project]\nname = "x"\n\n[tool.kanban]\npool_size = 2\n\n'
        '[tool.kanban.agent]\npreset = "demo"\n'
    )
    config = load(tmp_path, text, "pyproject.toml")
    assert config.pool_size == 2 and config.agent.preset == "demo"
    assert config.source == str(tmp_path / "pyproject.toml")


def test_pyproject_without_tool_kanban_gives_defaults(tmp_path):
    text = '[project]\nname = "x"\n[tool.ruff]\nline-length = 99\n'
    config = load(tmp_path, text, "pyproject.toml")
    assert config == Config() and config.source is None


def test_kanban_toml_wins_over_pyproject(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.kanban]\npool_size = 2\nbogus = 1\n")
    config = load(tmp_path, "pool_size = 4\n")
    assert config.pool_size == 4
    assert config.source == str(tmp_path / "kanban.toml")


def test_pyproject_errors_name_pyproject(tmp_path):
    text = '[project]\nname = "x"\n\n[tool.kanban.agent.reviewer]\nmodel = "m"\ntimout = "5m"\n'
    err = error_of(tmp_path, text, "pyproject.toml")
    check_error(err, key="tool.kanban.agent.reviewer.timout", hint='did you mean "timeout"?',
                line=6, file="pyproject.toml")  # fmt: skip
    assert str(err).startswith("pyproject.toml:6: ")


def test_pyproject_tool_kanban_not_a_table(tmp_path):
    err = error_of(tmp_path, "[tool]\nkanban = 3\n", "pyproject.toml")
    check_error(err, key="tool.kanban", hint="table", line=2, file="pyproject.toml")


def test_broken_pyproject_is_an_error(tmp_path):
    err = error_of(tmp_path, "[project\n", "pyproject.toml")
    assert err.file == "pyproject.toml" and err.line == 1


# --- errors -----------------------------------------------------------------

ERRORS = [
    # unknown keys, with a suggestion or the list of valid keys
    ('pool_sise = 3', "pool_sise", 'did you mean "pool_size"?', 1),
    ('[agent]\npreset = "demo"\n\n[agent.reviewer]\ntimout = "5m"', "agent.reviewer.timout",
     'did you mean "timeout"?', 5),
    ('[agent]\nreviwer = { timeout = "5m" }', "agent.reviwer", 'did you mean "reviewer"?', 2),
    ('[agent]\nreviewer.timout = "5m"', "agent.reviewer.timout", 'did you mean "timeout"?', 2),
    ('[agent.reviewer]\nstall = "1m"\nzzz = 1', "agent.reviewer.zzz",
     "valid keys: preset, command, timeout, stall, model, extra_args, kill_grace", 3),
    ('[agent.reviewer.task]\nstall = "1m"', "agent.reviewer.task", "valid keys:", 1),
    ('[merge_queue]\nmode = "batch"', "merge_queue", 'did you mean "merge"?', 1),
    ('[worktree]\ncopy = []\nsetups = []', "worktree.setups", 'did you mean "setup"?', 3),
    ('[merge]\nverfy = []', "merge.verfy", 'did you mean "verify"?', 2),
    ('[env]\nalow = []', "env.alow", 'did you mean "allow"?', 2),
    ('[preflight]\nchecks = []', "preflight.checks", 'did you mean "check"?', 2),
    ('[[preflight.check]]\nname = "a"\nurl = "http://x"\ntimeot = 3', "preflight.check[1].timeot",
     'did you mean "timeout"?', 4),
    # wrong types
    ('pool_size = "six"', "pool_size", "pool_size = 6", 1),
    ('pool_size = true', "pool_size", "pool_size = 6", 1),
    ('pool_size = 6.0', "pool_size", "pool_size = 6", 1),
    ('port_base = false', "port_base", "port_base = 20000", 1),
    ('main_branch = 5', "main_branch", '"..."', 1),
    ('worktree_dir = ["a"]', "worktree_dir", '"..."', 1),
    ('agent = 3', "agent", "[table]", 1),
    ('[agent]\nreviewer = "codex"', "agent.reviewer", "[table]", 2),
    ('[agent]\ncommand = "my-agent --go"', "agent.command", '["npm", "ci"]', 2),
    ('[agent]\ncommand = ["a", 1]', "agent.command", '["npm", "ci"]', 2),
    ('[agent]\ncommand = []', "agent.command", '["npm", "ci"]', 2),
    ('[agent]\ncommand = [""]', "agent.command", '["npm", "ci"]', 2),
    ('[agent]\nmodel = 4', "agent.model", '"..."', 2),
    ('[agent]\nmodel = ""', "agent.model", "give it a value", 2),
    ('[agent]\nextra_args = "--x"', "agent.extra_args", '["a", "b"]', 2),
    ('[worktree]\ncopy = ".env"', "worktree.copy", '["a", "b"]', 2),
    ('[worktree]\nsetup = "npm ci"', "worktree.setup", '["npm", "ci"]', 2),
    ('[worktree]\nsetup = ["npm", ["make"]]', "worktree.setup", '[["npm", "ci"], ["make"]]', 2),
    ('[worktree]\nsetup = [["npm"], []]', "worktree.setup", '["npm", "ci"]', 2),
    ('[worktree]\nsetup = [[1]]', "worktree.setup", '["npm", "ci"]', 2),
    ('[merge]\npush = "yes"', "merge.push", "push = true or push = false", 2),
    ('[merge]\npush = 1', "merge.push", "push = true or push = false", 2),
    ('[merge]\nverify = "pytest"', "merge.verify", '["npm", "ci"]', 2),
    ('[merge]\nremote = ""', "merge.remote", "give it a value", 2),
    ('[env]\nallow = "PATH"', "env.allow", '["a", "b"]', 2),
    ('[env]\ndeny = ["A=B"]', "env.deny", '"AWS_*"', 2),
    ('[env]\ndeny = ["A B"]', "env.deny", '"AWS_*"', 2),
    ('[preflight]\ncheck = 3', "preflight.check", "[[preflight.check]]", 2),
    ('preflight = 3', "preflight", "[table]", 1),
    ('[preflight]\ncheck = [3]', "preflight.check[1]", "[table]", 2),
    # durations
    ('[agent]\ntimeout = "15 minutes"', "agent.timeout", DURATION_HINT, 2),
    ('[agent]\nstall = "m5"', "agent.stall", DURATION_HINT, 2),
    ('[agent]\nkill_grace = 0', "agent.kill_grace", DURATION_HINT, 2),
    ('[agent]\ntimeout = -5', "agent.timeout", DURATION_HINT, 2),
    ('[agent]\ntimeout = "5d"', "agent.timeout", DURATION_HINT, 2),
    ('[agent]\ntimeout = true', "agent.timeout", DURATION_HINT, 2),
    ('[agent]\ntimeout = ""', "agent.timeout", DURATION_HINT, 2),
    ('[agent]\ntimeout = nan', "agent.timeout", DURATION_HINT, 2),
    ('[agent]\ntimeout = inf', "agent.timeout", DURATION_HINT, 2),
    ('[agent.tester]\nstall = "1x"', "agent.tester.stall", DURATION_HINT, 2),
    ('[[preflight.check]]\nname = "a"\ntcp = "h:1"\ntimeout = "3 s"', "preflight.check[1].timeout",
     DURATION_HINT, 4),
    # ranges and enums
    ('pool_size = 0', "pool_size", "the default is 6", 1),
    ('pool_size = 65', "pool_size", "the default is 6", 1),
    ('port_base = 1023', "port_base", "the default is 20000", 1),
    ('port_base = 60001', "port_base", "the default is 20000", 1),
    ('[agent]\npreset = "gpt"', "agent.preset", '"claude", "codex", "aider", "demo"', 2),
    ('[agent]\npreset = 1', "agent.preset", '"claude", "codex", "aider", "demo"', 2),
    ('[agent.reviewer]\npreset = "Claude"', "agent.reviewer.preset", '"claude"', 2),
    ('[merge]\nmode = "fast"', "merge.mode", '"serial", "batch"', 2),
    # paths and names
    ('worktree_dir = "/tmp/trees"', "worktree_dir", "relative to the repository root", 1),
    ('worktree_dir = "~/trees"', "worktree_dir", "relative to the repository root", 1),
    ('worktree_dir = "C:\\\\trees"', "worktree_dir", "relative to the repository root", 1),
    ('worktree_dir = "../trees"', "worktree_dir", 'without ".."', 1),
    ('worktree_dir = "a/../../b"', "worktree_dir", 'without ".."', 1),
    ('worktree_dir = "."', "worktree_dir", 'without ".."', 1),
    ('worktree_dir = ""', "worktree_dir", "give it a value", 1),
    ('[worktree]\ncopy = [".env", "../secrets"]', "worktree.copy", 'without ".."', 2),
    ('[worktree]\ncopy = ["/etc/passwd"]', "worktree.copy", "relative to the repository root", 2),
    ('main_branch = "my branch"', "main_branch", '"main"', 1),
    ('main_branch = "-main"', "main_branch", '"main"', 1),
    ('main_branch = "a..b"', "main_branch", '"main"', 1),
    ('main_branch = "main.lock"', "main_branch", '"main"', 1),
    # service checks
    ('[[preflight.check]]\nname = "a"\n', "preflight.check[1]", "url =", 1),
    ('[[preflight.check]]\nname = "a"\nurl = "http://x"\ntcp = "x:1"', "preflight.check[1]",
     "tcp =", 4),
    ('[[preflight.check]]\nname = "a"\nurl = "http://x"\ntcp = "x:1"\ncommand = ["x"]',
     "preflight.check[1]", "command =", 5),
    ('[[preflight.check]]\nname = "a"\nurl = "http://x"\n\n[[preflight.check]]\nname = "b"\n',
     "preflight.check[2]", "url =", 5),
    ('[[preflight.check]]\nurl = "http://x"', "preflight.check[1]", 'name = "..."', 1),
    ('[[preflight.check]]\nname = 3\nurl = "http://x"', "preflight.check[1].name", '"..."', 2),
    ('[[preflight.check]]\nname = "a"\ncommand = ["x"]\n[[preflight.check]]\nname = "a"\n'
     'command = ["y"]', "preflight.check[2].name", "its own name", 5),
    ('[[preflight.check]]\nname = "a"\nurl = "localhost:6333"', "preflight.check[1].url",
     "http://localhost:6333/readyz", 3),
    ('[[preflight.check]]\nname = "a"\nurl = "ftp://x"', "preflight.check[1].url", "http://", 3),
    ('[[preflight.check]]\nname = "a"\ncommand = "redis-cli ping"', "preflight.check[1].command",
     '["npm", "ci"]', 3),
    ('[[preflight.check]]\nname = "a"\ncommand = []', "preflight.check[1].command",
     '["npm", "ci"]', 3),
]  # fmt: skip

TCP_ERRORS = ["localhost", "localhost:", ":5432", "localhost:0", "localhost:65536", "h:abc",
              "h:-1", "h:5432x", "h: 80", "my host:80", "h:" + "9" * 5000, "h:٣"]  # fmt: skip


@pytest.mark.parametrize(("text", "key", "hint", "line"), ERRORS)
def test_errors(tmp_path, text, key, hint, line):
    check_error(error_of(tmp_path, text), key=key, hint=hint, line=line)


@pytest.mark.parametrize("tcp", TCP_ERRORS)
def test_bad_tcp(tmp_path, tcp):
    text = f'pool_size = 2\n\n[[preflight.check]]\nname = "db"\ntcp = "{tcp}"\n'
    err = error_of(tmp_path, text)
    check_error(err, key="preflight.check[1].tcp", hint="localhost:5432", line=5)


@pytest.mark.parametrize("tcp", ["localhost:1", "10.0.0.1:65535", "[::1]:6379", "db-1.internal:80"])
def test_good_tcp(tmp_path, tcp):
    config = load(tmp_path, f'[[preflight.check]]\nname = "db"\ntcp = "{tcp}"\n')
    assert config.checks[0].tcp == tcp


def test_error_text_is_one_line(tmp_path):
    err = error_of(tmp_path, '[agent]\npreset = "claude"\ntimeout = "15 minutes"\n')
    assert str(err) == (
        'kanban.toml:3: agent.timeout must be a duration, got "15 minutes"; ' + DURATION_HINT
    )
    err = error_of(tmp_path, 'pool_size = "six"\n')
    assert 'pool_size must be an integer, got "six"' in str(err)


def test_error_text_escapes_control_characters(tmp_path):
    err = error_of(tmp_path, '"a\\nb" = 1\n')
    assert "\n" not in str(err) and "a\\nb" in err.message and err.line == 1
    err = error_of(tmp_path, 'main_branch = "x\\ty"\n')
    assert "\t" not in str(err) and 'got "x\\ty"' in err.message


# --- line finding -----------------------------------------------------------


def test_line_ignores_keys_inside_multiline_strings_and_arrays(tmp_path):
    text = (
        '[worktree]\n'
        'copy = [\n'
        '  ".env",  # [merge]\n'
        ']\n'
        'setup = [\n'
        '  ["make"],\n'       # looks like a table header
        '  ["npm", "ci"],\n'
        ']\n'
        '[agent]\n'
        'model = """\n'
        'timeout = "soon"\n'  # looks like a key
        '"""\n'
        "extra_args = ['''\n"
        "[agent.reviewer]\n"
        "''']\n"
        'timeout = "soon"\n'
    )  # fmt: skip
    err = error_of(tmp_path, text)
    check_error(err, key="agent.timeout", hint=DURATION_HINT, line=16)


def test_line_with_quoted_and_spaced_keys(tmp_path):
    text = '[ agent . "reviewer" ]\n"stall" = "1m"\n  timeout   =   "x"\n'
    check_error(error_of(tmp_path, text), key="agent.reviewer.timeout", hint=DURATION_HINT, line=3)


def test_line_falls_back_to_the_enclosing_key(tmp_path):
    text = 'pool_size = 2\nagent = { reviewer = { timeout = "x" } }\n'
    check_error(error_of(tmp_path, text), key="agent.reviewer.timeout", hint=DURATION_HINT, line=2)


def test_line_in_later_array_table(tmp_path):
    text = (
        '[[preflight.check]]\nname = "a"\ntcp = "h:1"\n\n'
        '[[preflight.check]]\nname = "b"\ntcp = "h:2"\n\n'
        '[[preflight.check]]\nname = "c"\ntcp = "h:99999"\n'
    )
    check_error(error_of(tmp_path, text), key="preflight.check[3].tcp", hint="localhost", line=11)


# --- unreadable files -------------------------------------------------------


def test_toml_syntax_error_has_line(tmp_path):
    err = error_of(tmp_path, 'pool_size = 3\n[agent]\ntimeout = "15m\n')
    assert err.file == "kanban.toml" and err.line == 3
    assert err.message.startswith("invalid TOML: ") and "(at line" not in err.message
    assert err.hint and "toml.io" in err.hint


def test_toml_error_at_end_of_document(tmp_path):
    err = error_of(tmp_path, 'pool_size = 3\nx = [1,\n')
    assert err.file == "kanban.toml" and err.line == 3


def test_duplicate_key_is_a_syntax_error(tmp_path):
    err = error_of(tmp_path, "pool_size = 3\npool_size = 4\n")
    assert err.line == 2 and err.message.startswith("invalid TOML")


def test_invalid_utf8(tmp_path):
    (tmp_path / "kanban.toml").write_bytes(b'pool_size = 3\n[agent]\nmodel = "\xff"\n')
    err = load_config_error(tmp_path)
    assert err.file == "kanban.toml" and err.line == 3 and "UTF-8" in err.message
    assert err.hint and "UTF-8" in err.hint


def test_unreadable_file(tmp_path):
    (tmp_path / "kanban.toml").mkdir()
    err = load_config_error(tmp_path)
    assert err.file == "kanban.toml" and err.line is None
    assert "cannot read kanban.toml" in err.message and err.hint


def test_number_too_long(tmp_path):
    err = error_of(tmp_path, "port_base = 2\npool_size = 1" + "0" * 5000 + "\n")
    assert err.file == "kanban.toml" and err.line == 2 and err.hint


# --- env --------------------------------------------------------------------


def test_env_permits():
    env = EnvConfig()
    assert env.permits("PATH") and env.permits("LC_ALL") and env.permits("CLAUDE_CODE_X")
    assert not env.permits("GITHUB_TOKEN") and not env.permits("AWS_SECRET_ACCESS_KEY")
    assert not env.permits("CODEX_TOKEN")  # deny pattern beats allow pattern
    assert not env.permits("RANDOM")
    custom = EnvConfig(allow=("GITHUB_TOKEN", "MY_*"), deny=("*_TOKEN", "MY_SECRET"))
    assert custom.permits("GITHUB_TOKEN")  # listed literally: allow wins
    assert not custom.permits("MY_TOKEN") and not custom.permits("MY_SECRET")
    assert custom.permits("MY_VAR") and not custom.permits("PATH")
    assert custom.filter({"MY_VAR": "1", "MY_TOKEN": "2", "HOME": "/"}) == {"MY_VAR": "1"}


# --- nothing but KanbanError, whatever the file holds -------------------------

FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

KEYS = ["main_branch", "pool_size", "worktree_dir", "port_base", "preset", "command", "timeout",
        "stall", "model", "extra_args", "kill_grace", "copy", "setup", "mode", "verify", "push",
        "remote", "allow", "deny", "name", "url", "tcp", "check", "agent", "task", "timout"]
VALUES = ['"main"', "6", "0", "-1", "true", "1.5", "nan", '"15m"', '"x"', '""', "[]", '["a"]',
          '[["a"], ["b"]]', '["a", ["b"]]', "{}", '{ timeout = "1m" }', '"http://x"',
          '"h:80"', '"../x"', '"/abs"', '"claude"', '"batch"', "1979-05-27", '[1, "a"]',
          "99999999999999999999", '"""\nx\n"""']
HEADERS = ["[agent]", "[agent.task]", "[agent.reviewer]", "[agent.tester]", "[worktree]",
           "[merge]", "[env]", "[preflight]", "[[preflight.check]]", "[[agent]]", "[tool.kanban]"]
LINES = st.one_of(
    st.sampled_from(HEADERS),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(KEYS), st.sampled_from(VALUES)),
)  # fmt: skip


def loads_or_kanban_error(root: Path, data: bytes) -> None:
    (root / "kanban.toml").write_bytes(data)
    try:
        config = load_config(root)
    except KanbanError as err:
        assert err.file == "kanban.toml"
        assert err.line is None or 1 <= err.line <= data.count(b"\n") + 1
        assert err.message and err.hint
        assert "\n" not in str(err) and "\r" not in str(err)
    else:
        assert isinstance(config, Config)


@FUZZ
@given(st.one_of(st.text(), st.binary()))
def test_arbitrary_bytes_never_crash(tmp_path, text):
    data = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    loads_or_kanban_error(tmp_path, data)


@settings(FUZZ, max_examples=100)
@given(st.lists(LINES, max_size=12))
def test_arbitrary_configs_never_crash(tmp_path, lines):
    loads_or_kanban_error(tmp_path, "\n".join(lines).encode())


DURATION_PARTS = ["0", "1", "25", "2.5", ".", "-", "h", "m", "s", "ms", "d", " "]


@settings(max_examples=100, deadline=None, database=None)
@given(st.one_of(st.lists(st.sampled_from(DURATION_PARTS), max_size=6).map("".join),
                 st.text(max_size=8), st.integers(), st.floats(), st.booleans()))  # fmt: skip
def test_parse_duration_never_crashes(value):
    try:
        seconds = parse_duration(value, key="k", file="f")
    except KanbanError as err:
        assert err.hint == DURATION_HINT
    else:
        assert 0 < seconds <= 30 * 24 * 3600


def test_env_extend_adds_to_the_default_lists(tmp_path):
    config = load(tmp_path, '[env]\nextend_allow = ["MY_SERVICE_URL"]\nextend_deny = ["OPENAI_ORGANIZATION"]\n')
    assert config.env.allow == EnvConfig().allow + ("MY_SERVICE_URL",)
    assert config.env.deny == EnvConfig().deny + ("OPENAI_ORGANIZATION",)
    environ = {"MY_SERVICE_URL": "u", "PATH": "/bin", "OPENAI_ORGANIZATION": "o", "LITELLM_LOG": "x"}
    # OPENAI_ORGANIZATION is allowed literally, and a literal allow wins over a deny glob
    assert set(config.env.filter(environ)) == {"MY_SERVICE_URL", "PATH", "OPENAI_ORGANIZATION", "LITELLM_LOG"}


def test_the_default_allowlist_passes_proxies_and_the_clis_tuning():
    environ = {name: "x" for name in (
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "API_TIMEOUT_MS",
        "ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_CUSTOM_HEADERS", "OPENAI_ORGANIZATION",
        "LITELLM_NUM_RETRIES", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY")}
    passed = EnvConfig().filter(environ)
    assert set(environ) - set(passed) == {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY"}


def test_init_suggests_extend_allow_and_its_file_loads_as_the_defaults(tmp_path):
    text = dump_default_config()
    assert "extend_allow = []" in text and "\nallow =" not in text
    assert load(tmp_path, text) == dataclasses.replace(Config(), source=str(tmp_path / "kanban.toml"))


def test_checks_get_their_own_env_lists_without_model_credentials(tmp_path):
    from kanban.config import load_config

    environ = {"PATH": "/bin", "ANTHROPIC_API_KEY": "k", "CODEX_API_KEY": "c", "MY_VAR": "v", "HOME": "/h"}
    config = load_config(tmp_path)
    assert "ANTHROPIC_API_KEY" in config.env.filter(environ)  # the agents need it
    assert config.env.for_checks().filter(environ) == {"PATH": "/bin", "HOME": "/h"}
    (tmp_path / "kanban.toml").write_text('[env]\ncheck_allow = ["PATH", "MY_VAR"]\n')
    assert load_config(tmp_path).env.for_checks().filter(environ) == {"PATH": "/bin", "MY_VAR": "v"}


def test_the_test_stage_command_gets_the_checks_environment(tmp_path, monkeypatch):
    from kanban.agents import test_env
    from kanban.config import load_config

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-4711")
    monkeypatch.setenv("DEPLOY_SECRET", "s3cr3t")
    env = test_env(load_config(tmp_path), "TASK-1", tmp_path, 20001)
    assert "ANTHROPIC_API_KEY" not in env and "DEPLOY_SECRET" not in env
    assert env["KANBAN_TASK_ID"] == "TASK-1" and "PATH" in env

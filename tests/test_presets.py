"""Agent presets: argv building, credential checks, cost parsing, and the real CLIs.

The samples below are real output captured from claude-code 2.1.197,
codex-cli 0.169.0 and aider-chat 0.86.2 (run against a local fake API where
noted; long lines trimmed where marked). The tests at the end run the
installed CLIs, when there are any, without credentials.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from clis import require_cli

from kanban import presets
from kanban.config import AgentConfig
from kanban.errors import KanbanError
from kanban.model import Role
from kanban.presets import (
    PRESET_EXECUTABLES,
    PRESETS,
    build_argv,
    check_placeholders,
    executable_for,
    missing_credentials,
    parse_cost,
    preset_env,
)

PH = {"prompt_file": "/runs/T-1/prompt.md", "prompt": "Do the task.", "task_id": "T-1",
      "role": "task", "worktree": "/repo/.worktrees/T-1", "model": "",
      "report_file": "/repo/.worktrees/T-1/.kanban-run/report.md", "run_dir": "/runs/T-1"}  # fmt: skip

AIDER_FLAGS = [
    "--yes-always", "--no-check-update", "--no-analytics", "--no-show-release-notes",
    "--no-show-model-warnings", "--no-gitignore", "--no-fancy-input", "--no-pretty",
    "--no-dirty-commits", "--no-detect-urls", "--disable-playwright",
    "--no-suggest-shell-commands", "--chat-history-file", os.devnull,
    "--input-history-file", os.devnull,
    "--file", "/repo/.worktrees/T-1/.kanban-run/report.md", "--add-gitignore-files",
    "--aiderignore", "/runs/T-1/aiderignore", "--model-settings-file", "/runs/T-1/aider.model.settings.yml",
    "--timeout", "30",
]  # fmt: skip
CLAUDE_HEAD = ["claude", "-p", "--output-format", "stream-json", "--verbose",
               "--dangerously-skip-permissions"]  # fmt: skip
CODEX_HEAD = ["codex", "exec", "--json", "--dangerously-bypass-approvals-and-sandbox",
              "--ephemeral", "--color", "never", "-c", "features.unbounded_connection_retries=false"]  # fmt: skip


# --- argv ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("claude", CLAUDE_HEAD + ["--", "Do the task."]),
        ("codex", CODEX_HEAD + ["--", "Do the task."]),
        ("aider", ["aider", "--message-file", "/runs/T-1/prompt.md"] + AIDER_FLAGS),
        ("demo", [sys.executable, "-m", "kanban.demo_agent", "/runs/T-1/prompt.md"]),
    ],
)
def test_preset_argv_without_model(preset, expected):
    assert build_argv(AgentConfig(preset=preset), PH) == expected


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("claude", CLAUDE_HEAD + ["--model", "opus", "--max-budget-usd", "5", "--",
                                  "Do the task."]),
        ("codex", CODEX_HEAD + ["--model", "opus", "--max-budget-usd", "5", "--",
                                "Do the task."]),
        ("aider", ["aider", "--message-file", "/runs/T-1/prompt.md"] + AIDER_FLAGS
         + ["--model", "opus", "--max-budget-usd", "5"]),
        # the demo agent takes no model: only extra_args are added
        ("demo", [sys.executable, "-m", "kanban.demo_agent", "/runs/T-1/prompt.md",
                  "--max-budget-usd", "5"]),
    ],
)
def test_model_args_then_extra_args_then_the_prompt(preset, expected):
    agent = AgentConfig(preset=preset, model="opus", extra_args=("--max-budget-usd", "5"))
    assert build_argv(agent, {**PH, "model": "opus"}) == expected


def test_the_placeholder_model_wins_over_the_configured_one():
    # the engine passes the model ladder's rung as {model}; empty means the config's
    agent = AgentConfig(preset="codex", model="gpt-5")
    assert build_argv(agent, PH)[-4:] == ["--model", "gpt-5", "--", "Do the task."]
    assert build_argv(agent, {**PH, "model": "o3"})[-4:] == ["--model", "o3", "--", "Do the task."]
    assert build_argv(AgentConfig(preset="codex"), {**PH, "model": "gpt-5"})[-4:] == [
        "--model", "gpt-5", "--", "Do the task."]
    assert "--model" not in build_argv(AgentConfig(preset="codex"), PH)


def test_extra_args_take_placeholders():
    agent = AgentConfig(preset="aider", extra_args=("--read", "{worktree}/NOTES.md"))
    assert build_argv(agent, PH)[-2:] == ["--read", "/repo/.worktrees/T-1/NOTES.md"]


def test_custom_command_wins_over_the_preset():
    agent = AgentConfig(preset="claude", model="m1",
                        command=("my-agent", "--file", "{prompt_file}", "--model={model}"),
                        extra_args=("--role", "{role}"))  # fmt: skip
    assert build_argv(agent, PH) == ["my-agent", "--file", "/runs/T-1/prompt.md",
                                     "--model=m1", "--role", "task"]  # fmt: skip
    assert executable_for(agent) == "my-agent"
    assert preset_env(agent) == {}


def test_custom_command_model_placeholder_is_empty_without_a_model():
    agent = AgentConfig(command=("run", "--model={model}"))
    assert build_argv(agent, {k: v for k, v in PH.items() if k != "model"}) == ["run", "--model="]


def test_role_enum_is_its_value():
    agent = AgentConfig(command=("run", "{role}"))
    assert build_argv(agent, {**PH, "role": Role.REVIEWER}) == ["run", "reviewer"]


@pytest.mark.parametrize("arg", ["{foo}", "x{prompt_files}y", "{PROMPT}", "{}", "{0}",
                                 "{prompt.upper}", "{prompt[0]}", "{prompt!r}", "{task_id:>9}"])
def test_unknown_placeholder_names_it_and_lists_the_known_ones(arg):
    with pytest.raises(KanbanError) as err:
        build_argv(AgentConfig(command=("run", arg)), PH)
    text = str(err.value)
    assert "unknown placeholder" in text
    assert arg[arg.index("{"):arg.index("}") + 1] in text
    for known in ("{prompt_file}", "{prompt}", "{task_id}", "{role}", "{worktree}", "{model}"):
        assert known in text
    with pytest.raises(KanbanError):
        check_placeholders(["ok", arg])


def test_unknown_placeholder_in_extra_args_of_a_preset():
    with pytest.raises(KanbanError, match=r"\{nope\} in extra_args"):
        build_argv(AgentConfig(preset="claude", extra_args=("--x", "{nope}")), PH)


@pytest.mark.parametrize("arg", ["{", "}", "a{b", "{prompt", "x}"])
def test_stray_braces_are_an_error_with_a_hint(arg):
    with pytest.raises(KanbanError, match=r"write \{\{ and \}\} for a literal brace"):
        build_argv(AgentConfig(command=("run", arg)), PH)


def test_doubled_braces_are_literal():
    agent = AgentConfig(command=("run", "{{literal}}", "{{{task_id}}}", '{{"a": 1}}', "}}{{"))
    assert build_argv(agent, PH) == ["run", "{literal}", "{T-1}", '{"a": 1}', "}{"]
    check_placeholders(["{{x}}", "{prompt}"])  # no error


def test_a_known_placeholder_without_a_value_is_an_error():
    with pytest.raises(KanbanError, match=r"\{worktree\}.*has no value"):
        build_argv(AgentConfig(command=("run", "{worktree}")), {"prompt_file": "p"})


NASTY = [
    "two words",
    "$(rm -rf /); `id` && echo hi | cat > /tmp/x; 'single' \"double\" \\ * ? ~ #",
    "line one\nline two\n\ttabbed",
    "{prompt} {task_id} {{ }} %s %(x)s",  # braces inside a value are not expanded again
    "-starts-with-a-dash --model evil",
    "",
    "unicode: naïve 漢字 🙂",
]


@pytest.mark.parametrize("value", NASTY)
@pytest.mark.parametrize("preset", ["claude", "codex", "aider", "demo"])
def test_values_stay_one_untouched_argv_element(preset, value):
    placeholders = {**PH, "prompt": value, "prompt_file": value}
    argv = build_argv(AgentConfig(preset=preset), placeholders)
    assert value in argv
    assert all(isinstance(a, str) for a in argv)
    fixed = build_argv(AgentConfig(preset=preset), {**PH, "prompt": "P", "prompt_file": "F"})
    assert len(argv) == len(fixed)  # nothing split, nothing joined
    if preset in ("claude", "codex"):
        assert argv[-2:] == ["--", value]  # after "--": never read as an option


def test_values_reach_a_real_process_unchanged(tmp_path):
    """Run the built argv: each value arrives as one argument, byte for byte."""
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"
    agent = AgentConfig(command=(sys.executable, "-c", script, "{prompt}", "{worktree}"))
    values = {**PH, "prompt": NASTY[1] + NASTY[2], "worktree": "a b;c"}
    out = subprocess.run(build_argv(agent, values), capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=30, check=True).stdout  # fmt: skip
    assert json.loads(out) == [NASTY[1] + NASTY[2], "a b;c"]


def test_a_prompt_too_long_for_one_argument_fails_before_launch():
    big = "x" * (128 * 1024)
    with pytest.raises(KanbanError, match="bytes"):
        build_argv(AgentConfig(preset="claude"), {**PH, "prompt": big})
    # aider and demo read the prompt from its file: no limit there
    assert build_argv(AgentConfig(preset="aider"), {**PH, "prompt": big})


def test_unknown_preset_is_an_error():
    with pytest.raises(KanbanError, match="unknown agent preset"):
        build_argv(AgentConfig(preset="gpt-engineer"), PH)


def test_executables_and_env():
    assert PRESET_EXECUTABLES == {"claude": "claude", "codex": "codex", "aider": "aider",
                                  "demo": None}  # fmt: skip
    assert executable_for(AgentConfig(preset="aider")) == "aider"
    assert executable_for(AgentConfig(preset="demo")) is None
    assert preset_env(AgentConfig(preset="aider")) == {"BROWSER": "true", "COLUMNS": "10000",
                                                       "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    assert preset_env(AgentConfig(preset="claude"))["DISABLE_AUTOUPDATER"] == "1"
    assert preset_env(AgentConfig(preset="demo")) == {}
    env = preset_env(AgentConfig(preset="aider"))
    env["X"] = "1"  # a copy: the preset itself stays as it was
    assert dict(PRESETS["aider"].env) == {"BROWSER": "true", "COLUMNS": "10000", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def test_presets_are_argv_never_a_shell():
    for preset in PRESETS.values():
        assert Path(preset.argv[0]).name not in ("sh", "bash", "zsh", "dash")
        assert "-c" not in preset.argv[:2]
        check_placeholders(preset.argv + preset.model_args + preset.tail)


# --- credentials ---------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An empty home, and not root (as root claude needs IS_SANDBOX=1: tested apart)."""
    monkeypatch.setattr(presets, "_is_root", lambda: False)
    monkeypatch.setattr(presets.sys, "platform", "linux")
    path = tmp_path / "home"
    path.mkdir()
    return path


def env_with(home: Path, **extra: str) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), **extra}


def test_demo_and_custom_commands_need_no_credentials(home):
    assert missing_credentials(AgentConfig(preset="demo"), {}) is None
    assert missing_credentials(AgentConfig(preset="claude", command=("x",)), {}) is None


def test_claude_without_credentials(home):
    reason = missing_credentials(AgentConfig(preset="claude"), env_with(home))
    assert reason and "\n" not in reason
    assert "ANTHROPIC_API_KEY" in reason and "claude" in reason


@pytest.mark.parametrize("name", ["ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                                  "CLAUDE_CODE_OAUTH_TOKEN", "CLAUDE_CODE_USE_BEDROCK"])
def test_claude_with_a_key_variable(home, name):
    assert missing_credentials(AgentConfig(preset="claude"), env_with(home, **{name: "k"})) is None


def test_an_empty_key_does_not_count(home):
    env = env_with(home, ANTHROPIC_API_KEY="")
    assert missing_credentials(AgentConfig(preset="claude"), env)


def test_claude_logged_in(home, tmp_path):
    (home / ".claude").mkdir()
    (home / ".claude" / ".credentials.json").write_text("{}")
    assert missing_credentials(AgentConfig(preset="claude"), env_with(home)) is None
    other = tmp_path / "claude-config"
    other.mkdir()
    env = env_with(home, CLAUDE_CONFIG_DIR=str(other))
    assert missing_credentials(AgentConfig(preset="claude"), env)  # looked there instead
    (other / ".credentials.json").write_text("{}")
    assert missing_credentials(AgentConfig(preset="claude"), env) is None


def test_claude_api_key_helper_in_settings(home, tmp_path):
    worktree = tmp_path / "wt"
    (worktree / ".claude").mkdir(parents=True)
    env = env_with(home, KANBAN_WORKTREE=str(worktree))
    assert missing_credentials(AgentConfig(preset="claude"), env)
    (worktree / ".claude" / "settings.json").write_text('{"apiKeyHelper": "get-key"}')
    assert missing_credentials(AgentConfig(preset="claude"), env) is None


def test_claude_on_macos_keeps_its_login_in_the_keychain(home, monkeypatch):
    monkeypatch.setattr(presets.sys, "platform", "darwin")
    assert missing_credentials(AgentConfig(preset="claude"), env_with(home)) is None


def test_claude_as_root_needs_is_sandbox(home, monkeypatch):
    monkeypatch.setattr(presets, "_is_root", lambda: True)
    env = env_with(home, ANTHROPIC_API_KEY="k")
    reason = missing_credentials(AgentConfig(preset="claude"), env)
    assert reason and "root" in reason and "IS_SANDBOX" in reason
    assert missing_credentials(AgentConfig(preset="claude"), {**env, "IS_SANDBOX": "true"})
    assert missing_credentials(AgentConfig(preset="claude"), {**env, "IS_SANDBOX": "1"}) is None
    assert missing_credentials(AgentConfig(preset="codex"), {**env, "CODEX_API_KEY": "k"}) is None


def test_codex_ignores_openai_api_key(home):
    reason = missing_credentials(AgentConfig(preset="codex"), env_with(home, OPENAI_API_KEY="k"))
    assert reason and "CODEX_API_KEY" in reason and "OPENAI_API_KEY" in reason
    env = env_with(home, CODEX_API_KEY="k")
    assert missing_credentials(AgentConfig(preset="codex"), env) is None


def test_codex_logged_in(home, tmp_path):
    (home / ".codex").mkdir()
    (home / ".codex" / "auth.json").write_text("{}")
    assert missing_credentials(AgentConfig(preset="codex"), env_with(home)) is None
    codex_home = tmp_path / "ch"
    codex_home.mkdir()
    env = env_with(home, CODEX_HOME=str(codex_home))
    assert missing_credentials(AgentConfig(preset="codex"), env)
    (codex_home / "config.toml").write_text('model_provider = "ollama"\n')
    assert missing_credentials(AgentConfig(preset="codex"), env) is None


def test_codex_oss_or_config_overrides_skip_the_check(home):
    agent = AgentConfig(preset="codex", extra_args=("--oss",))
    assert missing_credentials(agent, env_with(home)) is None


def test_aider_without_credentials(home):
    reason = missing_credentials(AgentConfig(preset="aider"), env_with(home))
    assert reason and "*_API_KEY" in reason and "\n" not in reason


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY",
                                  "OPENROUTER_API_KEY", "AIDER_OPENAI_API_KEY",
                                  "OLLAMA_API_BASE"])
def test_aider_with_a_provider_key(home, name):
    assert missing_credentials(AgentConfig(preset="aider"), env_with(home, **{name: "k"})) is None


def test_aider_keys_in_dotenv_or_config(home, tmp_path):
    worktree = tmp_path / "wt"
    worktree.mkdir()
    env = env_with(home, KANBAN_WORKTREE=str(worktree))
    agent = AgentConfig(preset="aider")
    assert missing_credentials(agent, env)
    (worktree / ".env").write_text("DEEPSEEK_API_KEY=k\n")
    assert missing_credentials(agent, env) is None
    (worktree / ".env").unlink()
    (home / ".aider.conf.yml").write_text("api-key:\n  - gemini=k\n")
    assert missing_credentials(agent, env) is None


def test_aider_local_models_and_key_options(home):
    env = env_with(home)
    assert missing_credentials(AgentConfig(preset="aider", model="ollama_chat/qwen"), env) is None
    agent = AgentConfig(preset="aider", extra_args=("--api-key", "openai=k"))
    assert missing_credentials(agent, env) is None


# --- cost ------------------------------------------------------------------------

# claude -p --output-format stream-json --verbose against a local fake Messages API
# (the usage numbers are the fake server's; the format and the cost are claude's).
CLAUDE_INIT = ('{"type":"system","subtype":"init","cwd":"/tmp/real.KLyK/repo","session_id":'
               '"f2856241-ab4f-4326-b652-b5ad721b7ac6","tools":["Task","Bash"]}')  # trimmed
CLAUDE_OK = "\n".join([
    CLAUDE_INIT,
    '{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":'
    '"claude-opus-4-8","content":[{"type":"text","text":"Done."}],"stop_reason":null,'
    '"stop_sequence":null,"usage":{"input_tokens":1500,"output_tokens":1,'
    '"cache_creation_input_tokens":200,"cache_read_input_tokens":3000},"context_management":'
    'null},"parent_tool_use_id":null,"session_id":"f2856241-ab4f-4326-b652-b5ad721b7ac6",'
    '"uuid":"31987df5-a161-471c-95b3-bd166e5b7baf"}',
    '{"type":"result","subtype":"success","is_error":false,"api_error_status":null,'
    '"duration_ms":196,"duration_api_ms":36,"ttft_ms":178,"ttft_stream_ms":177,'
    '"time_to_request_ms":162,"num_turns":1,"result":"Done.","stop_reason":"end_turn",'
    '"session_id":"f2856241-ab4f-4326-b652-b5ad721b7ac6","total_cost_usd":0.0113,"usage":'
    '{"input_tokens":1500,"cache_creation_input_tokens":200,"cache_read_input_tokens":3000,'
    '"output_tokens":42,"server_tool_use":{"web_search_requests":0,"web_fetch_requests":0},'
    '"service_tier":"standard","cache_creation":{"ephemeral_1h_input_tokens":0,'
    '"ephemeral_5m_input_tokens":0},"inference_geo":"","iterations":[],"speed":"standard"},'
    '"modelUsage":{"claude-opus-4-8[1m]":{"inputTokens":1500,"outputTokens":42,'
    '"cacheReadInputTokens":3000,"cacheCreationInputTokens":200,"webSearchRequests":0,'
    '"costUSD":0.0113,"contextWindow":1000000,"maxOutputTokens":64000}},"permission_denials":'
    '[],"terminal_reason":"completed","fast_mode_state":"off","uuid":'
    '"d32a4896-7b94-4767-867a-eb83afdcee77"}',
])  # fmt: skip

# claude without credentials (exit 1 after about a second)
CLAUDE_NOT_LOGGED_IN = (
    '{"type":"result","subtype":"success","is_error":true,"api_error_status":null,'
    '"duration_ms":186,"duration_api_ms":0,"num_turns":1,"result":"Not logged in · Please run '
    '/login","stop_reason":"stop_sequence","session_id":"fda17217-6f18-45a8-9994-e3dd4e1c1aa3",'
    '"total_cost_usd":0,"usage":{"input_tokens":0,"cache_creation_input_tokens":0,'
    '"cache_read_input_tokens":0,"output_tokens":0,"server_tool_use":{"web_search_requests":0,'
    '"web_fetch_requests":0},"service_tier":"standard","cache_creation":'
    '{"ephemeral_1h_input_tokens":0,"ephemeral_5m_input_tokens":0},"inference_geo":"",'
    '"iterations":[],"speed":"standard"},"modelUsage":{},"permission_denials":[],'
    '"terminal_reason":"completed","fast_mode_state":"off","uuid":'
    '"11e58ff7-af17-4652-8c11-4f9a88ac79e4"}'
)

# codex exec --json against a local fake Responses API (it tries WebSocket first)
CODEX_OK = """\
{"type":"thread.started","thread_id":"01a20167-8c67-72d3-b8be-7a9596d9baf9"}
{"type":"turn.started"}
{"type":"error","message":"Reconnecting... 2/5 (unexpected status 404 Not Found: Unknown error, url: ws://127.0.0.1:18821/v1/responses)"}
{"type":"item.completed","item":{"id":"item_0","type":"error","message":"Falling back from WebSockets to HTTPS transport. unexpected status 404 Not Found: Unknown error, url: ws://127.0.0.1:18821/v1/responses"}}
{"type":"item.completed","item":{"id":"item_1","type":"agent_message","text":"Done."}}
{"type":"turn.completed","usage":{"input_tokens":2946,"cached_input_tokens":1024,"cache_write_input_tokens":0,"output_tokens":7,"reasoning_output_tokens":0}}
"""  # noqa: E501

# codex exec --json with a rejected key (exit 1 after about 14 s)
CODEX_401 = """\
{"type":"thread.started","thread_id":"01a20163-b53b-74f2-b1c0-7451f0161d45"}
{"type":"turn.started"}
{"type":"error","message":"unexpected status 401 Unauthorized: Incorrect API key provided, url: http://127.0.0.1:18801/v1/responses"}
{"type":"turn.failed","error":{"message":"unexpected status 401 Unauthorized: Incorrect API key provided, url: http://127.0.0.1:18801/v1/responses"}}
"""  # noqa: E501

# aider --no-pretty against a local fake OpenAI API, model openai/gpt-4o-mini
AIDER_OK = """\

Update git name with: git config user.name "Your Name"
Update git email with: git config user.email "you@example.com"
Aider v0.86.2
Model: openai/gpt-4o-mini with whole edit format
Git repo: .git with 1 files
Repo-map: using 4096 tokens, auto refresh

I will create the file.

hello.txt
```
hello from the fake model
```

Tokens: 849 sent, 19 received. Cost: $0.00014 message, $0.00014 session.

hello.txt
Applied edit to hello.txt
Commit 045f73d feat: add hello.txt
"""

# aider's documented formats: caching (cost on its own line), thousands, several exchanges
AIDER_CACHED = """\
Tokens: 12k sent, 1.2k cache write, 3.4k cache hit, 500 received.
Cost: $0.05 message, $0.10 session.
Applied edit to app.py
Tokens: 2.1k sent, 300 received. Cost: $0.01 message, $0.11 session.
Commit 1234abc fix: things
"""

# aider without a key (exit 0, nothing done)
AIDER_NO_KEY = """\
Aider v0.86.2
Model: gpt-4o-mini with whole edit format
litellm.AuthenticationError: AuthenticationError: OpenAIException - The api_key
client option must be set either by passing api_key to the client or by setting
the OPENAI_API_KEY environment variable
The API provider is not able to authenticate you. Check your API key.
"""


def _old(cost: dict) -> dict:
    """The two figures parse_cost gave before it split input and output."""
    return {"cost_usd": cost["cost_usd"], "tokens": cost["tokens"]}


def test_claude_cost_from_the_result_line():
    assert _old(parse_cost("claude", CLAUDE_OK)) == {"cost_usd": 0.0113, "tokens": 4742}


def test_claude_cost_of_a_failed_run():
    assert _old(parse_cost("claude", CLAUDE_NOT_LOGGED_IN)) == {"cost_usd": 0.0, "tokens": 0}


def test_claude_cost_falls_back_to_usage_without_model_usage():
    line = json.dumps({"type": "result", "total_cost_usd": 1.5, "usage": {
        "input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100}})
    assert _old(parse_cost("claude", "noise\n" + line)) == {"cost_usd": 1.5, "tokens": 115}


def test_claude_cost_estimated_when_killed_before_the_result():
    # no dollar figure; the tokens of its assistant messages so far (kanban.pricing prices them)
    text = "\n".join(CLAUDE_OK.splitlines()[:2])
    assert _old(parse_cost("claude", text)) == {"cost_usd": None, "tokens": 1500 + 200 + 3000 + 1}
    assert _old(parse_cost("claude", CLAUDE_INIT)) == {"cost_usd": None, "tokens": None}


def test_claude_cost_from_a_log_tail_cut_mid_line_with_stderr_mixed_in():
    tail = CLAUDE_OK[len(CLAUDE_INIT) // 2:]  # the log is read from its last 64 KiB
    text = tail.replace("\n", "\nsome stderr line {not json}\n", 1)
    assert _old(parse_cost("claude", text)) == {"cost_usd": 0.0113, "tokens": 4742}


def test_codex_tokens_and_no_cost():
    assert _old(parse_cost("codex", CODEX_OK)) == {"cost_usd": None, "tokens": 2953}
    assert _old(parse_cost("codex", CODEX_401)) == {"cost_usd": None, "tokens": None}
    two_turns = CODEX_OK + CODEX_OK.splitlines()[-1] + "\n"
    assert parse_cost("codex", two_turns)["tokens"] == 2 * 2953


def test_aider_cost_and_tokens():
    assert _old(parse_cost("aider", AIDER_OK)) == {"cost_usd": 0.00014, "tokens": 868}
    assert _old(parse_cost("aider", AIDER_CACHED)) == {"cost_usd": 0.11, "tokens": 12500 + 2400}
    assert _old(parse_cost("aider", AIDER_NO_KEY)) == {"cost_usd": None, "tokens": None}


def test_aider_tokens_without_prices():
    text = "Tokens: 1.5k sent, 20 received.\nTokens: 950 sent, 1.0M received.\n"
    assert _old(parse_cost("aider", text)) == {"cost_usd": None, "tokens": 1520 + 950 + 1_000_000}


@pytest.mark.parametrize("preset", ["demo", "nonexistent", "claude", "codex", "aider"])
@pytest.mark.parametrize("text", ["", "plain text\n", "{broken json\n", '{"type": "result"}',
                                  '{"type":"turn.completed","usage":"x"}', "[1, 2]"])
def test_cost_never_raises(preset, text):
    cost = parse_cost(preset, text)
    assert set(cost) == {"cost_usd", "tokens", "input_tokens", "output_tokens", "cached_input_tokens",
                         "cache_write_tokens", "model"}
    assert cost["tokens"] is None or isinstance(cost["tokens"], int)


# --- the real CLIs, without credentials ------------------------------------------------

class FakeAPI:
    """A local HTTP server that rejects every request with 401, as a real API would."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def reply(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                outer.requests.append((self.command, self.path, dict(self.headers)))
                body = json.dumps({"error": {"message": "Incorrect API key provided",
                                             "type": "invalid_request_error",
                                             "code": "invalid_api_key"}}).encode()  # fmt: skip
                self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = reply

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api():
    api = FakeAPI()
    yield api
    api.close()


@pytest.fixture
def scratch_repo(repo):
    """A git worktree on a branch, as kanban gives each task."""
    worktree = repo.parent / "wt"
    subprocess.run(["git", "worktree", "add", "-q", "-b", "task", str(worktree)], cwd=repo,
                   check=True, capture_output=True)  # fmt: skip
    return worktree


def no_credential_env(cli: str, **extra: str) -> dict[str, str]:
    """The test's sealed environment minus every credential, with the CLI's folder on PATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_TOKEN", "_API_BASE", "_BASE_URL"))
           and not k.startswith(("ANTHROPIC_", "OPENAI_", "CLAUDE_", "CODEX_", "AIDER_"))}
    env["PATH"] = str(Path(cli).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra)
    return env


def run_agent(argv: list[str], cwd: Path, env: dict[str, str], limit: float):
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=limit)  # fmt: skip
    return proc, time.monotonic() - start


def head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip


def prompt_values(tmp_path: Path, worktree: Path) -> dict[str, str]:
    prompt = "Create a file hello.txt containing the word hello, then commit it."
    prompt_file = tmp_path / "prompt.md"
    prompt_file.write_text(prompt)
    return {**PH, "prompt": prompt, "prompt_file": str(prompt_file), "worktree": str(worktree)}


@pytest.mark.cli
@pytest.mark.timeout(120)
def test_claude_without_credentials_fails_fast(tmp_path, scratch_repo, fake_api):
    cli = require_cli("claude")
    # IS_SANDBOX=1 lets the root check pass where tests run as root; the base URL keeps
    # anything it might send on this machine.
    env = no_credential_env(cli, IS_SANDBOX="1", ANTHROPIC_BASE_URL=fake_api.url)
    agent = AgentConfig(preset="claude")
    reason = missing_credentials(agent, env)
    assert reason is None or "no credentials" in reason  # None on macOS (keychain)
    argv = build_argv(agent, prompt_values(tmp_path, scratch_repo))
    before = head(scratch_repo)
    proc, elapsed = run_agent(argv, scratch_repo, env, limit=90)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert elapsed < 60
    assert head(scratch_repo) == before
    assert "Not logged in" in proc.stdout  # measured: about 1 s, exit 1
    assert parse_cost("claude", proc.stdout)["cost_usd"] == 0.0


@pytest.mark.cli
@pytest.mark.timeout(120)
def test_codex_with_a_rejected_key_fails(tmp_path, scratch_repo, fake_api):
    cli = require_cli("codex")
    env = no_credential_env(cli)
    agent = AgentConfig(preset="codex")
    assert "no credentials" in missing_credentials(agent, env)
    # Without credentials and without network codex waits for the network forever; here
    # the local API answers 401, as the real one does to a missing or wrong key.
    agent = AgentConfig(preset="codex", extra_args=("-c", f'openai_base_url="{fake_api.url}/v1"'))
    argv = build_argv(agent, prompt_values(tmp_path, scratch_repo))
    before = head(scratch_repo)
    proc, elapsed = run_agent(argv, scratch_repo, env, limit=100)
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert elapsed < 90  # measured: about 14 s of retries, exit 1
    assert head(scratch_repo) == before
    assert '"type":"turn.failed"' in proc.stdout
    assert fake_api.requests, "codex never reached the local API"
    sent = [{k.lower(): v for k, v in h.items()} for _, _, h in fake_api.requests]
    assert not any("authorization" in h for h in sent)


@pytest.mark.cli
@pytest.mark.timeout(300)
def test_aider_without_a_key_makes_no_commit(tmp_path, scratch_repo, fake_api):
    cli = require_cli("aider")
    env = no_credential_env(cli, OPENAI_API_BASE=fake_api.url + "/v1", **preset_env(
        AgentConfig(preset="aider")))
    agent = AgentConfig(preset="aider", model="gpt-4o-mini")
    assert "no credentials" in missing_credentials(AgentConfig(preset="aider"), env)
    argv = build_argv(agent, prompt_values(tmp_path, scratch_repo))
    before = head(scratch_repo)
    proc, elapsed = run_agent(argv, scratch_repo, env, limit=240)
    # aider exits 0 even so: only git tells that nothing was done
    assert head(scratch_repo) == before, proc.stdout
    assert not (scratch_repo / "hello.txt").exists()
    assert "AuthenticationError" in proc.stdout + proc.stderr
    assert elapsed < 200  # measured: 10-45 s, all of it startup
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                            cwd=scratch_repo, capture_output=True, text=True).stdout  # fmt: skip
    assert status == ""  # nothing tracked touched: no .gitignore edit


@pytest.mark.cli
@pytest.mark.timeout(300)
def test_aider_with_a_rejected_key_makes_no_commit(tmp_path, scratch_repo, fake_api):
    cli = require_cli("aider")
    env = no_credential_env(cli, OPENAI_API_KEY="sk-wrong", OPENAI_API_BASE=fake_api.url + "/v1",
                            **preset_env(AgentConfig(preset="aider")))  # fmt: skip
    agent = AgentConfig(preset="aider", model="openai/gpt-4o-mini")
    argv = build_argv(agent, prompt_values(tmp_path, scratch_repo))
    before = head(scratch_repo)
    proc, elapsed = run_agent(argv, scratch_repo, env, limit=240)
    assert proc.returncode == 0  # aider's exit code says nothing
    assert head(scratch_repo) == before, proc.stdout
    assert fake_api.requests and all(p.endswith("/chat/completions")
                                     for _, p, _ in fake_api.requests)  # fmt: skip
    assert elapsed < 200


def test_cli_error_in_the_clis_own_words():
    from kanban.presets import cli_error

    claude = ('{"type":"system","subtype":"api_retry","attempt":1}\n'
              '{"type":"result","subtype":"success","is_error":true,"result":"API Error: Connection error."}\n')
    assert cli_error("claude", claude) == "API Error: Connection error."
    codex = '{"type":"turn.failed","error":{"message":"stream disconnected before completion"}}\n'
    assert cli_error("codex", codex) == "stream disconnected before completion"
    assert cli_error("claude", '{"type":"result","is_error":false,"result":"done"}') is None
    assert cli_error("aider", claude) is None
    assert len(cli_error("claude", '{"type":"result","is_error":true,"result":"' + "x" * 999 + '"}')) == 300

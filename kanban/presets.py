"""Agent presets: the real non-interactive command lines of the agent CLIs.

A preset is argv (never a shell command line) with placeholders that
`build_argv` fills in: {prompt_file}, {prompt}, {task_id}, {role},
{worktree} and {model}. Each value becomes part of exactly one argv element,
untouched, whatever spaces or shell characters it holds.

The flags were checked against each CLI's own --help and by running it in a
scratch git repository with stdin at /dev/null and without credentials
(claude-code 2.1.197, codex-cli 0.169.0, aider-chat 0.86.2).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import string
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import MappingProxyType

from kanban.errors import KanbanError

PLACEHOLDERS = ("prompt_file", "prompt", "task_id", "role", "worktree", "model")
KNOWN = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
BRACES_HINT = "write {{ and }} for a literal brace"

# Linux refuses (E2BIG) a single argv element longer than MAX_ARG_STRLEN,
# 32 pages = 128 KiB including the trailing NUL; {prompt} is the one at risk.
MAX_ARG_BYTES = 128 * 1024 - 1


@dataclass(frozen=True)
class Preset:
    name: str
    argv: tuple[str, ...]  # the program and its options
    model_args: tuple[str, ...] = ()  # after argv, only when a model is set
    tail: tuple[str, ...] = ()  # last of all, after model_args and extra_args: the prompt
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # Names (or globs) of variables of which one, set and non-empty, lets the CLI
    # authenticate. Empty: the preset needs none.
    required_env: tuple[str, ...] = ()
    # Name of a function (agent, env) -> bool in this module that finds another
    # credential source (a login file, a config naming a local provider).
    credential_check: str | None = None
    cost_parser: str | None = None  # name of a function log_text -> dict in this module
    hint: str = ""  # how to give it credentials, for missing_credentials


PRESETS: dict[str, Preset] = {}


def _register(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset


# claude: checked against `claude --help` of Claude Code 2.1.197.
#   -p / --print                   non-interactive: run the prompt, print, exit; it also skips
#                                  the workspace trust dialog. Without a prompt argument it would
#                                  read stdin (here /dev/null), and it has no prompt-file option,
#                                  so the prompt goes as one argv element after "--".
#   --output-format stream-json    one JSON object per line as it works, so the log grows and the
#   --verbose                      stall watchdog sees progress (plain "json" prints nothing until
#                                  the end); stream-json requires --verbose with -p. The last line
#                                  is {"type":"result", "total_cost_usd": ..., "usage": {...}}.
#   --dangerously-skip-permissions never stops at a permission prompt. Claude refuses it when run
#                                  as root unless IS_SANDBOX=1 (exactly "1"), which
#                                  missing_credentials reports before launch.
#   --model {model}                a model alias ("sonnet", "opus") or a full model name.
#   DISABLE_AUTOUPDATER=1          concurrent agents must not update the installation under each
#                                  other.
# Measured without credentials: exits 1 within about 1 s, printing a result line with
# "is_error": true, "result": "Not logged in · Please run /login". With a key but no reachable
# API it retries 10 times (an api_retry line each) and exits 1 after about 3 minutes;
# CLAUDE_CODE_MAX_RETRIES and API_TIMEOUT_MS shorten that.
CLAUDE = _register(Preset(
    name="claude",
    argv=("claude", "-p", "--output-format", "stream-json", "--verbose",
          "--dangerously-skip-permissions"),
    model_args=("--model", "{model}"),
    tail=("--", "{prompt}"),
    env=MappingProxyType({"DISABLE_AUTOUPDATER": "1"}),
    required_env=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                  "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY"),
    credential_check="_claude_login",
    cost_parser="parse_claude_cost",
    hint="set ANTHROPIC_API_KEY, or run 'claude' once and log in",
))  # fmt: skip

# codex: checked against `codex exec --help` of codex-cli 0.169.0.
#   exec                           the non-interactive subcommand; it never asks for approval.
#   --json                         events as JSON lines; "turn.completed" carries the token usage
#                                  (no cost), "turn.failed" the error.
#   --dangerously-bypass-approvals-and-sandbox
#                                  no approvals and no sandbox: the workspace-write sandbox keeps
#                                  .git read-only, and a worktree's git directory lies outside
#                                  the worktree, so under it the agent could not commit its work.
#                                  The kanban worktree and supervisor are the boundary.
#   --ephemeral                    no session files piling up under ~/.codex.
#   --color never                  no ANSI escapes in the log.
#   --model {model}                the model name.
#   -- {prompt}                    the prompt as one argv element; without one, or with "-",
#                                  codex reads it from stdin.
# Authentication: CODEX_API_KEY, or `codex login` ($CODEX_HOME/auth.json, default ~/.codex).
# codex exec does NOT send OPENAI_API_KEY (measured: no Authorization header at all).
# Measured without credentials and no network: it never exits by itself ("Reconnecting...
# waiting for network" lines, then silence); with a bad key and a reachable API it exits 1
# after about 14 s of retries (5 over WebSocket, 5 over HTTPS) with a turn.failed line.
CODEX = _register(Preset(
    name="codex",
    argv=("codex", "exec", "--json", "--dangerously-bypass-approvals-and-sandbox",
          "--ephemeral", "--color", "never"),
    model_args=("--model", "{model}"),
    tail=("--", "{prompt}"),
    required_env=("CODEX_API_KEY",),
    credential_check="_codex_login",
    cost_parser="parse_codex_cost",
    hint="set CODEX_API_KEY (codex exec ignores OPENAI_API_KEY), or run 'codex login'",
))  # fmt: skip

# aider: checked against `aider --help` of aider-chat 0.86.2.
#   --message-file {prompt_file}   send the prompt from the file, process the reply, exit.
#   --yes-always                   yes to every confirmation (it still says no to running shell
#                                  commands, which need an explicit yes).
#   --no-check-update              no update check, and so no pip self-upgrade under --yes-always.
#   --no-analytics                 no analytics, and no question about them.
#   --no-show-release-notes        no release-notes question on a new version.
#   --no-show-model-warnings       no warning (and "open the docs?" browser) for unknown models.
#   --no-gitignore                 do not add .aider* to (and so dirty) the tracked .gitignore.
#   --no-fancy-input               plain input: with stdin at /dev/null its questions take their
#                                  defaults instead of waiting.
#   --no-pretty                    no colours or live markdown rendering in the log.
#   --no-dirty-commits             no separate commit of files left dirty before it started: a
#                                  commit means aider applied an edit of its own.
#   --no-detect-urls               no offer to scrape URLs quoted in the prompt.
#   --disable-playwright           never offer to install Playwright.
#   --no-suggest-shell-commands    it could not run them anyway (see --yes-always).
#   --chat-history-file, --input-history-file /dev/null
#                                  no .aider.chat.history.md / .aider.input.history in the
#                                  worktree; the log already has the whole conversation.
#   --model {model}                a litellm model name, e.g. "sonnet", "gpt-4o",
#                                  "openai/<name>" for an OpenAI-compatible OPENAI_API_BASE.
#   BROWSER=true                   anything that wants to open a web page opens nothing.
# aider commits its own edits (auto-commits). It exits 0 even when it fails (no key, server
# down, HTTP errors): success must be judged from git. It still writes the repo-map cache
# .aider.tags.cache.v4/ into the worktree, untracked.
# Measured: with neither key nor model it offers an OpenRouter login and waits up to 5 minutes
# for a browser (missing_credentials stops that before launch); with a model but no key it exits
# 0 after its startup (5-45 s here); with a key and the server down it retries for about 2 minutes
# and exits 0; a hung server waits 600 s per request unless --timeout is given.
AIDER = _register(Preset(
    name="aider",
    argv=("aider", "--message-file", "{prompt_file}", "--yes-always", "--no-check-update",
          "--no-analytics", "--no-show-release-notes", "--no-show-model-warnings",
          "--no-gitignore", "--no-fancy-input", "--no-pretty", "--no-dirty-commits",
          "--no-detect-urls", "--disable-playwright", "--no-suggest-shell-commands",
          "--chat-history-file", os.devnull, "--input-history-file", os.devnull),
    model_args=("--model", "{model}"),
    env=MappingProxyType({"BROWSER": "true"}),
    required_env=("*_API_KEY", "AIDER_API_KEY", "OLLAMA_API_BASE", "VERTEXAI_PROJECT",
                  "AWS_BEARER_TOKEN_BEDROCK"),
    credential_check="_aider_configured",
    cost_parser="parse_aider_cost",
    hint="set the API key of the model's provider (e.g. ANTHROPIC_API_KEY or OPENAI_API_KEY) "
         "and allow it in [env]",
))  # fmt: skip

# demo: the built-in scripted agent (kanban.demo_agent): no network, no credentials.
DEMO = _register(Preset(
    name="demo",
    argv=(sys.executable, "-m", "kanban.demo_agent", "{prompt_file}"),
))

PRESET_EXECUTABLES = {name: (None if name == "demo" else p.argv[0]) for name, p in PRESETS.items()}


def executable_for(agent) -> str | None:
    """The program an agent config runs (None for the built-in demo agent)."""
    if agent.command:
        return agent.command[0]
    return PRESET_EXECUTABLES.get(agent.preset)


def preset_for(agent) -> Preset | None:
    """The preset an agent config runs, or None when its own `command` replaces it."""
    if agent.command:
        return None
    try:
        return PRESETS[agent.preset]
    except KeyError:
        raise KanbanError(
            f"unknown agent preset {agent.preset!r}",
            hint="use one of " + ", ".join(PRESETS) + ", or give a command",
        ) from None


def preset_env(agent) -> dict[str, str]:
    """Extra environment the agent's preset needs (nothing for a custom command)."""
    preset = preset_for(agent)
    return dict(preset.env) if preset else {}


# --- building argv -------------------------------------------------------------

_FORMATTER = string.Formatter()


def _fields(arg: str, where: str) -> list[str]:
    """The placeholder names in one argv element; KanbanError when it is malformed."""
    try:
        parsed = list(_FORMATTER.parse(arg))
    except ValueError as exc:  # a lone "{" or "}"
        raise KanbanError(f"bad braces in {where} argument {arg!r}: {exc}",
                          hint=BRACES_HINT) from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        # Only plain {name}: no {prompt.x}, {prompt[0]}, {}, {prompt!r} or {task_id:>9}.
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + ("!" + conversion if conversion else "") + (
                ":" + spec if spec else "") + "}"
            raise KanbanError(
                f"unknown placeholder {shown} in {where} argument {arg!r}",
                hint=f"known placeholders: {KNOWN}; {BRACES_HINT}",
            )
        names.append(name)
    return names


def check_placeholders(args: Sequence[str], where: str = "agent command") -> None:
    """Raise KanbanError for an unknown placeholder or a stray brace in any argument.

    For validating a configured `command` or `extra_args` before anything runs.
    """
    for arg in args:
        _fields(arg, where)


def _text(value) -> str:
    # A str-mixin Enum (kanban.model.Role) formats as "Role.TASK" on Python 3.11+.
    return str(value.value) if isinstance(value, Enum) else str(value)


def build_argv(agent, placeholders: Mapping[str, object]) -> list[str]:
    """The argv an agent config runs, with its placeholders filled in.

    A custom `command` replaces the preset; `extra_args` follow it. For a preset:
    its argv, then its model_args when agent.model is set, then extra_args, then
    its tail (the prompt, after "--"). Never a shell: each element stays one
    argument, and a value is inserted as it is, not parsed again.
    """
    preset = preset_for(agent)
    if preset is None:
        parts = [(list(agent.command), "agent command")]
    else:
        parts = [(list(preset.argv), f"preset {preset.name}")]
        if agent.model:
            parts.append((list(preset.model_args), f"preset {preset.name}"))
    parts.append((list(agent.extra_args), "extra_args"))
    if preset is not None:
        parts.append((list(preset.tail), f"preset {preset.name}"))

    values = {name: _text(value) for name, value in placeholders.items()}
    if agent.model:  # the config's model is what the preset's model_args name
        values["model"] = agent.model
    values.setdefault("model", "")
    argv: list[str] = []
    for args, where in parts:
        for arg in args:
            for name in _fields(arg, where):
                if name not in values:
                    raise KanbanError(f"placeholder {{{name}}} in {where} argument {arg!r} "
                                      "has no value here", hint=f"known placeholders: {KNOWN}")
            argv.append(arg.format_map(values))
    for arg in argv:
        size = len(arg.encode("utf-8", "surrogateescape"))
        if size > MAX_ARG_BYTES:
            raise KanbanError(
                f"an argument of the agent command is {size} bytes, over the "
                f"{MAX_ARG_BYTES + 1} bytes one argument may have",
                hint="shorten the task's description and notes, or use a command that "
                     "reads {prompt_file} instead of {prompt}",
            )
    return argv


# --- credentials ---------------------------------------------------------------


def _set(env: Mapping[str, str], pattern: str) -> bool:
    if any(c in pattern for c in "*?["):
        return any(v and fnmatch.fnmatchcase(k, pattern) for k, v in env.items())
    return bool(env.get(pattern))


def _home(env: Mapping[str, str]) -> Path | None:
    home = env.get("HOME") or os.environ.get("HOME")
    return Path(home) if home else None


def _exists(path: Path | None) -> bool:
    try:
        return path is not None and path.is_file()
    except OSError:
        return False


def _mentions(path: Path | None, words: Sequence[str]) -> bool:
    if not _exists(path):
        return False
    try:
        text = path.read_text(encoding="utf-8", errors="replace")  # type: ignore[union-attr]
    except OSError:
        return False
    return any(word in text for word in words)


def _has_option(args: Sequence[str], options: Sequence[str]) -> bool:
    return any(a == o or a.startswith(o + "=") for a in args for o in options)


def _claude_login(agent, env: Mapping[str, str]) -> bool:
    if sys.platform == "darwin":  # its login lives in the keychain, which we cannot see
        return True
    if _has_option(agent.extra_args, ("--settings",)):
        return True
    home = _home(env)
    config = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else (
        home / ".claude" if home else None)
    if config and _exists(config / ".credentials.json"):
        return True
    worktree = Path(env["KANBAN_WORKTREE"]) if env.get("KANBAN_WORKTREE") else None
    settings = [config / "settings.json" if config else None]
    if worktree:
        settings += [worktree / ".claude" / "settings.json",
                     worktree / ".claude" / "settings.local.json"]
    return any(_mentions(p, ("apiKeyHelper", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                             "CLAUDE_CODE_USE_")) for p in settings)


def _codex_login(agent, env: Mapping[str, str]) -> bool:
    if _has_option(agent.extra_args, ("--oss", "-c", "--config", "-p", "--profile")):
        return True
    home = _home(env)
    codex_home = Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else (
        home / ".codex" if home else None)
    if codex_home is None:
        return False
    return _exists(codex_home / "auth.json") or _mentions(
        codex_home / "config.toml", ("model_provider", "credentials_store", "env_key"))


def _aider_configured(agent, env: Mapping[str, str]) -> bool:
    if (agent.model or "").startswith(("ollama", "lm_studio")):
        return True  # a local model server needs no key
    if _has_option(agent.extra_args, ("--api-key", "--openai-api-key", "--anthropic-api-key",
                                      "--set-env", "--env-file", "--config", "-c")):
        return True
    home = _home(env)
    if home and _exists(home / ".aider" / "oauth-keys.env"):  # its OpenRouter login
        return True
    dirs = [home, Path(env["KANBAN_WORKTREE"]) if env.get("KANBAN_WORKTREE") else None]
    # .env and .aider.conf.yml are read from the home directory and the git root.
    return any(_mentions(d / ".env", ("API_KEY", "API_BASE", "VERTEXAI"))
               or _mentions(d / ".aider.conf.yml", ("api-key", "api_key", "api-base", "set-env"))
               for d in dirs if d is not None)


def missing_credentials(agent, env: Mapping[str, str]) -> str | None:
    """One line saying why the preset's CLI cannot work with this env, or None.

    None for a custom command, for the demo agent, and whenever a credential
    source is found (a key variable, a login file, a config naming a provider).
    `env` is the environment the agent will get.
    """
    preset = preset_for(agent)
    if preset is None:
        return None
    if preset.name == "claude" and _is_root() and env.get("IS_SANDBOX") != "1":
        return ("claude refuses --dangerously-skip-permissions when run as root; run kanban as "
                "a normal user, or, on a throwaway sandbox machine, export IS_SANDBOX=1 and add "
                "IS_SANDBOX to [env] allow")
    if not preset.required_env:
        return None
    if any(_set(env, name) for name in preset.required_env):
        return None
    if preset.credential_check and globals()[preset.credential_check](agent, env):
        return None
    names = ", ".join(preset.required_env)
    return f"{preset.name} has no credentials: none of {names} is set for it; {preset.hint}"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# --- cost ------------------------------------------------------------------------


def _json_lines(text: str):
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def parse_claude_cost(text: str) -> dict:
    """From the last {"type": "result"} line of claude -p --output-format (stream-)json."""
    result = None
    for obj in _json_lines(text):
        if obj.get("type") == "result":
            result = obj
    if result is None:
        return {"cost_usd": None, "tokens": None}
    tokens = None
    model_usage = result.get("modelUsage")
    if isinstance(model_usage, dict) and model_usage:  # every model, including helper calls
        keys = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens")
        tokens = sum(int(_number(u.get(k)) or 0) for u in model_usage.values()
                     if isinstance(u, dict) for k in keys)
    elif isinstance(result.get("usage"), dict):
        usage = result["usage"]
        keys = ("input_tokens", "output_tokens", "cache_read_input_tokens",
                "cache_creation_input_tokens")
        tokens = sum(int(_number(usage.get(k)) or 0) for k in keys)
    return {"cost_usd": _number(result.get("total_cost_usd")), "tokens": tokens}


def parse_codex_cost(text: str) -> dict:
    """Token usage summed over codex exec --json "turn.completed" events; codex prints no cost."""
    tokens = None
    for obj in _json_lines(text):
        if obj.get("type") == "turn.completed" and isinstance(obj.get("usage"), dict):
            usage = obj["usage"]
            # cached_input_tokens is part of input_tokens, reasoning part of output.
            tokens = (tokens or 0) + int(_number(usage.get("input_tokens")) or 0) + int(
                _number(usage.get("output_tokens")) or 0)
    return {"cost_usd": None, "tokens": tokens}


_AIDER_TOKENS = re.compile(
    r"^Tokens: ([\d.]+[kM]?) sent,(?: [\d.]+[kM]? cache write,)?(?: [\d.]+[kM]? cache hit,)?"
    r" ([\d.]+[kM]?) received\.", re.M)
_AIDER_COST = re.compile(r"Cost: \$([\d.]+) message, \$([\d.]+) session\.")


def _count(text: str) -> int:
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return round(float(text.rstrip("kM")) * scale)


def parse_aider_cost(text: str) -> dict:
    """From aider's lines "Tokens: 2.1k sent, 300 received. Cost: $0.01 message, $0.02 session."

    Tokens are summed over the lines (each reports one exchange, rounded as aider
    prints it); the cost is the last session total. No cost line when aider
    does not know the model's prices.
    """
    tokens = None
    for sent, received in _AIDER_TOKENS.findall(text):
        tokens = (tokens or 0) + _count(sent) + _count(received)
    costs = _AIDER_COST.findall(text)
    return {"cost_usd": float(costs[-1][1]) if costs else None, "tokens": tokens}


def parse_cost(preset_name: str, log_text: str) -> dict:
    """{"cost_usd": float | None, "tokens": int | None} from an agent's log, as far as known."""
    preset = PRESETS.get(preset_name)
    parser: Callable[[str], dict] | None = (
        globals()[preset.cost_parser] if preset and preset.cost_parser else None)
    if parser is None or not log_text:
        return {"cost_usd": None, "tokens": None}
    try:
        return parser(log_text)
    except (ValueError, TypeError, OverflowError):  # a mangled log never breaks the run
        return {"cost_usd": None, "tokens": None}

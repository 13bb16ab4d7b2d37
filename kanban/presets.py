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

PLACEHOLDERS = ("prompt_file", "prompt", "task_id", "role", "worktree", "model", "report_file", "run_dir")
KNOWN = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
BRACES_HINT = "write {{ and }} for a literal brace"

# Linux refuses (E2BIG) a single argv element longer than MAX_ARG_STRLEN,
# 32 pages = 128 KiB including the trailing NUL; {prompt} is the one at risk.
MAX_ARG_BYTES = 128 * 1024 - 1


@dataclass(frozen=True)
class SandboxDir:
    """A folder a CLI keeps its state in, for the sandbox (kanban.sandbox): bound read-write,
    made when missing. `where` is "~/.x" (under the agent's HOME) or "$VAR|~/.x" ($VAR when set).

    `readonly`: what inside it decides what the CLI runs or is told in any later session (settings
    with hooks, MCP servers, instructions, commands): read-only when present, and when absent it
    must stay so (one the agent creates is moved aside and fails the run): no agent leaves
    something behind for the person's own, unsandboxed, next session. `writable`: folders inside
    a read-only one that the CLI writes itself (made when missing).
    """

    where: str
    readonly: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()


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
    # Python regexes matching whole log lines that are not progress (retries, connection
    # errors), for the stall watchdog.
    idle_lines: tuple[str, ...] = ()
    # Name of a function (run_dir, worktree) -> env in this module that writes the files the
    # preset's argv names under {run_dir}; the env it returns overrides the agent's.
    prepare: str | None = None
    # Under [agent] sandbox = "bwrap": the CLI's own folders, found by running it sandboxed.
    sandbox: tuple[SandboxDir, ...] = ()


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
#   CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
#                                  no telemetry, error reporting or update checks: the API (or
#                                  ANTHROPIC_BASE_URL) is the only host it talks to.
#   CLAUDE_CODE_MAX_RETRIES=5      retries of a failed API request (default 10, read by the CLI,
#                                  not the SDK), sleeping 0.5, 1, 2, 4, 8 s (+ up to 25% jitter;
#                                  the sleeps double up to 32 s) between them.
#   API_TIMEOUT_MS=20000           how long each attempt waits for the response *headers* (default
#                                  300 s per attempt in claude-code 2.1.197, not the SDK's 600 s).
#                                  Measured: it does not cut a slow stream (a 19 s answer streamed
#                                  word by word passed with API_TIMEOUT_MS=5000), nor a stream
#                                  that went silent after its headers (that is the stream idle
#                                  watchdog's, at least 300 s, CLAUDE_STREAM_IDLE_TIMEOUT_MS can
#                                  only raise it). It does cap a non-streaming request (claude's
#                                  fallback after a broken stream) at 20 s; the person's own
#                                  API_TIMEOUT_MS wins (allow it in [env]).
# Measured without credentials: exits 1 within about 1 s, printing a result line with
# "is_error": true, "result": "Not logged in · Please run /login". As root without IS_SANDBOX=1
# it exits 1 at once ("--dangerously-skip-permissions cannot be used with root/sudo
# privileges"); IS_SANDBOX=true or =yes do not count.
# Measured with a key against a scripted server on 127.0.0.1 (tests/test_cli_real.py), time to
# exit 1 with a result line "is_error": true, before -> after these defaults:
#   server down (refused):  173 s (10 api_retry lines)             -> 19 s (5 api_retry lines);
#   HTTP 529 overloaded:    172 s                                  -> 19 s;
#   hung (never answers):   300 s per attempt x 11 (about 55 min)  -> 139 s (6 x 20 s + sleeps).
# A stream that stops after its headers still takes claude's own watchdog (5 min an attempt):
# the supervisor's stall watchdog ends it sooner, as api_retry lines are idle_lines.
CLAUDE = _register(Preset(
    name="claude",
    argv=("claude", "-p", "--output-format", "stream-json", "--verbose",
          "--dangerously-skip-permissions"),
    model_args=("--model", "{model}"),
    tail=("--", "{prompt}"),
    env=MappingProxyType({"DISABLE_AUTOUPDATER": "1",
                          "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
                          "CLAUDE_CODE_MAX_RETRIES": "5", "API_TIMEOUT_MS": "20000"}),
    required_env=("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN",
                  "CLAUDE_CODE_USE_BEDROCK", "CLAUDE_CODE_USE_VERTEX", "CLAUDE_CODE_USE_FOUNDRY"),
    credential_check="_claude_login",
    cost_parser="parse_claude_cost",
    hint="set ANTHROPIC_API_KEY, or run 'claude' once and log in",
    # stream-json lines that are not progress: a retry of a failed request, and the "requesting"
    # status it may print before an attempt. claude writes these keys first, in this order.
    idle_lines=(
        r'^\{"type":"system","subtype":"api_retry",.*\}$',
        r'^\{"type":"system","subtype":"status","status":"requesting"[,}].*$',
    ),
    # Sandboxed (measured, 2.1.197): it writes projects/, sessions/, session-env/, shell-snapshots/,
    # backups/ (and a refreshed .credentials.json) in ~/.claude, and $TMPDIR/claude-<uid>/ (the
    # private /tmp). ~/.claude.json stays read-only: its updates fail and claude carries on.
    sandbox=(SandboxDir("$CLAUDE_CONFIG_DIR|~/.claude",
                        readonly=("settings.json", "settings.local.json", "CLAUDE.md", "agents/", "commands/",
                                  "hooks/", "skills/", "output-styles/")),),
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
#   -c features.unbounded_connection_retries=false
#                                  (codex-cli 0.171.0) a request that cannot connect counts
#                                  against the retry limit instead of "Reconnecting... waiting for
#                                  network" forever. -c, not --disable: a codex that does not know
#                                  the feature ignores it with a warning, where --disable exits 2.
#                                  A later -c in extra_args wins (measured), to turn it back on.
# The built-in "openai" provider's other knobs cannot be set: model_providers.openai.* is
# refused ("reserved built-in provider IDs"), and a provider of our own would override the
# person's model_provider. So, fixed in 0.171.0: 4 request retries, 5 stream retries, 15 s per
# WebSocket connect, 300 s stream idle timeout, and no timeout at all on an HTTP request that
# never gets its response headers (stream_idle_timeout_ms of a custom provider does not cover
# it either: measured 300 s with 10000). It tries a WebSocket first (GET /v1/responses,
# Upgrade), then falls back to HTTPS POST with an item.completed "Falling back from WebSockets"
# line; the WebSocket transport cannot be disabled for the built-in provider (the
# responses_websockets features are "removed"), a custom provider has supports_websockets.
# Measured against a scripted server on 127.0.0.1 (-c openai_base_url=http://127.0.0.1:PORT/v1),
# time to exit, before -> after this flag:
#   server down (refused):  never (waiting for network; killed at 900 s) -> 31 s, exit 1;
#   HTTP 500:               31 s, exit 1 (5 WebSocket + 5 HTTPS reconnects, 37 requests) -> same;
#   hung (never answers):   never: 6 WebSocket connects of 15 s, then one POST that waits
#                           forever -> same; only the stall watchdog ends it (idle_lines).
CODEX = _register(Preset(
    name="codex",
    argv=("codex", "exec", "--json", "--dangerously-bypass-approvals-and-sandbox",
          "--ephemeral", "--color", "never", "-c", "features.unbounded_connection_retries=false"),
    model_args=("--model", "{model}"),
    tail=("--", "{prompt}"),
    required_env=("CODEX_API_KEY",),
    credential_check="_codex_login",
    cost_parser="parse_codex_cost",
    hint="set CODEX_API_KEY (codex exec ignores OPENAI_API_KEY), or run 'codex login'",
    # Lines that are not progress: exec --json reconnect events ({"type":"error","message":
    # "Reconnecting... 2/5 (...)"} and "Reconnecting... waiting for network (...)"), the
    # WebSocket-to-HTTPS fallback warning item, and codex's own stderr log lines about
    # WebSocket connects, stream retries and reconnects.
    idle_lines=(
        r'^\{"type":"error","message":"Reconnecting\.\.\..*\}$',
        r'^\{"type":"item\.(?:started|updated|completed)","item":\{"id":"[^"]*","type":"error",'
        r'"message":"Falling back from WebSockets to HTTPS transport\..*\}$',
        r"^\S+Z\s+(?:ERROR|WARN)\s+codex_api::endpoint::responses_websocket: .*$",
        r"^\S+Z\s+(?:ERROR|WARN|INFO)\s+codex_\w+(?:::\w+)*: .*(?i:reconnect|retrying|retry "
        r"the turn|waiting to retry|stream disconnected).*$",
    ),
    # Sandboxed (measured, 0.171.0): its sqlite files (state, logs, goals, memories, queue),
    # installation_id, shell_snapshots/, .tmp/ in $CODEX_HOME (default ~/.codex), and skills/,
    # where it deletes and reinstalls its own skills/.system/ at every start (so skills/ stays
    # writable); nothing else. config.toml (MCP servers, notify), AGENTS.md, rules and prompts
    # stay read-only (or absent).
    sandbox=(SandboxDir("$CODEX_HOME|~/.codex",
                        readonly=("config.toml", "AGENTS.md", "AGENTS.override.md", "rules/", "prompts/")),),
))  # fmt: skip

# aider: checked against `aider --help` and the source of aider-chat 0.86.2 (litellm 1.81.10).
#   --message-file {prompt_file}   send the prompt from the file, process the reply, exit.
#   --yes-always                   yes to every confirmation (it still says no to running shell
#                                  commands, which need an explicit yes). It also adds to the chat
#                                  every tracked file the prompt or a reply names: see --aiderignore.
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
#   --file {report_file}           the report in the chat, so the model may edit it; and
#   --add-gitignore-files          without this aider drops a --file that git ignores ("Skipping
#                                  ... that matches gitignore spec"), and refuses edits to it. It
#                                  lets in only the files named by --file: other ignored files stay
#                                  uneditable. aider then runs `git add` and `git commit -- <files>`
#                                  on every file it edited: git refuses the ignored report, and a
#                                  commit naming it fails whole, the real edit with it. The git
#                                  wrapper of prepare_aider_run (GIT_PYTHON_GIT_EXECUTABLE) drops
#                                  .kanban-run/ paths from those two commands; measured: the edit
#                                  is committed, the report never is.
#   --aiderignore {run_dir}/aiderignore
#                                  the board files (and the worktree's own .aiderignore) are
#                                  invisible to aider: not added to the chat when the prompt or a
#                                  reply names them, not in the repo map. The file replaces the
#                                  default .aiderignore, which prepare_aider_run copies into it.
#   --model-settings-file {run_dir}/aider.model.settings.yml
#                                  "aider/extra_params" max_retries: 0 for every model: no retries
#                                  inside the OpenAI client (2 by default), only aider's own loop.
#                                  It replaces an "aider/extra_params" entry of the person's own
#                                  settings files, and a model-settings-file set in .aider.conf.yml.
#   --timeout 30                   seconds for connecting and for each read, so, when streaming,
#                                  the longest silence allowed (a model thinking without
#                                  streaming anything counts); default 600.
#   --model {model}                a litellm model name, e.g. "sonnet", "gpt-4o",
#                                  "openai/<name>" for an OpenAI-compatible OPENAI_API_BASE.
#   BROWSER=true                   anything that wants to open a web page opens nothing.
#   COLUMNS=10000                  aider's console wraps its messages at 80 columns when not on a
#                                  terminal; unwrapped, each error or token line is one log line.
# aider commits its own edits (auto-commits). It exits 0 even when it fails (no key, server
# down, HTTP errors): success must be judged from git and the report's verdict. It still writes
# the repo-map cache .aider.tags.cache.v4/ into the worktree, untracked.
# Retries: aider retries a failed request (connection refused, 5xx, 429, timeout) 8 times,
# sleeping 0.25, 0.5, ... 32 s: 9 tries and 64 s of sleep, fixed in its code (RETRY_TIMEOUT).
# Measured (2 cores, scripted server on 127.0.0.1): start-up to the first request 7 s alone,
# 15-30 s with two or three aiders starting at once; then, before -> after these flags:
#   server down (refused):  ~90 s in all (27 connection attempts) -> ~74 s in all;
#   HTTP 503:               27 requests, ~90 s in all -> 9 requests, 65 s after start-up;
#   hung (never answers):   3 x 600 s per try, 9 tries (hours) -> 9 x 30 s + 64 s = 336 s after
#                           start-up (352 s in all). About two minutes would need --timeout 5
#                           (measured: 110 s after start-up), which fails slow real models
#                           (silent reasoning, a local model loading) and pays for up to 9
#                           abandoned requests; the stall watchdog (idle_lines) ends a hang
#                           sooner. A person changes it with extra_args ["--timeout", "N"].
# With neither key nor model it offers an OpenRouter login and waits up to 5 minutes for a
# browser (missing_credentials stops that before launch); with a model but no key it exits 0
# after its start-up.
AIDER_BOARD_FILES = ("TODO.md", "IN_PROGRESS.md", "REVIEW.md", "TESTING.md", "CHANGELOG.md")
AIDER = _register(Preset(
    name="aider",
    argv=("aider", "--message-file", "{prompt_file}", "--yes-always", "--no-check-update",
          "--no-analytics", "--no-show-release-notes", "--no-show-model-warnings",
          "--no-gitignore", "--no-fancy-input", "--no-pretty", "--no-dirty-commits",
          "--no-detect-urls", "--disable-playwright", "--no-suggest-shell-commands",
          "--chat-history-file", os.devnull, "--input-history-file", os.devnull,
          "--file", "{report_file}", "--add-gitignore-files",
          "--aiderignore", "{run_dir}/aiderignore",
          "--model-settings-file", "{run_dir}/aider.model.settings.yml",
          "--timeout", "30"),
    model_args=("--model", "{model}"),
    env=MappingProxyType({"BROWSER": "true", "COLUMNS": "10000", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}),
    required_env=("*_API_KEY", "AIDER_API_KEY", "OLLAMA_API_BASE", "VERTEXAI_PROJECT",
                  "AWS_BEARER_TOKEN_BEDROCK"),
    credential_check="_aider_configured",
    cost_parser="parse_aider_cost",
    prepare="prepare_aider_run",
    hint="set the API key of the model's provider (e.g. ANTHROPIC_API_KEY or OPENAI_API_KEY) "
         "and allow it in [env]",
    # What aider prints while it retries (base_coder.send_message, Model.simple_send_with_retries):
    # "litellm.<Error>: ..." (str of the exception), then its description, then "Retrying in
    # 0.2 seconds...". Progress lines (the reply, "Applied edit to", "Commit", "Tokens:") differ.
    idle_lines=(
        r"Retrying in \d+(?:\.\d+)? seconds\.\.\.",
        r"litellm\.\w+: .*",
        r"The API provider(?:'s servers are down or overloaded| timed out without returning a "
        r"response\. They may be down or overloaded| has rate limited you\. Try again later or "
        r"check your quotas| has refused the request due to a safety policy about the content)\.",
        r"OpenRouter or the upstream API provider is down, overloaded or rate limiting your "
        r"requests\.",
    ),
    # Sandboxed (measured, 0.86.2): ~/.aider/ (analytics.json, installs.json, caches/) and its
    # .aider.tags.cache.v4/ in the worktree. ~/.aider.conf.yml, ~/.env and the model settings
    # files in HOME stay read-only (HOME is); so does oauth-keys.env, a key the person's own
    # aider would use next.
    sandbox=(SandboxDir("~/.aider", readonly=("oauth-keys.env",)),),
))  # fmt: skip

# The git aider runs (GIT_PYTHON_GIT_EXECUTABLE): git itself, except that paths in .kanban-run/
# are dropped from `git add` and from the paths after "--" of `git commit`; a commit left with
# none of its paths fails as git would for "nothing to commit" (aider: "Unable to commit").
AIDER_GIT = r"""#!/bin/sh
# Written by kanban for aider: see AIDER_GIT in kanban/presets.py.
case "$1" in
add | commit) ;;
*) exec git "$@" ;;
esac
command=$1
shift
paths=no message=no kept=no dropped=no
for arg do
  shift
  if [ "$message" = yes ]; then
    message=no
  elif [ "$command" = add ] || [ "$paths" = yes ]; then
    case "$arg" in
    .kanban-run/* | */.kanban-run/*) dropped=yes; continue ;;
    esac
    kept=yes
  elif [ "$arg" = -- ]; then
    paths=yes
  elif [ "$arg" = -m ]; then
    message=yes
  fi
  set -- "$@" "$arg"
done
if [ "$dropped" = yes ] && [ "$kept" = no ]; then
  [ "$command" = add ] && exit 0
  echo "nothing to commit: only kanban's report changed" >&2
  exit 1
fi
exec git "$command" "$@"
"""

AIDER_MODEL_SETTINGS = """\
# Written by kanban: no retries inside litellm's OpenAI client; aider's own retries remain.
- name: aider/extra_params
  extra_params:
    max_retries: 0
"""


def prepare_aider_run(run_dir: Path, worktree: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write the files the aider preset names under {run_dir}; return the environment it needs.

    aiderignore: the worktree's own .aiderignore, then the board files (root-anchored);
    aider.model.settings.yml: AIDER_MODEL_SETTINGS; aider-git: AIDER_GIT, executable.
    The returned {"GIT_PYTHON_GIT_EXECUTABLE": <run_dir>/aider-git} must reach aider.
    """
    own = worktree / ".aiderignore"
    try:
        text = own.read_text(encoding="utf-8", errors="replace") if (
            own.is_file() and not own.is_symlink()) else ""
    except OSError:
        text = ""
    if text and not text.endswith("\n"):
        text += "\n"
    text += "# kanban's board files\n" + "".join(f"/{name}\n" for name in AIDER_BOARD_FILES)
    files = {"aiderignore": (text, 0o644), "aider.model.settings.yml": (AIDER_MODEL_SETTINGS, 0o644),
             "aider-git": (AIDER_GIT, 0o755)}
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, (content, mode) in files.items():
        path = run_dir / name
        if path.is_symlink() or path.exists():
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with open(fd, "w", encoding="utf-8") as out:
            out.write(content)
        os.chmod(path, mode)  # whatever the umask
    return {"GIT_PYTHON_GIT_EXECUTABLE": str(run_dir / "aider-git"), **_git_identity(env or {})}


def _git_identity(env: Mapping[str, str]) -> dict[str, str]:
    """user.name/user.email as command-scope git config, from the GIT_AUTHOR_* the agent gets.

    aider reads `git config --get user.name` and, finding none (an identity given only by
    environment, as in CI), writes "Your Name" into the repository's shared .git/config, where
    the person's own later commits would pick it up. Given here, it finds one and writes nothing.
    """
    found = [(key, env.get(var) or env.get(var.replace("AUTHOR", "COMMITTER")))
             for key, var in (("user.name", "GIT_AUTHOR_NAME"), ("user.email", "GIT_AUTHOR_EMAIL"))]
    pairs = [(key, value) for key, value in found if value]
    if not pairs or env.get("GIT_CONFIG_COUNT"):  # the person's own command-scope config stays
        return {}
    out = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for i, (key, value) in enumerate(pairs):
        out[f"GIT_CONFIG_KEY_{i}"], out[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return out


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


def prepare_run(agent, run_dir: Path, worktree: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Write what the agent's preset needs in its run directory; the environment it must get."""
    preset = preset_for(agent)
    if preset is None or preset.prepare is None:
        return {}
    return globals()[preset.prepare](run_dir, worktree, env or {})


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
    its argv, then its model_args when a model is set, then extra_args, then
    its tail (the prompt, after "--"). The model is placeholders["model"] when
    given and non-empty (a rung of the model ladder, config.model_for), else
    agent.model. Never a shell: each element stays one argument, and a value is
    inserted as it is, not parsed again.
    """
    model = _text(placeholders.get("model") or "") or agent.model or ""
    preset = preset_for(agent)
    if preset is None:
        parts = [(list(agent.command), "agent command")]
    else:
        parts = [(list(preset.argv), f"preset {preset.name}")]
        if model:
            parts.append((list(preset.model_args), f"preset {preset.name}"))
    parts.append((list(agent.extra_args), "extra_args"))
    if preset is not None:
        parts.append((list(preset.tail), f"preset {preset.name}"))

    values = {name: _text(value) for name, value in placeholders.items()}
    values["model"] = model  # what the preset's model_args name
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
    # -c/--config and -p/--profile tune codex (model, provider URL, timeouts): they are no key.
    if _has_option(agent.extra_args, ("--oss",)):
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


def _tokens(value) -> int:
    number = _number(value)
    return int(number) if number is not None and number > 0 and number < 1e15 else 0


def _cost(cost_usd=None, input_tokens=None, output_tokens=None, cached=0, written=0,
          model=None) -> dict:
    """One shape for every parser: input_tokens counts all prompt tokens, the cached
    (cache reads) and cache-written ones included; tokens is input + output."""
    known = input_tokens is not None or output_tokens is not None
    return {
        "cost_usd": cost_usd,
        "tokens": (input_tokens or 0) + (output_tokens or 0) if known else None,
        "input_tokens": input_tokens if known else None,
        "output_tokens": output_tokens if known else None,
        "cached_input_tokens": cached if known else None,
        "cache_write_tokens": written if known else None,
        "model": model,
    }


def _claude_model(name) -> str | None:
    return re.sub(r"\[[^\]]*\]$", "", name) if isinstance(name, str) and name.strip() else None


def parse_claude_cost(text: str) -> dict:
    """From the last {"type": "result"} line of claude -p --output-format (stream-)json.

    Without one (the agent was killed, or is still running), an estimate from the
    usage of its assistant messages so far: no dollar figure, and their output
    counts can lag behind (the table prices them).
    """
    result = None
    messages: dict[str, dict] = {}  # message id -> its latest usage and model
    for obj in _json_lines(text):
        if obj.get("type") == "result":
            result = obj
        elif obj.get("type") == "assistant" and isinstance(obj.get("message"), dict):
            message = obj["message"]
            if isinstance(message.get("usage"), dict):
                messages[str(message.get("id") or len(messages))] = message
    if result is None:
        if not messages:
            return _cost()
        usages = [m["usage"] for m in messages.values()]
        models = [m.get("model") for m in messages.values() if isinstance(m.get("model"), str)]
        cached = sum(_tokens(u.get("cache_read_input_tokens")) for u in usages)
        written = sum(_tokens(u.get("cache_creation_input_tokens")) for u in usages)
        return _cost(None, sum(_tokens(u.get("input_tokens")) for u in usages) + cached + written,
                     sum(_tokens(u.get("output_tokens")) for u in usages), cached, written,
                     _claude_model(max(models, key=models.count)) if models else None)
    cost = _number(result.get("total_cost_usd"))
    model_usage = result.get("modelUsage")
    if isinstance(model_usage, dict) and model_usage:  # every model, including helper calls
        per_model = {name: u for name, u in model_usage.items() if isinstance(u, dict)}
        cached = sum(_tokens(u.get("cacheReadInputTokens")) for u in per_model.values())
        written = sum(_tokens(u.get("cacheCreationInputTokens")) for u in per_model.values())
        inputs = sum(_tokens(u.get("inputTokens")) for u in per_model.values()) + cached + written
        main = max(per_model, key=lambda n: _tokens(per_model[n].get("outputTokens")), default=None)
        return _cost(cost, inputs, sum(_tokens(u.get("outputTokens")) for u in per_model.values()),
                     cached, written, _claude_model(main))
    if isinstance(result.get("usage"), dict):
        usage = result["usage"]
        cached = _tokens(usage.get("cache_read_input_tokens"))
        written = _tokens(usage.get("cache_creation_input_tokens"))
        return _cost(cost, _tokens(usage.get("input_tokens")) + cached + written,
                     _tokens(usage.get("output_tokens")), cached, written)
    return {**_cost(), "cost_usd": cost}


def parse_codex_cost(text: str) -> dict:
    """Token usage summed over codex exec --json "turn.completed" events; codex prints no cost.

    Its input_tokens include cached_input_tokens (and cache writes); output_tokens
    include the reasoning tokens.
    """
    inputs = outputs = cached = written = None
    model = None
    for obj in _json_lines(text):
        if isinstance(obj.get("model"), str) and obj["model"].strip():
            model = obj["model"]
        if obj.get("type") == "turn.completed" and isinstance(obj.get("usage"), dict):
            usage = obj["usage"]
            inputs = (inputs or 0) + _tokens(usage.get("input_tokens"))
            outputs = (outputs or 0) + _tokens(usage.get("output_tokens"))
            cached = (cached or 0) + _tokens(usage.get("cached_input_tokens"))
            written = (written or 0) + _tokens(usage.get("cache_write_input_tokens"))
    return _cost(None, inputs, outputs, cached or 0, written or 0, model)


_AIDER_TOKENS = re.compile(
    r"^Tokens: ([\d.]+[kM]?) sent,(?: ([\d.]+[kM]?) cache write,)?(?: ([\d.]+[kM]?) cache hit,)?"
    r" ([\d.]+[kM]?) received\.", re.M)
_AIDER_COST = re.compile(r"Cost: \$([\d.]+) message, \$([\d.]+) session\.")
_AIDER_MODEL = re.compile(r"^(?:Main model|Model): (\S+)", re.M)


def _count(text: str) -> int:
    scale = {"k": 1_000, "M": 1_000_000}.get(text[-1], 1)
    return round(float(text.rstrip("kM")) * scale)


def parse_aider_cost(text: str) -> dict:
    """From aider's lines "Tokens: 2.1k sent, 300 received. Cost: $0.01 message, $0.02 session."

    Tokens are summed over the lines (each reports one exchange, rounded as aider
    prints it); "sent" is every prompt token, the "cache write" and "cache hit"
    ones among them. The cost is the last session total; there is no cost line
    when aider does not know the model's prices. The model is the one aider
    names at its start ("Model: openai/gpt-4o-mini with whole edit format").
    """
    inputs = outputs = None
    cached = written = 0
    for sent, write, hit, received in _AIDER_TOKENS.findall(text):
        inputs = (inputs or 0) + _count(sent)
        outputs = (outputs or 0) + _count(received)
        written += _count(write) if write else 0
        cached += _count(hit) if hit else 0
    costs = _AIDER_COST.findall(text)
    models = _AIDER_MODEL.findall(text)
    return _cost(float(costs[-1][1]) if costs else None, inputs, outputs, cached, written,
                 models[-1] if models else None)


_UNKNOWN = {"cost_usd": None, "tokens": None, "input_tokens": None, "output_tokens": None,
            "cached_input_tokens": None, "cache_write_tokens": None, "model": None}


def parse_cost(preset_name: str, log_text: str) -> dict:
    """What an agent's log says about its cost, as far as known (None: unknown).

    {"cost_usd", "tokens", "input_tokens", "output_tokens", "cached_input_tokens",
    "cache_write_tokens", "model"}: tokens = input_tokens + output_tokens, and
    input_tokens includes the cached and cache-written prompt tokens. cost_usd is
    the CLI's own figure; kanban.pricing.price_run prices the others.
    """
    preset = PRESETS.get(preset_name)
    parser: Callable[[str], dict] | None = (
        globals()[preset.cost_parser] if preset and preset.cost_parser else None)
    if parser is None or not log_text:
        return dict(_UNKNOWN)
    try:
        return parser(log_text)
    except (ValueError, TypeError, OverflowError, AttributeError):  # a mangled log never breaks the run
        return dict(_UNKNOWN)


# --- what went wrong, in the CLI's own words -------------------------------------------------------


def cli_error(preset_name: str, log_text: str) -> str | None:
    """The error a CLI reported in its structured output, for the failure note, or None.

    claude: the last {"type": "result", "is_error": true} line's "result"; codex: the last
    "turn.failed" or "error" event's message. One line, at most 300 characters.
    """
    message = None
    for obj in _json_lines(log_text):
        if preset_name == "claude" and obj.get("type") == "result" and obj.get("is_error"):
            message = obj.get("result") or obj.get("subtype")
        elif preset_name == "codex" and obj.get("type") == "turn.failed":
            error = obj.get("error")
            message = error.get("message") if isinstance(error, dict) else error
    if not isinstance(message, str) or not message.strip():
        return None
    line = " ".join(message.split())
    return line if len(line) <= 300 else line[:299] + "…"

"""Load and validate `kanban.toml` (or `[tool.kanban]` in pyproject.toml).

Pure apart from reading those two files. Every problem becomes one
KanbanError naming the file, the line, the full dotted key and a hint.
"""

from __future__ import annotations

import fnmatch
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from kanban.budget import LIMIT_HINT, BudgetConfig, Limit, parse_limit
from kanban.errors import KanbanError
from kanban.events import NOTIFY_KINDS
from kanban.model import Role
from kanban.pricing import Price

CONFIG_FILE = "kanban.toml"
PYPROJECT_FILE = "pyproject.toml"
PYPROJECT_PREFIX = ("tool", "kanban")

PRESETS = ("claude", "codex", "aider", "demo")
MERGE_MODES = ("serial", "batch")
ROLES = tuple(role.value for role in Role)  # the pipeline's roles, one per active column
PLANNER = "planner"  # the agent of `kanban plan`: a role of its own, outside the pipeline
AGENT_ROLES = (*ROLES, PLANNER)  # every [agent.<role>] table

DURATION_HINT = 'use a duration like "15m", "90s" or "1h30m"'
ARGV_HINT = 'write a command as a list of strings, e.g. ["npm", "ci"]'
MAX_DURATION = 30 * 24 * 3600.0  # 30 days: anything longer is a typo

DEFAULT_ENV_ALLOW = (
    "PATH", "HOME", "LANG", "LC_*", "TERM", "USER", "LOGNAME", "SHELL", "TMPDIR", "TZ",
    "PYTHONPATH", "VIRTUAL_ENV", "NODE_PATH",
    "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL",
    "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_API_BASE", "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL", "CLAUDE_CODE_*", "CODEX_*", "AIDER_*",
    # Credentials the agent CLIs read, named literally so the *_TOKEN deny rule does not drop them.
    "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "CODEX_ACCESS_TOKEN",
    "GEMINI_API_KEY", "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY", "MISTRAL_API_KEY",
    "IS_SANDBOX",  # claude refuses to skip permissions as root unless IS_SANDBOX=1
    "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
    # Proxies (both spellings: curl and Python read the lower case, Node the upper).
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy",
    "all_proxy", "NODE_EXTRA_CA_CERTS",
    # The CLIs' own tuning: request timeouts, models, headers, litellm's settings for aider.
    "API_TIMEOUT_MS", "ANTHROPIC_MODEL", "ANTHROPIC_SMALL_FAST_MODEL", "ANTHROPIC_CUSTOM_HEADERS",
    "OPENAI_ORGANIZATION", "LITELLM_*",
)  # fmt: skip
DEFAULT_ENV_DENY = ("*_TOKEN", "*SECRET*", "*PASSWORD*", "AWS_*", "GITHUB_TOKEN")
MODEL_CREDENTIALS = (
    "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN", "CODEX_ACCESS_TOKEN",
    "CODEX_API_KEY", "GEMINI_API_KEY", "OPENROUTER_API_KEY", "DEEPSEEK_API_KEY", "MISTRAL_API_KEY",
)  # fmt: skip
CHECK_DENY = ("*_API_KEY", "*_AUTH_TOKEN", "*OAUTH*")


@dataclass(frozen=True)
class AgentConfig:
    preset: str = "claude"
    command: tuple[str, ...] | None = None  # overrides the preset when set
    timeout: float = 900.0
    stall: float = 300.0
    model: str | None = None  # the only model, or the first of the ladder
    extra_args: tuple[str, ...] = ()
    kill_grace: float = 5.0
    # Stopped when its log has shown only its CLI's retry/reconnect lines for this long
    # (a dead, failing or hung model API), instead of at the stall or the timeout.
    retry_limit: float = 60.0
    models: tuple[str, ...] = ()  # a ladder of two or more (model = [...]): see model_for
    sandbox: str = "none"  # "bwrap": the agent runs in bubblewrap (kanban.sandbox)


def model_for(agent: AgentConfig, attempt: int) -> str | None:
    """The model of an attempt (1, 2, ...): the ladder's rung, its last one repeating.

    For model = "x": always "x"; for model = ["haiku", "sonnet"]: attempt 1 haiku,
    attempt 2 and later sonnet; without a model: None (the CLI's default).
    """
    ladder = agent.models or ((agent.model,) if agent.model else ())
    if not ladder:
        return None
    return ladder[min(max(int(attempt), 1), len(ladder)) - 1]


@dataclass(frozen=True)
class WorktreeConfig:
    copy: tuple[str, ...] = ()
    setup: tuple[tuple[str, ...], ...] = ()  # argv per command, run in order
    # A merged task's worktree is parked (detached, ignored files kept) for the next pick.
    reuse: bool = True
    keep_idle: int | None = None  # parked worktrees kept at most; None: pool_size
    setup_inputs: tuple[str, ...] = ()  # git glob pathspecs; empty: every tracked file

    def idle_limit(self, pool_size: int) -> int:
        """How many parked worktrees to keep: 0 when reuse is off."""
        if not self.reuse:
            return 0
        return pool_size if self.keep_idle is None else self.keep_idle


@dataclass(frozen=True)
class MergeConfig:
    mode: str = "serial"
    verify: tuple[str, ...] = ()
    push: bool = False
    remote: str = "origin"
    verify_timeout: float = 1800.0
    # A branch that changes kanban.toml, [tool.kanban] or prompts/ is held for a person unless this is true.
    allow_config_changes: bool = False
    parallel: int = 1  # verifications at once (serial mode: each on top of the ones ahead of it)
    verify_retries: int = 1  # a failing verification runs again this often before it counts


@dataclass(frozen=True)
class TestConfig:
    """The test stage kanban runs itself in the task's worktree (empty command: the tester decides)."""

    command: tuple[str, ...] = ()  # an element "{tests}" becomes the covering test files
    fallback: tuple[str, ...] = ()  # when no covering test is found; default: command without {tests}
    timeout: float = 900.0
    stall: float | None = None

    def argv(self, tests: list[str]) -> list[str]:
        """The command for these covering tests (the fallback when there are none)."""
        if tests:
            return [part for arg in self.command for part in (tests if arg == TESTS_PLACEHOLDER else [arg])]
        if self.fallback:
            return list(self.fallback)
        return [arg for arg in self.command if arg != TESTS_PLACEHOLDER]

    def shown(self) -> str:
        """The command as the prompts name it."""
        return " ".join(self.command)


TESTS_PLACEHOLDER = "{tests}"


@dataclass(frozen=True)
class NotifyConfig:
    """`[notify]`: a command run when a person should know (an escalation, a blocked queue, ...)."""

    command: tuple[str, ...] = ()  # argv; {event} {task} {title} {summary} filled in; () = off
    events: tuple[str, ...] = NOTIFY_KINDS  # which kinds run it
    timeout: float = 10.0

    def wants(self, kind: str) -> bool:
        return bool(self.command) and kind in self.events


@dataclass(frozen=True)
class ServiceCheck:
    name: str
    url: str | None = None
    tcp: str | None = None  # "host:port"
    command: tuple[str, ...] | None = None
    timeout: float = 3.0


@dataclass(frozen=True)
class EnvConfig:
    """Which environment variables agents get: glob patterns over names."""

    allow: tuple[str, ...] = DEFAULT_ENV_ALLOW
    deny: tuple[str, ...] = DEFAULT_ENV_DENY
    check_allow: tuple[str, ...] | None = None  # None: the agents' allow, without model credentials
    check_deny: tuple[str, ...] | None = None

    def permits(self, name: str) -> bool:
        """Deny wins over allow, except for names listed literally in allow."""
        if name in self.allow:
            return True
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in self.deny):
            return False
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.allow)

    def filter(self, environ: Mapping[str, str]) -> dict[str, str]:
        return {name: value for name, value in environ.items() if _permitted(self, name)}

    def for_checks(self) -> EnvConfig:
        """The verify and test commands' own lists: `check_allow`/`check_deny` when given, else the
        agents' lists without the model-API credentials (a branch's test has no use for them, and
        whatever it prints lands on the board)."""
        allow = self.check_allow if self.check_allow is not None else tuple(
            p for p in self.allow if p not in MODEL_CREDENTIALS)
        deny = self.check_deny if self.check_deny is not None else self.deny + CHECK_DENY
        return EnvConfig(allow=allow, deny=deny)


EXECUTOR_KINDS = ("local", "ray")
RUN_KINDS = ("task", "reviewer", "tester", "test", "verify")  # what [executor.<kind>] may tune


@dataclass(frozen=True)
class Placement:
    """What one kind of run asks of a Ray node: CPUs, memory in bytes, custom resources."""

    num_cpus: float | None = None
    memory: int | None = None
    resources: tuple[tuple[str, float], ...] = (("agent_slot", 1.0),)


@dataclass(frozen=True)
class ExecutorConfig:
    """`[executor]`: where runs go. "local" (the default) needs nothing; "ray" needs `pip install 'kanban[ray]'`."""

    kind: str = "local"
    address: str = "auto"  # "auto" (RAY_ADDRESS, else the local cluster) or the dashboard's http:// address
    remote: str = ""  # the shared git remote the runs travel through (any git URL); required for "ray"
    workspace: str = "/tmp/kanban-ray"  # on each worker node: the warm clones and node-local run directories
    python: str = "python3"  # the worker's Python that has kanban installed
    infra_retries: int = 2  # a run the cluster lost is submitted again this often, never a strike
    secrets: tuple[str, ...] = ()  # more variable names passed by name only (the workers hold the values)
    secret_dir: str = ""  # on the workers: a directory of files named like the variables (a secret store mount)
    send_secrets: bool = False  # true: values travel in the job's metadata (the dashboard shows them)
    pool: dict[str, int] = field(default_factory=dict)  # at most this many runs of one kind at once
    placement: dict[str, Placement] = field(default_factory=dict)  # per kind of run; default Placement()

    def placement_for(self, kind: str) -> Placement:
        return self.placement.get(kind, self.placement.get("default", Placement()))


@dataclass(frozen=True)
class Config:
    main_branch: str = "main"
    pool_size: int = 6
    worktree_dir: str = ".worktrees"
    port_base: int = 20000
    agent: AgentConfig = field(default_factory=AgentConfig)
    roles: dict[str, AgentConfig] = field(default_factory=dict)
    worktree: WorktreeConfig = field(default_factory=WorktreeConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    test: TestConfig = field(default_factory=TestConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    checks: tuple[ServiceCheck, ...] = ()
    source: str | None = None  # the file it came from; None for defaults
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    pricing: dict[str, Price] = field(default_factory=dict)  # [pricing."model"], keys lowercased
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)

    def __post_init__(self) -> None:
        # Roles not given explicitly take the [agent] defaults.
        object.__setattr__(self, "roles", {**{r: self.agent for r in AGENT_ROLES}, **self.roles})

    def agent_for(self, role: str | Role) -> AgentConfig:
        name = role.value if isinstance(role, Role) else role
        if name not in self.roles:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(AGENT_ROLES)}")
        return self.roles[name]


_PERMITTED: dict[tuple[EnvConfig, str], bool] = {}


def _permitted(env: EnvConfig, name: str) -> bool:
    """`env.permits(name)`, remembered: every agent start filters the same environment."""
    key = (env, name)
    found = _PERMITTED.get(key)
    if found is None:
        if len(_PERMITTED) > 20000:
            _PERMITTED.clear()
        found = _PERMITTED[key] = env.permits(name)
    return found


# --- durations ---------------------------------------------------------------

_NUM = r"(\d+(?:\.\d+)?)"
_DURATION_RE = re.compile(rf"(?:{_NUM}h)?(?:{_NUM}m(?!s))?(?:{_NUM}s)?(?:{_NUM}ms)?")
_UNIT_SECONDS = (3600.0, 60.0, 1.0, 0.001)


def parse_duration(
    text: str | int | float, *, key: str, file: str, line: int | None = None
) -> float:
    """Seconds from 900, 2.5, "15m", "90s", "1h30m", "500ms" or "2.5s"."""

    def fail(message: str) -> KanbanError:
        return KanbanError(message, file=file, line=line, hint=DURATION_HINT)

    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise fail(f"{key} must be a duration, got {_describe(text)}")
    if isinstance(text, str):
        match = _DURATION_RE.fullmatch(text)
        if not match or not any(match.groups()):
            raise fail(f"{key} must be a duration, got {_describe(text)}")
        seconds = sum(
            float(n) * unit for n, unit in zip(match.groups(), _UNIT_SECONDS) if n
        )
    elif isinstance(text, int) and abs(text) > MAX_DURATION:
        seconds = math.inf if text > 0 else -math.inf  # float() would overflow
    else:
        seconds = float(text)
    if math.isnan(seconds) or seconds <= 0:
        raise fail(f"{key} must be a positive duration, got {_describe(text)}")
    if seconds > MAX_DURATION:
        raise fail(f"{key} must be at most 30 days, got {_describe(text)}")
    return seconds


def _describe(value: Any) -> str:
    """How a found value is named in messages: "six", true, 3.5, a list."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return '"' + _printable(shown.replace("\\", "\\\\").replace('"', '\\"')) + '"'
    if isinstance(value, (int, float)):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def _printable(text: str) -> str:
    """Escape newlines and other control characters: errors are one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- finding the line of a key in the raw text ------------------------------

_KEY = r"""(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')"""
_KEY_PATH = rf"{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*"
_ARRAY_TABLE_RE = re.compile(rf"[ \t]*\[\[[ \t]*({_KEY_PATH})[ \t]*\]\]")
_TABLE_RE = re.compile(rf"[ \t]*\[[ \t]*({_KEY_PATH})[ \t]*\]")
_ASSIGN_RE = re.compile(rf"[ \t]*({_KEY_PATH})[ \t]*=")
_KEY_PART_RE = re.compile(_KEY)

KeyPath = tuple[str | int, ...]  # ints index [[array.tables]]


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(_unquote(m.group()) for m in _KEY_PART_RE.finditer(text))


def _unquote(part: str) -> str:
    if part[0] == '"' and "\\" in part:
        try:  # let tomllib decode the escapes
            return next(iter(tomllib.loads(f"{part} = 0")))
        except (ValueError, StopIteration):
            return part[1:-1]
    return part[1:-1] if part[0] in "\"'" else part


def _scan(text: str, open_string: str | None, depth: int) -> tuple[str | None, int]:
    """Carry multi-line string and bracket state over one line of a value."""
    i, n = 0, len(text)
    while i < n:
        if open_string:
            if open_string == '"""' and text[i] == "\\":
                i += 2
            elif text.startswith(open_string, i):
                i, open_string = i + 3, None
            else:
                i += 1
            continue
        char = text[i]
        if char == "#":
            break
        if text.startswith('"""', i) or text.startswith("'''", i):
            open_string, i = text[i : i + 3], i + 3
            continue
        if char in "\"'":
            i += 1
            while i < n and text[i] != char:
                i += 2 if char == '"' and text[i] == "\\" else 1
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth = max(0, depth - 1)
        i += 1
    return open_string, depth


def _line_index(text: str) -> dict[KeyPath, int]:
    """Map every key and table path in a valid TOML text to its first line."""
    index: dict[KeyPath, int] = {}
    arrays: dict[KeyPath, int] = {}  # [[array.table]] path -> times seen

    def resolve(parts: tuple[str, ...]) -> KeyPath:
        path: KeyPath = ()
        for part in parts:
            path += (part,)
            if path in arrays:
                path += (arrays[path] - 1,)
        return path

    def record(path: KeyPath, lineno: int) -> None:
        for end in range(1, len(path) + 1):
            index.setdefault(path[:end], lineno)

    table: KeyPath = ()
    open_string, depth = None, 0
    for lineno, line in enumerate(text.split("\n"), 1):
        rest = line
        if open_string is None and depth == 0:
            if match := _ARRAY_TABLE_RE.match(line):
                parts = _split_key(match.group(1))
                name = resolve(parts[:-1]) + parts[-1:]
                arrays[name] = arrays.get(name, 0) + 1
                table = name + (arrays[name] - 1,)
                record(table, lineno)
                continue
            if match := _TABLE_RE.match(line):
                table = resolve(_split_key(match.group(1)))
                record(table, lineno)
                continue
            if match := _ASSIGN_RE.match(line):
                record(table + _split_key(match.group(1)), lineno)
                rest = line[match.end() :]
        open_string, depth = _scan(rest, open_string, depth)
    return index


# --- validation --------------------------------------------------------------

TOP_KEYS = ("main_branch", "pool_size", "worktree_dir", "port_base", "agent", "worktree", "merge", "test", "env",
            "preflight", "budget", "pricing", "notify", "executor")  # fmt: skip
EXECUTOR_KEYS = ("kind", "address", "remote", "workspace", "python", "infra_retries", "secrets", "secret_dir",
                 "send_secrets", "pool") + RUN_KINDS + ("default",)
EXECUTOR_POOL_KEYS = RUN_KINDS
PLACEMENT_KEYS = ("num_cpus", "memory", "resources")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESOURCE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
BUDGET_KEYS = ("task", "run", "day")
PRICE_KEYS = ("input", "output", "cached_input", "cache_write")
MODEL_HINT = 'e.g. model = "sonnet", or a ladder model = ["haiku", "sonnet"]'
AGENT_KEYS = ("preset", "command", "timeout", "stall", "model", "extra_args", "kill_grace", "retry_limit",
              "sandbox")
WORKTREE_KEYS = ("copy", "setup", "reuse", "keep_idle", "setup_inputs")
MERGE_KEYS = ("mode", "verify", "push", "remote", "verify_timeout", "allow_config_changes", "parallel",
              "verify_retries")
ENV_KEYS = ("allow", "deny", "extend_allow", "extend_deny", "check_allow", "check_deny")
TEST_KEYS = ("command", "fallback", "timeout", "stall")
NOTIFY_KEYS = ("command", "events", "timeout")
NOTIFY_PLACEHOLDERS = ("event", "task", "title", "summary")
NOTIFY_MAX_TIMEOUT = 300.0
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
CHECK_KEYS = ("name", "url", "tcp", "command", "timeout")
CHECK_TARGETS = ("url", "tcp", "command")

_BAD_BRANCH_RE = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")
_ENV_PATTERN_RE = re.compile(r"[A-Za-z0-9_*?\[\]!-]+")
_URL_RE = re.compile(r"https?://[^\s/?#]+\S*")


def _close_matches(word: str, choices) -> list[str]:
    """The one choice closest to a mistyped WORD, if any (difflib loads only for a mistake)."""
    import difflib

    return difflib.get_close_matches(word, list(choices), n=1)


def _suggest(key: str, valid: tuple[str, ...]) -> str:
    close = _close_matches(key, valid)
    if close:
        return f'did you mean "{close[0]}"?'
    return "valid keys: " + ", ".join(valid)


MAX_POOL = 64  # runs at once on one machine
MAX_POOL_RAY = 4096  # runs at once on a Ray cluster ([executor] kind = "ray")


def _wants_ray(data: Any) -> bool:
    executor = data.get("executor") if isinstance(data, dict) else None
    return isinstance(executor, dict) and executor.get("kind") == "ray"


class _Loader:
    """Turns one parsed TOML table into a Config, or the first error in it."""

    def __init__(self, file: str, text: str, prefix: tuple[str, ...] = ()) -> None:
        self.file = file
        self.text = text
        self.prefix = prefix
        self._index: dict[KeyPath, int] | None = None

    # errors

    def name(self, path: KeyPath) -> str:
        out = ""
        for part in self.prefix + path:
            out += f"[{part + 1}]" if isinstance(part, int) else f".{part}" if out else part
        return _printable(out)

    def line(self, path: KeyPath) -> int | None:
        if self._index is None:
            self._index = _line_index(self.text)
        full = self.prefix + path
        for end in range(len(full), 0, -1):
            if full[:end] in self._index:
                return self._index[full[:end]]
        return None

    def error(self, path: KeyPath, message: str, hint: str | None = None) -> KanbanError:
        return KanbanError(message, file=self.file, line=self.line(path), hint=hint)

    def wrong_type(self, path: KeyPath, expected: str, value: Any, hint: str | None = None):
        message = f"{self.name(path)} must be {expected}, got {_describe(value)}"
        return self.error(path, message, hint)

    # value readers

    def table(self, value: Any, path: KeyPath, valid: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            hint = "write it as a [table] with keys under it"
            raise self.wrong_type(path, "a table", value, hint)
        for key in value:
            if key not in valid:
                raise self.error(
                    path + (key,), f"unknown key {self.name(path + (key,))}", _suggest(key, valid)
                )
        return value

    def string(self, value: Any, path: KeyPath) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(path, "a string", value, f'e.g. {path[-1]} = "..." (in quotes)')
        if not value.strip():
            raise self.error(
                path, f"{self.name(path)} must not be empty", "give it a value or remove the line"
            )
        return value

    def integer(self, value: Any, path: KeyPath, low: int, high: int, default: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(path, "an integer", value, f"e.g. {path[-1]} = {default}")
        if not low <= value <= high:
            raise self.error(
                path,
                f"{self.name(path)} must be between {low} and {high}, got {_describe(value)}",
                f"the default is {default}",
            )
        return value

    def boolean(self, value: Any, path: KeyPath) -> bool:
        if not isinstance(value, bool):
            key = path[-1]
            raise self.wrong_type(
                path, "true or false", value, f"write {key} = true or {key} = false, without quotes"
            )
        return value

    def choice(self, value: Any, path: KeyPath, allowed: tuple[str, ...]) -> str:
        if value not in allowed or not isinstance(value, str):
            close = _close_matches(value, list(allowed)) if isinstance(value, str) else []
            hint = f'did you mean "{close[0]}"?' if close else "allowed: " + ", ".join(f'"{a}"' for a in allowed)
            raise self.wrong_type(path, "one of " + ", ".join(allowed), value, hint)
        return value

    def duration(self, value: Any, path: KeyPath) -> float:
        return parse_duration(value, key=self.name(path), file=self.file, line=self.line(path))

    def strings(
        self, value: Any, path: KeyPath, what: str = "a list of strings", hint: str | None = None
    ) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            bad = value if not isinstance(value, list) else next(
                v for v in value if not isinstance(v, str))  # fmt: skip
            raise self.wrong_type(path, what, bad, hint or 'e.g. ["a", "b"]')
        return tuple(value)

    def argv(self, value: Any, path: KeyPath, *, optional: bool = False) -> tuple[str, ...]:
        """A command as argv; `optional` allows [] (meaning: no command)."""
        argv = self.strings(value, path, "a command (a list of strings)", ARGV_HINT)
        if not argv and not optional:
            raise self.error(path, f"{self.name(path)} must not be an empty command", ARGV_HINT)
        if argv and not argv[0].strip():
            raise self.error(path, f"{self.name(path)} has an empty program name", ARGV_HINT)
        return argv

    def relative_path(self, value: Any, path: KeyPath) -> str:
        text = self.string(value, path)
        posix = PurePosixPath(text.replace("\\", "/"))
        windows = PureWindowsPath(text)
        if "\x00" in text or posix.is_absolute() or windows.drive or text.startswith("~"):
            raise self.error(
                path,
                f"{self.name(path)} must be a relative path, got {_describe(text)}",
                "paths are relative to the repository root",
            )
        if ".." in posix.parts or not posix.parts:
            raise self.error(
                path,
                f"{self.name(path)} must stay inside the repository, got {_describe(text)}",
                'use a path below the repository root, without ".."',
            )
        return text

    # sections

    def config(self, data: Any, source: str) -> Config:
        data = self.table(data, (), TOP_KEYS)
        agent = self.agent(data.get("agent", {}), ("agent",), AgentConfig(), with_roles=True)
        roles = {
            role: self.agent(data["agent"][role], ("agent", role), agent, with_roles=False)
            for role in AGENT_ROLES
            if role in data.get("agent", {})
        }
        defaults = Config()
        return Config(
            main_branch=self.branch(data.get("main_branch", defaults.main_branch)),
            pool_size=self.integer(data.get("pool_size", 6), ("pool_size",), 1,
                                   MAX_POOL_RAY if _wants_ray(data) else MAX_POOL, 6),
            worktree_dir=self.relative_path(
                data.get("worktree_dir", defaults.worktree_dir), ("worktree_dir",)
            ),
            port_base=self.integer(
                data.get("port_base", 20000), ("port_base",), 1024, 60000, 20000
            ),
            agent=agent,
            roles=roles,
            worktree=self.worktree(data.get("worktree", {})),
            merge=self.merge(data.get("merge", {})),
            test=self.test(data.get("test", {})),
            env=self.env(data.get("env", {})),
            checks=self.checks(data.get("preflight", {})),
            source=source,
            budget=self.budget(data.get("budget", {})),
            pricing=self.pricing(data.get("pricing", {})),
            notify=self.notify(data.get("notify", {})),
            executor=self.executor(data.get("executor", {}), agent),
        )

    def models(self, value: Any, path: KeyPath) -> tuple[str, tuple[str, ...]]:
        """model = "x", or a ladder ["haiku", "sonnet"]: (the first model, the ladder if 2+)."""
        if not isinstance(value, list):
            return self.string(value, path), ()
        ladder = self.strings(value, path, "a model name or a list of model names", MODEL_HINT)
        if not ladder:
            raise self.error(path, f"{self.name(path)} must name at least one model", MODEL_HINT)
        for name in ladder:
            if not name.strip():
                raise self.error(path, f"{self.name(path)} has an empty model name", MODEL_HINT)
        return ladder[0], (ladder if len(ladder) > 1 else ())

    def budget(self, value: Any) -> BudgetConfig:
        path = ("budget",)
        table = self.table(value, path, BUDGET_KEYS)
        return BudgetConfig(**{key: self.limit(table[key], path + (key,)) for key in BUDGET_KEYS
                               if key in table})

    def limit(self, value: Any, path: KeyPath) -> Limit:
        limit = parse_limit(value)
        if limit is None:
            expected = "a dollar amount or a token count" + (
                "" if isinstance(value, str) else ", in quotes")
            raise self.wrong_type(path, expected, value, LIMIT_HINT)
        return limit

    def pricing(self, value: Any) -> dict[str, Price]:
        path = ("pricing",)
        if not isinstance(value, dict):
            raise self.wrong_type(path, "a table", value,
                                  'write [pricing."model-name"] with input = and output = under it')
        prices: dict[str, Price] = {}
        for name, item in value.items():
            where = path + (name,)
            if not name.strip():
                raise self.error(where, f"{self.name(path)} has an empty model name",
                                 'name the model: [pricing."gpt-5"]')
            nested = [k for k, v in item.items() if isinstance(v, dict)] if isinstance(item, dict) else []
            if nested:
                raise self.error(where + (nested[0],), f"{self.name(where)} is not a price table",
                                 f'put a model name with dots in quotes: [pricing."{name}.{nested[0]}"]')
            table = self.table(item, where, PRICE_KEYS)
            for key in ("input", "output"):
                if key not in table:
                    raise self.error(where, f"{self.name(where)} has no {key} price",
                                     f"add {key} = dollars per million {key} tokens, e.g. {key} = 1.25")
            numbers = {key: self.price(table[key], where + (key,)) for key in PRICE_KEYS if key in table}
            prices[name.strip().lower()] = Price(**numbers)
        return prices

    def price(self, value: Any, path: KeyPath) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.wrong_type(path, "a number of dollars per million tokens", value,
                                  f"e.g. {path[-1]} = 1.25, without quotes or $")
        if not math.isfinite(value) or not 0 <= value <= 100_000:
            raise self.error(path, f"{self.name(path)} must be from 0 to 100000 dollars per million tokens,"
                             f" got {_describe(value)}", f"e.g. {path[-1]} = 1.25")
        return float(value)

    def branch(self, value: Any) -> str:
        path = ("main_branch",)
        name = self.string(value, path)
        if _BAD_BRANCH_RE.search(name) or name.startswith(("-", "/", ".")) or name.endswith(
            ("/", ".", ".lock")
        ):
            raise self.error(
                path,
                f"{self.name(path)} is not a valid branch name, got {_describe(name)}",
                'use a plain branch name like "main"',
            )
        return name

    def agent(
        self, value: Any, path: KeyPath, base: AgentConfig, *, with_roles: bool
    ) -> AgentConfig:
        table = self.table(value, path, AGENT_KEYS + (AGENT_ROLES if with_roles else ()))
        fields: dict[str, Any] = {}
        if "preset" in table:
            fields["preset"] = self.choice(table["preset"], path + ("preset",), PRESETS)
            fields["command"] = None  # a role that names a preset drops an inherited command
        if "command" in table:
            fields["command"] = self.argv(table["command"], path + ("command",))
        for key in ("timeout", "stall", "kill_grace", "retry_limit"):
            if key in table:
                fields[key] = self.duration(table[key], path + (key,))
        if "model" in table:
            fields["model"], fields["models"] = self.models(table["model"], path + ("model",))
        if "extra_args" in table:
            fields["extra_args"] = self.strings(table["extra_args"], path + ("extra_args",))
        if "sandbox" in table:
            from kanban.sandbox import MODES

            fields["sandbox"] = self.choice(table["sandbox"], path + ("sandbox",), MODES)
        return replace(base, **fields)

    def worktree(self, value: Any) -> WorktreeConfig:
        path = ("worktree",)
        table = self.table(value, path, WORKTREE_KEYS)
        copy = self.strings(table.get("copy", []), path + ("copy",), "a list of paths")
        defaults = WorktreeConfig()
        keep_idle = table.get("keep_idle")
        return WorktreeConfig(
            copy=tuple(self.relative_path(item, path + ("copy",)) for item in copy),
            setup=self.setup(table.get("setup", []), path + ("setup",)),
            reuse=self.boolean(table.get("reuse", defaults.reuse), path + ("reuse",)),
            keep_idle=None if keep_idle is None else self.keep_idle(keep_idle, path + ("keep_idle",)),
            setup_inputs=self.setup_inputs(table.get("setup_inputs", []), path + ("setup_inputs",)),
        )

    def keep_idle(self, value: Any, path: KeyPath) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(path, "an integer", value, "e.g. keep_idle = 2")
        if not 0 <= value <= 64:
            raise self.error(path, f"{self.name(path)} must be between 0 and 64, got {_describe(value)}",
                             "without it, as many as pool_size are kept")
        return value

    def setup_inputs(self, value: Any, path: KeyPath) -> tuple[str, ...]:
        """Glob patterns over tracked files, from the top of the repository (git's `:(glob)` pathspecs)."""
        globs = self.strings(value, path, "a list of glob patterns", 'e.g. ["package-lock.json", "requirements*.txt"]')
        for item in globs:
            self.relative_path(item, path)
            if item.startswith(":"):
                raise self.error(path, f"{self.name(path)} has a pathspec with magic, got {_describe(item)}",
                                 'give plain globs like "**/package-lock.json"')
        return globs

    def setup(self, value: Any, path: KeyPath) -> tuple[tuple[str, ...], ...]:
        """One argv list, or a list of argv lists."""
        if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
            return tuple(self.argv(item, path) for item in value)
        if isinstance(value, list) and any(isinstance(v, list) for v in value):
            raise self.error(
                path,
                f"{self.name(path)} mixes strings and lists",
                'use one command ["npm", "ci"] or a list of commands [["npm", "ci"], ["make"]]',
            )
        argv = self.argv(value, path, optional=True)
        return (argv,) if argv else ()

    def merge(self, value: Any) -> MergeConfig:
        path = ("merge",)
        table = self.table(value, path, MERGE_KEYS)
        defaults = MergeConfig()
        return MergeConfig(
            mode=self.choice(table.get("mode", defaults.mode), path + ("mode",), MERGE_MODES),
            verify=self.argv(table.get("verify", []), path + ("verify",), optional=True),
            push=self.boolean(table.get("push", defaults.push), path + ("push",)),
            remote=self.string(table.get("remote", defaults.remote), path + ("remote",)),
            verify_timeout=self.duration(table.get("verify_timeout", defaults.verify_timeout),
                                         path + ("verify_timeout",)),
            allow_config_changes=self.boolean(table.get("allow_config_changes", defaults.allow_config_changes),
                                              path + ("allow_config_changes",)),
            parallel=self.integer(table.get("parallel", defaults.parallel), path + ("parallel",), 1, 16,
                                  defaults.parallel),
            verify_retries=self.integer(table.get("verify_retries", defaults.verify_retries),
                                        path + ("verify_retries",), 0, 5, defaults.verify_retries),
        )

    def test(self, value: Any) -> TestConfig:
        path = ("test",)
        table = self.table(value, path, TEST_KEYS)
        defaults = TestConfig()
        command = self.argv(table.get("command", []), path + ("command",), optional=True)
        fallback = self.argv(table.get("fallback", []), path + ("fallback",), optional=True)
        if TESTS_PLACEHOLDER in fallback:
            raise self.error(path + ("fallback",), f"{self.name(path + ('fallback',))} cannot use {{tests}}",
                             "the fallback runs when no covering test was found, e.g. [\"pytest\", \"-q\"]")
        if fallback and not command:
            raise self.error(path + ("fallback",), f"{self.name(path + ('fallback',))} is set without a command",
                             'add command = ["pytest", "-q", "{tests}"]')
        for arg in command:
            if "{tests}" in arg and arg != TESTS_PLACEHOLDER:
                raise self.error(path + ("command",), f"{self.name(path + ('command',))} has {{tests}} inside "
                                 f"{_describe(arg)}", 'give "{tests}" as an element of its own')
        return TestConfig(
            command=command,
            fallback=fallback,
            timeout=self.duration(table.get("timeout", defaults.timeout), path + ("timeout",)),
            stall=self.duration(table["stall"], path + ("stall",)) if "stall" in table else None,
        )

    def executor(self, value: Any, agent: AgentConfig) -> ExecutorConfig:
        path = ("executor",)
        table = self.table(value, path, EXECUTOR_KEYS)
        d = ExecutorConfig()
        kind = self.choice(table.get("kind", d.kind), path + ("kind",), EXECUTOR_KINDS)
        remote = self.string(table["remote"], path + ("remote",)) if "remote" in table else ""
        if kind == "ray" and not remote:
            raise self.error(path + ("kind",), "[executor] kind = \"ray\" needs a shared git remote",
                             'add remote = "git@forge:team/repo-runs.git" (a bare repository path works too)')
        address = self.string(table.get("address", d.address), path + ("address",))
        if address != "auto" and not re.fullmatch(r"(https?|ray)://[^\s/]+/?", address):
            raise self.error(path + ("address",), f"{self.name(path + ('address',))} must be \"auto\" or a Ray "
                             f"address, got {_describe(address)}", 'e.g. address = "http://127.0.0.1:8265"')
        secrets = self.strings(table.get("secrets", []), path + ("secrets",), "a list of variable names",
                               'e.g. secrets = ["ANTHROPIC_API_KEY"]')
        for name in secrets:
            if not _ENV_NAME_RE.fullmatch(name):
                raise self.error(path + ("secrets",), f"{self.name(path + ('secrets',))} has {_describe(name)}, "
                                 "not a variable name", 'e.g. secrets = ["ANTHROPIC_API_KEY"]')
        pool: dict[str, int] = {}
        if "pool" in table:
            ptable = self.table(table["pool"], path + ("pool",), EXECUTOR_POOL_KEYS)
            pool = {k: self.integer(v, path + ("pool", k), 1, 4096, 6) for k, v in ptable.items()}
        placement = {k: self.placement(table[k], path + (k,)) for k in RUN_KINDS + ("default",) if k in table}
        workspace = self.string(table.get("workspace", d.workspace), path + ("workspace",))
        python = self.string(table.get("python", d.python), path + ("python",))
        for key, text in (("workspace", workspace), ("python", python)):
            if any(c in text for c in "\x00\n\r"):
                raise self.error(path + (key,), f"{self.name(path + (key,))} has a control character",
                                 "write a plain path")
        return ExecutorConfig(
            kind=kind, address=address, remote=remote, workspace=workspace, python=python,
            infra_retries=self.integer(table.get("infra_retries", d.infra_retries), path + ("infra_retries",),
                                       0, 10, d.infra_retries),
            secrets=secrets,
            secret_dir=self.string(table["secret_dir"], path + ("secret_dir",)) if "secret_dir" in table else "",
            send_secrets=self.boolean(table.get("send_secrets", d.send_secrets), path + ("send_secrets",)),
            pool=pool, placement=placement,
        )

    def placement(self, value: Any, path: KeyPath) -> Placement:
        table = self.table(value, path, PLACEMENT_KEYS)
        cpus = table.get("num_cpus")
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, (int, float)) or not 0 <= cpus <= 1024):
            raise self.wrong_type(path + ("num_cpus",), "a number of CPUs from 0 to 1024", cpus, "e.g. num_cpus = 1")
        memory = table.get("memory")
        if memory is not None:
            memory = self.memory(memory, path + ("memory",))
        resources = Placement().resources
        if "resources" in table:
            rtable = table["resources"]
            if not isinstance(rtable, dict):
                raise self.wrong_type(path + ("resources",), "a table of resource = amount", rtable,
                                      "e.g. resources = { agent_slot = 1 }")
            found = []
            for name, amount in rtable.items():
                where = path + ("resources", name)
                if not _RESOURCE_RE.fullmatch(name):
                    raise self.error(where, f"{self.name(where)} is not a Ray resource name", "e.g. agent_slot")
                if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount <= 10000:
                    raise self.wrong_type(where, "a positive amount", amount, f"e.g. {name} = 1")
                found.append((name, float(amount)))
            resources = tuple(found)
        return Placement(num_cpus=None if cpus is None else float(cpus), memory=memory, resources=resources)

    def memory(self, value: Any, path: KeyPath) -> int:
        units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", value, re.I) if isinstance(value, str) else None
        if not match or float(match.group(1)) <= 0:
            raise self.wrong_type(path, "an amount of memory", value, 'e.g. memory = "2GiB" or a number of bytes')
        return int(float(match.group(1)) * units[match.group(2).lower()])

    def notify(self, value: Any) -> NotifyConfig:
        path = ("notify",)
        table = self.table(value, path, NOTIFY_KEYS)
        defaults = NotifyConfig()
        command = self.argv(table.get("command", []), path + ("command",), optional=True)
        for arg in command:
            for name in _PLACEHOLDER_RE.findall(arg):
                if name not in NOTIFY_PLACEHOLDERS:
                    raise self.error(path + ("command",), f"{self.name(path + ('command',))} has an unknown "
                                     f"placeholder {{{_printable(name)}}}",
                                     "known placeholders: " + ", ".join("{" + p + "}" for p in NOTIFY_PLACEHOLDERS))
        events = defaults.events
        if "events" in table:
            where = path + ("events",)
            events = self.strings(table["events"], where, "a list of event names",
                                  "e.g. events = [" + ", ".join(f'"{k}"' for k in NOTIFY_KINDS[:2]) + "]")
            for name in events:
                if name not in NOTIFY_KINDS:
                    close = _close_matches(name, NOTIFY_KINDS)
                    raise self.error(where, f"{self.name(where)} has an unknown event {_describe(name)}",
                                     f'did you mean "{close[0]}"?' if close
                                     else "known events: " + ", ".join(NOTIFY_KINDS))
            events = tuple(dict.fromkeys(events))
        timeout = defaults.timeout
        if "timeout" in table:
            timeout = self.duration(table["timeout"], path + ("timeout",))
            if timeout > NOTIFY_MAX_TIMEOUT:
                raise self.error(path + ("timeout",), f"{self.name(path + ('timeout',))} must be at most 5m, got "
                                 f"{_describe(table['timeout'])}", "a notification should take seconds")
        return NotifyConfig(command=command, events=events, timeout=timeout)

    def env(self, value: Any) -> EnvConfig:
        path = ("env",)
        table = self.table(value, path, ENV_KEYS)
        defaults = EnvConfig()
        allow = self.env_patterns(table.get("allow", list(defaults.allow)), path + ("allow",))
        deny = self.env_patterns(table.get("deny", list(defaults.deny)), path + ("deny",))
        # extend_*: add to the lists (the defaults, or allow/deny as given) instead of replacing them.
        allow += self.env_patterns(table.get("extend_allow", []), path + ("extend_allow",))
        deny += self.env_patterns(table.get("extend_deny", []), path + ("extend_deny",))
        check_allow, check_deny = (self.env_patterns(table[key], path + (key,)) if key in table else None
                                   for key in ("check_allow", "check_deny"))
        return EnvConfig(allow=allow, deny=deny, check_allow=check_allow, check_deny=check_deny)

    def env_patterns(self, value: Any, path: KeyPath) -> tuple[str, ...]:
        patterns = self.strings(value, path, "a list of variable names or glob patterns")
        for pattern in patterns:
            if not _ENV_PATTERN_RE.fullmatch(pattern):
                raise self.error(
                    path,
                    f"{self.name(path)} has an invalid pattern {_describe(pattern)}",
                    'use variable names or globs like "PATH" or "AWS_*"',
                )
        return patterns

    def checks(self, value: Any) -> tuple[ServiceCheck, ...]:
        table = self.table(value, ("preflight",), ("check",))
        path: KeyPath = ("preflight", "check")
        items = table.get("check", [])
        if not isinstance(items, list):
            raise self.wrong_type(
                path, "a list of tables", items, "write each check as a [[preflight.check]] table"
            )
        checks: list[ServiceCheck] = []
        for number, item in enumerate(items):
            check = self.check(item, path + (number,))
            if any(c.name == check.name for c in checks):
                raise self.error(
                    path + (number, "name"),
                    f"{self.name(path + (number, 'name'))} {_describe(check.name)} is used twice",
                    "give each check its own name",
                )
            checks.append(check)
        return tuple(checks)

    def check(self, value: Any, path: KeyPath) -> ServiceCheck:
        table = self.table(value, path, CHECK_KEYS)
        if "name" not in table:
            raise self.error(path, f"{self.name(path)} has no name", 'add name = "..."')
        name = self.string(table["name"], path + ("name",))
        targets = [key for key in CHECK_TARGETS if key in table]
        if len(targets) != 1:
            found = " and ".join(targets) if targets else "none"
            where = max(targets, key=lambda k: self.line(path + (k,)) or 0) if targets else None
            raise self.error(
                path + ((where,) if where else ()),
                f"{self.name(path)} ({_describe(name)}) needs exactly one of url, tcp or"
                f" command, found {found}",
                'e.g. url = "http://localhost:6333/readyz", tcp = "localhost:5432"'
                ' or command = ["redis-cli", "ping"]',
            )
        target = targets[0]
        fields: dict[str, Any] = {"name": name}
        if target == "url":
            fields["url"] = self.url(table["url"], path + ("url",))
        elif target == "tcp":
            fields["tcp"] = self.tcp(table["tcp"], path + ("tcp",))
        else:
            fields["command"] = self.argv(table["command"], path + ("command",))
        if "timeout" in table:
            fields["timeout"] = self.duration(table["timeout"], path + ("timeout",))
        return ServiceCheck(**fields)

    def url(self, value: Any, path: KeyPath) -> str:
        url = self.string(value, path)
        if not _URL_RE.fullmatch(url):
            raise self.error(
                path,
                f"{self.name(path)} must be an http:// or https:// URL, got {_describe(url)}",
                'e.g. url = "http://localhost:6333/readyz"',
            )
        return url

    def tcp(self, value: Any, path: KeyPath) -> str:
        text = self.string(value, path)
        host, _, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        valid_host = bool(host) and not any(c.isspace() or c in "/[]" for c in host)
        valid_port = port.isascii() and port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536
        if not (valid_host and valid_port):
            raise self.error(
                path,
                f"{self.name(path)} must be host:port with a port from 1 to 65535,"
                f" got {_describe(text)}",
                'e.g. tcp = "localhost:5432"',
            )
        return text


# --- files -------------------------------------------------------------------

_TOML_POSITION_RE = re.compile(r"\s*\(at (?:line (\d+), column (\d+)|end of document)\)\s*$")


CONFIG_MAX_BYTES = 1 << 20  # kanban.toml or pyproject.toml; a real one is a few KiB


def _present(path: Path) -> bool:
    """Whether anything is there, a dangling or looping link included (those are errors, not absent)."""
    try:
        path.lstat()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # unreadable directory and the like: _read says why
    return True


def _read(path: Path, name: str) -> str:
    from kanban.untrusted import UnsafeFile, read_regular

    try:
        data = read_regular(path, CONFIG_MAX_BYTES, root=path.parent)
    except UnsafeFile as exc:
        raise KanbanError(f"cannot read {name}: it {exc}", file=name, hint=exc.hint) from None
    except OSError as exc:
        raise KanbanError(
            f"cannot read {name}: {exc.strerror or exc}",
            file=name,
            hint="make sure it is a readable file",
        ) from exc
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise KanbanError(
            f"{name} is not valid UTF-8 (byte {exc.start + 1})",
            file=name,
            line=data.count(b"\n", 0, exc.start) + 1,
            hint="save the file as UTF-8",
        ) from exc


def _parse(text: str, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except RecursionError as exc:
        raise KanbanError(
            f"{name} nests arrays or tables too deeply", file=name, hint="simplify the file"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = None
        match = _TOML_POSITION_RE.search(message)
        if match:
            message = message[: match.start()]
            if match.group(1):
                line = int(match.group(1))
                message += f" (column {match.group(2)})"
            else:
                line = text.count("\n") + 1
        raise KanbanError(
            f"invalid TOML: {message}",
            file=name,
            line=line,
            hint="see https://toml.io for the syntax",
        ) from exc
    except ValueError as exc:  # int() refuses numbers of more than 4300 digits
        match = re.search(r"\d{1000}", text)
        raise KanbanError(
            f"{name} has a number too long to read",
            file=name,
            line=text.count("\n", 0, match.start()) + 1 if match else None,
            hint="use a shorter number",
        ) from exc


def load_config(root: Path) -> Config:
    """kanban.toml if present, else [tool.kanban] in pyproject.toml, else defaults."""
    root = Path(root)
    path = root / CONFIG_FILE
    if _present(path):
        text = _read(path, CONFIG_FILE)
        return _Loader(CONFIG_FILE, text).config(_parse(text, CONFIG_FILE), str(path))
    path = root / PYPROJECT_FILE
    if _present(path):
        text = _read(path, PYPROJECT_FILE)
        tool = _parse(text, PYPROJECT_FILE).get("tool")
        if isinstance(tool, dict) and "kanban" in tool:
            loader = _Loader(PYPROJECT_FILE, text, PYPROJECT_PREFIX)
            return loader.config(tool["kanban"], str(path))
    return Config()


# --- the file `kanban init` writes ------------------------------------------


_DEFAULT_TOML = """\
# kanban.toml: how `kanban` runs agents in this repository.
# Durations are strings like "90s", "15m", "1h30m" or "500ms", or a number of seconds.
# The same keys also work under [tool.kanban] in pyproject.toml.

main_branch = "main"          # the branch finished work is merged into
pool_size = 6                 # at most this many agents at once, all roles together (1-64)
worktree_dir = ".worktrees"   # where each task's git worktree goes, relative to this file
port_base = 20000             # first KANBAN_PORT handed out, one port per task (1024-60000)

[agent]                       # defaults for every role
preset = "claude"             # claude | codex | aider | demo
# command = ["my-agent", "--prompt-file", "{prompt_file}"]   # instead of a preset
# model = "..."               # the model the preset asks for; a ladder ["haiku", "sonnet"]
                              # gives attempt 1 the first, each retry the next, the last repeating
extra_args = []               # more arguments for the preset's command line
timeout = "15m"               # stopped after running this long
stall = "5m"                  # stopped when its log has not grown for this long
kill_grace = "5s"             # from SIGTERM to SIGKILL when an agent is stopped
retry_limit = "60s"           # stopped when its CLI has only retried or reconnected for this long
sandbox = "none"              # "bwrap": each agent in bubblewrap, writing only its worktree and branch

# Each role takes the [agent] settings, overridden by its own table.
# A role that sets `preset` drops a `command` inherited from [agent].
[agent.task]

[agent.reviewer]
# timeout = "10m"

[agent.tester]

[agent.planner]               # `kanban plan`: proposes tasks for TODO.md, in a throwaway checkout of main
# timeout = "10m"

[worktree]
copy = []                     # ignored files each new worktree needs, e.g. [".env"]
setup = []                    # run once in each new worktree, before its first agent:
                              # ["npm", "ci"], or several: [["npm", "ci"], ["make"]]
setup_inputs = []             # tracked files setup depends on, e.g. ["package-lock.json"]: a reused
                              # worktree reruns setup only when they changed ([]: any tracked file)
reuse = true                  # a merged task's worktree waits, ignored files kept, for the next task
# keep_idle = 6               # at most this many waiting worktrees (default: pool_size)

[merge]
mode = "serial"               # "serial": one branch at a time; "batch": several at once
verify = []                   # run on the merged tree before main moves, e.g. ["pytest", "-q"]
push = false                  # push main to the remote after each merge
verify_timeout = "30m"        # a verification running longer than this fails
remote = "origin"
allow_config_changes = false  # true: a branch may change kanban.toml or prompts/ (else held for you)
parallel = 1                  # verifications at once; serial mode verifies the next ones on top of those ahead
verify_retries = 1            # a failing verification runs once more before it counts (a pass then: flaky)

# The test stage: kanban runs this in the task's worktree, after merging the latest main,
# and its exit status is the verdict (the tester agent only fixes what fails).
# "{tests}" becomes the test files covering the changed files; fallback runs when none is found.
# Without a command, the tester agent runs the tests and writes its verdict.
[test]
command = []                  # e.g. ["pytest", "-q", "{tests}"]
fallback = []                 # e.g. ["pytest", "-q"]
timeout = "15m"

# Spending limits: when one is reached no new agent starts (running ones finish).
# Dollars: "$2", "$0.50" or "2.50"; tokens: "500k tokens", "2M tokens" or "15000 tokens".
# task: all runs of one task; run: since this `kanban run` began; day: since 00:00 UTC.
# Spend counts finished runs and what running agents' logs show so far.
# [budget]
# task = "$2"
# run = "$20"
# day = "5M tokens"

# Prices in dollars per million tokens, for runs whose CLI reports only tokens (codex,
# aider with a model it does not know). kanban ships a table (kanban/pricing.py); these
# add to it or override it. A name matches exactly, else as a prefix ("gpt-5" covers
# "gpt-5-2025-08-07") or a glob ("my-*"); the longest match wins. Quote names with dots.
# [pricing."my-model"]
# input = 1.25                # uncached prompt tokens
# output = 10.0
# cached_input = 0.125        # cache reads; default: the input price
# cache_write = 1.5           # cache writes; default: the input price

# Tell a person when a task is escalated, the merge queue is blocked, a budget is
# reached or `kanban run` ends (also from `kanban tick` and `kanban merge-queue`).
# The command runs as argv, never through a shell; {event}, {task}, {title} and
# {summary} are filled in (one line each, as text: nothing in them is parsed again),
# and KANBAN_EVENT, KANBAN_TASK, KANBAN_TITLE, KANBAN_SUMMARY and KANBAN_REPO are in
# its environment. A failing command is a warning, never a failed run.
# [notify]
# command = ["notify-send", "kanban: {event}", "{task} {summary}"]
# events = ["escalated", "queue_blocked", "budget_reached", "run_finished"]   # the default: all
# timeout = "10s"              # then its whole process group is killed

# Environment variables agents get, as names or glob patterns.
# deny wins over allow, except for names listed in allow without a wildcard.
# extend_allow / extend_deny add to the defaults below; allow / deny replace them.
# Default allow: @ALLOW@
# Default deny: @DENY@
[env]
extend_allow = []             # e.g. ["MY_SERVICE_URL", "MYAPP_*"]
extend_deny = []
# check_allow = [...]         # the verify and test commands' own list (default: the agents',
# check_deny = [...]          # without model-API keys such as ANTHROPIC_API_KEY)

# Services that must be up before agents start (checked by `kanban preflight`).
# Each check has a name and exactly one of url, tcp or command.
#
# [[preflight.check]]
# name = "qdrant"
# url = "http://localhost:6333/readyz"    # up when it answers with a 2xx status
# timeout = "3s"
#
# [[preflight.check]]
# name = "postgres"
# tcp = "localhost:5432"                  # up when it accepts a connection
#
# [[preflight.check]]
# name = "redis"
# command = ["redis-cli", "ping"]         # up when it exits 0
"""


def _comment_list(items: tuple[str, ...]) -> str:
    """A long list as wrapped comment lines (the line before carries the '# ...:' lead)."""
    lines, line = [], ""
    for item in items:
        if line and len(line) + len(item) > 80:
            lines.append(line.rstrip())
            line = "#   "
        line += item + " "
    lines.append(line.rstrip())
    return "\n".join(lines)


def dump_default_config(main_branch: str = "main") -> str:
    """The commented default kanban.toml that `kanban init` writes; it loads as Config(),
    with `main_branch` (the branch init found) in place of "main"."""
    text = _DEFAULT_TOML.replace("@ALLOW@", _comment_list(DEFAULT_ENV_ALLOW)).replace(
        "@DENY@", _comment_list(DEFAULT_ENV_DENY)
    )
    if main_branch != "main":
        old = 'main_branch = "main"'
        quoted = '"' + main_branch.replace("\\", "\\\\").replace('"', '\\"') + '"'  # a TOML basic string
        new = f"main_branch = {quoted}"
        at = text.index(old)
        pad = text.index("#", at) - at  # keep the comment's column when the name fits
        text = text[:at] + new.ljust(max(pad, len(new) + 1)) + text[at + pad:]
    return text

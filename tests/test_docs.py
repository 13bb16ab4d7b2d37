"""The user docs (docs/, README.md) against the code they describe.

Each test reads the truth from the code (the config parser, the CLI, the state
machine's table, the real --json output) and the claim from the docs, and fails
naming what is missing or stale. `python tests/test_docs.py` prints the state
machine table to paste into docs/state-machine.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def sections(text: str, level: int = 2) -> dict[str, str]:
    """Heading text -> the text under it up to the next heading of that level or higher
    (headings inside code fences are not headings)."""
    out: dict[str, str] = {}
    title, body, fence = None, [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(rf"^(#{{1,{level}}}) (.*)$", line)
        if m:
            if title is not None:
                out[title] = "\n".join(body)
            title, body = m.group(2).strip(), []
        elif title is not None:
            body.append(line)
    if title is not None:
        out[title] = "\n".join(body)
    return out


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """The markdown tables in TEXT: (header cells, rows of cells)."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s|:-]+\|$", lines[i + 1]):
            header = _cells(lines[i])
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            found.append((header, rows))
        else:
            i += 1
    return found


def _cells(line: str) -> list[str]:
    # `|` inside backticks does not split a cell
    cells, cell, code = [], "", False
    for ch in line.strip()[1:-1]:
        if ch == "`":
            code = not code
        if ch == "|" and not code:
            cells.append(cell.strip())
            cell = ""
        else:
            cell += ch
    cells.append(cell.strip())
    return cells


def code_spans(text: str) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", text))


# --- configuration ------------------------------------------------------------------

# Sections `kanban/config.py` names by a *_KEYS constant; the rest take the constant's name.
SPECIAL_SECTIONS = {"TOP": "", "CHECK": "preflight.check", "PRICE": "pricing.MODEL", "EXECUTOR_POOL": "executor.pool",
                    "PLACEMENT": "executor.default"}


def parser_keys() -> dict[str, set[str]]:
    """Section -> keys, from the key tuples the config parser validates with."""
    import kanban.config as config

    found: dict[str, set[str]] = {}
    for name, value in vars(config).items():
        if name.endswith("_KEYS") and isinstance(value, tuple) and all(isinstance(v, str) for v in value):
            prefix = name[: -len("_KEYS")]
            found[SPECIAL_SECTIONS.get(prefix, prefix.lower())] = set(value)
    for kind in config.RUN_KINDS:  # each kind of run's placement takes [executor.default]'s keys
        found[f"executor.{kind}"] = set(found["executor.default"])
    tables_ = {section.split(".")[0] for section in found if section}
    found[""] -= tables_
    found["executor"] -= {section.split(".", 1)[1] for section in found if section.startswith("executor.")}
    for role in config.AGENT_ROLES:  # the planner's table too
        found[f"agent.{role}"] = set(found["agent"])
    return found


def documented_config() -> dict[str, dict[str, list[str]]]:
    """Section -> key -> the row's cells, from the `| key | ... |` tables of configuration.md.
    The role tables take [agent]'s rows ("the same keys as [agent]")."""
    out: dict[str, dict[str, list[str]]] = {}
    for heading, body in sections(read("configuration.md")).items():
        if heading == "Top-level keys":
            names = [""]
        else:
            names = [re.sub(r'"[^"]*"', "MODEL", n) for n in
                     re.findall(r'\[\[?([A-Za-z_]+(?:\.(?:"[^"]*"|[A-Za-z_]+))*)\]\]?', heading)]
        if not names:
            continue
        rows = {}
        for header, table_rows in tables(body):
            if header[0] == "key":
                for row in table_rows:
                    key = row[0].strip("`")
                    rows[key] = dict(zip(header, row))
        for name in names:
            out[name] = rows
    for section in list(out):
        if section.startswith("agent.") and not out[section]:
            out[section] = out["agent"]
    return out


def accepted_by_parser(section: str, key: str) -> tuple[bool, str]:
    """Whether the real parser knows SECTION.KEY: it is given a value no key takes (a date);
    any error but "unknown key" means the key itself was accepted."""
    from kanban.config import _Loader
    from kanban.errors import KanbanError

    value = "1979-05-27T07:32:00Z"
    if section == "":
        text = f"{key} = {value}\n"
    elif section == "preflight.check":
        text = f"[[preflight.check]]\n{key} = {value}\n"
    elif section == "pricing.MODEL":
        text = f'[pricing."some-model"]\n{key} = {value}\n'
    else:
        text = f"[{section}]\n{key} = {value}\n"
    try:
        _Loader("kanban.toml", text).config(tomllib.loads(text), "kanban.toml")
    except KanbanError as exc:
        return not exc.message.startswith("unknown key"), exc.message
    return True, ""


def test_every_documented_config_key_is_accepted_by_the_parser():
    wrong = []
    for section, keys in documented_config().items():
        for key in keys:
            ok, message = accepted_by_parser(section, key)
            if not ok:
                wrong.append(f"[{section}] {key}: {message}")
    assert not wrong, "docs/configuration.md documents keys the parser refuses:\n" + "\n".join(wrong)


def test_every_config_key_the_parser_accepts_is_documented():
    documented = documented_config()
    missing = [f"[{section}] {key}" for section, keys in parser_keys().items() for key in sorted(keys)
               if key not in documented.get(section, {})]
    extra_sections = sorted(set(documented) - set(parser_keys()))
    assert not missing, "docs/configuration.md lacks these keys:\n" + "\n".join(missing)
    assert not extra_sections, f"docs/configuration.md documents sections the parser has no keys for: {extra_sections}"


def toml_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return str(value)


def test_documented_defaults_are_the_ones_kanban_init_writes():
    from kanban.config import dump_default_config

    defaults = tomllib.loads(dump_default_config())
    documented = documented_config()
    wrong = []

    def walk(table: dict, section: str) -> None:
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{section}.{key}" if section else key)
                continue
            cell = documented.get(section, {}).get(key, {}).get("default", "")
            if f"`{toml_literal(value)}`" not in cell:
                wrong.append(f"[{section}] {key}: kanban init writes {toml_literal(value)}, the docs say {cell!r}")

    walk(defaults, "")
    assert not wrong, "docs/configuration.md defaults differ from dump_default_config():\n" + "\n".join(wrong)


def test_the_default_env_lists_are_documented():
    from kanban import config

    spans = code_spans(read("configuration.md"))
    names = config.DEFAULT_ENV_ALLOW + config.DEFAULT_ENV_DENY + config.MODEL_CREDENTIALS + config.CHECK_DENY
    assert not [n for n in names if n not in spans]


# --- commands -----------------------------------------------------------------------


def cli_commands():
    import typer

    from kanban.cli import app

    group = typer.main.get_command(app)
    return group, {name: cmd for name, cmd in group.commands.items() if not cmd.hidden}


def test_every_command_and_option_has_its_place_in_commands_md():
    group, commands = cli_commands()
    doc = sections(read("commands.md"))
    problems = []

    def mentioned(opt: str, text: str) -> bool:
        return re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", " ".join(code_spans(text))) is not None

    for opt in (o for p in group.params for o in p.opts + p.secondary_opts):
        if not mentioned(opt, read("commands.md")):
            problems.append(f"global option {opt} is not documented")
    for name, cmd in commands.items():
        body = doc.get(f"kanban {name}")
        if body is None:
            problems.append(f"no section '## kanban {name}'")
            continue
        for param in cmd.params:
            shown = [param.metavar or param.name.upper()] if param.param_type_name == "argument" else \
                param.opts + param.secondary_opts
            problems += [f"kanban {name}: {opt} is not documented" for opt in shown if not mentioned(opt, body)]
    documented = {h.removeprefix("kanban ") for h in doc if h.startswith("kanban ")}
    problems += [f"section for a command that does not exist: kanban {n}" for n in sorted(documented - set(commands))]
    assert not problems, "\n".join(problems)


def test_documented_options_exist():
    _, commands = cli_commands()
    problems = []
    for heading, body in sections(read("commands.md")).items():
        name = heading.removeprefix("kanban ")
        if name not in commands:
            continue
        real = {o for p in commands[name].params for o in p.opts + p.secondary_opts} | {"--help", "-h"}
        for header, rows in tables(body):
            if header[0] != "option":
                continue
            for row in rows:
                for opt in re.findall(r"`(-[-\w]+)", row[0]):
                    if opt not in real:
                        problems.append(f"kanban {name}: {opt} is documented but does not exist")
    assert not problems, "\n".join(problems)


def test_exit_codes_of_disk_errors_are_where_the_code_puts_them():
    from kanban.errors import _OS_ERRORS

    rows = {row[0]: row[1] for header, body in tables(sections(read("commands.md"))["Exit codes"])
            for row in body}
    wrong = [f"{name} (exit {code})" for name, (_, _, code) in _OS_ERRORS.items()
             if name not in rows.get(str(code), "")]
    assert {"0", "1", "2", "3", "130"} <= set(rows)
    assert not wrong, f"docs/commands.md puts these errors under another exit code: {wrong}"


# --- the state machine ----------------------------------------------------------------


def machine_table() -> list[str]:
    """kanban/machine.py's ROWS as the markdown table docs/state-machine.md holds."""
    from kanban.machine import ROWS, _flags, _guard_words

    lines = ["| from | when | event | to | action | strike |", "| --- | --- | --- | --- | --- | --- |"]
    for row in ROWS:
        to = row.target.name + _flags(row.to_retry, row.to_escalated, row.to_ready)
        lines.append(f"| {row.source.name} | {', '.join(_guard_words(row)) or '-'} | `{row.event.value}` | {to} "
                     f"| `{row.action.value}` | {row.strike or '-'} |")
    return lines


def test_the_state_machine_table_is_machine_py_s():
    text = read("state-machine.md")
    m = re.search(r"<!-- machine-table:start -->\n(.*?)\n<!-- machine-table:end -->", text, re.S)
    assert m, "docs/state-machine.md has no <!-- machine-table:start/end --> block"
    assert m.group(1).splitlines() == machine_table(), (
        "docs/state-machine.md's table differs from kanban/machine.py; paste the output of "
        "`python tests/test_docs.py`")


def test_every_event_action_and_verdict_word_is_explained():
    from kanban.machine import Action, Event
    from kanban.verdict import WORDS

    doc = sections(read("state-machine.md"), level=3)
    events = {row[0].strip("`") for _, rows in tables(doc["Events"]) for row in rows}
    actions = {row[0].strip("`") for _, rows in tables(doc["Actions"]) for row in rows}
    assert events == {e.value for e in Event}
    assert actions == {a.value for a in Action}
    verdicts = read("state-machine.md") + read("agents.md")
    assert not [w for words in WORDS.values() for w in words if f"verdict: {w}" not in verdicts]


# --- repair ------------------------------------------------------------------------------


def repair_table() -> list[str]:
    """kanban/repair.py's registry (FIXES) as the markdown table docs/repair.md holds."""
    from kanban.repair import FIXES, SCOPES

    lines = ["| kind | finds | does | runs in |", "| --- | --- | --- | --- |"]
    for fix in FIXES:
        lines.append(f"| {fix.kind} | {fix.finds} | {fix.does} | {', '.join(s for s in SCOPES if s in fix.scopes)} |")
    return lines


def test_the_repair_table_is_the_registry_s():
    text = read("repair.md")
    m = re.search(r"<!-- repair-table:start -->\n(.*?)\n<!-- repair-table:end -->", text, re.S)
    assert m, "docs/repair.md has no <!-- repair-table:start/end --> block"
    assert m.group(1).splitlines() == repair_table(), (
        "docs/repair.md's table differs from kanban/repair.py's FIXES; paste the output of "
        "`python tests/test_docs.py repair`")
    scopes = {row[0] for header, rows in tables(sections(text)["When it runs"]) for row in rows}
    from kanban.repair import SCOPES

    assert scopes == set(SCOPES), "docs/repair.md explains each scope once"


# --- the agent contract -------------------------------------------------------------------


def test_agent_placeholders_presets_and_environment_are_documented():
    from kanban import presets, prompts

    text = read("agents.md")
    spans = code_spans(text)
    missing = [f"{{{{ {p} }}}}" for p in prompts.PLACEHOLDERS if f"{{{{ {p} }}}}" not in spans]
    missing += [f"{{{p}}}" for p in presets.PLACEHOLDERS if f"{{{p}}}" not in spans]
    missing += [p for p in presets.PRESETS if f"`{p}`" not in text]
    env = set(re.findall(r'"(KANBAN_[A-Z_]+)"', (REPO / "kanban" / "agents.py").read_text(encoding="utf-8")))
    missing += sorted(v for v in env if v not in spans)
    assert not missing, f"docs/agents.md does not mention: {missing}"


# --- --json output ------------------------------------------------------------------------


JSON_RUNS = {  # command -> the argv that produces its --json output in a fresh repository
    "status": ["status", "--json"],
    "add": ["add", "Another task", "--json"],
    "tick": ["tick", "--dry-run", "--json"],
    "merge-queue": ["merge-queue", "--dry-run", "--json"],
    "preflight": ["preflight", "--json"],
    "plan": ["plan", "Log in with OAuth", "--dry-run", "--json"],  # the demo preset's planner
}


def json_paths(value, prefix: str = "") -> set[str]:
    """Every field path of a JSON value: `a.b`, lists as `a[]`."""
    out = set()
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{prefix}.{key}" if prefix else key
            out.add(path)
            out |= json_paths(item, path)
    elif isinstance(value, list):
        for item in value:
            out |= json_paths(item, prefix + "[]")
    return out


def documented_fields(body: str) -> dict[str, str]:
    """Field path -> its meaning, from the `| field | type | meaning |` tables."""
    return {row[0].strip("`"): row[-1] for header, rows in tables(body) if header[0] == "field" for row in rows}


def _matches(path: str, pattern: str) -> bool:
    regex = "".join("[^.]+" if part.startswith("<") else re.escape(part)
                    for part in re.split(r"(<[^>]+>)", pattern))
    return re.fullmatch(regex, path) is not None


@pytest.fixture(scope="module")
def json_outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs") / "repo"
    root.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root,
                       check=True, capture_output=True)

    def kanban(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "kanban", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=60)

    git("init", "-q", "-b", "main")
    (root / "README.md").write_text("# project\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "initial")
    assert kanban("init").returncode == 0
    toml = root / "kanban.toml"
    toml.write_text(toml.read_text().replace('preset = "claude"', 'preset = "demo"'))
    git("add", "-A")
    git("commit", "-q", "-m", "kanban")
    assert kanban("add", "Fix the login bug", "--files", "src/login.py").returncode == 0
    with (root / "TODO.md").open("a") as out:
        out.write("\n## Write the docs\n")
    outputs = {}
    for name, argv in JSON_RUNS.items():
        proc = kanban(*argv)
        outputs[name] = json.loads(proc.stdout)
    return outputs


@pytest.mark.parametrize("command", sorted(JSON_RUNS))
def test_json_fields_are_documented(command, json_outputs):
    doc = sections(read("json.md"))
    heading = f"kanban {command} --json"
    assert heading in doc, f"docs/json.md has no section '## {heading}'"
    fields = documented_fields(doc[heading])
    output = json_outputs[command]
    undocumented = sorted(p for p in json_paths(output) if not any(_matches(p, f) for f in fields))
    top = {f for f in fields if "." not in f and "[" not in f}
    always = {f for f in top if not fields[f].startswith("only with")}  # "only with --repair": not in this run
    assert not undocumented, f"{heading}: fields the output has but docs/json.md does not list: {undocumented}"
    assert always <= set(output) <= top, (
        f"{heading}: documented top-level fields {sorted(top)}, output's {sorted(output)}")


def test_every_command_with_json_has_a_json_section():
    _, commands = cli_commands()
    with_json = {name for name, cmd in commands.items() if any("--json" in p.opts for p in cmd.params)}
    assert with_json == set(JSON_RUNS), "update JSON_RUNS and docs/json.md"


# --- links ----------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fence = not fence
        m = None if fence else re.match(r"^#{1,6} (.*)$", line)
        if m:
            base = slug(m.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_point_to_existing_files_and_headings(page):
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.name}")
    assert not broken, f"{page.relative_to(REPO)}: " + "; ".join(broken)


def test_the_readme_points_to_docs_not_to_a_shared_folder():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "DESIGN.md" not in readme and "shared folder" not in readme
    assert "docs/README.md" in readme
    index = read("README.md")
    assert not [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and f"({p.name})" not in index]


if __name__ == "__main__":
    print("\n".join(repair_table() if sys.argv[1:] == ["repair"] else machine_table()))

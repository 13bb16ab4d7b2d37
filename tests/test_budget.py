"""Cost and budgets: the price table, the parsers' input/output split, [budget] and
[pricing] in kanban.toml, the budget check, the spend queries on a real history,
the model ladder, and the dollars `kanban status` and `kanban report` show."""

from __future__ import annotations

import json
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from test_presets import AIDER_CACHED, AIDER_OK, CLAUDE_INIT, CLAUDE_OK, CODEX_OK, PH

from kanban.budget import (
    BudgetConfig,
    Limit,
    Spend,
    blocked,
    budget_notice,
    budget_reason,
    parse_limit,
    record_budget,
    tokens,
    usd,
    utc_midnight,
)
from kanban.config import AgentConfig, Config, dump_default_config, load_config, model_for
from kanban.errors import BAD_INPUT, KanbanError
from kanban.history import DB_NAME, History
from kanban.presets import build_argv, parse_cost
from kanban.pricing import PRICES, Price, lookup, normalize, price_run, run_cost
from kanban.report import build_report


def load(root: Path, text: str) -> Config:
    (root / "kanban.toml").write_text(text, encoding="utf-8")
    return load_config(root)


def error_of(root: Path, text: str) -> KanbanError:
    with pytest.raises(KanbanError) as info:
        load(root, text)
    return info.value


# --- the price table -----------------------------------------------------------


@pytest.mark.parametrize(("model", "key"), [
    ("gpt-5", "gpt-5"),
    ("gpt-5-2025-08-07", "gpt-5"),
    ("gpt-5-codex", "gpt-5-codex"),
    ("gpt-5-mini-2025-08-07", "gpt-5-mini"),
    ("gpt-5.1-codex", "gpt-5.1"),
    ("GPT-4o", "gpt-4o"),
    ("gpt-4o-mini", "gpt-4o-mini"),
    ("openai/gpt-4o-mini", "gpt-4o-mini"),
    ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
    ("o3", "o3"),
    ("o3-mini", "o3-mini"),
    ("o4-mini-2025-04-16", "o4-mini"),
    ("haiku", "haiku"),
    ("sonnet", "sonnet"),
    ("opus", "opus"),
    ("sonnet[1m]", "sonnet"),
    ("claude-opus-4-8[1m]", "claude-opus-4-8"),
    ("claude-opus-4-20250514", "claude-opus-4"),
    ("claude-opus-4-1-20250805", "claude-opus-4-1"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
    ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
])  # fmt: skip
def test_lookup_by_exact_name_then_longest_prefix(model, key):
    found = lookup(model)
    assert found is not None and found[0] == key, found
    assert found[1] == PRICES[key]


@pytest.mark.parametrize("model", [None, "", "  ", "llama3", "gpt-5.9", "gpt-50", "o33", "my-model"])
def test_unknown_models_are_unpriced(model):
    assert lookup(model) is None
    assert price_run("codex", model, parse_cost("codex", CODEX_OK)) is None


def test_prices_of_the_current_models():
    assert (PRICES["gpt-5"].input, PRICES["gpt-5"].output, PRICES["gpt-5"].cached_input) == (1.25, 10.0, 0.125)
    assert lookup("claude-opus-4-8")[1].input == 5.0 and lookup("claude-opus-4-1")[1].input == 15.0
    sonnet = lookup("claude-sonnet-4-5")[1]
    assert (sonnet.input, sonnet.output, sonnet.cached_input, sonnet.cache_write) == (3.0, 15.0, 0.3, 3.75)
    assert normalize("OpenRouter/Anthropic/Claude-Sonnet-4-5[1m]") == "claude-sonnet-4-5"


def test_price_arithmetic_with_cached_and_written_input():
    price = Price(input=2.0, output=10.0, cached_input=0.5, cache_write=2.5)
    assert price.cost(input_tokens=1_000_000, output_tokens=0) == 2.0
    assert price.cost(input_tokens=0, output_tokens=500_000) == 5.0
    # 1M prompt tokens, of them 600k read from the cache and 100k written to it
    cost = price.cost(input_tokens=1_000_000, output_tokens=0, cached_input_tokens=600_000,
                      cache_write_tokens=100_000)
    assert cost == pytest.approx(0.3 * 2.0 + 0.6 * 0.5 + 0.1 * 2.5)
    # counts that do not add up are clipped, never negative
    assert Price(1.0, 1.0).cost(input_tokens=10, output_tokens=-5, cached_input_tokens=50) >= 0


def test_config_prices_override_and_extend_the_table(tmp_path):
    config = load(tmp_path, '[pricing."gpt-5"]\ninput = 2\noutput = 20.5\n\n'
                            '[pricing."my-*"]\ninput = 1.0\noutput = 2.0\ncached_input = 0.1\n\n'
                            '[pricing."GPT-5-Mini"]\ninput = 0.3\noutput = 3\n')
    assert config.pricing == {"gpt-5": Price(2.0, 20.5), "my-*": Price(1.0, 2.0, 0.1),
                              "gpt-5-mini": Price(0.3, 3.0)}
    assert lookup("gpt-5", config.pricing) == ("gpt-5", Price(2.0, 20.5))
    assert lookup("gpt-5-2025-08-07", config.pricing)[1] == Price(2.0, 20.5)  # a tie: kanban.toml's
    assert lookup("my-local-model", config.pricing) == ("my-*", Price(1.0, 2.0, 0.1))
    assert lookup("gpt-5-mini-2025-08-07", config.pricing)[1] == Price(0.3, 3.0)
    assert lookup("gpt-5-codex", config.pricing)[0] == "gpt-5-codex"  # the longer built-in key
    assert lookup("my-local-model") is None  # only with the config's table


# --- the parsers' input/output split, and pricing a run ---------------------------


def test_claude_split_from_the_result_line():
    cost = parse_cost("claude", CLAUDE_OK)
    assert cost == {"cost_usd": 0.0113, "tokens": 4742, "input_tokens": 1500 + 3000 + 200,
                    "output_tokens": 42, "cached_input_tokens": 3000, "cache_write_tokens": 200,
                    "model": "claude-opus-4-8"}


def _assistant(msg_id: str, output: int, model: str = "claude-sonnet-4-5-20250929") -> str:
    return json.dumps({"type": "assistant", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model,
        "content": [{"type": "text", "text": "..."}],
        "usage": {"input_tokens": 10, "cache_creation_input_tokens": 1000,
                  "cache_read_input_tokens": 20000, "output_tokens": output}}})


def test_claude_running_estimate_counts_each_message_once():
    # stream-json repeats a message's usage on every content block: the latest counts
    log = "\n".join([CLAUDE_INIT, _assistant("msg_1", 5), _assistant("msg_1", 300),
                     _assistant("msg_2", 40), '{"type":"user","message":{"content":[]}}'])
    cost = parse_cost("claude", log)
    assert cost["cost_usd"] is None and cost["model"] == "claude-sonnet-4-5-20250929"
    assert (cost["input_tokens"], cost["output_tokens"]) == (2 * 21010, 340)
    assert (cost["cached_input_tokens"], cost["cache_write_tokens"]) == (40000, 2000)
    expected = (20 * 3.0 + 40000 * 0.3 + 2000 * 3.75 + 340 * 15.0) / 1e6
    assert price_run("claude", None, cost) == pytest.approx(expected)


def test_codex_split_and_priced_from_the_table():
    cost = parse_cost("codex", CODEX_OK)
    assert (cost["input_tokens"], cost["output_tokens"], cost["cached_input_tokens"]) == (2946, 7, 1024)
    assert cost["cost_usd"] is None and cost["model"] is None
    expected = ((2946 - 1024) * 1.25 + 1024 * 0.125 + 7 * 10.0) / 1e6
    assert price_run("codex", "gpt-5-codex", cost) == pytest.approx(expected)
    two_turns = parse_cost("codex", CODEX_OK + CODEX_OK.splitlines()[-1] + "\n")
    assert (two_turns["input_tokens"], two_turns["output_tokens"]) == (2 * 2946, 2 * 7)


def test_aider_split_with_cache_lines():
    ok = parse_cost("aider", AIDER_OK)
    assert (ok["input_tokens"], ok["output_tokens"], ok["model"]) == (849, 19, "openai/gpt-4o-mini")
    cached = parse_cost("aider", AIDER_CACHED)
    assert (cached["input_tokens"], cached["output_tokens"]) == (12000 + 2100, 500 + 300)
    assert (cached["cache_write_tokens"], cached["cached_input_tokens"]) == (1200, 3400)


def test_the_clis_own_dollar_figure_wins():
    assert price_run("claude", "haiku", parse_cost("claude", CLAUDE_OK)) == 0.0113
    assert price_run("aider", "gpt-5", parse_cost("aider", AIDER_OK)) == 0.00014
    # aider without prices for its model: the table, by the model aider names
    unpriced = AIDER_OK.replace(" Cost: $0.00014 message, $0.00014 session.", "")
    cost = parse_cost("aider", unpriced)
    assert cost["cost_usd"] is None
    assert price_run("aider", None, cost) == pytest.approx((849 * 0.15 + 19 * 0.60) / 1e6)
    # the log's model is unpriced: the configured one is tried next
    renamed = unpriced.replace("openai/gpt-4o-mini", "openai/house-model")
    assert price_run("aider", "gpt-4o", parse_cost("aider", renamed)) == pytest.approx(
        (849 * 2.5 + 19 * 10.0) / 1e6)
    assert price_run("aider", None, parse_cost("aider", renamed)) is None


def test_run_cost_says_where_the_figure_came_from():
    assert run_cost("claude", None, CLAUDE_OK)["source"] == "cli"
    codex = run_cost("codex", "gpt-5", CODEX_OK)
    assert codex["source"] == "table" and codex["model"] == "gpt-5" and codex["tokens"] == 2953
    assert run_cost("codex", "unknown-model", CODEX_OK)["source"] is None
    assert run_cost("demo", None, "anything")["cost_usd"] is None
    assert run_cost("codex", "gpt-5", "")["tokens"] is None


# --- [budget] and [pricing] in kanban.toml ------------------------------------------


@pytest.mark.parametrize(("text", "limit"), [
    ("$2", Limit(2.0, "usd")), ("2.50", Limit(2.5, "usd")), ("$0.05", Limit(0.05, "usd")),
    (" $ 20 ", Limit(20.0, "usd")), ("$.5", Limit(0.5, "usd")),
    ("500k tokens", Limit(500_000, "tokens")), ("2M tokens", Limit(2_000_000, "tokens")),
    ("1.5M tokens", Limit(1_500_000, "tokens")), ("15000 tokens", Limit(15_000, "tokens")),
    ("20K tokens", Limit(20_000, "tokens")), ("1 token", Limit(1, "tokens")),
])  # fmt: skip
def test_limit_syntax(text, limit):
    assert parse_limit(text) == limit


@pytest.mark.parametrize("value", [2, 2.5, True, None, "", "$", "$0", "0", "-1", "$-2", "2 dollars",
                                   "500k", "tokens", "2m tokens", "2 M tokens x", "$2 tokens",
                                   "0 tokens", "nan", "inf", "$1e3", "1,000"])
def test_limit_syntax_refused(value):
    assert parse_limit(value) is None


def test_budget_config(tmp_path):
    config = load(tmp_path, '[budget]\ntask = "$2"\nrun = "2.50"\nday = "500k tokens"\n')
    assert config.budget == BudgetConfig(task=Limit(2.0, "usd"), run=Limit(2.5, "usd"),
                                         day=Limit(500_000, "tokens"))
    assert load(tmp_path, '[budget]\nday = "$50"\n').budget == BudgetConfig(day=Limit(50.0, "usd"))
    assert not load(tmp_path, "pool_size = 2\n").budget


@pytest.mark.parametrize(("text", "line", "fragment", "hint"), [
    ('pool_size = 2\n[budget]\ntask = 2\n', 3, "budget.task must be a dollar amount or a token count, in quotes,"
     " got 2", '"$2"'),
    ('[budget]\nrun = "2 dollars"\n', 2, 'budget.run must be a dollar amount or a token count, got "2 dollars"',
     '"500k tokens"'),
    ('[budget]\nday = "$0"\n', 2, "budget.day", '"$0.50"'),
    ('[budget]\ntask = "$1"\nweekly = "$5"\n', 3, "unknown key budget.weekly", "valid keys: task, run, day"),
    ('[budget]\ntsk = "$1"\n', 2, "unknown key budget.tsk", 'did you mean "task"?'),
    ('budget = "$5"\n', 1, "budget must be a table", "[table]"),
    ('[pricing."gpt-5"]\ninput = 1.25\n', 1, 'pricing.gpt-5 has no output price', "output = "),
    ('[pricing."gpt-5"]\ninput = "1.25"\noutput = 10\n', 2, "pricing.gpt-5.input must be a number",
     "without quotes"),
    ('[pricing."gpt-5"]\ninput = 1\noutput = -10\n', 3, "pricing.gpt-5.output must be from 0", "output = 1.25"),
    ('[pricing."gpt-5"]\ninput = 1\nouptut = 2\n', 3, "unknown key pricing.gpt-5.ouptut",
     'did you mean "output"?'),
    ('[pricing.gpt-5.1]\ninput = 1\noutput = 2\n', 1, "pricing.gpt-5 is not a price table", '"gpt-5.1"'),
    ('[pricing]\ngpt-5 = 3\n', 2, "pricing.gpt-5 must be a table", "[table]"),
    ('[agent]\nmodel = []\n', 2, "agent.model must name at least one model", '["haiku", "sonnet"]'),
    ('[agent.reviewer]\nmodel = ["haiku", 3]\n', 2, "agent.reviewer.model must be a model name or a list",
     '["haiku", "sonnet"]'),
    ('[agent]\nmodel = ["haiku", " "]\n', 2, "agent.model has an empty model name", "ladder"),
])  # fmt: skip
def test_config_errors_are_one_line_with_file_and_line(tmp_path, text, line, fragment, hint):
    err = error_of(tmp_path, text)
    assert fragment in err.message, err
    assert err.hint and hint in err.hint, err
    assert (err.file, err.line, err.code) == ("kanban.toml", line, BAD_INPUT)
    assert "\n" not in str(err)


def test_bad_budget_is_exit_2_through_kanban_status(tmp_path):
    (tmp_path / "TODO.md").write_text("## TASK-1: a\n")
    (tmp_path / "kanban.toml").write_text('pool_size = 2\n\n[budget]\ntask = "two dollars"\n')
    proc = run_cli(tmp_path, "status", check_code=2)
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith('error: kanban.toml:4: budget.task must be a dollar amount or a token count,'
                                  ' got "two dollars"; write dollars like "$2"'), proc.stderr
    proc = run_cli(tmp_path, "status", "--json", check_code=2)
    assert proc.stdout == "" and "kanban.toml:4:" in proc.stderr


def test_the_default_files_budget_and_pricing_examples_are_valid(tmp_path):
    text = dump_default_config()
    assert "# [budget]" in text and '# [pricing."my-model"]' in text and '["haiku", "sonnet"]' in text
    lines = text.splitlines()
    start, end = lines.index("# [budget]"), lines.index("# cache_write = 1.5           # cache writes;"
                                                        " default: the input price")
    examples = [line.removeprefix("# ") for line in lines[start:end + 1]
                if line.startswith("# [") or (line.startswith("# ") and " = " in line)]
    config = load(tmp_path, "\n".join(examples) + "\n")
    assert config.budget == BudgetConfig(Limit(2.0, "usd"), Limit(20.0, "usd"), Limit(5e6, "tokens"))
    assert config.pricing == {"my-model": Price(1.25, 10.0, 0.125, 1.5)}
    assert load(tmp_path, text).budget == BudgetConfig()  # as written, all commented out


# --- the budget check -----------------------------------------------------------------

BUDGET = BudgetConfig(task=Limit(2.0, "usd"), run=Limit(20.0, "usd"), day=Limit(500_000, "tokens"))


def test_blocked_names_the_budget_reached():
    under = Spend(1.99, 1000, 3)
    assert blocked(BUDGET, under, under, under, "TASK-3") is None
    assert blocked(BUDGET, Spend(2.04, 10, 2), under, under, "TASK-3") == \
        "budget reached: task TASK-3 spent $2.04 of $2.00"
    assert blocked(BUDGET, Spend(2.0), under, under, "TASK-3") == \
        "budget reached: task TASK-3 spent $2.00 of $2.00"  # at the limit is reached
    assert blocked(BUDGET, under, Spend(20.1), under) == "budget reached: this run spent $20.10 of $20.00"
    assert blocked(BUDGET, under, under, Spend(0.5, 512_000)) == \
        "budget reached: today (UTC) used 512k of 500k tokens"
    # the broadest limit is named: the day's, then the run's, then the task's
    assert blocked(BUDGET, Spend(9.0), Spend(99.0), Spend(0, 10**6), "T-1").startswith(
        "budget reached: today (UTC)")
    assert blocked(BUDGET, Spend(9.0), Spend(99.0), under, "T-1").startswith("budget reached: this run")
    # a spend not known (no run going on) is not checked; no limits, nothing blocked
    assert blocked(BUDGET, under, None, None) is None
    assert blocked(BudgetConfig(), Spend(1e9, 10**12), Spend(1e9), Spend(1e9)) is None
    small = BudgetConfig(task=Limit(0.05, "usd"))
    assert blocked(small, Spend(0.0512), None, None, "ws-2") == "budget reached: task ws-2 spent $0.0512 of $0.05"


def test_figures_as_a_person_reads_them():
    assert [usd(x) for x in (0, 2, 2.04, 0.05, 0.0512, 0.1, 1234.5)] == \
        ["$0.00", "$2.00", "$2.04", "$0.05", "$0.0512", "$0.10", "$1,234.50"]
    assert [tokens(x) for x in (0, 999, 1000, 1234, 512_000, 2_000_000, 1_250_000)] == \
        ["0", "999", "1k", "1.2k", "512k", "2M", "1.2M"]


# --- spend in the history ---------------------------------------------------------------

CODEX_AGENT = '[agent]\npreset = "codex"\nmodel = "gpt-5"\n'


def add_run(history: History, task: str, role: str = "task", *, cost: float | None = None,
            count: int | None = None, started: float | None = None, ended: bool = True,
            log: str = "/nonexistent/agent.log", model: str | None = None) -> int:
    attempt = history.next_attempt(task, role)
    run_id = history.start_run(task=task, role=role, attempt=attempt, log=log, timeout=900.0,
                               run_dir=f"/runs/{task}/{role}-{attempt}-{time.monotonic_ns()}",
                               head_before=None, model=model)
    if started is not None:
        history.db.execute("UPDATE runs SET started=? WHERE id=?", (started, run_id))
    if ended:
        history.finish_run(run_id, outcome="ok", result={"exit_code": 0}, cost_usd=cost, tokens=count,
                           input_tokens=None if count is None else count - count // 10,
                           output_tokens=None if count is None else count // 10)
    return run_id


def test_spend_per_task_since_a_time_and_today(tmp_path):
    yesterday = utc_midnight() - 3600
    with History(tmp_path) as history:
        add_run(history, "TASK-1", cost=0.50, count=1000, started=yesterday)
        add_run(history, "TASK-1", "reviewer", cost=0.25, count=500)
        add_run(history, "TASK-2", cost=None, count=7000)  # tokens, no price
        add_run(history, "TASK-2", cost=None, count=None)  # nothing known (a crash)
        add_run(history, "TASK-3", cost=9.0, count=1, ended=False)  # running: not counted here
        assert history.spend() == Spend(0.75, 8500, 4, 1, 2)
        assert history.spend(task="TASK-1") == Spend(0.75, 1500, 2, 0, 2)
        assert history.spend(task="TASK-9") == Spend()
        assert history.spend(since=utc_midnight()) == Spend(0.25, 7500, 3, 1, 1)
        assert history.spend(task="TASK-1", since=utc_midnight()) == Spend(0.25, 500, 1, 0, 1)
        assert history.spend_by_task() == {"TASK-1": Spend(0.75, 1500, 2, 0, 2),
                                           "TASK-2": Spend(0.0, 7000, 2, 1, 0)}
        assert Spend.of(None, None) + Spend.of(0.5, 10) + Spend.of(None, 7) == Spend(0.5, 17, 3, 1, 1)
        runs = history.runs("TASK-1")
        assert (runs[0].input_tokens, runs[0].output_tokens) == (900, 100)


def test_old_history_databases_gain_the_new_columns(tmp_path):
    (tmp_path / ".kanban").mkdir()
    db = sqlite3.connect(tmp_path / ".kanban" / DB_NAME)
    db.executescript("""
        CREATE TABLE runs (id INTEGER PRIMARY KEY, task TEXT NOT NULL, role TEXT NOT NULL,
            attempt INTEGER NOT NULL, run_dir TEXT NOT NULL UNIQUE, log TEXT NOT NULL, pid INTEGER,
            pid_start INTEGER, head_before TEXT, timeout REAL NOT NULL, started REAL NOT NULL, ended REAL,
            exit_code INTEGER, signal INTEGER, timed_out INTEGER NOT NULL DEFAULT 0,
            stalled INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0, outcome TEXT,
            cost_usd REAL, tokens INTEGER);
        INSERT INTO runs (task, role, attempt, run_dir, log, timeout, started, ended, outcome, cost_usd, tokens)
            VALUES ('TASK-1', 'task', 1, '/r/1', '/r/1/agent.log', 900, 1.0, 2.0, 'ok', 0.4, 1200);
    """)
    db.close()
    for _ in range(2):  # opening it twice migrates once
        with History(tmp_path) as history:
            (old,) = history.runs()
            assert (old.task, old.cost_usd, old.tokens, old.model, old.input_tokens) == (
                "TASK-1", 0.4, 1200, None, None)
            assert history.spend(task="TASK-1") == Spend(0.4, 1200, 1, 0, 1)
    with History(tmp_path) as history:
        run_id = add_run(history, "TASK-2", cost=0.1, count=100, model="gpt-5")
        history.finish_run(run_id, outcome="ok", result=None, model="ignored: already ended")
        new = history.runs("TASK-2")[0]
        assert (new.model, new.input_tokens, new.output_tokens) == ("gpt-5", 90, 10)


def test_finish_run_records_the_model_the_log_names(tmp_path):
    with History(tmp_path) as history:
        run_id = add_run(history, "TASK-1", ended=False, model="sonnet")
        history.finish_run(run_id, outcome="ok", result={}, cost_usd=0.01, tokens=10,
                           model="claude-sonnet-4-5-20250929")
        assert history.runs()[0].model == "claude-sonnet-4-5-20250929"
        other = add_run(history, "TASK-2", ended=False, model="haiku")
        history.finish_run(other, outcome="ok", result={})
        assert history.runs("TASK-2")[0].model == "haiku"


def test_budget_reason_from_the_history_and_the_running_agents_logs(tmp_path):
    config = load(tmp_path, CODEX_AGENT + '\n[budget]\ntask = "$1"\nrun = "$3"\nday = "$5"\n')
    started = time.time() - 60
    with History(tmp_path) as history:
        add_run(history, "TASK-1", cost=0.60, count=100)
        assert budget_reason(history, config, "TASK-1", started) is None
        # a running reviewer whose log already shows 100k gpt-5 output tokens: $1 so far
        log = tmp_path / "reviewer.log"
        log.write_text('{"type":"turn.completed","usage":{"input_tokens":0,"output_tokens":100000}}\n')
        add_run(history, "TASK-1", "reviewer", ended=False, log=str(log), model="gpt-5")
        assert budget_reason(history, config, "TASK-1", started) == \
            "budget reached: task TASK-1 spent $1.60 of $1.00"
        assert budget_reason(history, config, "TASK-2", started) is None
        add_run(history, "TASK-2", cost=1.50)
        add_run(history, "TASK-3", cost=0.90)
        assert budget_reason(history, config, "TASK-4", started) == "budget reached: this run spent $4.00 of $3.00"
        assert budget_reason(history, config, "TASK-4", None) is None  # no run going on
        add_run(history, "TASK-5", cost=2.0, started=utc_midnight() - 60)  # yesterday
        add_run(history, "TASK-5", cost=1.0, started=started - 10)  # today, before this run
        assert budget_reason(history, config, "TASK-4", None) == \
            "budget reached: today (UTC) spent $5.00 of $5.00"
        # no [budget]: nothing is ever held
        assert budget_reason(history, load(tmp_path, CODEX_AGENT), "TASK-1", started) is None


def test_token_budgets_count_unpriced_runs(tmp_path):
    config = load(tmp_path, '[agent]\npreset = "codex"\n\n[budget]\ntask = "10k tokens"\nday = "$1"\n')
    with History(tmp_path) as history:
        add_run(history, "TASK-1", cost=None, count=9_000)
        assert budget_reason(history, config, "TASK-1", None) is None
        add_run(history, "TASK-1", "reviewer", cost=None, count=1_500)
        assert budget_reason(history, config, "TASK-1", None) == \
            "budget reached: task TASK-1 used 10.5k of 10k tokens"


def test_budget_events_are_recorded_once_and_read_back(tmp_path):
    with History(tmp_path) as history:
        assert budget_notice(history) is None
        reason = "budget reached: task TASK-1 spent $2.04 of $2.00"
        assert record_budget(history, "TASK-1", reason)
        assert not record_budget(history, "TASK-1", reason)  # every tick asks again: one event
        assert [e[2] for e in history.events("TASK-1")] == ["budget"]
        assert budget_notice(history) == reason
        run_reason = "budget reached: this run spent $20.10 of $20.00"
        assert record_budget(history, "TASK-2", run_reason)
        assert budget_notice(history) == run_reason + " (2 tasks waiting)"
        # an agent of TASK-2 started since (the budget was raised): its event is over
        history.event("TASK-2", "spawned", detail="task attempt 1")
        assert budget_notice(history) == reason
        assert record_budget(history, "TASK-2", run_reason)  # held again after that spawn
        # events of yesterday do not count, unless the current run began before them
        history.db.execute("UPDATE events SET time=? WHERE kind='budget'", (utc_midnight() - 60,))
        assert budget_notice(history) is None
        assert budget_notice(history, since=utc_midnight() - 3600) == run_reason + " (2 tasks waiting)"


# --- the model ladder -------------------------------------------------------------------


def test_model_ladder_in_config(tmp_path):
    config = load(tmp_path, '[agent]\npreset = "claude"\nmodel = ["haiku", "sonnet"]\n\n'
                            '[agent.reviewer]\nmodel = "opus"\n\n[agent.tester]\nmodel = ["sonnet"]\n')
    task, reviewer, tester = (config.agent_for(r) for r in ("task", "reviewer", "tester"))
    assert (task.model, task.models) == ("haiku", ("haiku", "sonnet"))
    assert (reviewer.model, reviewer.models) == ("opus", ())  # a role's string drops the ladder
    assert (tester.model, tester.models) == ("sonnet", ())
    assert [model_for(task, n) for n in (1, 2, 3, 7)] == ["haiku", "sonnet", "sonnet", "sonnet"]
    assert [model_for(reviewer, n) for n in (1, 2)] == ["opus", "opus"]
    assert model_for(AgentConfig(), 1) is None
    assert model_for(task, 0) == "haiku"
    assert load(tmp_path, '[agent]\nmodel = "sonnet"\n').agent == AgentConfig(model="sonnet")


def test_the_ladders_model_reaches_the_command_line(tmp_path):
    agent = load(tmp_path, '[agent]\npreset = "claude"\nmodel = ["haiku", "sonnet"]\n').agent
    argv = build_argv(agent, {**PH, "model": model_for(agent, 2)})
    assert argv[argv.index("--model") + 1] == "sonnet"
    argv = build_argv(agent, {**PH, "model": ""})  # no rung given: the first model
    assert argv[argv.index("--model") + 1] == "haiku"
    custom = AgentConfig(command=("my-agent", "--model={model}"), model="a", models=("a", "b"))
    assert build_argv(custom, {**PH, "model": model_for(custom, 5)}) == ["my-agent", "--model=b"]


# --- status and report --------------------------------------------------------------------


def board(root: Path) -> None:
    (root / "TODO.md").write_text("## TASK-3: waiting\n")
    (root / "IN_PROGRESS.md").write_text("## TASK-1: being reviewed\n\n## TASK-2: fresh\n")


def test_status_shows_dollars_per_task_agent_and_total(tmp_path):
    board(tmp_path)
    (tmp_path / "kanban.toml").write_text(CODEX_AGENT)
    log = tmp_path / "live.log"
    log.write_text('{"type":"turn.completed","usage":{"input_tokens":200000,"cached_input_tokens":0,'
                   '"output_tokens":10000}}\n')  # $0.25 + $0.10 at gpt-5 prices
    with History(tmp_path) as history:
        add_run(history, "TASK-1", cost=1.25, count=40_000)
        add_run(history, "TASK-1", "reviewer", ended=False, log=str(log), model="gpt-5")
        add_run(history, "TASK-3", cost=None, count=5_000, started=utc_midnight() - 60)
        record_budget(history, "TASK-3", "budget reached: task TASK-3 spent $2.04 of $2.00")
    data = json.loads(run_cli(tmp_path, "status", "--json", check_code=0).stdout)
    rows = {t["id"]: t for c in data["columns"].values() for t in c["tasks"]}
    assert rows["TASK-1"]["cost_usd"] == pytest.approx(1.60) and rows["TASK-1"]["tokens"] == 250_000
    assert (rows["TASK-2"]["cost_usd"], rows["TASK-2"]["tokens"]) == (None, None)
    assert (rows["TASK-3"]["cost_usd"], rows["TASK-3"]["tokens"]) == (None, 5_000)  # unpriced
    (agent,) = data["agents"]
    assert agent["task"] == "TASK-1" and agent["cost_usd"] == pytest.approx(0.35) and agent["tokens"] == 210_000
    assert data["cost"] == {"usd": pytest.approx(1.60), "tokens": 255_000, "today_usd": pytest.approx(1.60),
                            "today_tokens": 250_000, "unpriced_runs": 1}
    assert data["budget"] == "budget reached: task TASK-3 spent $2.04 of $2.00"
    human = run_cli(tmp_path, "status", check_code=0).stdout
    assert "$1.60" in human and "$0.35 so far" in human and "5k tokens" in human
    assert "Cost: $1.60 (255k tokens), $1.60 today (UTC); 1 run(s) unpriced" in human
    assert "Budget reached: task TASK-3 spent $2.04 of $2.00; raise [budget] in kanban.toml" in human


def test_status_without_history_has_null_costs_and_creates_nothing(tmp_path):
    board(tmp_path)
    data = json.loads(run_cli(tmp_path, "status", "--json", check_code=0).stdout)
    assert data["budget"] is None and data["cost"]["usd"] == 0.0
    assert all(t["cost_usd"] is None for c in data["columns"].values() for t in c["tasks"])
    assert not (tmp_path / ".kanban").exists()
    assert "Cost:" not in run_cli(tmp_path, "status", check_code=0).stdout


def test_report_shows_cost_per_run_task_role_and_total(tmp_path):
    with History(tmp_path) as history:
        add_run(history, "TASK-1", cost=1.25, count=40_000, model="gpt-5")
        add_run(history, "TASK-1", "reviewer", cost=0.25, count=10_000, model="gpt-5-mini")
        add_run(history, "TASK-2", cost=None, count=2_000, model="house-model")
        add_run(history, "TASK-2", "tester", ended=False)
    text = build_report(tmp_path)
    assert "- cost: $1.50 over 52k tokens (46.8k in, 5.2k out)" in text
    assert "- unpriced runs (tokens but no price for their model): 1;" in text
    assert "| task | 2 | $1.25+ | 42k | 37.8k | 4.2k |" in text  # + TASK-2's unpriced task run
    assert "| reviewer | 1 | $0.25 | 10k | 9k | 1k |" in text
    assert "| TASK-1 | 1/1/0 |" in text and "| $1.50 | 50k | in progress |" in text
    assert "| TASK-2 | 1/0/1 |" in text and "| unpriced | 2k | in progress |" in text
    assert "| TASK-1 | task | 1 | gpt-5 | ok |" in text and "| 40k (36k/4k) | $1.25 |" in text
    assert "| TASK-2 | task | 1 | house-model | ok |" in text and "| 2k (1.8k/200) | unpriced |" in text
    assert "| TASK-2 | tester | 1 | - | running | running | - | - |" in text


def test_runs_without_figures_are_neither_priced_nor_unpriced(tmp_path):
    board(tmp_path)
    (tmp_path / "kanban.toml").write_text('[agent]\npreset = "demo"\n')
    log = tmp_path / "demo.log"
    log.write_text("demo agent: working\n")
    with History(tmp_path) as history:
        add_run(history, "TASK-2", ended=False, log=str(log))
        add_run(history, "TASK-3")  # finished, nothing known
    data = json.loads(run_cli(tmp_path, "status", "--json", check_code=0).stdout)
    assert (data["agents"][0]["cost_usd"], data["agents"][0]["tokens"]) == (None, None)
    rows = {t["id"]: t for c in data["columns"].values() for t in c["tasks"]}
    assert (rows["TASK-2"]["cost_usd"], rows["TASK-3"]["cost_usd"]) == (None, None)
    assert data["cost"]["unpriced_runs"] == 0 and data["budget"] is None


# --- nothing but a one-line KanbanError, whatever [budget] and [pricing] hold ----------

FUZZ_KEYS = ["task", "run", "day", "input", "output", "cached_input", "cache_write", "model", "weekly"]
FUZZ_VALUES = ['"$2"', '"2.50"', '"500k tokens"', "2", "-1", '"nan"', "nan", "inf", "1e400", '""', "true",
               '"9999999999999999999999999 tokens"', "[]", '["a"]', '["a", 1]', "{}", '"$0"',
               "{ input = 1 }", "{ input = 1, output = 2 }"]
FUZZ_HEADERS = ["[budget]", "[pricing]", '[pricing."gpt-5"]', "[pricing.a.b]", '[pricing.""]', "[agent]",
                "[[budget]]", "[[pricing]]", "[agent.reviewer]"]


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(st.one_of(st.sampled_from(FUZZ_HEADERS),
                          st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(FUZZ_KEYS),
                                    st.sampled_from(FUZZ_VALUES))), max_size=8))
def test_budget_and_pricing_tables_never_crash(lines):
    with tempfile.TemporaryDirectory() as root:
        data = "\n".join(lines).encode()
        (Path(root) / "kanban.toml").write_bytes(data)
        try:
            config = load_config(Path(root))
        except KanbanError as err:
            assert err.file == "kanban.toml" and err.message and err.hint
            assert err.line is None or 1 <= err.line <= data.count(b"\n") + 1
            assert "\n" not in str(err)
        else:
            assert isinstance(config, Config)

"""Dollars per million tokens, to price the runs whose CLI reports only tokens.

claude prints its own dollar figure, and aider does for the models it knows;
codex prints only tokens. This table fills the gap, so that every preset
shows dollars when its model is known. `[pricing."name"]` in kanban.toml
adds a model or overrides a price.

A name is looked up lowercased, with a provider prefix ("openai/",
"anthropic/", "us.anthropic.") and a variant suffix ("[1m]") dropped: first
exactly, then against every key used as a prefix ("gpt-5" covers
"gpt-5-2025-08-07" and "gpt-5@x", not "gpt-5.1": the next character must be
"-", "_", "@" or ":") or as a glob ("gpt-5*"). The longest key wins; on a tie,
kanban.toml's. Nothing matching: the run is unpriced (None), never guessed.

List prices, standard tier, checked against the providers' pricing pages
(November 2026). The aliases of Claude Code and aider ("haiku", "sonnet",
"opus") follow whichever model the CLI maps them to, so they are priced at
the dearest current model of their family: a budget errs on the safe side.
Long-context surcharges and batch discounts are not modelled.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MILLION = 1_000_000


@dataclass(frozen=True)
class Price:
    """Dollars per million tokens."""

    input: float
    output: float
    cached_input: float | None = None  # cache reads; None: the input price
    cache_write: float | None = None  # cache writes (Anthropic, 5 minutes); None: the input price

    def cost(self, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
             cache_write_tokens: int = 0) -> float:
        """input_tokens counts every prompt token, the cached and cache-written ones included."""
        cached = max(0, min(cached_input_tokens, input_tokens))
        written = max(0, min(cache_write_tokens, input_tokens - cached))
        plain = input_tokens - cached - written
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        return (plain * self.input + cached * cached_rate + written * write_rate
                + max(0, output_tokens) * self.output) / MILLION


def _anthropic(input: float, output: float, cache_read: float | None = None) -> Price:
    # Cache reads are a tenth of the input price, 5-minute cache writes 1.25 times it.
    return Price(input, output, input / 10 if cache_read is None else cache_read, input * 1.25)


def _openai(input: float, cached: float | None, output: float) -> Price:
    return Price(input, output, cached)


PRICES: dict[str, Price] = {
    # Anthropic (platform.claude.com/docs/en/about-claude/pricing)
    "claude-fable-5-1": _anthropic(10.0, 50.0, 0.25),
    "claude-fable-5": _anthropic(10.0, 50.0, 1.0),
    "claude-mythos-5-1": _anthropic(10.0, 50.0, 0.25),
    "claude-mythos-5": _anthropic(10.0, 50.0, 1.0),
    "claude-opus-5-5": _anthropic(4.0, 20.0, 0.20),
    "claude-opus-5": _anthropic(5.0, 25.0),
    "claude-opus-4-8": _anthropic(5.0, 25.0),
    "claude-opus-4-7": _anthropic(5.0, 25.0),
    "claude-opus-4-6": _anthropic(5.0, 25.0),
    "claude-opus-4-5": _anthropic(5.0, 25.0),
    "claude-opus-4-1": _anthropic(15.0, 75.0),
    "claude-opus-4": _anthropic(15.0, 75.0),  # claude-opus-4-0, claude-opus-4-20250514
    "claude-sonnet-5-5": _anthropic(2.0, 10.0, 0.10),
    "claude-sonnet-5": _anthropic(2.0, 10.0),
    "claude-sonnet-4-6": _anthropic(3.0, 15.0),
    "claude-sonnet-4-5": _anthropic(3.0, 15.0),
    "claude-sonnet-4": _anthropic(3.0, 15.0),
    "claude-3-7-sonnet": _anthropic(3.0, 15.0),
    "claude-3-5-sonnet": _anthropic(3.0, 15.0),
    # Haiku 5.5 costs $0.10 / $0.50 for prompts up to 100k tokens and this above; a run's
    # totals do not say how long each prompt was, so the higher band is used.
    "claude-haiku-5-5": _anthropic(0.50, 2.50),
    "claude-haiku-4-5": _anthropic(1.0, 5.0),
    "claude-3-5-haiku": _anthropic(0.80, 4.0),
    "claude-3-haiku": _anthropic(0.25, 1.25, 0.03),
    "claude-3-opus": _anthropic(15.0, 75.0),
    # The aliases of `claude --model` and aider, at the dearest current model of the family.
    "opus": _anthropic(5.0, 25.0),
    "opusplan": _anthropic(5.0, 25.0),
    "sonnet": _anthropic(3.0, 15.0),
    "haiku": _anthropic(1.0, 5.0),
    # OpenAI (developers.openai.com/api/docs/pricing): input, cached input, output
    "gpt-5.6-sol": _openai(5.0, 0.50, 30.0),
    "gpt-5.6-terra": _openai(2.0, 0.20, 12.0),
    "gpt-5.6-luna": _openai(0.20, 0.02, 1.20),
    "gpt-5.5": _openai(5.0, 0.50, 30.0),
    "gpt-5.4-mini": _openai(0.75, 0.075, 4.50),
    "gpt-5.4-nano": _openai(0.20, 0.02, 1.25),
    "gpt-5.4": _openai(2.50, 0.25, 15.0),
    "gpt-5.3-codex": _openai(1.75, 0.175, 14.0),
    "gpt-5.2": _openai(1.75, 0.175, 14.0),  # and gpt-5.2-codex
    "gpt-5.1-codex-mini": _openai(0.25, 0.025, 2.0),
    "gpt-5.1": _openai(1.25, 0.125, 10.0),  # and gpt-5.1-codex, gpt-5.1-codex-max
    "gpt-5-codex-mini": _openai(0.25, 0.025, 2.0),
    "gpt-5-codex": _openai(1.25, 0.125, 10.0),
    "gpt-5-pro": _openai(15.0, None, 120.0),
    "gpt-5-mini": _openai(0.25, 0.025, 2.0),
    "gpt-5-nano": _openai(0.05, 0.005, 0.40),
    "gpt-5": _openai(1.25, 0.125, 10.0),
    "codex-mini-latest": _openai(1.50, 0.375, 6.0),
    "o4-mini": _openai(1.10, 0.275, 4.40),
    "o3-pro": _openai(20.0, None, 80.0),
    "o3-mini": _openai(1.10, 0.55, 4.40),
    "o3": _openai(2.0, 0.50, 8.0),
    "gpt-4.1-mini": _openai(0.40, 0.10, 1.60),
    "gpt-4.1-nano": _openai(0.10, 0.025, 0.40),
    "gpt-4.1": _openai(2.0, 0.50, 8.0),
    "gpt-4o-mini": _openai(0.15, 0.075, 0.60),
    "gpt-4o": _openai(2.50, 1.25, 10.0),
}

_GLOB = set("*?[")
_SUFFIX_RE = re.compile(r"\[[^\]]*\]$")  # claude's "claude-opus-4-8[1m]"
_PREFIX_ENDS = "-_@:"


def normalize(model: str) -> str:
    """The name as the table keys it: lowercased, without provider prefix or [variant]."""
    name = _SUFFIX_RE.sub("", model.strip().lower())
    name = name.rsplit("/", 1)[-1]  # openai/gpt-4o, openrouter/anthropic/claude-...
    if "claude-" in name:  # Bedrock: us.anthropic.claude-sonnet-4-5-20250929-v1:0
        name = name[name.index("claude-"):]
    return name


def _matches(key: str, name: str) -> bool:
    if _GLOB & set(key):
        return fnmatch.fnmatchcase(name, key)
    return name.startswith(key) and (len(name) == len(key) or name[len(key)] in _PREFIX_ENDS)


def _specificity(key: str) -> int:
    return sum(1 for c in key if c not in _GLOB)


def lookup(model: str | None, pricing: Mapping[str, Price] | None = None) -> tuple[str, Price] | None:
    """(the key that matched, its price) for a model name, or None: unpriced.

    `pricing` is the [pricing] table of kanban.toml (keys lowercased); it wins
    over the built-in one for the same key.
    """
    if not model or not model.strip():
        return None
    overrides = {k.lower(): v for k, v in (pricing or {}).items()}
    names = list(dict.fromkeys([model.strip().lower(), normalize(model)]))
    for table in (overrides, PRICES):
        for name in names:
            if name in table:
                return name, table[name]
    best: tuple[int, int, str, Price] | None = None
    for rank, table in enumerate((overrides, PRICES)):
        for key, price in table.items():
            if any(_matches(key, name) for name in names):
                candidate = (_specificity(key), -rank, key, price)
                if best is None or candidate[:2] > best[:2]:
                    best = candidate
    return (best[2], best[3]) if best else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return int(value)


def price_tokens(model: str | None, parsed: Mapping[str, Any],
                 pricing: Mapping[str, Price] | None = None) -> float | None:
    """Dollars for a parsed run's tokens at the table's price of `model`, or None."""
    found = lookup(model, pricing)
    input_tokens, output_tokens = _int(parsed.get("input_tokens")), _int(parsed.get("output_tokens"))
    if found is None or input_tokens is None or output_tokens is None:
        return None
    return found[1].cost(input_tokens=input_tokens, output_tokens=output_tokens,
                         cached_input_tokens=_int(parsed.get("cached_input_tokens")) or 0,
                         cache_write_tokens=_int(parsed.get("cache_write_tokens")) or 0)


def price_run(preset: str | None, model: str | None, parsed: Mapping[str, Any],
              pricing: Mapping[str, Price] | None = None) -> float | None:
    """A run's cost in dollars: the CLI's own figure when it printed one, else the table's.

    `parsed` is what presets.parse_cost read from the log; `model` the model the
    run was started with (None: the CLI's default). The model the log names
    (claude's and aider's do) is tried first, as it is what really ran, then
    `model`. None when neither is priced or the log holds no token counts.
    `preset` names the CLI the figures come from; whatever the preset, a dollar
    figure in `parsed` wins over the table.
    """
    del preset  # the figures in `parsed` already are that preset's
    own = parsed.get("cost_usd")
    if isinstance(own, (int, float)) and not isinstance(own, bool) and math.isfinite(own):
        return float(own)
    for name in dict.fromkeys([parsed.get("model"), model]):
        if isinstance(name, str):
            cost = price_tokens(name, parsed, pricing)
            if cost is not None:
                return cost
    return None


def run_cost(preset: str | None, model: str | None, log_text: str,
             pricing: Mapping[str, Price] | None = None) -> dict[str, Any]:
    """Everything a finished (or running) agent's log says about its cost, priced.

    {"cost_usd", "tokens", "input_tokens", "output_tokens", "model", "source"}:
    source is "cli" (the CLI's own dollar figure), "table" (priced here) or
    None (no tokens, or an unpriced model: cost_usd is None then).
    """
    from kanban.presets import parse_cost

    parsed = parse_cost(preset or "", log_text) if log_text else {}
    cost = price_run(preset, model, parsed, pricing)
    source = None if cost is None else "cli" if parsed.get("cost_usd") is not None else "table"
    return {"cost_usd": cost, "tokens": parsed.get("tokens"), "input_tokens": parsed.get("input_tokens"),
            "output_tokens": parsed.get("output_tokens"), "model": parsed.get("model") or model,
            "source": source}

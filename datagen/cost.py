"""What a run will cost before it starts, and what it costs while it runs.

- `PRICES`: USD per 1M tokens for the OpenAI models people use for this (list prices as
  published on openai.com/api/pricing, mid-2025; check them before a big run and pass
  `--price-in/--price-out` to override). A model not in the table (a local vLLM, Ollama or
  llama.cpp model, a newer OpenAI one) has no known price: the dry run says so, and
  `--max-cost` then needs explicit prices.
- `TokenCounter`: tiktoken when its encoding can be loaded. tiktoken downloads encodings
  on first use, so offline (CI, air-gapped machines) it cannot; the counter then says so
  in one line and uses `approx_tokens`, documented below.
- `Budget`: the hard cap (`--max-cost`). Before a request is sent its worst case is reserved:
  prompt tokens (counted, scaled up by the largest billed/counted ratio seen for that kind of
  request, since the offline count is an approximation and a server's tokenizer may differ) ×
  input price + its `max_tokens` × output price. A request whose worst case does not fit in what
  is left waits for requests in flight to settle, and when none is in flight the stage stops. A
  response settles to what it billed (its `usage`) and releases the rest; so the billed total
  never passes the cap, even against a server that bills every answer's whole `max_tokens`.
- `billed(usage, price, batch)`: what one response cost, stored in its raw line with the price
  it was billed at (`{"usd", "input", "output", "cached_input", "batch"}`), so a later
  invocation sums what was really billed (the Batch API's half price included) instead of
  repricing at today's price (`stored_spend`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from datagen.llm import Usage
from datagen.text import HANGUL_RE


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens."""

    input: float
    output: float
    cached_input: float | None = None
    """Price of prompt tokens served from the provider's prompt cache (None: same as input)."""

    def to_dict(self) -> dict[str, float | None]:
        return {"input": self.input, "output": self.output, "cached_input": self.cached_input}


# Standard (not Batch, not priority) list prices, USD per 1M tokens.
PRICES: dict[str, Price] = {
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "o3": Price(2.00, 8.00, 0.50),
}
_DATED = re.compile(r"-\d{4}-\d{2}-\d{2}$")
BATCH_DISCOUNT = 0.5
"""The Batch API bills half the standard price."""


def price_for(model: str, table: dict[str, Price] = PRICES) -> Price | None:
    """The price of a model name, matching dated snapshots to their family; None if unknown.

    >>> price_for("gpt-4o-mini-2024-07-18") == PRICES["gpt-4o-mini"], price_for("llama-3.1-8b")
    (True, None)
    """
    name = model.split("/")[-1]
    # Only a date suffix is stripped (gpt-4o-mini-2024-07-18 is gpt-4o-mini): any other variant may be
    # priced differently, and an unknown price is better said than guessed.
    return table.get(name) or table.get(_DATED.sub("", name))


def cost_usd(usage: Usage, price: Price | None) -> float:
    """Dollars for one response's usage (0.0 when the price is unknown)."""
    if price is None:
        return 0.0
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    return ((usage.prompt_tokens - cached) * price.input + cached * cached_price
            + usage.completion_tokens * price.output) / 1e6


# --- token counting ---------------------------------------------------------------------------

APPROX_OTHER_CHARS_PER_TOKEN = 4
"""English and JSON punctuation run about 4 characters per token in OpenAI's BPE encodings."""
MESSAGE_OVERHEAD_TOKENS = 4
"""Chat formatting tokens per message (role and separators), as in OpenAI's token-counting guide."""
REPLY_PRIMING_TOKENS = 3


def approx_tokens(text: str) -> int:
    """The offline approximation: one token per Hangul syllable plus one per 4 other non-space characters.

    Why: OpenAI's BPE encodings rarely merge Korean syllables; cl100k_base spends about one
    token per syllable and o200k_base (gpt-4o and later) somewhat fewer. Counting each
    syllable as a whole token therefore errs high, the safe side for a budget.

    >>> approx_tokens("안녕하세요, OK?")  # 5 syllables + ",OK?" (4 characters → 1)
    6
    """
    hangul = len(HANGUL_RE.findall(text))
    other = sum(1 for c in text if not c.isspace()) - hangul
    return hangul + math.ceil(other / APPROX_OTHER_CHARS_PER_TOKEN)


def load_encoding(name: str, timeout_s: float = 10.0) -> Any:
    """`tiktoken.get_encoding(name)`, giving up after `timeout_s` (a download with no network can hang)."""
    import tiktoken

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["enc"] = tiktoken.get_encoding(name)
        except Exception as e:  # tiktoken raises requests/OS/value errors depending on what failed
            box["err"] = e

    t = threading.Thread(target=work, name="tiktoken-load", daemon=True)
    t.start()
    t.join(timeout_s)
    if "enc" in box:
        return box["enc"]
    err = box.get("err")
    raise RuntimeError(type(err).__name__ if err else f"no answer in {timeout_s:g} s")


def encoding_name(model: str) -> str:
    """tiktoken's encoding for an OpenAI model; o200k_base for names it does not know (local models)."""
    import tiktoken

    try:
        return tiktoken.encoding_name_for_model(model.split("/")[-1])
    except KeyError:
        return "o200k_base"


class TokenCounter:
    """Counts tokens with tiktoken, or with `approx_tokens` when the encoding cannot be loaded.

    `note` is the one line to show the user: which method counts, and why.
    """

    def __init__(self, model: str, loader: Callable[[str], Any] | None = None):
        self.encoding = encoding_name(model)
        try:
            self._enc = (loader or load_encoding)(self.encoding)
            self.exact = True
            self.note = f"tokens counted with tiktoken {self.encoding}"
        except Exception as e:  # any failure to load means: fall back, say so once
            self._enc = None
            self.exact = False
            self.note = (f"tiktoken cannot load {self.encoding} offline ({e}); tokens approximated as 1 per Hangul "
                         f"syllable + 1 per {APPROX_OTHER_CHARS_PER_TOKEN} other characters (datagen/cost.py)")

    def count(self, text: str) -> int:
        if self._enc is not None:
            return len(self._enc.encode(text, disallowed_special=()))
        return approx_tokens(text)

    def count_messages(self, messages: Sequence[dict[str, str]]) -> int:
        return count_messages(messages, self.count)


def count_messages(messages: Sequence[dict[str, str]], count: Callable[[str], int]) -> int:
    return sum(MESSAGE_OVERHEAD_TOKENS + count(m.get("content") or "") for m in messages) + REPLY_PRIMING_TOKENS


def format_usd(x: float | None) -> str:
    if x is None:
        return "?"
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}"


# --- what was billed ----------------------------------------------------------------------------


def billed(usage: Usage, price: Price | None, batch: bool = False) -> dict[str, Any] | None:
    """The `billed` field of a raw line: USD and the price it was computed at (None: price unknown).

    >>> billed(Usage(1000, 500), Price(1.0, 2.0), batch=True)
    {'usd': 0.001, 'input': 1.0, 'output': 2.0, 'cached_input': None, 'batch': True}
    """
    if price is None:
        return None
    usd = cost_usd(usage, price) * (BATCH_DISCOUNT if batch else 1.0)
    return {"usd": round(usd, 10), **price.to_dict(), "batch": batch}


def line_cost(line: dict[str, Any], price: Price | None) -> float:
    """USD of one stored raw line: its own `billed.usd`, else (older lines) its usage at `price`."""
    b = line.get("billed")
    if isinstance(b, dict) and isinstance(b.get("usd"), (int, float)):
        return float(b["usd"])
    completion = line.get("completion")
    if not isinstance(completion, dict):
        return 0.0
    from datagen.llm import read_completion

    batch = line.get("source") == "batch"
    return cost_usd(read_completion(completion).usage, price) * (BATCH_DISCOUNT if batch else 1.0)


def stored_spend(lines: Iterable[dict[str, Any]], price: Price | None) -> float:
    """What earlier invocations spent: the sum of `line_cost` over stored raw lines."""
    return sum(line_cost(ln, price) for ln in lines if isinstance(ln, dict))


# --- the cap ------------------------------------------------------------------------------------


class BudgetExhausted(Exception):
    """No request fits in what is left of --max-cost and none is in flight: the stage stops cleanly."""


def max_tokens_of(body: dict[str, Any]) -> int:
    """The completion-token limit a request body sets (`max_completion_tokens` or `max_tokens`)."""
    for key in ("max_completion_tokens", "max_tokens"):
        if isinstance(body.get(key), int):
            return body[key]
    raise ValueError("a capped request needs max_tokens or max_completion_tokens in its body")


@dataclass
class Budget:
    """A hard USD cap shared by every request of one stage (all types, all workers).

    `reserve` before sending (waits while the worst case does not fit and requests are in flight;
    raises `BudgetExhausted` when none is), `settle` on the answer. Without `max_cost` it only counts.
    """

    max_cost: float | None
    price: Price | None
    counter: TokenCounter | None = None
    spent_before: float = 0.0
    """USD stored by earlier invocations (their raw lines)."""
    spent_now: float = 0.0
    reserved: float = 0.0
    in_flight: int = 0
    flag: str = "--max-cost"
    """The option that sets the cap, as the stop message names it."""
    _ratio: dict[str, float] = field(default_factory=dict)
    _cond: asyncio.Condition | None = None

    @property
    def spent(self) -> float:
        return self.spent_before + self.spent_now

    @property
    def left(self) -> float | None:
        """USD not spent and not reserved (None: no cap)."""
        return None if self.max_cost is None else self.max_cost - self.spent - self.reserved

    @property
    def capped(self) -> bool:
        """Whether requests are reserved against a cap (a cap and a price): else nothing needs counting."""
        return self.max_cost is not None and self.price is not None

    def count(self, body: dict[str, Any]) -> int:
        """Prompt tokens of a body as counted here (messages + response_format), before any scaling."""
        count = self.counter.count if self.counter is not None else approx_tokens
        n = count_messages(body.get("messages") or [], count)
        if body.get("response_format"):  # OpenAI bills a structured-output schema as prompt tokens
            n += count(json.dumps(body["response_format"], ensure_ascii=False))
        return n

    def prompt_tokens(self, body: dict[str, Any], kind: str = "", counted: int | None = None) -> int:
        """Prompt tokens of a body for the worst case: `count` (or `counted`, when the caller has it), scaled up
        by the largest billed/counted ratio seen for this kind of request (1.0 until one was billed)."""
        n = self.count(body) if counted is None else counted
        return math.ceil(n * max(1.0, self._ratio.get(kind, 1.0)))

    def worst_case(self, body: dict[str, Any], kind: str = "", counted: int | None = None) -> float:
        """USD a request can cost at most: its prompt (see `prompt_tokens`) and its whole `max_tokens`.
        0.0 without a cap (nothing to reserve) or a price."""
        if not self.capped:
            return 0.0
        return (self.prompt_tokens(body, kind, counted) * self.price.input  # type: ignore[union-attr]
                + max_tokens_of(body) * self.price.output) / 1e6  # type: ignore[union-attr]

    def learn(self, body: dict[str, Any], kind: str, usage: Usage, counted: int | None = None) -> None:
        """Remember how the server's prompt count compares with ours for this kind of request."""
        if not self.capped:  # the ratio only feeds worst_case, 0.0 then
            return
        counted = self.prompt_tokens(body, "", counted)
        if counted and usage.prompt_tokens:
            self._ratio[kind] = max(self._ratio.get(kind, 1.0), usage.prompt_tokens / counted)

    def exhausted_message(self, worst: float) -> str:
        return (f"{self.flag} {format_usd(self.max_cost)} would be exceeded by another request (spent "
                f"{format_usd(self.spent)}, next request up to {format_usd(worst)})")

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def reserve(self, worst: float) -> None:
        cond = self._condition()
        async with cond:
            while self.max_cost is not None and self.spent + self.reserved + worst > self.max_cost * (1 + 1e-12):
                if self.in_flight == 0:
                    raise BudgetExhausted(self.exhausted_message(worst))
                await cond.wait()
            self.reserved += worst
            self.in_flight += 1

    async def settle(self, worst: float, actual: float) -> None:
        """Release a reservation and count what the request really billed."""
        cond = self._condition()
        async with cond:
            self.reserved -= worst
            self.in_flight -= 1
            self.spent_now += actual
            cond.notify_all()

"""The one LLM step every stage uses: a planned request → one client call → a pure parse, raw kept.

distilabel's shape: the stage builds a `Call` (a request body, pure) and gives a pure `parse`;
`LLMStep.run(call)` does everything around the one impure call, the same way for generate,
ingest-batch, the judge and the evaluation:

- **cache / resume**: the stage's `ResponseStore` (a JSONL file keyed by request hash) is asked
  first; a stored answer is never sent again. Every answer is stored before it is parsed, the
  failed ones too, so a killed run loses nothing it paid for;
- **cost cap**: the request's worst case is reserved on the stage's `Budget` before sending and
  settled to what the server billed (`datagen.cost`); the raw line keeps what it was billed at;
- **repair**: where the stage allows (`repair`), an answer that does not parse is asked again
  once more per `max_attempts` with the problem named (a new request, so the cache does not hand
  the bad answer back; on resume the same chain is replayed from the store);
- **failures in a row**: `max_failures_in_a_row` requests failing after the client's own bounded
  retries (server down, wrong URL) stop the stage with `StageStopped`;
- `LLMFatalError` (bad key, model, quota) and `BudgetExhausted` stop it too (raised as they are).

Nothing else in the project calls the SDK: `LLMClient` (datagen/llm.py) is only used through here.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Generic, Iterable, TypeVar

from datagen.cost import Budget, billed
from datagen.llm import (ChatResult, LLMClient, LLMFatalError, ResponseStore, completion_failure, read_completion,
                         redact_url, request_hash)

T = TypeVar("T")
Parse = Callable[[str, "Call"], "tuple[T | None, str | None]"]
"""A pure parser: (the answer's text, the call) → (value, None), or (None, what is wrong)."""
Repair = Callable[[list[dict[str, str]], "str | None", str], list[dict[str, str]]]
"""(messages, the unusable answer, the problem) → the messages of the repair request."""


@dataclass(frozen=True)
class Call:
    """One planned request: its body, what the raw line records beside the answer, and its kind."""

    body: dict[str, Any]
    fields: dict[str, Any] = field(default_factory=dict)
    """Stored in the raw line before the answer (type, request index, examples, record id, ...)."""
    kind: str = ""
    """Requests of one kind have similar prompts: the cost cap learns its token ratio per kind."""
    key: str = ""
    """The request hash (the cache key); computed from the body when empty."""

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", request_hash(self.body))


@dataclass
class Outcome(Generic[T]):
    """What became of a call: the parsed value, or the problem; what it cost and where it came from."""

    call: Call
    line: dict[str, Any]
    """The raw line of the last request (the repair's, after a repair)."""
    value: T | None = None
    problem: tuple[str, str] | None = None
    """(reason, detail): `server_error`, `timeout`, ... (no answer), `length`, `refusal`, `empty`, `bad_json` ..."""
    sent: int = 0
    """Requests sent by this call (0: answered from the store)."""
    cached: int = 0
    repairs: int = 0
    cost: float = 0.0
    """USD billed for the requests this call sent."""

    @property
    def answered(self) -> bool:
        """Whether the server answered at all (the last request has a completion)."""
        return self.line.get("completion") is not None


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def extract_json(content: str | None) -> Any:
    """The JSON value of an answer: the whole text, else without a ```json fence, else the outermost {...}.

    Servers without structured output wrap JSON in fences or prose; raises `json.JSONDecodeError`.

    >>> extract_json('여기 있어요: {"a": 1} 끝'), extract_json('```json\\n[1]\\n```')
    ({'a': 1}, [1])
    """
    text = _FENCE.sub("", (content or "").strip()).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            try:
                return json.loads(text[start:end + 1])
            except json.JSONDecodeError:
                pass
        raise e


class StageStopped(Exception):
    """The stage cannot go on: the server failed too many requests in a row, or refused the key/model."""


def raw_line(call: Call, res: ChatResult, source: str = "api", cost: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stored line of one request: the call's fields, the answer as received (or why there is none)."""
    return {"request_hash": call.key, **call.fields, "source": source, "response_format": res.response_format,
            "attempts": res.attempts, "latency_s": round(res.latency_s, 3),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "completion": res.completion, "error": res.error, "detail": res.detail, "billed": cost}


def read_answer(line: dict[str, Any], parse: Parse | None, call: Call) -> tuple[Any, tuple[str, str] | None]:
    """The parsed value of a stored line, or (None, (reason, detail)); `parse` None keeps the text."""
    if line.get("completion") is None:
        return None, (line.get("error") or "failed", line.get("detail") or "")
    c = read_completion(line["completion"])
    failure = completion_failure(c)
    if failure is not None:
        return None, failure
    if parse is None:
        return c.content, None
    value, problem = parse(c.content or "", call)
    return (value, None) if problem is None else (None, ("bad_answer", problem))


class LLMStep(Generic[T]):
    """Runs calls for one stage: cache, cost cap, one send, parse, repair, failures in a row.

    `store_for(call)` picks the stage's raw file for a call (generate keeps one per type).
    """

    def __init__(self, client: LLMClient, store_for: Callable[[Call], ResponseStore], budget: Budget,
                 parse: Parse | None = None, repair: Repair | None = None, max_attempts: int = 1,
                 max_failures_in_a_row: int = 5, what: str = "requests", source: str = "api"):
        self.client = client
        self.source = source
        """`api`, or `batch` for Batch API results (stored with that source, billed at the Batch discount)."""
        self.store_for = store_for
        self.budget = budget
        self.parse = parse
        self.repair = repair
        self.max_attempts = max_attempts if repair is not None else 1
        self.max_failures_in_a_row = max_failures_in_a_row
        self.what = what
        self.fails_in_a_row = 0
        self.stopped = ""
        """Why the stage stopped (set once; every later call raises StageStopped with it)."""
        self.sent = 0
        self.cached = 0

    async def run(self, call: Call) -> Outcome[T]:
        """The outcome of one call (and its repairs); raises StageStopped or BudgetExhausted to stop the stage."""
        out: Outcome[T] = Outcome(call, {})
        for attempt in range(self.max_attempts):
            line = await self._answer(call, out)
            out.line = line
            value, problem = read_answer(line, self.parse, call)
            if problem is None:
                out.value, out.problem = value, None
                return out
            out.problem = problem
            answered = line.get("completion") is not None
            if not answered or attempt + 1 >= self.max_attempts or self.repair is None:
                return out
            text = read_completion(line["completion"]).content
            said = problem[1] if problem[0] == "bad_answer" else f"{problem[0]}: {problem[1]}"
            messages = self.repair(list(call.body["messages"]), text, said)
            call = Call({**call.body, "messages": messages}, {**call.fields, "repair_of": call.key}, call.kind)
            out.repairs += 1
        return out

    async def _answer(self, call: Call, out: Outcome[T]) -> dict[str, Any]:
        if self.stopped:
            raise StageStopped(self.stopped)
        store = self.store_for(call)
        line = store.get(call.key)
        if line is not None:
            out.cached += 1
            self.cached += 1
            return line
        counted = self.budget.count(call.body) if self.budget.capped else None  # once, for reserve and learn
        worst = self.budget.worst_case(call.body, call.kind, counted)
        await self.budget.reserve(worst)
        actual = 0.0
        try:
            res = await self.client.complete(call.body, key=call.key, cancelled=lambda: bool(self.stopped))
            if res.error == "cancelled":
                raise StageStopped(self.stopped)
            cost = None
            if res.completion is not None:
                usage = read_completion(res.completion).usage
                self.budget.learn(call.body, call.kind, usage, counted)
                cost = billed(usage, self.budget.price, batch=self.source == "batch")
                actual = cost["usd"] if cost else 0.0
            line = raw_line(call, res, source=self.source, cost=cost)
            store.add(line)  # stored before anything is parsed or accepted: a kill here loses nothing
        except LLMFatalError as e:
            self.stopped = self.stopped or str(e)  # every later call stops too
            raise
        finally:
            await self.budget.settle(worst, actual)
        out.sent += 1
        out.cost += actual
        self.sent += 1
        self._count(res)
        if self.stopped:  # this answer (stored) was the last straw, or came in after the stop
            raise StageStopped(self.stopped)
        return line

    def _count(self, res: ChatResult) -> None:
        if res.completion is not None:
            self.fails_in_a_row = 0
            return
        self.fails_in_a_row += 1
        if self.fails_in_a_row >= self.max_failures_in_a_row and not self.stopped:
            where = redact_url(self.client.base_url) or "OpenAI"
            self.stopped = (f"{self.fails_in_a_row} {self.what} in a row failed at {where} after "
                            f"{self.client.cfg.max_attempts} attempt(s) each (last: {res.error}: {res.detail})")


async def gather_all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """`asyncio.gather`, except that when one raises, the others still run to the end (their answers are
    stored; after a stop they end at once) before the first error is raised."""
    results = await asyncio.gather(*coros, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]

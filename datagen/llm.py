"""One chat-completion call to any OpenAI-compatible server, done carefully.

`LLMClient.complete(body)` sends one request body with the official `openai` SDK
(`AsyncOpenAI`, so OpenAI, vLLM, Ollama and llama.cpp servers all work) and returns a
`ChatResult`: the response body exactly as received, or the reason it could not be had.
Around that one call:

- **Adaptive concurrency** (`AdaptiveLimiter`): at most `concurrency` requests in flight.
  On HTTP 429 the cap halves (once per back-off window, so a burst of 429s does not
  collapse it to 1) and every sender waits for the server's `retry-after-ms` /
  `retry-after`; after `grow_after` successes in a row the cap grows by one, back up to
  `concurrency`.
- **Bounded retries on specific exceptions**: `InternalServerError` (5xx),
  `APITimeoutError` and `APIConnectionError` are retried with exponential back-off and
  jitter, at most `max_attempts` sends in all; `RateLimitError` waits as told, at most
  `max_rate_limit_waits` times. Then the request is recorded as failed, never retried
  forever. 401/403/404 stop the run (`LLMFatalError`: a wrong key, URL or model will not
  fix itself); another 400/422 fails just that request.
- **Structured output with fallback**: the body asks for `response_format` `json_schema`
  (strict). A server that answers 400/422 to it is asked again with `json_object`, then
  with no `response_format`; the first mode that works is kept for the rest of the run.
  Callers validate every response themselves either way.
- The SDK's own retries are off (`max_retries=0`): retrying is decided here, once.

Pure helpers: `request_hash(body)` (sha256 of the canonical JSON: the cache key, and what
the Batch API `custom_id` carries), `read_completion(body)` (content, finish reason,
refusal, usage) and `completion_failure(completion)` (`length`, `content_filter`,
`refusal`, `empty` or None). `ResponseStore` is the per-request cache: a JSONL file of
results keyed by request hash, so a stored request is never sent again.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import random
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

from datagen.schema import JsonlAppender, iter_jsonl

# --- configuration ----------------------------------------------------------------------------

STRUCTURED_MODES = ("json_schema", "json_object", "none")
CONNECTIONS_PER_CLIENT = 16
"""Requests in flight per SDK client: httpcore's pool scans all its connections for every request,
so 64 requests in flight go through 4 clients of 16 (~12% less client CPU per request measured)."""


@dataclass(frozen=True)
class LLMConfig:
    """How to reach the model and how hard to try. The API key is never part of it."""

    model: str = "gpt-4o-mini"
    """Model name as the server knows it (OpenAI name, or the name a vLLM/Ollama/llama.cpp server serves)."""
    base_url: str | None = None
    """Server URL ending in /v1; None means $OPENAI_BASE_URL, else OpenAI itself."""
    concurrency: int = 16
    """Most requests in flight; the cap shrinks on 429 and grows back to this."""
    min_concurrency: int = 1
    """The cap never shrinks below this."""
    grow_after: int = 5
    """Successes in a row before the cap grows by one (additive increase after a 429 halving)."""
    max_attempts: int = 4
    """Most sends of one request on 5xx, timeouts and connection errors (1 = never retry)."""
    max_rate_limit_waits: int = 20
    """Most 429 answers one request waits out before it counts as failed."""
    backoff_base_s: float = 1.0
    """First back-off; doubles each retry (exponential), with equal jitter."""
    backoff_max_s: float = 60.0
    """Longest back-off between two sends of one request."""
    max_retry_after_s: float = 300.0
    """Longest server-requested wait honoured; a longer Retry-After is capped to this."""
    timeout_s: float = 300.0
    """Seconds before one send times out (a long Korean answer can take minutes on a busy server)."""
    temperature: float = 1.0
    """Sampling temperature; 1.0 keeps variety (and is the only value some reasoning models accept)."""
    max_tokens: int = 6000
    """Most completion tokens per request; `length` finishes count as failures, so leave headroom."""
    structured_output: str = "json_schema"
    """First response_format to ask for: json_schema (strict), json_object or none; falls back on 400/422."""
    retry_seed: int = 0
    """Seed of the back-off jitter (an explicit random.Random, never global state)."""

    def resolved(self) -> dict[str, Any]:
        """As recorded in a run's history: the URL actually used, without credentials; never a key."""
        return {**asdict(self), "base_url": redact_url(resolve_base_url(self.base_url))}

    def problems(self) -> list[str]:
        p = []
        if not self.model.strip():
            p.append("--model must name a model")
        if self.concurrency < 1:
            p.append(f"--concurrency must be at least 1 (got {self.concurrency})")
        if not 1 <= self.min_concurrency <= max(self.concurrency, 1):
            p.append(f"min_concurrency must be between 1 and --concurrency (got {self.min_concurrency})")
        if self.max_attempts < 1:
            p.append(f"--max-attempts must be at least 1 (got {self.max_attempts})")
        if self.max_rate_limit_waits < 0:
            p.append(f"max_rate_limit_waits must be 0 or more (got {self.max_rate_limit_waits})")
        if self.timeout_s <= 0:
            p.append(f"--timeout must be positive (got {self.timeout_s})")
        if self.max_tokens < 1:
            p.append(f"--max-tokens must be at least 1 (got {self.max_tokens})")
        if self.structured_output not in STRUCTURED_MODES:
            p.append(f"structured_output must be one of {', '.join(STRUCTURED_MODES)} (got {self.structured_output!r})")
        return p


def resolve_base_url(base_url: str | None) -> str | None:
    """The URL actually used: the option, else $OPENAI_BASE_URL, else None (OpenAI)."""
    return base_url or os.environ.get("OPENAI_BASE_URL") or None


def redact_url(url: str | None) -> str | None:
    """A URL safe to write into config.json and logs: user:password@ and the query are dropped."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def uses_max_completion_tokens(model: str) -> bool:
    """OpenAI's reasoning models (o1, o3, o4, gpt-5...) reject `max_tokens`; they take `max_completion_tokens`.
    They also accept only the default temperature (1) and top_p (1).

    Other servers (vLLM, Ollama, llama.cpp) all read `max_tokens`.
    """
    name = model.split("/")[-1].lower()
    return name.startswith(("o1", "o3", "o4", "gpt-5"))


# --- pure helpers -----------------------------------------------------------------------------


def chat_body(messages: list[dict[str, str]], llm: LLMConfig, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A chat-completions body: model, messages, temperature, the token limit under the name the model
    takes, and (with a `schema`) the answer's JSON form as strict structured output, or plain JSON mode.

    A reasoning model accepts only temperature 1: another value (the judge's 0, a greedy eval reference) is
    left out, so the model samples at its default instead of the request being refused (1.0 is still sent,
    so the bodies, and the cache keys, of runs at 1.0 are unchanged).

    >>> chat_body([], LLMConfig(model="gpt-5-mini", max_tokens=10, structured_output="json_object"), {"name": "x"})
    {'model': 'gpt-5-mini', 'messages': [], 'temperature': 1.0, 'max_completion_tokens': 10, 'response_format': {'type': 'json_object'}}
    >>> chat_body([], LLMConfig(model="o4-mini", temperature=0.0, max_tokens=10))
    {'model': 'o4-mini', 'messages': [], 'max_completion_tokens': 10}
    """
    reasoning = uses_max_completion_tokens(llm.model)
    body: dict[str, Any] = {"model": llm.model, "messages": messages}
    if not reasoning or llm.temperature == 1.0:
        body["temperature"] = llm.temperature
    body["max_completion_tokens" if reasoning else "max_tokens"] = llm.max_tokens
    if schema is not None and llm.structured_output != "none":
        body["response_format"] = ({"type": "json_schema", "json_schema": schema}
                                   if llm.structured_output == "json_schema" else {"type": "json_object"})
    return body


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def request_hash(body: dict[str, Any]) -> str:
    """sha256 of the request body's canonical JSON: equal bodies, equal hashes.

    >>> request_hash({"model": "m", "messages": []}) == request_hash({"messages": [], "model": "m"})
    True
    """
    return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Prompt tokens the server served from its prompt cache (billed lower by OpenAI)."""

    def to_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "cached_tokens": self.cached_tokens}

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens,
                     self.cached_tokens + other.cached_tokens)


@dataclass(frozen=True)
class Completion:
    """The parts of a chat completion body that matter here."""

    content: str | None
    finish_reason: str | None
    refusal: str | None
    usage: Usage


def _int(x: Any) -> int:
    return x if isinstance(x, int) and x >= 0 else 0


def read_usage(obj: Any) -> Usage:
    if not isinstance(obj, dict):
        return Usage()
    details = obj.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(_int(obj.get("prompt_tokens")), _int(obj.get("completion_tokens")), _int(cached))


def read_completion(body: Any) -> Completion:
    """Content, finish reason, refusal and usage of a chat completion body (any shape tolerated).

    >>> c = read_completion({"choices": [{"message": {"content": "안녕"}, "finish_reason": "stop"}],
    ...                      "usage": {"prompt_tokens": 5, "completion_tokens": 2}})
    >>> (c.content, c.finish_reason, c.usage.completion_tokens)
    ('안녕', 'stop', 2)
    """
    if not isinstance(body, dict):
        return Completion(None, None, None, Usage())
    usage = read_usage(body.get("usage"))
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Completion(None, None, None, usage)
    choice = choices[0]
    msg = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = msg.get("content") if isinstance(msg.get("content"), str) else None
    refusal = msg.get("refusal") if isinstance(msg.get("refusal"), str) and msg.get("refusal") else None
    finish = choice.get("finish_reason") if isinstance(choice.get("finish_reason"), str) else None
    return Completion(content, finish, refusal, usage)


def completion_failure(c: Completion) -> tuple[str, str] | None:
    """Why a completion is unusable, as (reason, detail), or None.

    A `length` finish is cut-off JSON; `content_filter` and refusals carry no dialogues.
    """
    if c.refusal:
        return "refusal", c.refusal[:200]
    if c.finish_reason == "length":
        return "length", "the answer hit max_tokens (finish_reason length); raise --max-tokens or lower --per-request"
    if c.finish_reason == "content_filter":
        return "content_filter", "the server's content filter stopped the answer"
    if c.content is None or not c.content.strip():
        return "empty", f"no content (finish_reason {c.finish_reason!r})"
    return None


def parse_retry_after(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` or `retry-after` (seconds or an HTTP date), else None.

    >>> parse_retry_after({"retry-after-ms": "250"}), parse_retry_after({"retry-after": "2"})
    (0.25, 2.0)
    """
    if headers is None:
        return None
    get = headers.get
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / scale
            if seconds >= 0:
                return seconds
        except ValueError:
            if name == "retry-after":
                try:
                    when = email.utils.parsedate_to_datetime(value)
                except (TypeError, ValueError):
                    return None  # neither seconds nor an HTTP date: back off on our own
                return max(0.0, when.timestamp() - time.time())
    return None


def backoff_delay(attempt: int, cfg: LLMConfig, rng: random.Random) -> float:
    """Exponential back-off with equal jitter: half fixed, half random (attempt 1 → up to base)."""
    d = min(cfg.backoff_max_s, cfg.backoff_base_s * 2 ** (attempt - 1))
    return d / 2 + rng.uniform(0, d / 2)


# --- adaptive concurrency ---------------------------------------------------------------------


class AdaptiveLimiter:
    """A semaphore whose size halves on rate limits and grows back by one after successes.

    One limiter can be shared by many request streams (all 16 types share one budget).
    """

    def __init__(self, limit: int, min_limit: int = 1, grow_after: int = 5, clock: Callable[[], float] = time.monotonic):
        self.max_limit = limit
        self.limit = limit
        self.min_limit = min_limit
        self.grow_after = grow_after
        self.in_use = 0
        self.paused_until = 0.0
        self.shrinks = 0
        self._clock = clock
        self._streak = 0
        self._calm_after = 0.0  # no second halving before this time (one cut per back-off window)
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        """Wait for a slot, first come first served, then for any rate-limit pause to end."""
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
        else:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut  # resolved by _wake, which hands the slot over (in_use already counts it)
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self.release()  # the slot arrived just as we were cancelled: pass it on
                else:
                    self._waiters.remove(fut)
                raise
        while (pause := self.paused_until - self._clock()) > 0:  # a 429 told everyone to wait
            await asyncio.sleep(pause)

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        # Hand free slots straight to the oldest waiters, so a newcomer cannot overtake them.
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1
                fut.set_result(None)

    def on_success(self) -> None:
        self._streak += 1
        if self._streak >= self.grow_after and self.limit < self.max_limit:
            self.limit += 1
            self._streak = 0
            self._wake()

    def on_rate_limit(self, wait_s: float) -> None:
        now = self._clock()
        self._streak = 0
        self.paused_until = max(self.paused_until, now + wait_s)
        if now >= self._calm_after:
            self.limit = max(self.min_limit, self.limit // 2)
            self.shrinks += 1
            self._calm_after = now + max(wait_s, 0.001)


# --- the call ---------------------------------------------------------------------------------


class LLMFatalError(Exception):
    """The server refuses every request (bad key, wrong URL or model): stop, do not retry."""


@dataclass
class ChatResult:
    """The outcome of one request: the response body as received, or why there is none."""

    request_hash: str
    completion: dict[str, Any] | None = None
    """The response JSON exactly as received (None when the request failed)."""
    error: str | None = None
    """Why there is no completion: rate_limited, server_error, timeout, connection, bad_request, bad_response."""
    detail: str = ""
    attempts: int = 0
    """HTTP sends made (0 for a cached result)."""
    response_format: str = ""
    """The structured-output mode that produced the completion."""
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.completion is not None


def response_format_for(mode: str, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    if mode == "json_schema" and schema is not None:
        return {"type": "json_schema", "json_schema": schema}
    if mode in ("json_schema", "json_object"):
        return {"type": "json_object"}
    return None


def _detail(e: Exception) -> str:
    msg = getattr(e, "message", None) or str(e) or type(e).__name__
    return " ".join(str(msg).split())[:300]


class LLMClient:
    """AsyncOpenAI with adaptive concurrency, bounded retries and structured-output fallback.

    Use as `async with LLMClient(cfg) as client: result = await client.complete(body)`.
    `body` is a chat-completions request body; its `response_format` (if any) is replaced
    by the client's current mode, so the caller's body (and its hash) stays the planned one.
    """

    def __init__(self, cfg: LLMConfig, api_key: str | None = None, limiter: AdaptiveLimiter | None = None,
                 notice: Callable[[str], None] | None = None):
        import openai  # deferred: `datagen --help`, dry runs and batch files never load the SDK

        self.cfg = cfg
        self._openai = openai
        base_url = resolve_base_url(cfg.base_url)
        key = api_key or os.environ.get("OPENAI_API_KEY") or ("EMPTY" if base_url else None)
        if key is None:
            raise LLMFatalError("no API key: set OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL / --base-url "
                                "(a local OpenAI-compatible server)")
        self.base_url = base_url
        n = max(1, -(-cfg.concurrency // CONNECTIONS_PER_CLIENT))
        self._clients = [openai.AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=cfg.timeout_s)
                         for _ in range(n)]
        self._sends = 0
        self.limiter = limiter or AdaptiveLimiter(cfg.concurrency, cfg.min_concurrency, cfg.grow_after)
        self.mode = cfg.structured_output
        self._rng = random.Random(cfg.retry_seed)
        self._notice = notice or (lambda msg: None)

    async def __aenter__(self) -> "LLMClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for c in self._clients:
            await c.close()

    def _fallback_modes(self, body: dict[str, Any]) -> list[str]:
        if "response_format" not in body:
            return ["none"]
        return list(STRUCTURED_MODES[STRUCTURED_MODES.index(self.mode):])

    async def complete(self, body: dict[str, Any], key: str | None = None,
                       cancelled: Callable[[], bool] | None = None) -> ChatResult:
        """Send `body` until it succeeds or the retry bounds are spent; never raises except LLMFatalError.

        `cancelled()` is asked each time a slot comes free: when it says yes (the stage stopped while
        this request waited), nothing more is sent and the result's error is `cancelled`.
        """
        o = self._openai
        key = key or request_hash(body)
        schema = (body.get("response_format") or {}).get("json_schema")
        modes = self._fallback_modes(body)
        mode_i = 0
        attempts = failures = rate_waits = 0
        error, detail = "", ""
        start = time.monotonic()
        while True:
            mode = modes[mode_i]
            send = {k: v for k, v in body.items() if k != "response_format"}
            rf = response_format_for(mode, schema)
            if rf is not None:
                send["response_format"] = rf
            await self.limiter.acquire()
            if cancelled is not None and cancelled():
                self.limiter.release()
                return ChatResult(key, None, "cancelled", "the stage stopped", attempts, mode, time.monotonic() - start)
            attempts += 1
            wait = 0.0
            try:
                # The SDK's generic `post` (its documented way to send a custom body) instead of
                # `chat.completions.create`: same auth, connection pool and typed errors, but the body goes
                # out exactly as planned and skips create()'s recursive TypedDict transform, which cost as
                # much CPU as our whole accept path (bench/generate_throughput.py).
                client = self._clients[self._sends % len(self._clients)]
                self._sends += 1
                text = await client.post("/chat/completions", cast_to=str, body=send)
            except o.RateLimitError as e:
                if e.code == "insufficient_quota":  # OpenAI's "out of credit" is a 429 that waiting never fixes
                    raise LLMFatalError(f"{redact_url(self.base_url) or 'OpenAI'} answered HTTP 429 insufficient_quota "
                                        "(the account is out of credit); add credit or use another key") from None
                rate_waits += 1
                error, detail = "rate_limited", _detail(e)
                ra = parse_retry_after(e.response.headers)
                wait = min(self.cfg.max_retry_after_s, ra) if ra is not None else backoff_delay(rate_waits, self.cfg, self._rng)
                self.limiter.on_rate_limit(wait)
                if rate_waits > self.cfg.max_rate_limit_waits:
                    return ChatResult(key, None, error, detail, attempts, mode, time.monotonic() - start)
                wait = 0.0  # the limiter's pause makes every sender wait, this one included
            except (o.BadRequestError, o.UnprocessableEntityError) as e:
                if mode_i + 1 < len(modes):
                    mode_i += 1  # maybe the server does not support this response_format: try the next
                    continue
                return ChatResult(key, None, "bad_request", f"HTTP {e.status_code}: {_detail(e)}", attempts, mode,
                                  time.monotonic() - start)
            except (o.AuthenticationError, o.PermissionDeniedError, o.NotFoundError) as e:
                what = {401: "check OPENAI_API_KEY", 403: "check the key's permissions and project",
                        404: f"check --model ({self.cfg.model}) and --base-url"}.get(e.status_code, "")
                where = redact_url(self.base_url) or "OpenAI"
                raise LLMFatalError(f"{where} answered HTTP {e.status_code} ({_detail(e)}); {what}") from None
            except o.InternalServerError as e:
                failures += 1
                error, detail = "server_error", f"HTTP {e.status_code}: {_detail(e)}"
            except o.APITimeoutError:
                failures += 1
                error, detail = "timeout", f"no answer within {self.cfg.timeout_s:g} s"
            except o.APIConnectionError as e:
                failures += 1
                cause = e.__cause__ or e.__context__
                error, detail = "connection", _detail(cause) if cause else _detail(e)
            except o.APIStatusError as e:  # any other status (409, 418...): not worth repeating
                return ChatResult(key, None, "bad_request", f"HTTP {e.status_code}: {_detail(e)}", attempts, mode,
                                  time.monotonic() - start)
            else:
                self.limiter.on_success()
                if mode != self.mode and mode_i > 0:
                    self._notice(f"the server rejected response_format {self.mode}; using {mode} from now on")
                    self.mode = mode
                try:
                    completion = json.loads(text)
                    if not isinstance(completion, dict):
                        raise ValueError("not a JSON object")
                except ValueError as e:
                    return ChatResult(key, None, "bad_response", f"HTTP 200 body is not a JSON object: {e}", attempts,
                                      mode, time.monotonic() - start)
                return ChatResult(key, completion, None, "", attempts, mode, time.monotonic() - start)
            finally:
                self.limiter.release()
            if error != "rate_limited":
                if failures >= self.cfg.max_attempts:
                    return ChatResult(key, None, error, detail, attempts, mode, time.monotonic() - start)
                wait = backoff_delay(failures, self.cfg, self._rng)
            if wait > 0:
                await asyncio.sleep(wait)


# --- the per-request cache --------------------------------------------------------------------


class ResponseStore:
    """A JSONL file of request results keyed by `request_hash`; the run's request cache.

    Each line is a dict with at least `request_hash`; lines with a `completion` count as
    stored responses. Opening repairs a torn last line (a killed writer) and loads every
    line, so a request whose response is stored is never sent again.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lines: list[dict[str, Any]] = []
        self._by_hash: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()
        if self.path.exists():
            for _, obj in iter_jsonl(self.path):
                if isinstance(obj, dict) and isinstance(obj.get("request_hash"), str):
                    self._lines.append(obj)
                    self._seen.add(obj["request_hash"])
                    if obj.get("completion") is not None:
                        self._by_hash.setdefault(obj["request_hash"], obj)
        self._out: JsonlAppender | None = None

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored line with a completion for this request hash, or None."""
        return self._by_hash.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self._by_hash

    def known(self, key: str) -> bool:
        """Whether any line (a failure too) was stored for this request hash."""
        return key in self._seen

    def __len__(self) -> int:
        return len(self._by_hash)

    def lines(self) -> Iterator[dict[str, Any]]:
        """Every line loaded and added, in file order (failed requests too)."""
        return iter(self._lines)

    def add(self, line: dict[str, Any]) -> None:
        """Append one line (flushed); a line with a completion becomes a cache entry."""
        if self._out is None:
            self._out = JsonlAppender(self.path)
        self._out.write(line)
        self._lines.append(line)
        self._seen.add(line["request_hash"])
        if line.get("completion") is not None:
            self._by_hash.setdefault(line["request_hash"], line)

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

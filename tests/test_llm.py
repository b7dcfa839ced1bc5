"""datagen.llm against a real local HTTP server with the real openai SDK: retries, 429s, fallbacks, cache."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from email.utils import formatdate
from pathlib import Path

import pytest

from datagen.llm import (AdaptiveLimiter, Completion, LLMClient, LLMConfig, LLMFatalError, ResponseStore, Usage,
                         completion_failure, parse_retry_after, read_completion, redact_url, request_hash,
                         uses_max_completion_tokens)
from tests.llm_server import (LLMServer, Reply, auth_error, garbage_body, rate_limited, refused, server_error, slow,
                              truncated)

FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5.0)
BODY = {"model": "test-model", "messages": [{"role": "user", "content": "안녕하세요"}], "max_tokens": 50}
SCHEMA_BODY = dict(BODY, response_format={"type": "json_schema", "json_schema": {"name": "x", "strict": True,
                                                                                   "schema": {"type": "object"}}})


def ok(text: str = '{"dialogues": []}') -> Reply:
    return Reply(content=text)


def complete(server_url: str, body: dict, n: int = 1, **cfg) -> tuple[list, LLMClient]:
    """Send `body` n times concurrently; returns the results and the (closed) client."""
    client = LLMClient(LLMConfig(model="test-model", base_url=server_url, **{**FAST, **cfg}), api_key="test-key")

    async def go():
        async with client:
            return await asyncio.gather(*(client.complete(body) for _ in range(n)))

    return asyncio.run(go()), client


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- pure helpers -----------------------------------------------------------------------------

def test_request_hash_is_canonical():
    a = {"model": "m", "messages": [{"role": "user", "content": "안녕"}]}
    b = {"messages": [{"content": "안녕", "role": "user"}], "model": "m"}
    assert request_hash(a) == request_hash(b)
    assert request_hash(a) != request_hash(dict(a, model="n"))
    assert len(request_hash(a)) == 64


def test_parse_retry_after():
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "200", "retry-after": "9"}) == 0.2  # ms is more precise; it wins
    assert parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "soon"}) is None
    in_two = parse_retry_after({"retry-after": formatdate(time.time() + 2, usegmt=True)})
    assert 0.5 < in_two <= 2.0


def test_read_completion_and_failures():
    body = {"model": "m", "choices": [{"message": {"content": "내용", "refusal": None}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}}
    c = read_completion(body)
    assert c == Completion("내용", "stop", None, Usage(10, 3, 4))
    assert completion_failure(c) is None
    assert completion_failure(Completion("{", "length", None, Usage()))[0] == "length"
    assert completion_failure(Completion(None, "content_filter", None, Usage()))[0] == "content_filter"
    assert completion_failure(Completion(None, "stop", "도와드릴 수 없어요", Usage()))[0] == "refusal"
    assert completion_failure(Completion("  ", "stop", None, Usage()))[0] == "empty"
    assert read_completion({"choices": []}).content is None
    assert read_completion("not a dict").usage == Usage()


def test_redact_url_and_max_tokens_param():
    assert redact_url("http://user:secret@localhost:8000/v1?key=abc") == "http://localhost:8000/v1"
    assert redact_url(None) is None
    assert uses_max_completion_tokens("gpt-5-mini") and uses_max_completion_tokens("o4-mini")
    assert not uses_max_completion_tokens("gpt-4o-mini") and not uses_max_completion_tokens("meta-llama/Llama-3.1-8B")


def test_config_problems_are_listed_together():
    problems = LLMConfig(concurrency=0, max_attempts=0, timeout_s=0, structured_output="xml").problems()
    assert len(problems) == 4
    assert problems[0] == "--concurrency must be at least 1 (got 0)"


# --- adaptive limiter -------------------------------------------------------------------------

def test_limiter_halves_once_per_window_and_grows_back():
    now = [100.0]
    lim = AdaptiveLimiter(16, min_limit=1, grow_after=2, clock=lambda: now[0])
    lim.on_rate_limit(1.0)
    lim.on_rate_limit(1.0)  # same burst: no second cut
    assert (lim.limit, lim.shrinks, lim.paused_until) == (8, 1, 101.0)
    now[0] = 101.5
    lim.on_rate_limit(0.5)
    assert lim.limit == 4
    for _ in range(6):
        lim.on_success()
    assert lim.limit == 7
    for _ in range(100):
        lim.on_success()
    assert lim.limit == 16  # never above the configured cap
    for _ in range(10):
        now[0] += 10
        lim.on_rate_limit(0.0)
    assert lim.limit == 1  # never below min_limit


def test_limiter_caps_in_flight_tasks():
    async def go():
        lim = AdaptiveLimiter(3)
        peak = [0]

        async def task():
            await lim.acquire()
            peak[0] = max(peak[0], lim.in_use)
            await asyncio.sleep(0.01)
            lim.release()

        await asyncio.gather(*(task() for _ in range(20)))
        return peak[0], lim.in_use

    assert asyncio.run(go()) == (3, 0)


# --- the client against the server ------------------------------------------------------------

def test_success_returns_body_as_received():
    with LLMServer() as server:
        server.push(ok('{"dialogues": [1]}'))
        [res], _ = complete(server.base_url, BODY)
    assert res.ok and res.attempts == 1 and res.error is None
    assert res.completion["choices"][0]["message"]["content"] == '{"dialogues": [1]}'
    assert res.request_hash == request_hash(BODY)
    assert server.completion_bodies() == [BODY]  # sent exactly as planned (no schema here)


@pytest.mark.parametrize("ms", [False, True])
def test_429_honours_retry_after_and_shrinks(ms):
    with LLMServer() as server:
        server.push(rate_limited(0.3, ms=ms), ok())
        t = time.monotonic()
        [res], client = complete(server.base_url, BODY, concurrency=8)
        elapsed = time.monotonic() - t
    assert res.ok and res.attempts == 2
    assert elapsed >= 0.3
    assert client.limiter.shrinks == 1 and client.limiter.limit == 4
    assert server.completions == 2


def test_5xx_retried_then_recorded_as_failed():
    with LLMServer() as server:
        server.push(server_error(500), server_error(503), ok())
        [res], _ = complete(server.base_url, BODY, max_attempts=4)
        assert res.ok and res.attempts == 3
        server.push(*[server_error(500)] * 5)
        [res], _ = complete(server.base_url, BODY, max_attempts=3)
        assert (res.ok, res.error, res.attempts) == (False, "server_error", 3)
        assert res.detail.startswith("HTTP 500")
        assert server.completions == 6  # 3 + exactly max_attempts, never more


def test_timeout_is_retried_a_bounded_number_of_times():
    with LLMServer() as server:
        server.push(slow(2.0), slow(2.0))
        t = time.monotonic()
        [res], _ = complete(server.base_url, BODY, timeout_s=0.2, max_attempts=2)
        assert time.monotonic() - t < 1.5
    assert (res.error, res.attempts) == ("timeout", 2)


def test_unreachable_server_fails_after_bounded_attempts():
    [res], _ = complete(f"http://127.0.0.1:{closed_port()}/v1", BODY, max_attempts=3)
    assert (res.ok, res.error, res.attempts) == (False, "connection", 3)


def test_auth_error_is_fatal():
    with LLMServer() as server:
        server.push(auth_error())
        with pytest.raises(LLMFatalError, match="HTTP 401.*check OPENAI_API_KEY"):
            complete(server.base_url, BODY)
        assert server.completions == 1


def test_insufficient_quota_is_fatal():
    with LLMServer() as server:
        server.push(Reply(status=429, body={"error": {"message": "You exceeded your current quota",
                                                      "type": "insufficient_quota", "code": "insufficient_quota"}}))
        with pytest.raises(LLMFatalError, match="insufficient_quota"):
            complete(server.base_url, BODY)


def test_structured_output_falls_back_and_sticks():
    with LLMServer(reject_formats=("json_schema",)) as server:
        notices: list[str] = []
        client = LLMClient(LLMConfig(model="test-model", base_url=server.base_url, **FAST), api_key="k",
                           notice=notices.append)

        async def go():
            async with client:
                first = await client.complete(SCHEMA_BODY)
                second = await client.complete(SCHEMA_BODY)
            return first, second

        first, second = asyncio.run(go())
    assert first.ok and second.ok
    assert (first.response_format, second.response_format) == ("json_object", "json_object")
    sent = [b.get("response_format", {}).get("type") for b in server.completion_bodies()]
    assert sent == ["json_schema", "json_object", "json_object"]  # the second request skips the rejected mode
    assert notices == ["the server rejected response_format json_schema; using json_object from now on"]
    assert first.request_hash == request_hash(SCHEMA_BODY)  # keyed by the planned body, not what was sent


def test_no_response_format_at_all():
    with LLMServer(reject_formats=("json_schema", "json_object")) as server:
        [res], _ = complete(server.base_url, SCHEMA_BODY)
        assert res.ok and res.response_format == "none"
        assert "response_format" not in server.completion_bodies()[-1]


def test_other_400_fails_once_without_retry():
    with LLMServer() as server:
        server.push(Reply(status=400, body={"error": {"message": "context length exceeded"}}))
        [res], _ = complete(server.base_url, BODY)
        assert (res.error, res.attempts, server.completions) == ("bad_request", 1, 1)


def test_http_200_with_a_broken_body():
    with LLMServer() as server:
        server.push(garbage_body())
        [res], _ = complete(server.base_url, BODY)
    assert (res.ok, res.error) == (False, "bad_response")


def test_length_and_refusal_come_back_as_completions():
    with LLMServer() as server:
        server.push(truncated(), refused())
        results, _ = complete(server.base_url, BODY, n=2, concurrency=1)
    reasons = sorted(completion_failure(read_completion(r.completion))[0] for r in results)
    assert reasons == ["length", "refusal"]


def test_concurrency_cap_holds_at_the_server():
    with LLMServer(latency=0.05) as server:
        results, _ = complete(server.base_url, BODY, n=12, concurrency=3)
    assert all(r.ok for r in results)
    assert server.max_in_flight == 3


# --- the cache --------------------------------------------------------------------------------

def test_response_store_round_trip_and_torn_tail(tmp_path: Path):
    path = tmp_path / "raw.jsonl"
    store = ResponseStore(path)
    store.add({"request_hash": "a", "completion": {"choices": []}})
    store.add({"request_hash": "b", "completion": None, "error": "timeout"})
    store.close()
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"request_hash": "c", "completion": {"cho')  # a killed writer
    again = ResponseStore(path)
    assert "a" in again and again.get("a")["completion"] == {"choices": []}
    assert "b" not in again and again.known("b")  # a failure is remembered, not a cached answer
    assert again.get("c") is None and len(again) == 1
    again.add({"request_hash": "d", "completion": {}})
    again.close()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["request_hash"] for x in lines] == ["a", "b", "d"]  # the torn line was cut, not glued


def test_limiter_is_first_come_first_served():
    async def go():
        lim = AdaptiveLimiter(1)
        order: list[int] = []
        await lim.acquire()

        async def task(i):
            await lim.acquire()
            order.append(i)
            await asyncio.sleep(0)
            lim.release()

        waiting = [asyncio.create_task(task(i)) for i in range(5)]
        await asyncio.sleep(0)
        lim.release()
        late = asyncio.create_task(task(99))  # arrives while the five wait: must not overtake them
        await asyncio.gather(*waiting, late)
        return order, lim.in_use

    assert asyncio.run(go()) == ([0, 1, 2, 3, 4, 99], 0)


def test_limiter_passes_on_a_slot_when_a_waiter_is_cancelled():
    async def go():
        lim = AdaptiveLimiter(1)
        await lim.acquire()
        t = asyncio.create_task(lim.acquire())
        await asyncio.sleep(0)
        t.cancel()
        await asyncio.gather(t, return_exceptions=True)
        lim.release()
        await asyncio.wait_for(lim.acquire(), 1)  # the slot is free again
        return lim.in_use

    assert asyncio.run(go()) == 1

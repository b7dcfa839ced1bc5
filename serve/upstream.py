"""The upstream backend: forward each persona request to any OpenAI-compatible server (vLLM, typically).

    python -m serve --config train/configs/bllossom-8b.yaml --upstream http://127.0.0.1:8001/v1

The client's JSON goes on as it came, with two fields replaced: `messages` gets the persona's system
prompt first (serve/protocol.py), and `model` becomes the upstream's name for the fine-tuned model (the
LoRA module `make serve-vllm` registers, the checkpoint name by default). Everything else (sampling
parameters, vLLM's extras, `n`, `logprobs`, tools) is the upstream's to honour. Streams are passed
through line by line, each chunk's `model` rewritten to the persona id the client asked for, so the
client never sees the upstream's name.

Faults: an upstream that cannot be reached, times out, answers 5xx, refuses our key or does not know
the model is a 502 in OpenAI's error shape, one line saying which; a 4xx about the request itself
(too long, a bad parameter) is passed back with its status. The official `openai` SDK does the HTTP
(retries off: the client decides whether to retry). The key is only ever in the SDK's header.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from datagen.llm import redact_url
from serve import protocol as P
from serve.protocol import APIError, ChatRequest


class UpstreamBackend:
    kind = "upstream"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 600.0):
        from openai import AsyncOpenAI

        self.base_url = base_url
        self.model = model
        self.shown_url = redact_url(base_url)
        self.description = f"{model} at {self.shown_url}"
        # vLLM without --api-key accepts any key; the SDK insists on having one.
        self.client = AsyncOpenAI(base_url=base_url, api_key=api_key or "none", max_retries=0, timeout=timeout_s)

    def _request(self, req: ChatRequest, stream: bool):
        extra = {k: v for k, v in req.body.items() if k not in ("model", "messages", "stream")}
        return self.client.chat.completions.with_streaming_response.create(
            model=self.model, messages=req.messages, stream=stream, extra_body=extra)  # type: ignore[arg-type]

    def _error(self, e: Exception) -> APIError:
        """What the upstream did wrong, as the 502 (or the client's own 4xx) we answer."""
        import openai

        where = f"the upstream model server {self.shown_url}"
        if isinstance(e, openai.APITimeoutError):
            return APIError(502, f"{where} did not answer in time", type="server_error", code="upstream_timeout")
        if isinstance(e, openai.APIConnectionError):
            return APIError(502, f"{where} is unreachable; is it running? (start it with `make serve-vllm`)",
                            type="server_error", code="upstream_unavailable")
        if isinstance(e, openai.APIStatusError):
            detail = e.body if isinstance(e.body, dict) else {}
            said = str(detail.get("message") or e.message)[:300]
            if e.status_code == 404:
                return APIError(502, f"{where} does not serve the model {self.model!r} ({said}); register the adapter "
                                f"under that name (`make serve-vllm`) or pass --upstream-model NAME",
                                type="server_error", code="upstream_model_not_found")
            if e.status_code in (401, 403):
                return APIError(502, f"{where} refused our key (HTTP {e.status_code}); set --upstream-api-key or "
                                "UPSTREAM_API_KEY", type="server_error", code="upstream_auth")
            if e.status_code >= 500 or e.status_code == 429:
                return APIError(502, f"{where} answered HTTP {e.status_code}: {said}", type="server_error",
                                code="upstream_error")
            return APIError(e.status_code, said, type=str(detail.get("type") or "invalid_request_error"),
                            param=detail.get("param"), code=detail.get("code"))
        raise e

    async def complete(self, req: ChatRequest) -> dict[str, Any]:
        import openai

        try:
            async with self._request(req, stream=False) as response:
                raw = await response.read()
        except openai.OpenAIError as e:
            raise self._error(e) from None
        try:
            body = json.loads(raw)
        except ValueError:
            raise APIError(502, f"the upstream model server {self.shown_url} answered something that is not JSON",
                           type="server_error", code="upstream_error") from None
        if isinstance(body, dict):
            body["model"] = req.model
        return body

    async def open_stream(self, req: ChatRequest) -> AsyncIterator[str]:
        """Open the upstream stream now (so its failure is our HTTP error), pass its lines on later."""
        import openai

        manager = self._request(req, stream=True)
        try:
            response = await manager.__aenter__()
        except openai.OpenAIError as e:
            raise self._error(e) from None
        return self._relay(req, manager, response)

    async def _relay(self, req: ChatRequest, manager, response) -> AsyncIterator[str]:
        import openai

        try:
            async for line in response.iter_lines():
                yield _rename(line, req.model) + "\n"
        except openai.OpenAIError as e:  # the upstream went away mid-reply: say so in the stream
            err = self._error(e) if not isinstance(e, openai.APIConnectionError) else APIError(
                502, f"the upstream model server {self.shown_url} dropped the stream", type="server_error",
                code="upstream_unavailable")
            yield P.sse(err.body())
            yield P.SSE_DONE
        finally:  # also on a client disconnect: closing the response closes the upstream request
            await manager.__aexit__(None, None, None)

    def health(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.description}

    async def aclose(self) -> None:
        await self.client.close()


def _rename(line: str, model: str) -> str:
    """A `data: {...}` line with the chunk's `model` set to the persona id; any other line as it is.

    >>> _rename('data: {"model": "bllossom-8b-mbti", "choices": []}', "mbti-enfp")
    'data: {"model":"mbti-enfp","choices":[]}'
    >>> _rename("data: [DONE]", "mbti-enfp")
    'data: [DONE]'
    """
    if not line.startswith("data:"):
        return line
    payload = line[5:].strip()
    if not payload.startswith("{"):
        return line
    try:
        obj = json.loads(payload)
    except ValueError:
        return line
    if isinstance(obj, dict) and "model" in obj:
        obj["model"] = model
    return "data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":"))

"""The OpenAI chat-completions wire format, as vLLM's server speaks it: requests, responses, chunks, errors.

Pure: no model, no I/O. Clients (the `openai` SDK, LangChain's `ChatOpenAI`, Open WebUI) never need to
know the server is ours, so every shape here is the one OpenAI documents:

    error      {"error": {"message": "...", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}
    response   {"id": "chatcmpl-…", "object": "chat.completion", "created": 1700000000, "model": "mbti-enfp",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "…"}, "logprobs": null,
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 31, "completion_tokens": 12, "total_tokens": 43}}
    chunk      data: {"id": "chatcmpl-…", "object": "chat.completion.chunk", …, "choices": [{"index": 0,
                      "delta": {"content": "…"}, "logprobs": null, "finish_reason": null}]}
               …
               data: [DONE]

A model id is a persona: `mbti-enfp` … `mbti-istj`. The persona's saved system prompt goes first. A
client's own system (or developer) messages are kept, appended to the persona prompt in the same system
message after a blank line: the model was trained on the persona prompt alone, so extra instructions
come after it and may pull the reply out of character, but clients that always send one (LangChain
agents, Open WebUI presets) still work.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from datagen.checks import control_text
from train.personas import PersonaPrompt

OWNED_BY = "mbti-persona-chat"
ROLES = ("system", "developer", "user", "assistant")
MODEL_PREFIX = "mbti-"


# -- errors ------------------------------------------------------------------------------------

class APIError(Exception):
    """An answer in OpenAI's error shape: HTTP `status` and `{"error": {message, type, param, code}}`."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """pydantic's errors for a request body → (one line saying what is wrong, the param it is about).

    >>> validation_message([{"loc": ("body", "temperature"), "msg": "Input should be less than or equal to 2"}])
    ('temperature: Input should be less than or equal to 2', 'temperature')
    >>> validation_message([{"type": "json_invalid", "loc": ("body", 12), "msg": "JSON decode error"}])
    ('the request body is not valid JSON (JSON decode error at character 12)', None)
    """
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(x) for x in first.get("loc", ()) if x != "body"]
    if first.get("type") == "json_invalid":
        where = f" at character {loc[0]}" if loc else ""
        return f"the request body is not valid JSON ({first.get('msg', 'JSON decode error')}{where})", None
    if first.get("type") == "missing" and not loc:
        return "the request body is missing: send a JSON object with model and messages", None
    param = ".".join(loc) or None
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{param + ': ' if param else ''}{first.get('msg', 'invalid value')}{more}", param


# -- models ------------------------------------------------------------------------------------

def persona_id(mbti: str) -> str:
    """The model id of a type.

    >>> persona_id("ENFP")
    'mbti-enfp'
    """
    return MODEL_PREFIX + mbti.lower()


def model_entry(p: PersonaPrompt, created: int) -> dict[str, Any]:
    """One `GET /v1/models` entry; the Korean nickname and summary ride in `metadata` (for the page's cards)."""
    return {"id": persona_id(p.mbti), "object": "model", "created": created, "owned_by": OWNED_BY,
            "metadata": {"mbti": p.mbti, "nickname": p.nickname, "summary": p.summary}}


def model_list(personas: dict[str, PersonaPrompt], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(p, created) for p in personas.values()]}


def find_persona(personas: dict[str, PersonaPrompt], model: str) -> PersonaPrompt:
    """The persona a model id names (case-insensitive), or a 404 listing the ids there are."""
    wanted = model.strip().lower()
    for p in personas.values():
        if persona_id(p.mbti) == wanted:
            return p
    ids = ", ".join(persona_id(t) for t in personas)
    raise APIError(404, f"The model `{model}` does not exist. Available models: {ids}", param="model",
                   code="model_not_found")


# -- the request -------------------------------------------------------------------------------

class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The fields we read and check; anything else is kept and forwarded to an upstream as sent."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[Any]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int | None = Field(None, ge=1)
    # vLLM's extra sampling parameters (the same names, so one client works against both servers)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    repetition_penalty: float | None = Field(None, gt=0)


@dataclass(frozen=True)
class ChatRequest:
    """A checked request for one persona: what a backend needs, nothing it has to check again."""

    model: str
    """The persona id as we answer it (`mbti-enfp`)."""
    mbti: str
    messages: list[dict[str, str]]
    """The persona's system prompt (plus the client's system text, if any) first, then the client's turns."""
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    min_tokens: int = 0
    ignore_eos: bool = False
    repetition_penalty: float | None = None
    body: dict[str, Any] = field(default_factory=dict)
    """The client's JSON as sent: an upstream gets it with `model` and `messages` replaced."""
    n_system: int = 0
    """System (or developer) messages the client sent: its turn k is its message `n_system + k`."""
    unsupported: tuple[str, ...] = ()
    """Fields set that only an upstream can honour (n > 1, logprobs, tools, penalties): the local backend refuses them."""


def _text(content: Any, where: str) -> str:
    """A message's text: a string, or OpenAI's list of content parts where every part is text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f"{where}[{j}]: only text content is supported (got {kind!r})", param=where)
            texts.append(part["text"])
        return "".join(texts)
    if content is None:
        raise bad_request(f"{where} is missing: every message needs its text", param=where)
    raise bad_request(f"{where} must be a string or a list of text parts (got {type(content).__name__})", param=where)


def conversation(raw: list[Any]) -> tuple[list[str], list[dict[str, str]]]:
    """The client's messages → (its system texts, its user/assistant turns), or a 400 saying what is wrong.

    >>> conversation([{"role": "system", "content": "짧게."}, {"role": "user", "content": "안녕"}])
    (['짧게.'], [{'role': 'user', 'content': '안녕'}])
    """
    if not raw:
        raise bad_request("messages is empty: send at least one user message", param="messages")
    systems: list[str] = []
    turns: list[dict[str, str]] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object with role and content (got {type(m).__name__})", param=where)
        role = m.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role {role!r} is not supported: use one of {', '.join(ROLES)}",
                              param=f"{where}.role")
        text = _text(m.get("content"), f"{where}.content")
        if not text.strip():
            raise bad_request(f"{where}.content is empty", param=f"{where}.content")
        if (hit := control_text(text)) is not None:  # for every backend: vLLM would read it as a control token
            raise bad_request(f"{where}.content contains the chat-template control text {hit!r}, which the model "
                              "would read as a turn boundary; remove it", param=f"{where}.content", code="control_text")
        if role in ("system", "developer"):
            if turns:
                raise bad_request(f"{where}: a {role} message may only come before the conversation starts",
                                  param=f"{where}.role")
            systems.append(text)
            continue
        if not turns and role != "user":
            raise bad_request(f"{where}: the conversation must start with a user message (got {role})",
                              param=f"{where}.role")
        turns.append({"role": role, "content": text})
    if not turns:
        raise bad_request("messages has no user message: send at least one", param="messages")
    if turns[-1]["role"] != "user":
        raise bad_request(f"the last message must be from the user (got {turns[-1]['role']}): the persona answers "
                          "the user's last message", param=f"messages[{len(raw) - 1}].role")
    return systems, turns


def persona_messages(persona: PersonaPrompt, systems: list[str], turns: list[dict[str, str]]) -> list[dict[str, str]]:
    """The persona's saved system prompt first; the client's system text, if any, after it in the same message.

    >>> p = PersonaPrompt("ENFP", "당신은 ENFP 성향의 대화 상대입니다.")
    >>> persona_messages(p, ["답은 두 문장으로."], [{"role": "user", "content": "안녕"}])[0]["content"]
    '당신은 ENFP 성향의 대화 상대입니다.\\n\\n답은 두 문장으로.'
    """
    system = "\n\n".join([persona.system_prompt, *systems])
    return [{"role": "system", "content": system}, *turns]


def _unsupported(req: ChatCompletionRequest) -> tuple[str, ...]:
    extra = req.model_extra or {}
    out = []
    if (req.n or 1) > 1:
        out.append("n")
    for key in ("logprobs", "tools", "functions", "presence_penalty", "frequency_penalty"):
        if extra.get(key):
            out.append(key)
    fmt = extra.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") not in (None, "text"):
        out.append("response_format")
    return tuple(out)


def parse_request(req: ChatCompletionRequest, body: dict[str, Any], personas: dict[str, PersonaPrompt]) -> ChatRequest:
    """The checked request for the persona `req.model` names; 404 for an unknown persona, 400 for bad input."""
    persona = find_persona(personas, req.model)
    systems, turns = conversation(req.messages)
    stop: tuple[str, ...] = ()
    if req.stop is not None:
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop)
        if any(not s for s in stop):
            raise bad_request("stop: stop strings must not be empty", param="stop")
    return ChatRequest(
        model=persona_id(persona.mbti), mbti=persona.mbti, messages=persona_messages(persona, systems, turns),
        stream=req.stream, include_usage=bool(req.stream_options and req.stream_options.include_usage),
        max_tokens=req.max_completion_tokens or req.max_tokens, temperature=req.temperature, top_p=req.top_p,
        seed=req.seed, stop=stop, min_tokens=req.min_tokens, ignore_eos=req.ignore_eos,
        repetition_penalty=req.repetition_penalty, body=body, n_system=len(systems), unsupported=_unsupported(req))


# -- the answer --------------------------------------------------------------------------------

def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(16)


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(id: str, created: int, model: str, text: str, finish_reason: str, use: dict[str, int]) -> dict[str, Any]:
    return {"id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                         "finish_reason": finish_reason}],
            "usage": use}


def chunk(id: str, created: int, model: str, delta: dict[str, str], finish_reason: str | None = None,
          with_usage: bool = False) -> dict[str, Any]:
    """One streamed chunk; with `stream_options.include_usage` every chunk carries `"usage": null` (OpenAI's shape)."""
    out: dict[str, Any] = {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    if with_usage:
        out["usage"] = None
    return out


def usage_chunk(id: str, created: int, model: str, use: dict[str, int]) -> dict[str, Any]:
    """The last chunk when the client asked for usage: no choices, the request's usage."""
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model, "choices": [],
            "usage": use}


def sse(obj: dict[str, Any]) -> str:
    """One server-sent event, as OpenAI frames them."""
    return f"data: {json.dumps(obj, ensure_ascii=False, separators=(',', ':'))}\n\n"


SSE_DONE = "data: [DONE]\n\n"

"""serve/protocol.py: the request checks and the persona prompt, without a server (the HTTP side is in
test_serve_local.py)."""

from __future__ import annotations

import pytest

from serve.protocol import APIError, ChatCompletionRequest, conversation, parse_request
from train.personas import PersonaPrompt

PERSONAS = {"ENFP": PersonaPrompt("ENFP", "당신은 ENFP 성향의 대화 상대입니다.", "가능성 수집가", "밝은 사람.")}


def parse(**body):
    body = {"model": "mbti-enfp", "messages": [{"role": "user", "content": "안녕"}], **body}
    return parse_request(ChatCompletionRequest.model_validate(body), body, PERSONAS)


def test_a_request_becomes_the_persona_prompt_then_the_turns():
    req = parse(messages=[{"role": "developer", "content": "짧게."}, {"role": "system", "content": "존댓말로."},
                          {"role": "user", "content": [{"type": "text", "text": "안녕"}, {"type": "text", "text": "하세요"}]},
                          {"role": "assistant", "content": "반가워요!"}, {"role": "user", "content": "또 봐요"}])
    assert req.model == "mbti-enfp" and req.mbti == "ENFP"
    assert req.messages == [{"role": "system", "content": "당신은 ENFP 성향의 대화 상대입니다.\n\n짧게.\n\n존댓말로."},
                            {"role": "user", "content": "안녕하세요"}, {"role": "assistant", "content": "반가워요!"},
                            {"role": "user", "content": "또 봐요"}]


def test_sampling_fields_are_read_as_openai_and_vllm_name_them():
    req = parse(model="MBTI-ENFP", stop="끝", max_tokens=10, max_completion_tokens=20, seed=3, temperature=0,
                stream=True, stream_options={"include_usage": True}, ignore_eos=True, min_tokens=2,
                repetition_penalty=1.2, top_k=5)
    assert (req.model, req.stop, req.max_tokens, req.seed, req.temperature) == ("mbti-enfp", ("끝",), 20, 3, 0.0)
    assert (req.stream, req.include_usage, req.ignore_eos, req.min_tokens, req.repetition_penalty) == (
        True, True, True, 2, 1.2)
    assert req.body["top_k"] == 5 and req.unsupported == ()  # unknown fields travel on to an upstream


def test_what_only_an_upstream_can_do_is_marked():
    req = parse(n=2, logprobs=True, presence_penalty=0.5, frequency_penalty=0, response_format={"type": "json_object"},
                tools=[{"type": "function"}])
    assert req.unsupported == ("n", "logprobs", "tools", "presence_penalty", "response_format")
    assert parse(response_format={"type": "text"}, n=1).unsupported == ()


def test_only_a_user_message_last_and_system_messages_first():
    assert conversation([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])[1][1]["content"] == "b"
    with pytest.raises(APIError, match="has no user message"):
        conversation([{"role": "system", "content": "a"}])
    with pytest.raises(APIError, match="must be a string or a list of text parts"):
        conversation([{"role": "user", "content": 5}])
    with pytest.raises(APIError) as e:
        parse(model="gpt-4o")
    assert e.value.status == 404 and e.value.body()["error"]["message"] == (
        "The model `gpt-4o` does not exist. Available models: mbti-enfp")

"""train/templates.py: the shipped chat templates render exactly what their comments say."""

from __future__ import annotations

import pytest

from train.templates import BUILTIN_TEMPLATES, LLAMA3, PLAIN_KO
from train.tiny import SAMPLE_TEXTS, train_tiny_tokenizer

CHAT = [{"role": "system", "content": "시스템 "}, {"role": "user", "content": "질문"},
        {"role": "assistant", "content": "대답"}]


@pytest.fixture(scope="module")
def tok():
    return train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400)


def rendered(tok, template, messages=CHAT, gen=False):
    return tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=gen)


def test_llama3_is_metas_template(tok):
    assert rendered(tok, LLAMA3) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n시스템<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n질문<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n대답<|eot_id|>")
    assert rendered(tok, LLAMA3, CHAT[:2], gen=True).endswith(
        "질문<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_plain_ko_ends_replies_with_eos(tok):
    assert rendered(tok, PLAIN_KO) == (
        "<|begin_of_text|>시스템\n\n### 사용자:\n질문\n\n### 어시스턴트:\n대답<|end_of_text|>\n\n")
    assert rendered(tok, PLAIN_KO, CHAT[:2], gen=True).endswith("### 사용자:\n질문\n\n### 어시스턴트:\n")


def test_plain_ko_writes_no_bos_when_bos_is_eos():
    tok = train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400, special_tokens=("<|endoftext|>",),
                               bos_token="<|endoftext|>", eos_token="<|endoftext|>")  # Polyglot-Ko's setup
    assert rendered(tok, PLAIN_KO).startswith("시스템\n\n### 사용자:")


def test_builtin_names():
    assert BUILTIN_TEMPLATES == {"llama3": LLAMA3, "plain-ko": PLAIN_KO}

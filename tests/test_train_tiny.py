"""train/tiny.py: the tiny random Llama and the BPE tokenizer trained on our own text, offline."""

from __future__ import annotations

import json

import torch

from train.tiny import (LLAMA3_SPECIAL_TOKENS, SAMPLE_CHATS, SAMPLE_TEXTS, build_tiny_model, seed_texts,
                        train_tiny_tokenizer)


def test_sample_chats_have_the_published_shape():
    assert len(SAMPLE_CHATS) == 8
    for chat in SAMPLE_CHATS:
        assert chat[0]["role"] == "system" and chat[-1]["role"] == "assistant"
        assert [m["role"] for m in chat[1:]] == ["user", "assistant"] * (len(chat[1:]) // 2)


def test_tokenizer_round_trips_korean_and_keeps_special_tokens_whole():
    tok = train_tiny_tokenizer(seed_texts() + SAMPLE_TEXTS)
    text = SAMPLE_TEXTS[2] + " ㅠㅠ 123 abc"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    for special in LLAMA3_SPECIAL_TOKENS:
        assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1
    assert tok.pad_token is None and tok.chat_template.startswith("{% set loop_messages")


def test_build_is_seeded_and_leaves_the_global_rng_alone(tmp_path):
    tok = train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny_model(tmp_path / "a", tokenizer=tok, seed=1)
    assert torch.equal(torch.rand(1), before)
    b = build_tiny_model(tmp_path / "b", tokenizer=tok, seed=1)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    config = json.loads((a / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (64, 2, len(tok))
    assert config["tie_word_embeddings"] is False

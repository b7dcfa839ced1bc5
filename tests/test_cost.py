"""Prices, spend from usage, and token counting with and without tiktoken's encodings."""

from __future__ import annotations

import time

import pytest

from datagen.cost import PRICES, Price, TokenCounter, approx_tokens, cost_usd, format_usd, load_encoding, price_for
from datagen.llm import Usage


def test_price_lookup():
    assert price_for("gpt-4o-mini") == PRICES["gpt-4o-mini"]
    assert price_for("gpt-4o-mini-2024-07-18") == PRICES["gpt-4o-mini"]  # a dated snapshot is its family
    assert price_for("gpt-4o-2024-08-06") == PRICES["gpt-4o"]
    assert price_for("openai/gpt-4.1-mini") == PRICES["gpt-4.1-mini"]
    assert price_for("gpt-4o-minix") is None
    assert price_for("Qwen/Qwen2.5-7B-Instruct") is None


def test_cost_from_usage():
    price = Price(input=2.0, output=8.0, cached_input=0.5)
    assert cost_usd(Usage(1_000_000, 0), price) == 2.0
    assert cost_usd(Usage(1000, 500), price) == pytest.approx((1000 * 2 + 500 * 8) / 1e6)
    assert cost_usd(Usage(1000, 0, cached_tokens=400), price) == pytest.approx((600 * 2 + 400 * 0.5) / 1e6)
    assert cost_usd(Usage(1000, 0, cached_tokens=400), Price(2.0, 8.0)) == pytest.approx(2000 / 1e6)
    assert cost_usd(Usage(1000, 1000), None) == 0.0


def test_approximation_known_answers():
    assert approx_tokens("") == 0
    assert approx_tokens("안녕하세요") == 5
    assert approx_tokens("안녕하세요, OK?") == 6          # 5 syllables + 4 other characters → 1
    assert approx_tokens('{"role": "user"}') == 4         # 16 characters of JSON → 4
    assert approx_tokens("한 글자 한 토큰") == 6          # spaces are free


def test_counter_falls_back_with_one_line():
    def offline(name):
        raise RuntimeError("ConnectionError")

    c = TokenCounter("gpt-4o-mini", loader=offline)
    assert not c.exact and c.encoding == "o200k_base"
    assert "\n" not in c.note
    assert c.note.startswith("tiktoken cannot load o200k_base offline (ConnectionError); tokens approximated")
    assert c.count("안녕하세요") == 5
    assert c.count_messages([{"role": "user", "content": "안녕하세요"}]) == 4 + 5 + 3


def test_counter_uses_tiktoken_when_it_loads():
    class FakeEncoding:
        def encode(self, text, disallowed_special=()):
            return text.split()

    c = TokenCounter("Qwen/Qwen2.5-7B-Instruct", loader=lambda name: FakeEncoding())
    assert c.exact and c.note == "tokens counted with tiktoken o200k_base"  # unknown model: o200k_base
    assert c.count("a b c") == 3


def test_load_encoding_gives_up_on_a_hanging_download(monkeypatch):
    import tiktoken

    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: time.sleep(5))
    t = time.monotonic()
    with pytest.raises(RuntimeError, match="no answer in 0.2 s"):
        load_encoding("o200k_base", timeout_s=0.2)
    assert time.monotonic() - t < 1.0


def test_format_usd():
    assert (format_usd(None), format_usd(0.00123), format_usd(12.345)) == ("?", "$0.0012", "$12.35")

"""train/chat.py: replies stream and stop at the end-of-turn token; the persona's system prompt; the chat loop."""

from __future__ import annotations

import dataclasses

import pytest

from datagen.errors import UserError
from tests.helpers import scripted_chat_model
from train.chat import chat_loop, generate_reply, load_chat_model
from train.personas import PersonaPrompt, persona_for
from train.config import TrainConfig
from train.merge import merge
from train.model import ModelSourceError, add_lora, load_base_model
from train.tiny import SAMPLE_TEXTS, build_tiny_model, train_tiny_tokenizer

REPLY = "오늘 날씨가 좋네요."
SYSTEM = "당신은 ENFP 성향의 대화 상대입니다."


def greedy_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"model": "unused", "dataset": "unused", "optim": "adamw_torch", "temperature": 0.0,
                          "max_new_tokens": 30, **kw})


@pytest.fixture(scope="module")
def scripted():
    """A real Llama that greedily says REPLY, then <|eot_id|>, then more (tests/helpers.py)."""
    return scripted_chat_model(REPLY, SYSTEM)


def test_generation_streams_and_stops_at_end_of_turn(scripted):
    model, tok, tokens, messages, reply_ids = scripted
    pieces: list[str] = []
    reply = generate_reply(model, tok, tokens, messages, greedy_cfg(), on_text=pieces.append)
    assert reply.text == REPLY
    assert reply.stopped and reply.new_tokens == len(reply_ids) + 1  # the reply, then <|eot_id|>
    assert "".join(pieces).strip() == REPLY and len(pieces) >= 1


def test_without_end_of_turn_in_the_stop_list_it_would_run_on(scripted):
    """The control for the test above: <|eot_id|> is not eos here, so eos alone does not stop it."""
    model, tok, tokens, messages, reply_ids = scripted
    assert tok.eos_token_id != tokens.eot_id
    ids = tok(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), add_special_tokens=False,
              return_tensors="pt")["input_ids"]
    out = model.generate(ids, max_new_tokens=len(reply_ids) + 3, do_sample=False, eos_token_id=[tok.eos_token_id],
                         pad_token_id=tokens.pad_id)
    assert out.shape[1] - ids.shape[1] == len(reply_ids) + 3


def test_a_reply_cut_by_max_new_tokens_is_marked(scripted):
    model, tok, tokens, messages, _ = scripted
    reply = generate_reply(model, tok, tokens, messages, greedy_cfg(max_new_tokens=2))
    assert not reply.stopped and reply.new_tokens == 2


def test_the_chat_loop_keeps_history_and_resets(scripted, monkeypatch):
    model, tok, tokens, _, _ = scripted
    monkeypatch.setattr("train.chat.checkpoint_personas", lambda cfg, note: {"ENFP": PersonaPrompt("ENFP", SYSTEM)})
    monkeypatch.setattr("train.chat.require_adapter", lambda cfg: None)
    monkeypatch.setattr("train.chat.load_chat_model", lambda cfg, use: (model, tok, tokens, "scripted model"))
    seen = []
    real = generate_reply
    monkeypatch.setattr("train.chat.generate_reply",
                        lambda m, t, k, history, cfg, on_text=None: seen.append([h["role"] for h in history]) or
                        real(m, t, k, history, cfg, on_text))
    inputs = iter(["안녕하세요", "또 물어볼게요", "/reset", "", "처음부터", "/exit", "never read"])
    printed: list[str] = []
    chat_loop(greedy_cfg(), "enfp", input_fn=lambda _: next(inputs),
              out=lambda *a, **k: printed.append("".join(map(str, a)) + k.get("end", "\n")))
    assert seen == [["system", "user"], ["system", "user", "assistant", "user"], ["system", "user"]]
    text = "".join(printed)
    assert text.startswith("ENFP persona, scripted model.") and text.count("ENFP> ") == 3 and REPLY in text


def test_persona_lookup_names_the_types_the_checkpoint_knows():
    personas = {"ENFP": PersonaPrompt("ENFP", SYSTEM)}
    with pytest.raises(UserError, match="use one of the 16 types"):
        persona_for(personas, "ABCD")
    assert persona_for(personas, "enfp").system_prompt == SYSTEM
    with pytest.raises(UserError, match=r"no persona for ISTJ \(it knows: ENFP\)"):
        persona_for(personas, "ISTJ")


def test_chat_loads_the_adapter_or_the_merged_model(tmp_path):
    tok = train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400)
    cfg = greedy_cfg(model=str(build_tiny_model(tmp_path / "tiny", tokenizer=tok)), output_dir=str(tmp_path / "ck"),
                     compute_dtype="float32", gradient_checkpointing=False, merge_dtype="float32")
    with pytest.raises(ModelSourceError, match="no adapter"):
        load_chat_model(cfg)
    add_lora(load_base_model(cfg, "cpu", quantized=True), cfg).save_pretrained(str(cfg.checkpoint_dir))
    tok.save_pretrained(str(cfg.checkpoint_dir))
    with pytest.raises(ModelSourceError, match="run `python -m train merge"):
        load_chat_model(cfg, "merged")
    model, _, tokens, what = load_chat_model(cfg)
    assert what.endswith(f"+ adapter {cfg.checkpoint_dir}") and not model.training
    assert tokens.eot == "<|eot_id|>"
    merge(cfg, log=lambda _: None)
    assert load_chat_model(cfg)[3] == f"merged model {cfg.merged_dir}"
    assert "adapter" in load_chat_model(dataclasses.replace(cfg), "adapter")[3]


def test_chat_eval_and_serve_share_one_set_of_generation_settings():
    """Greedy at temperature 0; otherwise nucleus sampling with top-k off, as vLLM and the OpenAI API sample."""
    from train.chat import generation_kwargs
    from train.data import ChatTokens

    tokens = ChatTokens(eot="<|eot_id|>", eot_id=9, pad="<pad>", pad_id=3, stop_ids=(9, 2))
    greedy = generation_kwargs(tokens, 40, 0.0, 0.9, 1.1)
    assert greedy == dict(max_new_tokens=40, eos_token_id=[9, 2], pad_token_id=3, do_sample=False,
                          repetition_penalty=1.1, use_cache=True, top_k=None, temperature=None, top_p=None)
    sampled = generation_kwargs(tokens, 40, 0.7, 0.9, 1.0, min_new_tokens=5)
    assert (sampled["do_sample"], sampled["temperature"], sampled["top_p"], sampled["top_k"],
            sampled["min_new_tokens"]) == (True, 0.7, 0.9, None, 5)

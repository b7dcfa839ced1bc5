"""train/evaluate/replay.py: batched left-padded generation stops each row at end-of-turn; the replay keeps the
model's own replies in context; stored chats and server answers read back as turns."""

from __future__ import annotations

from pathlib import Path

from datagen.schema import Dialogue
from tests.test_train_chat import REPLY, SYSTEM, scripted  # noqa: F401  (the scripted-model fixture)
from train.evaluate.replay import (
    EMPTY_REPLY,
    ChatStore,
    GenSettings,
    Turn,
    eval_record,
    generate_batch,
    replay_local,
    replies,
    turn_of,
)

GREEDY = GenSettings(max_new_tokens=30)


def test_a_batch_stops_each_row_at_end_of_turn_with_left_padding(scripted):  # noqa: F811
    model, tok, tokens, messages, reply_ids = scripted
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    started = prompt + tok.decode(reply_ids[:2])  # the reply half written: this row ends 2 tokens sooner
    turns = generate_batch(model, tok, tokens, [prompt, started], GREEDY)
    rest = tok.decode(reply_ids[2:]).strip()
    assert turns == [Turn(REPLY, True, len(reply_ids) + 1), Turn(rest, True, len(reply_ids) - 1)]
    assert tok.padding_side == "right"  # left padding only while generating

    cut = generate_batch(model, tok, tokens, [prompt, started], GenSettings(max_new_tokens=len(reply_ids)))
    assert cut == [Turn(REPLY, False, len(reply_ids)), Turn(rest, True, len(reply_ids) - 1)]


def test_sampling_is_seeded_and_leaves_the_global_rng_alone(scripted):  # noqa: F811
    import torch

    model, tok, tokens, messages, _ = scripted
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    hot = GenSettings(max_new_tokens=8, temperature=5.0, seed=3)
    state = torch.random.get_rng_state()
    a = generate_batch(model, tok, tokens, [prompt] * 3, hot, seed=11)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert generate_batch(model, tok, tokens, [prompt] * 3, hot, seed=11) == a


def test_replay_writes_every_turn_with_its_own_replies_in_context(scripted, monkeypatch):  # noqa: F811
    model, tok, tokens, _, reply_ids = scripted
    chats = [Dialogue.build("ENFP", "주말", [{"role": "user", "content": "안녕하세요"}, {"role": "assistant", "content": "네"},
                                             {"role": "user", "content": "또 물어볼게요"}, {"role": "assistant", "content": "응"}]),
             Dialogue.build("ENFP", "발표", [{"role": "user", "content": "발표 끝났어요"}, {"role": "assistant", "content": "우와"}])]
    seen: list[list[str]] = []
    real = generate_batch

    def spy(m, t, k, prompts, gen, seed=0):
        seen.append(prompts)
        return real(m, t, k, prompts, gen, seed)

    monkeypatch.setattr("train.evaluate.replay.generate_batch", spy)
    done: list[tuple[str, list[Turn]]] = []
    n = replay_local(model, tok, tokens, chats, {"ENFP": SYSTEM}, GREEDY, batch_size=8,
                     done=lambda d, turns: done.append((d.id, turns)))
    assert n == 3 and [len(p) for p in seen] == [2, 1]  # turn 1 of both chats together, then turn 2 of the first
    assert f"{REPLY}<|eot_id|>" in seen[1][0] and SYSTEM in seen[1][0]  # its own first reply is in the context
    assert [d for d, _ in done] == [chats[1].id, chats[0].id]  # the one-turn chat finishes first
    record = eval_record(chats[0], done[1][1], "fine_tuned", "k1", "tiny")
    assert record.turns("assistant") == [REPLY, REPLY] and record.turns("user") == chats[0].turns("user")
    assert record.source == "eval" and record.meta == {
        "condition": "fine_tuned", "held_out": chats[0].id, "settings": "k1", "model": "tiny",
        "turns": [{"stopped": True, "new_tokens": len(reply_ids) + 1, "chars": len(REPLY)}] * 2}


def test_an_empty_reply_is_recorded_as_such():
    held = Dialogue.build("ISTJ", "이사", [{"role": "user", "content": "이사 가요"}, {"role": "assistant", "content": "언제요?"}])
    record = eval_record(held, [Turn("  ", True, 1)], "base", "k", "m")
    assert record.turns("assistant") == [EMPTY_REPLY] and replies(record) == [""]
    assert replies(held) == ["언제요?"]


def test_the_chat_store_finds_chats_by_condition_held_out_and_settings(tmp_path: Path):
    held = Dialogue.build("ISTJ", "이사", [{"role": "user", "content": "이사 가요"}, {"role": "assistant", "content": "언제요?"}])
    a, b = (eval_record(held, [Turn(t, True, 3)], "base", k, "m") for t, k in (("내일요", "k1"), ("모레요", "k2")))
    store = ChatStore(tmp_path / "chats.jsonl")
    store.add(a)
    store.add(b)
    store.close()
    with open(tmp_path / "chats.jsonl", "a", encoding="utf-8") as f:
        f.write('{"id": "ISTJ-')  # a kill mid-write
    again = ChatStore(tmp_path / "chats.jsonl")
    assert again.get("base", held.id, "k2") == b and again.get("fine_tuned", held.id, "k2") is None
    assert again.get("base", held.id, "k1") == a  # both settings kept: the store only grows


def test_server_answers_become_turns():
    def line(content, finish="stop", refusal=None, usage=None):
        return {"completion": {"choices": [{"message": {"content": content, "refusal": refusal}, "finish_reason": finish}],
                               "usage": usage or {"prompt_tokens": 9, "completion_tokens": 4}}}

    assert turn_of(line(" 좋아요 ")) == Turn("좋아요", True, 4)
    assert turn_of(line("길게 이어지다가", "length")) == Turn("길게 이어지다가", False, 4)
    assert turn_of(line(None, refusal="그건 도와드릴 수 없어요.")) == Turn("그건 도와드릴 수 없어요.", True, 4)
    assert turn_of({"completion": None, "error": "server_error"}) is None


def test_a_turn_request_fits_the_model_openai_reasoning_models_included():
    from train.evaluate.replay import GenSettings, turn_body

    msgs = [{"role": "user", "content": "안녕"}]
    greedy, sampled = GenSettings(max_new_tokens=64), GenSettings(max_new_tokens=64, temperature=0.7, top_p=0.9, seed=3)
    assert turn_body(msgs, "gpt-4o-mini", greedy) == {"model": "gpt-4o-mini", "messages": msgs, "temperature": 0.0,
                                                      "max_tokens": 64}
    assert turn_body(msgs, "gpt-4o-mini", sampled) == {"model": "gpt-4o-mini", "messages": msgs, "temperature": 0.7,
                                                       "max_tokens": 64, "seed": 3, "top_p": 0.9}
    # o-series / gpt-5 take max_completion_tokens and only the default temperature and top_p: left out, not refused
    assert turn_body(msgs, "o4-mini", greedy) == {"model": "o4-mini", "messages": msgs, "max_completion_tokens": 64}
    assert turn_body(msgs, "gpt-5-mini", sampled) == {"model": "gpt-5-mini", "messages": msgs,
                                                      "max_completion_tokens": 64, "seed": 3}

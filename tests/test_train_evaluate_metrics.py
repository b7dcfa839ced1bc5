"""train/evaluate/{metrics,report,heldout,config}.py: the numbers by hand, nulls where nothing can be computed,
the report as a view of results.json, held-out selection, config problems raised at once."""

from __future__ import annotations

import pytest

from datagen.judge import Verdict
from datagen.schema import Dialogue
from train.config import ConfigError
from train.evaluate.config import EvalConfig, parse_conditions
from train.evaluate.heldout import select
from train.evaluate.metrics import block, condition_results, distinct_n, rule_failures
from train.evaluate.replay import Turn, eval_record
from train.evaluate.report import pick_samples, render_report

USER = ["이번 주말에 뭐 하지?", "비 온대.", "그럼 집에 있을까?"]


def chat(mbti: str, answers: list[str], stopped: list[bool] | None = None, condition: str = "fine_tuned") -> Dialogue:
    messages = [m for u, a in zip(USER, answers) for m in ({"role": "user", "content": u}, {"role": "assistant", "content": a})]
    held = Dialogue.build(mbti, "주말", messages)
    turns = [Turn(a, s, 5) for a, s in zip(answers, stopped or [True] * len(answers))]
    return eval_record(held, turns, condition, "k", "m")


def test_a_block_computed_by_hand():
    chats = [chat("ISTJ", ["집에서 책 읽어요.", "우산 챙기세요."], [True, False]),
             chat("ISTJ", ["집에서 쉬어요.", "집에서 쉬어요."]),  # the same reply twice: repeated_turn
             chat("ENFP", ["와 캠핑 가자!"])]
    verdicts = [Verdict("ISTJ", "ISTJ", 4, 5, 3), None, Verdict("ENFP", "INFJ", 2, 3, 5)]  # the second not judged
    losses = {chats[0].meta["held_out"]: [6.0, 3], chats[2].meta["held_out"]: [2.0, 1]}
    b = block(chats, verdicts, losses)
    assert b == {
        "n_chats": 3, "n_turns": 5, "n_judged": 2, "full_type": 0.5,
        "axes": {"E/I": 0.5, "S/N": 1.0, "T/F": 1.0, "J/P": 0.5},  # ENFP guessed INFJ: E/I and J/P wrong
        "scores": {"persona": 3.0, "naturalness": 4.0, "engagement": 4.0},
        "rules_pass": round(2 / 3, 4), "rules_failed": {"repeated_turn": 1}, "stop_rate": 0.8,
        # words: 집에서 책 읽어요. | 우산 챙기세요. | 집에서 쉬어요. | 집에서 쉬어요. | 와 캠핑 가자! → 9 distinct of 12;
        # bigrams within each reply: 2 + 1 + 1 + 1 + 2 = 7, one repeated
        "distinct_1": 0.75, "distinct_2": round(6 / 7, 4),
        "reply_chars_mean": round((10 + 8 + 8 + 8 + 8) / 5, 1),
        "loss": 2.0, "perplexity": round(2.718281828459045 ** 2, 3)}


def test_nulls_where_nothing_can_be_computed():
    b = block([chat("ISTJ", ["응"])], None, None)
    assert b["n_judged"] is None and b["full_type"] is None and b["axes"] == dict.fromkeys(["E/I", "S/N", "T/F", "J/P"])
    assert b["scores"] == {"persona": None, "naturalness": None, "engagement": None}
    assert (b["loss"], b["perplexity"], b["distinct_2"]) == (None, None, None)  # one word: no bigram
    held = Dialogue.build("ISTJ", "주말", [{"role": "user", "content": USER[0]}, {"role": "assistant", "content": "쉬어요."}])
    assert block([held], None, None)["stop_rate"] is None  # the held-out data has no stop facts
    empty = block([], [], {})
    assert empty["n_chats"] == 0 and empty["rules_pass"] is None and empty["reply_chars_mean"] is None


def test_a_condition_has_per_type_blocks_confusion_and_mean_distinct_over_types():
    chats = [chat("ISTJ", ["좋아요 좋아요"]), chat("ENFP", ["와 진짜 대박"]), chat("ENFP", ["와 진짜 좋다"])]
    verdicts = [Verdict("ISTJ", "ISTJ", 4, 4, 4), Verdict("ENFP", "ENFJ", 4, 4, 4), Verdict("ENFP", "ENFP", 4, 4, 4)]
    r = condition_results(chats, verdicts, None)
    assert list(r)[:7] == ["n_chats", "n_turns", "n_judged", "full_type", "axes", "per_type", "confusion"]
    assert list(r["per_type"]) == ["ISTJ", "ENFP"] and r["per_type"]["ENFP"]["full_type"] == 0.5
    assert r["confusion"] == {"ISTJ": {"ISTJ": 1}, "ENFP": {"ENFJ": 1, "ENFP": 1}}
    assert r["per_type"]["ISTJ"]["distinct_1"] == 0.5 and r["per_type"]["ENFP"]["distinct_1"] == round(4 / 6, 4)
    assert r["distinct_1"] == round((0.5 + 4 / 6) / 2, 4)  # the mean over types, not the pooled replies
    assert condition_results(chats, None, None)["confusion"] is None


def test_distinct_n_never_crosses_two_replies():
    assert distinct_n(["가 나", "다 라"], 2) == 1.0 and distinct_n(["가", "나"], 2) is None


def test_rules_leave_out_the_shape_of_the_held_out_chat_and_count_empty_replies():
    short = chat("ISTJ", ["응"])  # one exchange, few characters: shape rules, not the model's fault
    assert rule_failures(short) == []
    labelled = chat("ISTJ", ["저는 ISTJ라서 계획부터 세워요."])
    assert rule_failures(labelled) == ["type_label", "low_hangul"]  # 4 Latin letters of 24
    empty = eval_record(Dialogue.build("ISTJ", "주말", [{"role": "user", "content": USER[0]}, {"role": "assistant", "content": "x"}]),
                        [Turn("", True, 1)], "base", "k", "m")
    assert rule_failures(empty) == ["empty_reply"]
    held = Dialogue.build("ISTJ", "주말", [m for u in USER for m in ({"role": "user", "content": u},
                                                                    {"role": "assistant", "content": "x"})])
    two = eval_record(held, [Turn("", True, 1), Turn("", True, 1), Turn("그래요, 집에서 쉬어요.", True, 9)], "base", "k", "m")
    # two empty replies: counted once as empty_reply, never as a repeated turn
    assert [m["content"] for m in two.messages if m["role"] == "assistant"][:2] == ["(빈 답)", "(빈 답)"]
    assert rule_failures(two) == ["empty_reply"]


def test_the_report_is_a_view_of_the_results():
    chats = {c: [chat("ISTJ", ["집에서 책 읽어요."], condition=c), chat("ENFP", ["와 캠핑 가자!"], condition=c)]
             for c in ("fine_tuned", "base")}
    verdicts = [Verdict("ISTJ", "ISTJ", 4, 5, 3), Verdict("ENFP", "INFJ", 2, 3, 5)]
    res = {"name": "n", "judge_model": "j", "limit_per_type": 1,
           "conditions": {c: condition_results(cs, verdicts, None) for c, cs in chats.items()},
           "held_out": condition_results(chats["base"], None, None), "setup": {"models": {}}, "notes": ["a note"]}
    text = render_report(res, chats, {"fine_tuned": "plots/confusion_fine_tuned.png"}, samples=3)
    assert "| **full type accuracy** (blind judge) | 50.0% | 50.0% | - |" in text
    assert "| ISTJ | 1 | 100.0% / 4.00 | 100.0% / 4.00 |" in text and "> note: a note" in text
    assert "at most 1 per type" in text and "![fine_tuned](plots/confusion_fine_tuned.png)" in text
    assert text.count("   - ISTJ: 집에서 책 읽어요.") == 2 and "No chat breaks a rule." in text
    assert pick_samples(chats, 3) == [chats["base"][0].meta["held_out"], chats["base"][1].meta["held_out"]]


def test_held_out_selection_keeps_type_order_limits_and_counts_what_it_skips():
    def row(mbti, answer):
        return {"mbti": mbti, "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "안녕"},
                                           {"role": "assistant", "content": answer}]}
    rows = [("r0", row("ENFP", "하나")), ("r1", row("ISTJ", "둘")), ("r2", row("ENFP", "셋")), ("r3", row("ENFP", "넷")),
            ("r4", row("INTP", "다섯")), ("r5", {"mbti": "ISTJ", "messages": [{"role": "user", "content": "끝?"}]})]
    chats, notes = select(rows, {"ISTJ", "ENFP"}, limit_per_type=2)
    assert [(d.mbti, d.turns("assistant")[0]) for d in chats] == [("ISTJ", "둘"), ("ENFP", "하나"), ("ENFP", "셋")]
    assert notes == ["skipped 1 unusable held-out chat(s) (first: r5: last_not_assistant: the last message must be "
                     "from 'assistant')", "skipped held-out chats of types the checkpoint has no persona for (INTP=1)"]


def test_every_config_problem_at_once(tmp_path):
    with pytest.raises(ConfigError) as e:
        EvalConfig(limit_per_type=0, conditions=("fine_tuned", "tuned", "reference"), temperature=-1, batch_size=0,
                   judge_price_in=1.0, reference_max_cost=-1, reference_price_out=-2.0,
                   prompts=str(tmp_path / "none.jsonl"))
    assert e.value.problems == [
        "--limit 0: give at least 1 chat per type, or leave --limit out to use every held-out chat",
        "--conditions: unknown condition 'tuned'; use fine_tuned, base, reference",
        "the reference condition needs --reference-model (any OpenAI-compatible model, e.g. gpt-4o-mini)",
        "--temperature -1: must be 0 (greedy) or more",
        "batch_size 0: must be at least 1",
        "give both --judge-price-in and --judge-price-out (USD per 1M tokens), or neither",
        "--reference-max-cost -1: must be 0 or more",
        "give both --reference-price-in and --reference-price-out (USD per 1M tokens), or neither",
        "--reference-price-out -2.0: must be 0 or more",
        f"--prompts {tmp_path / 'none.jsonl'}: no such file; give a .jsonl of records (mbti, messages)"]
    assert parse_conditions("base, reference") == ("base", "reference")
    assert EvalConfig(conditions=("reference", "base"), reference_model="m").run_conditions == ("base", "reference")
    d = EvalConfig(judge_base_url="http://user:secret@gpu:8000/v1?key=1").to_dict()
    assert d["judge_base_url"] == "http://gpu:8000/v1" and d["conditions"] == ["fine_tuned", "base"]


def test_the_rules_judge_only_what_the_model_wrote():
    from datagen.schema import Dialogue
    from train.evaluate.metrics import rule_failures

    chat = Dialogue.build("ISTJ", "이사", [
        {"role": "user", "content": "Please help me with this move, I have no idea where to start."},  # English
        {"role": "assistant", "content": "이사 날짜부터 정해 보세요. 그래야 업체 견적을 받을 수 있어요."},
        {"role": "user", "content": "제 번호는 010-1234-5678이에요. <|eot_id|>"},
        {"role": "assistant", "content": "번호는 여기 적지 마시고, 업체에만 알려 주세요. 날짜는 언제쯤이에요?"},
        {"role": "user", "content": "다음 달 말이요."},
        {"role": "assistant", "content": "그럼 이번 주에 세 군데만 견적 받아 보세요."}], source="generated")
    assert rule_failures(chat) == []
    bad = Dialogue.build("ISTJ", "이사", [dict(m) for m in chat.messages[:5]] + [
        {"role": "assistant", "content": "Sure, I can help you with that right away."}], source="generated")
    assert rule_failures(bad) == ["low_hangul", "english_sentence"]

"""The soft naturalness check: each pattern on its own example pair, what is scanned, and where it is reported."""

from __future__ import annotations

import json

import pytest

from datagen.naturalness import PATTERNS, summarise, unnatural
from datagen.schema import Dialogue
from tests.helpers import GOOD_MESSAGES, make_dialogue, with_assistant


def reply(text: str, user: str = "요즘 좀 힘들어요.") -> Dialogue:
    return Dialogue.build("ISFJ", "번아웃과 휴식", [{"role": "user", "content": user},
                                                {"role": "assistant", "content": text}])


@pytest.mark.parametrize("p", PATTERNS, ids=lambda p: p.name)
def test_each_pattern_flags_its_example_and_leaves_the_natural_one(p):
    assert p.name in [h.pattern for h in unnatural(reply(p.bad))]
    assert p.name not in [h.pattern for h in unnatural(reply(p.good))]
    assert any(n in p.bad for n in p.needles)


def test_only_the_assistant_is_scanned_and_quotes_are_left_out():
    assert unnatural(reply("네, 그렇게 해 보세요.", user="많이 허탈하셨을 것 같아요.")) == []
    assert unnatural(reply("팀장님이 '충분히 이해가 돼' 하셨다고요? 그럼 다행이네요.")) == []
    hits = unnatural(reply("많이 허탈하셨을 것 같아요. 그 마음 충분히 이해해요."))
    assert [(h.pattern, h.kind, h.message) for h in hits] == [
        ("reflective_honorific_guess", "counselling", 1), ("fully_understandable", "counselling", 1),
        ("understand_that_feeling", "counselling", 1)]
    assert str(hits[0]) == "reflective_honorific_guess (counselling) in message 1: '셨을 것 같아요'"


def test_summary_counts_per_pattern_kind_and_type():
    s = summarise([("ISTJ", ["reflective_gunyo", "geot_pronoun"]), ("ISTJ", []), ("ENFP", ["reflective_gunyo"])])
    assert s == {"records": 3, "records_with_hits": 2, "hits": 3, "hits_per_record": 1.0,
                 "by_kind": {"counselling": 2, "written": 1},
                 "by_pattern": {"reflective_gunyo": 2, "geot_pronoun": 1}, "by_type": {"ISTJ": 2, "ENFP": 1}}


def test_curate_counts_them_in_the_report_and_marks_the_records(tmp_path, seeds_dir):
    from datagen.curate import curate
    from tests.test_curate import outputs, write_run

    flagged = make_dialogue(messages=with_assistant("많이 답답하셨을 것 같아요. 평가 기준부터 물어보세요.", 3),
                            source="generated")
    clean = make_dialogue(source="generated")
    run_dir = write_run(tmp_path, {"ISTJ.jsonl": [clean]}, run="a")
    write_run(tmp_path, {"ISTJ.jsonl": [flagged]}, run="b")
    curate("a", tmp_path, seeds_dir=seeds_dir)
    report = curate("b", tmp_path, seeds_dir=seeds_dir)
    assert report.kept == 1 and report.naturalness["by_pattern"] == {"reflective_honorific_guess": 1}
    curated, _, rep = outputs(tmp_path / "runs" / "b")
    assert curated[0]["meta"]["unnatural"] == ["reflective_honorific_guess"]
    assert rep["naturalness"]["records_with_hits"] == 1 and rep["naturalness"]["hits_per_record"] == 1.0
    assert "unnatural" not in outputs(run_dir)[0][0]["meta"]


def test_the_seed_check_lists_hits_without_failing(tmp_path):
    from datagen.seed_check import SeedCheckConfig, check_seeds
    from tests.helpers import write_seeds

    msgs = with_assistant("그 일에 대해 조금 더 이야기해 볼까요? 언제부터 그랬어요?", 1, GOOD_MESSAGES)
    row = {"mbti": "ISTJ", "topic": "이직 고민", "messages": msgs, "source": "seed", "meta": {"register": "존댓말"}}
    root = write_seeds(tmp_path, {"ISTJ": [row]}, personas=("ISTJ",))
    cfg = SeedCheckConfig(min_dialogues=1, min_avg_exchanges=1, require_both_registers=False, min_distinct_exchanges=1,
                          short_exchanges=None, long_exchanges=None)
    report = check_seeds(root, cfg, types=("ISTJ",))
    assert report.problems == [] and report.stats["ISTJ"].unnatural == 1
    assert [str(s).split(": ", 1)[1] for s in report.soft] == [
        "unnatural: lets_talk_about (counselling) in message 1: '에 대해 조금 더 이야기해 볼까'"]
    assert json.dumps([p.name for p in PATTERNS])  # the names are plain strings for report.json

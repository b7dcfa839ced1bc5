import json

import pytest

from datagen.schema import (Dialogue, JsonlAppender, RecordError, dialogue_id, read_jsonl, read_jsonl_numbered,
                            write_jsonl)
from tests.helpers import GOOD_MESSAGES, make_dialogue


def test_build_computes_stable_id():
    a = make_dialogue()
    b = make_dialogue(meta={"model": "x"}, topic="다른 주제")
    assert a.id == b.id  # the id hashes the messages only
    assert a.id.startswith("ISTJ-") and len(a.id) == len("ISTJ-") + 12


def test_id_ignores_whitespace_and_unicode_form():
    spaced = [dict(m, content="  " + m["content"].replace(" ", "   ") + "\n") for m in GOOD_MESSAGES]
    assert dialogue_id("ISTJ", spaced) == dialogue_id("ISTJ", GOOD_MESSAGES)
    # NFD-decomposed Hangul hashes like the composed form
    import unicodedata
    nfd = [dict(m, content=unicodedata.normalize("NFD", m["content"])) for m in GOOD_MESSAGES]
    assert dialogue_id("ISTJ", nfd) == dialogue_id("ISTJ", GOOD_MESSAGES)
    assert dialogue_id("ENFP", GOOD_MESSAGES) != dialogue_id("ISTJ", GOOD_MESSAGES)


@pytest.mark.parametrize("messages, rule", [
    ([], "no_messages"),
    ([{"role": "assistant", "content": "안녕"}, {"role": "user", "content": "응"}], "first_not_user"),
    ([{"role": "user", "content": "안녕"}, {"role": "user", "content": "뭐 해"}], "not_alternating"),
    ([{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "응"}, {"role": "user", "content": "뭐 해"}],
     "last_not_assistant"),
    ([{"role": "user", "content": "안녕"}, {"role": "assistant", "content": "   \n"}], "empty_message"),
    ([{"role": "user", "content": "안녕"}, {"role": "bot", "content": "응"}], "bad_role"),
    ([{"role": "user"}, {"role": "assistant", "content": "응"}], "bad_message"),
])
def test_message_rules(messages, rule):
    with pytest.raises(RecordError) as e:
        Dialogue.build("ISTJ", "주제", messages)
    assert e.value.rule == rule


def test_unknown_type_and_bad_fields():
    with pytest.raises(RecordError) as e:
        make_dialogue(mbti="ABCD")
    assert e.value.rule == "unknown_mbti" and "ISTJ" in e.value.detail
    with pytest.raises(RecordError) as e:
        make_dialogue(source="scraped")
    assert e.value.rule == "bad_source"
    with pytest.raises(RecordError) as e:
        make_dialogue(topic=" ")
    assert e.value.rule == "empty_topic"


def test_from_dict_checks_id_and_fields():
    d = make_dialogue()
    assert Dialogue.from_dict(json.loads(d.to_json())) == d
    obj = d.to_dict() | {"id": "ISTJ-000000000000"}
    with pytest.raises(RecordError) as e:
        Dialogue.from_dict(obj)
    assert e.value.rule == "id_mismatch"
    obj = {k: v for k, v in d.to_dict().items() if k != "id"}
    with pytest.raises(RecordError) as e:
        Dialogue.from_dict(obj)
    assert e.value.rule == "missing_field"
    assert Dialogue.from_dict(obj, fill_id=True).id == d.id
    with pytest.raises(RecordError) as e:
        Dialogue.from_dict(d.to_dict() | {"extra": 1})
    assert e.value.rule == "unknown_field"
    for bad, rule in (({"meta": "x"}, "bad_meta"), ({"messages": "안녕"}, "no_messages"), ({"mbti": 3}, "unknown_mbti"),
                      ({"topic": None}, "empty_topic"), ({"id": None}, "bad_id")):
        with pytest.raises(RecordError) as e:
            Dialogue.from_dict(d.to_dict() | bad)
        assert e.value.rule == rule


def test_read_jsonl_reports_every_bad_line_and_keeps_good_ones(tmp_path):
    good = make_dialogue()
    path = tmp_path / "x.jsonl"
    bad_role = good.to_dict()
    bad_role["messages"] = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    lines = [good.to_json(), "{not json", json.dumps(bad_role, ensure_ascii=False), "", "[1, 2]",
             json.dumps(good.to_dict() | {"mbti": "XXXX"}, ensure_ascii=False)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, errors = read_jsonl(path)
    assert records == [good]
    assert [(e.line, e.rule) for e in errors] == [(2, "bad_json"), (3, "not_alternating"), (5, "not_object"),
                                                 (6, "unknown_mbti")]
    assert str(errors[0]).startswith(f"{path}:2: bad_json: ")


def test_torn_last_line_detected_and_repaired(tmp_path):
    d = make_dialogue()
    path = tmp_path / "gen.jsonl"
    path.write_text(d.to_json() + "\n" + d.to_json()[:40], encoding="utf-8")
    numbered, errors = read_jsonl_numbered(path)
    assert [n for n, _ in numbered] == [1]
    assert [(e.line, e.rule) for e in errors] == [(2, "torn_line")]
    other = make_dialogue(mbti="ENFP")
    with JsonlAppender(path) as out:  # opening cuts the torn tail first
        out.write(other)
    records, errors = read_jsonl(path)
    assert records == [d, other] and errors == []


def test_write_jsonl_round_trip(tmp_path):
    ds = [make_dialogue(), make_dialogue(mbti="INFP")]
    path = tmp_path / "sub" / "out.jsonl"
    assert write_jsonl(path, ds) == 2
    assert read_jsonl(path) == (ds, [])
    assert not (tmp_path / "sub" / "out.jsonl.tmp").exists()

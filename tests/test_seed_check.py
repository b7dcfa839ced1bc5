import json
import subprocess
from dataclasses import replace
import sys
from pathlib import Path


from datagen.checks import CheckConfig
from datagen.seed_check import SeedCheckConfig, check_seeds, format_seeds
from datagen.seeds import load_personas
from tests.helpers import GOOD_MESSAGES, write_seeds
from tests.test_checks import CASUAL

TYPES = ("ISTJ", "ENFP")
MORE_POLITE = [
    {"role": "user", "content": "다음 주에 팀 발표가 있는데 벌써부터 떨려요."},
    {"role": "assistant", "content": "발표가 몇 분짜리예요? 시간부터 알면 준비할 분량이 정해지거든요."},
    {"role": "user", "content": "십오 분이요. 질문도 받아야 하고요."},
    {"role": "assistant", "content": "그럼 예상 질문 다섯 개만 먼저 뽑아 보세요. 답을 미리 적어 두면 훨씬 덜 떨려요."},
    {"role": "user", "content": "오늘 저녁에 해 볼게요. 고마워요."},
    {"role": "assistant", "content": "네, 다 뽑으시면 같이 한 번 읽어 봐요."},
]
MORE_CASUAL = [
    {"role": "user", "content": "나 오늘 드디어 자격증 붙었어!"},
    {"role": "assistant", "content": "와 진짜? 몇 달 동안 새벽마다 공부하더니 결국 해냈네!"},
    {"role": "user", "content": "응 점수도 생각보다 잘 나왔어 ㅋㅋ"},
    {"role": "assistant", "content": "그럼 오늘은 무조건 맛있는 거 먹어야지. 뭐 먹고 싶어?"},
    {"role": "user", "content": "떡볶이 먹고 싶다."},
    {"role": "assistant", "content": "좋아, 퇴근하고 바로 가자. 내가 살게."},
]


def record(mbti, topic, messages, register, **extra):
    return {"mbti": mbti, "topic": topic, "messages": messages, "source": "seed", "meta": {"register": register}} | extra


def good_set(mbti):
    return [record(mbti, "이직 고민", GOOD_MESSAGES, "존댓말"), record(mbti, "이사", CASUAL, "반말"),
            record(mbti, "발표 준비", MORE_POLITE, "존댓말"), record(mbti, "자격증 공부", MORE_CASUAL, "반말")]


SMALL = SeedCheckConfig(min_dialogues=4, min_avg_exchanges=3.0, rules=CheckConfig(near_dup_threshold=0.5),
                        min_distinct_exchanges=1, short_exchanges=None, long_exchanges=None)


def rules_of(report):
    return sorted((Path(p.path).name, p.line, p.rule) for p in report.problems)


def test_clean_set_passes(tmp_path):
    # the same dialogue under two types is not a duplicate problem only if texts differ; use one type
    root = write_seeds(tmp_path, {"ISTJ": good_set("ISTJ")}, personas=("ISTJ",))
    report = check_seeds(root, SMALL, types=("ISTJ",))
    assert report.problems == []
    st = report.stats["ISTJ"]
    assert (st.dialogues, st.exchanges, st.polite, st.casual, st.topics) == (4, 12, 2, 2, 4)


def test_collection_rules(tmp_path):
    rows = good_set("ISTJ")
    rows[3] = record("ISTJ", "이사", MORE_CASUAL, "반말")           # topic already used by line 2
    rows.append(record("ISTJ", "없는 주제", GOOD_MESSAGES[:4] + [GOOD_MESSAGES[4], {
        "role": "assistant", "content": "물어보는 건 불만이 아니라 확인이에요. 기준을 알고 나서 떠나도 늦지 않아요!"}],
        "존댓말"))                                                 # near-copy of line 1, unknown topic
    enfp = [record("ENFP", "이직 고민", GOOD_MESSAGES, "존댓말")]   # exact copy of ISTJ line 1; too few; no 반말
    root = write_seeds(tmp_path, {"ISTJ": rows, "ENFP": enfp})
    report = check_seeds(root, SMALL, types=TYPES)
    assert rules_of(report) == [
        ("ENFP.jsonl", 0, "single_register"),
        ("ENFP.jsonl", 0, "too_few_dialogues"),
        ("ENFP.jsonl", 1, "exact_duplicate"),
        ("ISTJ.jsonl", 4, "repeated_topic"),
        ("ISTJ.jsonl", 5, "near_duplicate"),
        ("ISTJ.jsonl", 5, "unknown_topic"),
    ]


def test_low_average_exchanges(tmp_path):
    root = write_seeds(tmp_path, {"ISTJ": good_set("ISTJ")}, personas=("ISTJ",))
    report = check_seeds(root, SeedCheckConfig(min_dialogues=4, min_avg_exchanges=4.0), types=("ISTJ",))
    assert [(p.rule, p.detail) for p in report.problems] == [
        ("low_avg_exchanges", "ISTJ averages 3.0 exchanges; at least 4.0"),
        ("narrow_lengths", "ISTJ has 1 different exchange counts (3); vary them over at least 4"),
        ("no_long_dialogue", "ISTJ has no dialogue of 7 exchanges or more (longest 3); add a long one")]
    assert report.stats["ISTJ"].spread() == "3-3 (1)"


def test_length_spread_and_register_expressions(tmp_path):
    """Each type needs 4+ different exchange counts, one of <= 3 and one of >= 7; expressions per register."""
    long_chat = GOOD_MESSAGES + MORE_POLITE[:6] + [  # 3 + 3 + 1 = 7 exchanges
        {"role": "user", "content": "덕분에 정리가 좀 되네요."}, {"role": "assistant", "content": "다행이에요. 내일 또 봬요."}]
    rows = good_set("ISTJ")
    rows[0] = record("ISTJ", "이직 고민", long_chat, "존댓말")
    rows[2] = record("ISTJ", "발표 준비", MORE_POLITE[:4] + [
        {"role": "user", "content": "질문 다섯 개 뽑는 것부터 할게요."},
        {"role": "assistant", "content": "네, 답까지 적어 두시면 마음이 한결 편하실 거예요."},
        {"role": "user", "content": "마지막으로 하나만요, 떨리면 어떡하죠?"},
        {"role": "assistant", "content": "첫 문장만 외워 두세요. 그다음은 생각보다 잘 나와요."}], "존댓말")
    root = write_seeds(tmp_path, {"ISTJ": rows}, personas=("ISTJ",))
    cfg = SeedCheckConfig(min_dialogues=4, min_avg_exchanges=3.0)
    report = check_seeds(root, cfg, types=("ISTJ",))
    assert [p.rule for p in report.problems] == ["narrow_lengths"]  # 7, 3, 4, 3: three kinds
    assert report.stats["ISTJ"].spread() == "3-7 (3)"
    report = check_seeds(root, replace(cfg, min_distinct_exchanges=3), types=("ISTJ",))
    assert report.problems == []
    persona = root / "personas" / "ISTJ.yaml"
    persona.write_text(persona.read_text(encoding="utf-8").replace("존댓말:", "높임말:"), encoding="utf-8")
    report = check_seeds(root, replace(cfg, min_distinct_exchanges=3), types=("ISTJ",))
    assert [p.rule for p in report.problems] == ["persona_field_type"]


def test_record_rules_are_reported_with_file_and_line(tmp_path):
    rows = good_set("ISTJ")
    bad = [dict(m) for m in MORE_POLITE]
    bad[3]["content"] = "저도 ISTJ라서 그 마음 알아요. 예상 질문 다섯 개만 먼저 뽑아 보세요."
    rows[2] = record("ISTJ", "발표 준비", bad, "존댓말")
    root = write_seeds(tmp_path, {"ISTJ": rows}, personas=("ISTJ",))
    report = check_seeds(root, SMALL, types=("ISTJ",))
    assert [str(p).split(str(tmp_path))[1] for p in report.problems] == [
        "/dialogues/ISTJ.jsonl:3: type_label: message 3 names a type label 'ISTJ'"]


def test_bad_input_is_named_not_raised(tmp_path):
    root = write_seeds(tmp_path, {"ISTJ": good_set("ISTJ")}, personas=("ISTJ",))
    path = root / "dialogues" / "ISTJ.jsonl"
    lines = path.read_text("utf-8").splitlines()
    swapped = json.loads(lines[1])
    swapped["messages"][0], swapped["messages"][1] = swapped["messages"][1], swapped["messages"][0]
    unknown = json.loads(lines[2]) | {"mbti": "ABCD"}
    empty = json.loads(lines[3])
    empty["messages"][1]["content"] = " "
    path.write_text("\n".join([lines[0], json.dumps(swapped, ensure_ascii=False), "{broken",
                               json.dumps(unknown, ensure_ascii=False), json.dumps(empty, ensure_ascii=False)]) + "\n")
    (root / "personas" / "ENFP.yaml").write_text("mbti: ENFP\nnickname: 활동가\n", "utf-8")
    report = check_seeds(root, SMALL, types=TYPES)
    got = rules_of(report)
    assert ("ISTJ.jsonl", 2, "first_not_user") in got
    assert ("ISTJ.jsonl", 3, "bad_json") in got
    assert ("ISTJ.jsonl", 4, "unknown_mbti") in got
    assert ("ISTJ.jsonl", 5, "empty_message") in got
    assert ("ENFP.yaml", 1, "persona_field_missing") in got
    assert ("ENFP.jsonl", 0, "seeds_missing") in got


def test_persona_missing_a_type(tmp_path):
    root = write_seeds(tmp_path, {}, personas=("ISTJ",))
    personas, problems = load_personas(root, TYPES)
    assert list(personas) == ["ISTJ"]
    assert [(Path(p.path).name, p.rule) for p in problems] == [("ENFP.yaml", "persona_missing")]


def test_format_fills_ids_and_keeps_bad_files(tmp_path):
    root = write_seeds(tmp_path, {"ISTJ": good_set("ISTJ")}, personas=("ISTJ",))
    path = root / "dialogues" / "ISTJ.jsonl"
    assert all(json.loads(l)["id"].startswith("ISTJ-") for l in path.read_text("utf-8").splitlines())
    assert format_seeds(root) == (0, [])  # idempotent
    path.write_text(path.read_text("utf-8") + "{broken\n", "utf-8")
    before = path.read_text("utf-8")
    changed, problems = format_seeds(root)
    assert changed == 0 and [p.rule for p in problems] == ["bad_json"] and path.read_text("utf-8") == before


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "datagen.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_exit_codes_and_lines(tmp_path):
    root = write_seeds(tmp_path / "s", {"ISTJ": good_set("ISTJ")}, personas=TYPES)
    res = run_cli("seeds", "check", "--seeds", str(root))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr + res.stdout
    assert f"{root}/dialogues/ISTJ.jsonl:0: too_few_dialogues: ISTJ has 4 seed dialogues; write at least 10" in res.stdout
    res = run_cli("seeds", "check", "--seeds", str(tmp_path / "nope"))
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_committed_seeds_are_clean():
    """The shipped seeds pass every rule: 16 types, >= 10 dialogues each, average >= 4 exchanges."""
    report = check_seeds()
    assert [str(p) for p in report.problems] == []
    assert len(report.stats) == 16
    for st in report.stats.values():
        assert st.dialogues >= 10 and st.avg_exchanges >= 4 and st.polite and st.casual

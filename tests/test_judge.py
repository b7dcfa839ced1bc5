"""The persona judge: exact prompts, parsing, thresholds, and the whole path against the local
OpenAI-compatible test server (scores applied, malformed answers repaired or counted, cache, faults)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datagen.curate import CURATED_FILE, REJECTED_FILE, CurateConfig, curate
from datagen.errors import UserError
from datagen.judge import (CACHE_FILE, Judge, JudgeConfig, Verdict, agreement, guess_messages,
                           parse_answer, persona_messages, request_body)
from datagen.llm import LLMConfig
from datagen.schema import Dialogue
from datagen.seeds import load_personas
from tests.conftest import read_lines
from tests.llm_server import LLMServer, Reply, malformed, server_error
from tests.test_curate import filler, write_run

SHORT = Dialogue.build("ISTJ", "이사", [
    {"role": "user", "content": "다음 달에 이사 가요."}, {"role": "assistant", "content": "날짜는 정하셨어요?"},
    {"role": "user", "content": "말일이요."}, {"role": "assistant", "content": "그럼 견적부터 받아요.\n세 군데면 충분해요."}])

EXPECTED_GUESS = '''아래는 어떤 사람이 메신저에서 상대와 나눈 대화 가운데 그 사람이 한 말만 순서대로 모은 것입니다. 상대가 한 말은 빠져 있습니다.

[평가할 말]
1. 날짜는 정하셨어요?
2. 그럼 견적부터 받아요.
   세 군데면 충분해요.

이 말들만 보고 세 가지를 판단해 주세요.

1. 성격 유형 추측: MBTI 네 글자 유형 하나를 고릅니다. 네 축을 하나씩 따져 보세요.
   - E/I: 에너지를 밖으로 쏟으며 말을 넓게 펼치는지(E), 차분하게 안에서 정리한 말을 하는지(I)
   - S/N: 구체적인 사실과 겪은 일에 붙어 있는지(S), 가능성과 의미, 큰 그림으로 넘어가는지(N)
   - T/F: 원인과 해결책을 먼저 따지는지(T), 마음과 관계를 먼저 살피는지(F)
   - J/P: 계획과 결론, 마감을 챙기는지(J), 열어 두고 그때그때 흘러가는지(P)
2. 자연스러움 (1~5): 실제 한국 사람이 메신저에서 쓸 법한 말인가요?
   5 = 사람이 쓴 말과 구별되지 않음
   4 = 대체로 자연스럽고 어색한 곳이 한 군데쯤
   3 = 어색한 표현이 여러 군데 있음
   2 = 번역한 듯하거나 기계적인 말이 잦음
   1 = 부자연스러워서 읽기 힘듦
3. 대화 참여도 (1~5): 상대의 말을 구체적으로 받아 주고 대화를 이어 가나요?
   5 = 상대의 말을 짚어 가며 대화를 깊게 끌어감
   4 = 잘 받아 주고 대화를 이어 감
   3 = 무난하게 받아 주지만 뻔한 말이 많음
   2 = 건성으로 받아 주거나 혼자 이야기함
   1 = 엉뚱한 말을 하거나 대화를 끊음

평가 순서:
1) 말 전체를 읽고 눈에 띄는 말버릇과 반응 방식을 짚어 봅니다.
2) 네 축을 하나씩 판단해서 유형을 정합니다.
3) 자연스러움과 참여도를 기준표에 맞춰 매깁니다.

판단 근거는 "reason"에 한두 문장으로만 쓰고, 다른 글 없이 아래 모양의 JSON 객체 하나로만 답하세요.
{"reason": "판단 근거", "guess": "<네 글자 유형>", "naturalness": <1~5 정수>, "engagement": <1~5 정수>}'''
EXPECTED_SYSTEM = ("당신은 한국어 채팅 데이터를 평가하는 꼼꼼하고 공정한 평가자입니다. 주어진 기준표에 따라서만 판단하고, "
                   "요청받은 JSON 하나로만 답합니다.")


# --- prompts, parsing, verdicts (pure) -----------------------------------------------------------


def test_exact_rendered_prompts(seeds_dir):
    assert guess_messages(SHORT) == [{"role": "system", "content": EXPECTED_SYSTEM},
                                     {"role": "user", "content": EXPECTED_GUESS}]
    profile = load_personas(seeds_dir, ("ISTJ",))[0]["ISTJ"].profile_text()
    user = persona_messages(SHORT, profile)[1]["content"]
    assert user.startswith("아래는 한 인물의 소개와, 그 인물이 메신저에서")
    assert f"[인물 소개]\n{profile}\n\n[평가할 말]\n1. 날짜는 정하셨어요?\n2. 그럼 견적부터 받아요.\n   세 군데면 충분해요.\n\n" in user
    assert user.endswith('{"reason": "판단 근거", "persona": <1~5 정수>}')
    # the answer form shows no real type and no score: nothing to anchor a guess or a score on
    import re

    for m in guess_messages(SHORT) + persona_messages(SHORT, profile):
        form = m["content"].splitlines()[-1]
        assert not re.search(r"[EI][SN][TF][JP]|\b[1-5]\b(?!~)", form.replace("1~5", "")), form
    for m in guess_messages(SHORT) + persona_messages(SHORT, profile):  # only the assistant speaks, no type code
        assert "이사 가요" not in m["content"] and "말일이요" not in m["content"] and "ISTJ" not in m["content"]


def test_request_body_asks_for_the_form_as_structured_output():
    body = request_body(guess_messages(SHORT), "guess", LLMConfig(model="m", temperature=0.0, max_tokens=600))
    assert body["temperature"] == 0.0 and body["max_tokens"] == 600
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["reason", "guess", "naturalness", "engagement"]
    assert len(schema["properties"]["guess"]["enum"]) == 16 and schema["properties"]["engagement"]["enum"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("content, kind, expected", [
    ('{"reason": "차분함", "guess": "ISTJ", "naturalness": 4, "engagement": 5}', "guess",
     {"reason": "차분함", "guess": "ISTJ", "naturalness": 4, "engagement": 5}),
    ('평가합니다.\n{"reason": "", "guess": " enfp ", "naturalness": 4.0, "engagement": "3"}\n끝', "guess",
     {"reason": "", "guess": "ENFP", "naturalness": 4, "engagement": 3}),
    ('```json\n{"reason": "말투가 맞음", "persona": 5}\n```', "persona", {"reason": "말투가 맞음", "persona": 5}),
])
def test_parse_answer_accepts_the_form(content, kind, expected):
    assert parse_answer(content, kind) == (expected, None)


@pytest.mark.parametrize("content, kind, problem", [
    ("음... 잘 모르겠어요", "guess", "not a JSON object: '음... 잘 모르겠어요'"),
    ('{"guess": "ENXP", "naturalness": 4, "engagement": 4}', "guess", "guess must be one of the 16 four-letter types, got 'ENXP'"),
    ('{"guess": "INTP", "naturalness": true, "engagement": 4}', "guess", "naturalness must be an integer from 1 to 5, got True"),
    ('{"guess": "INTP", "naturalness": 3}', "guess", "engagement must be an integer from 1 to 5, got None"),
    ('{"persona": 0}', "persona", "persona must be an integer from 1 to 5, got 0"),
    ('[4]', "persona", "not a JSON object: '[4]'"),
    (None, "persona", "not a JSON object: ''"),
])
def test_parse_answer_names_what_is_wrong(content, kind, problem):
    assert parse_answer(content, kind) == (None, problem)


def test_thresholds():
    cfg = JudgeConfig()
    assert Verdict("ISTJ", "ISTJ", 3, 3, 3).problems(cfg) == []
    assert Verdict("ISTJ", "ESTP", 5, 5, 5).problems(cfg) == []  # 2 axes differ: allowed by default
    assert Verdict("ISTJ", "ENFJ", 5, 5, 5).problems(cfg) == ["guessed ENFJ for ISTJ: 3 of 4 axes differ (at most 2)"]
    assert Verdict("ISTJ", "ISTJ", 5, 2, 1).problems(cfg) == ["naturalness 2 < 3", "engagement 1 < 3"]
    strict = JudgeConfig(min_persona=5, max_axis_disagreements=0)
    assert Verdict("ISTJ", "ISTP", 4, 5, 5).problems(strict) == [
        "persona 4 < 5", "guessed ISTP for ISTJ: 1 of 4 axes differ (at most 0)"]
    with pytest.raises(UserError, match="min_persona must be between 1 and 5"):
        JudgeConfig(min_persona=6)


def test_agreement_per_axis():
    a = agreement([Verdict("ISTJ", "ISTJ", 5, 4, 4), Verdict("ISTJ", "ESTP", 3, 4, 2), Verdict("ISTJ", "INTJ", 4, 3, 3)])
    assert a == {"judged": 3, "type": 0.333, "axes": {"E/I": 0.667, "S/N": 0.667, "T/F": 1.0, "J/P": 0.667},
                 "mean": {"persona": 4.0, "naturalness": 3.67, "engagement": 3.0}}


# --- against the local server ----------------------------------------------------------------------


class ScriptedJudge:
    """Answers judge requests per record (found by its first assistant turn in the prompt)."""

    def __init__(self, records: list[Dialogue]):
        self.first_turn = {d.turns("assistant")[0].strip().split("\n")[0]: d for d in records}
        self.guess: dict[str, Any] = {}     # record id → guess answer (a dict, or a str sent as is)
        self.persona: dict[str, Any] = {}
        self.bodies: list[dict] = []

    def record_of(self, body: dict) -> Dialogue:
        text = body["messages"][1]["content"]
        first = text.split("[평가할 말]\n1. ", 1)[1].split("\n")[0]
        return self.first_turn[first]

    def __call__(self, body: dict, n: int) -> Reply:
        self.bodies.append(body)
        d = self.record_of(body)
        if "[인물 소개]" in body["messages"][1]["content"]:
            answer = self.persona.get(d.id, {"reason": "소개와 맞음", "persona": 4})
        else:
            answer = self.guess.get(d.id, {"reason": "차분하게 정리함", "guess": d.mbti, "naturalness": 4, "engagement": 4})
        if callable(answer):
            answer = answer(body)
        return Reply(content=answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False))


def judge_llm(server: LLMServer, **kw: Any) -> LLMConfig:
    base = dict(model="test-model", base_url=server.base_url, concurrency=4, temperature=0.0, max_tokens=600,
                backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=5.0)
    base.update(kw)
    return LLMConfig(**base)


@pytest.fixture
def judged_run(tmp_path, seeds_dir):
    """A run of 6 ISTJ and 2 ENFP records (different hand-written chats)."""
    records = [d for d in filler(176) if d.mbti == "ISTJ"][:6] + [d for d in filler(176) if d.mbti == "ENFP"][:2]
    write_run(tmp_path, {"ISTJ.jsonl": records[:6], "ENFP.jsonl": records[6:]})
    return tmp_path, records


def run_judged(root: Path, seeds_dir: Path, server: LLMServer, **judge_kw: Any):
    cfg = JudgeConfig(llm=judge_llm(server, **judge_kw.pop("llm", {})), **judge_kw)
    judge = Judge(cfg, root / "runs" / "r1" / CACHE_FILE)
    return curate("r1", root, CurateConfig(), seeds_dir, judge=judge), judge


def test_scores_thresholds_and_repairs_end_to_end(judged_run, seeds_dir, clean_env):
    root, records = judged_run
    script = ScriptedJudge(records)
    low, opposite, near, repaired, hopeless = (d.id for d in records[1:6])
    script.persona[low] = {"reason": "소개와 많이 다름", "persona": 2}
    script.guess[opposite] = {"reason": "밝고 즉흥적", "guess": "ENFP", "naturalness": 5, "engagement": 5}
    script.guess[near] = {"reason": "정리를 잘함", "guess": "ESTJ", "naturalness": 4, "engagement": 4}
    first_try: dict[str, bool] = {}

    def once_malformed(body: dict) -> Any:
        if not first_try.setdefault("done", False):
            first_try["done"] = True
            return "유형은 ISTJ 같아요. 점수는 4점입니다."
        return {"reason": "차분함", "guess": "ISTJ", "naturalness": 4, "engagement": 4}

    script.guess[repaired] = once_malformed
    script.persona[hopeless] = '{"reason": "잘림", "persona": '
    with LLMServer(default=script) as server:
        report, judge = run_judged(root, seeds_dir, server)
        sent = server.completions

    curated = read_lines(root / "runs" / "r1" / CURATED_FILE)
    rejected = {r["record"]["id"]: r for r in read_lines(root / "runs" / "r1" / REJECTED_FILE)}
    assert {r["id"] for r in curated} == {records[0].id, near, repaired, records[6].id, records[7].id}
    assert rejected[low]["reason"] == "persona" and rejected[low]["detail"] == "persona 2 < 3"
    assert rejected[opposite]["detail"] == "guessed ENFP for ISTJ: 4 of 4 axes differ (at most 2)"
    assert rejected[hopeless]["reason"] == "judge_failed"
    assert rejected[hopeless]["detail"].startswith("no usable judge answer after 3 request(s): not a JSON object")
    assert rejected[low]["record"]["meta"]["judge"]["persona"] == 2  # rejects keep the verdict too
    meta = next(r for r in curated if r["id"] == near)["meta"]["judge"]
    assert meta == {"model": "test-model", "guess": "ESTJ", "persona": 4, "naturalness": 4, "engagement": 4,
                    "axes_agree": 3, "reason_guess": "정리를 잘함", "reason_persona": "소개와 맞음"}
    # 8 records × 2 requests, + 1 repair of the malformed guess, + 2 repairs of the hopeless persona answer
    assert sent == 19 and judge.stats == {"sent": 19, "cached": 0}
    assert report.judge["requests"] == 19 and report.judge["repairs"] == 3
    repair = next(b for b in script.bodies if len(b["messages"]) == 4 and "[인물 소개]" not in b["messages"][1]["content"])
    assert repair["messages"][2] == {"role": "assistant", "content": "유형은 ISTJ 같아요. 점수는 4점입니다."}
    assert repair["messages"][3]["content"].startswith("방금 답은 쓸 수 없었어요. (not a JSON object:")
    j = report.judge
    assert (j["judged"], j["failed"], j["rejected"]) == (7, 1, 2)
    assert j["by_type"]["ISTJ"]["axes"] == {"E/I": 0.6, "S/N": 0.8, "T/F": 0.8, "J/P": 0.8}
    assert j["by_type"]["ISTJ"]["type"] == 0.6 and j["by_type"]["ENFP"]["type"] == 1.0
    assert j["agreement"]["judged"] == 7 and j["agreement"]["axes"]["E/I"] == round(5 / 7, 3)
    assert report.summary() == "kept 5/8 (persona=2, judge_failed=1)"
    for body in script.bodies:  # the judge never saw a user turn
        text = json.dumps(body, ensure_ascii=False)
        assert not any(u in text for d in records for u in d.turns("user"))


def test_rerun_uses_the_cache_and_gives_the_same_files(judged_run, seeds_dir, clean_env):
    root, records = judged_run
    script = ScriptedJudge(records)
    script.persona[records[2].id] = {"reason": "다름", "persona": 1}
    with LLMServer(default=script) as server:
        run_judged(root, seeds_dir, server)
        files = {p.name: p.read_bytes() for p in (root / "runs" / "r1").iterdir() if p.is_file() and p.name != "config.jsonl"}
        sent = server.completions
        report, judge = run_judged(root, seeds_dir, server)
        assert server.completions == sent == 16
    assert {p.name: p.read_bytes() for p in (root / "runs" / "r1").iterdir()
            if p.is_file() and p.name != "config.jsonl"} == files
    history = read_lines(root / "runs" / "r1" / "config.jsonl")
    assert [h["command"] for h in history] == ["curate", "curate"] and history[0]["config"]["judge"]["llm"]["model"] == "test-model"
    assert judge.stats == {"sent": 0, "cached": 16} and report.judge["requests"] == 16
    assert (root / "runs" / "r1" / CACHE_FILE).exists()


def test_a_server_that_keeps_failing_stops_the_stage_and_writes_nothing(judged_run, seeds_dir, clean_env):
    root, _ = judged_run
    with LLMServer(default=lambda body, n: server_error(500)) as server:
        with pytest.raises(UserError, match=r"judge stopped: 3 judge requests in a row failed at http://127.0.0.1:\d+/v1 "
                                            r"after 1 attempt\(s\) each \(last: server_error: HTTP 500"):
            run_judged(root, seeds_dir, server, llm={"max_attempts": 1, "concurrency": 1}, max_failures_in_a_row=3)
    assert not (root / "runs" / "r1" / CURATED_FILE).exists()


def test_a_wrong_key_or_model_is_one_clear_error(judged_run, seeds_dir, clean_env):
    root, _ = judged_run
    with LLMServer(default=lambda body, n: Reply(status=404, body={"error": {"message": "model not found"}})) as server:
        with pytest.raises(UserError, match=r"judge: .* answered HTTP 404 .*check --model \(test-model\)"):
            run_judged(root, seeds_dir, server)


def test_no_key_and_no_server_fails_before_any_work(tmp_path, seeds_dir, clean_env):
    with pytest.raises(UserError, match="--judge needs a model: set OPENAI_API_KEY"):
        Judge(JudgeConfig(), tmp_path / CACHE_FILE)


def test_a_type_without_a_persona_is_named(tmp_path, seeds_dir, clean_env):
    write_run(tmp_path, {"INTP.jsonl": [d for d in filler(176) if d.mbti == "INTP"][:1]})
    with LLMServer() as server:
        with pytest.raises(UserError, match=r"the judge needs the persona of every judged type: .*INTP.yaml"):
            run_judged(tmp_path, seeds_dir, server)
        assert server.completions == 0


def test_malformed_default_reply_is_counted_not_crashed(judged_run, seeds_dir, clean_env):
    root, _ = judged_run
    with LLMServer(default=lambda body, n: malformed("{오류")) as server:
        report, _ = run_judged(root, seeds_dir, server, max_parse_attempts=2)
        assert server.completions == 32  # 8 records × 2 kinds × 2 attempts
    assert report.summary() == "kept 0/8 (judge_failed=8)"
    assert report.judge["judged"] == 0 and report.judge["failed"] == 8


def test_cli_with_judge_prints_the_agreement_table(judged_run, seeds_dir, clean_env):
    from tests.test_curate import run_cli

    root, records = judged_run
    with LLMServer(default=ScriptedJudge(records)) as server:
        done = run_cli("--run", "r1", "--out", str(root), "--seeds", str(seeds_dir), "--judge", "--model", "test-model",
                       "--base-url", server.base_url, cwd=root)
    assert done.returncode == 0, done.stderr
    assert "judge · test-model · blind guess vs claimed type" in done.stdout
    assert "│ all  │      8 │  100% │ 100% │ 100% │ 100% │ 100% │     4.0 │     4.0 │      4.0 │" in done.stdout
    assert "kept 8/8\n" in done.stdout


def test_a_judge_that_also_generated_the_run_is_warned_about(judged_run, seeds_dir, clean_env):
    from datagen.runs import append_config
    from tests.test_curate import run_cli

    root, records = judged_run
    append_config(root / "runs" / "r1", "generate", {"llm": {"model": "test-model"}})
    with LLMServer(default=ScriptedJudge(records)) as server:
        done = run_cli("--run", "r1", "--out", str(root), "--seeds", str(seeds_dir), "--judge", "--model", "test-model",
                       "--base-url", server.base_url, cwd=root)
        other = run_cli("--run", "r1", "--out", str(root), "--seeds", str(seeds_dir), "--judge", "--model", "judge-2",
                        "--base-url", server.base_url, cwd=root)
    assert done.returncode == 0 and other.returncode == 0
    assert " ".join(done.stderr.split()) == ("warning: the judge model test-model also generated this run, and models "
                                             "tend to rate their own writing higher; pass --model with another model "
                                             "for an independent read")
    assert "warning" not in other.stderr

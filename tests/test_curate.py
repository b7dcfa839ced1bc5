"""`datagen curate`: the labelled near-duplicate set the defaults were chosen on, every filter's
reason, seeds as the dedup reference, bad input, reruns, the parallel path and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from datagen.checks import CheckConfig
from datagen.curate import (CURATED_FILE, REJECTED_FILE, REPORT_FILE, CurateConfig, Item, add_dedup_keys, curate,
                            drop_exact_duplicates, drop_near_duplicates)
from datagen.dedup import dialogue_shingles
from datagen.errors import UserError
from datagen.schema import Dialogue
from datagen.seeds import seed_pool
from datagen.text import jaccard
from tests.conftest import read_lines, seed_record

REPO = Path(__file__).resolve().parent.parent

# --- the labelled set ---------------------------------------------------------------------------
# One hand-written 5-exchange chat and rewrites of it of the kinds a generator produces. The
# defaults (character 3-grams, Jaccard 0.4, 128 permutations in 32 bands of 4) were chosen so that
# every "dup" below is caught and every "keep" kept, with a margin: exact Jaccard of the dups is
# 0.51 (every sentence paraphrased) to 0.83, of the keeps at most 0.10.

BASE = [
    ("요즘 운동을 해야겠다고 마음만 먹고 계속 미루고 있어요. 퇴근하면 너무 피곤해서요.",
     "퇴근 후가 힘드시면 시간대부터 바꿔 보는 게 어떨까요? 출근 전 20분이나 점심시간 산책처럼 짧게 시작하는 방법도 있어요."),
    ("아침에는 일어나는 것부터가 전쟁이라서요. 점심시간 산책은 해 볼 만하겠네요.",
     "그럼 점심 먹고 회사 주변을 15분만 걸어 보세요. 처음 2주는 거리보다 빠지지 않는 게 더 중요해요."),
    ("2주 동안 매일이요? 비 오는 날은 어떡하죠?",
     "비 오는 날은 건물 계단을 몇 층 오르내리는 걸로 대신하시면 돼요. 달력에 한 날만 표시해 두면 빠진 날이 바로 보여요."),
    ("달력에 표시하는 건 좋네요. 근데 그렇게 해서 살이 빠질까요?",
     "처음 목표는 살보다 습관이에요. 한 달쯤 지나서 몸이 익숙해지면 그때 저녁 운동을 하나 더 붙이면 됩니다."),
    ("생각보다 부담이 없네요. 내일부터 바로 해 볼게요.",
     "좋아요. 내일 점심에 몇 분 걸으셨는지 한 줄만 적어 두세요. 기록이 쌓이면 그게 제일 큰 동기가 돼요."),
]
CASUAL_ASSISTANT = [
    "퇴근 후가 힘들면 시간대부터 바꿔 보는 게 어때? 출근 전 20분이나 점심시간 산책처럼 짧게 시작하는 방법도 있어.",
    "그럼 점심 먹고 회사 주변을 15분만 걸어 봐. 처음 2주는 거리보다 빠지지 않는 게 더 중요해.",
    "비 오는 날은 건물 계단을 몇 층 오르내리는 걸로 대신하면 돼. 달력에 한 날만 표시해 두면 빠진 날이 바로 보여.",
    "처음 목표는 살보다 습관이야. 한 달쯤 지나서 몸이 익숙해지면 그때 저녁 운동을 하나 더 붙이면 돼.",
    "좋아. 내일 점심에 몇 분 걸었는지 한 줄만 적어 둬. 기록이 쌓이면 그게 제일 큰 동기가 돼.",
]
CASUAL_USER = [
    "요즘 운동을 해야겠다고 마음만 먹고 계속 미루고 있어. 퇴근하면 너무 피곤해서.",
    "아침에는 일어나는 것부터가 전쟁이라서. 점심시간 산책은 해 볼 만하겠다.",
    "2주 동안 매일? 비 오는 날은 어떡하지?",
    "달력에 표시하는 건 좋다. 근데 그렇게 해서 살이 빠질까?",
    "생각보다 부담이 없네. 내일부터 바로 해 볼게.",
]
PARTICLES = [
    ("요즘 운동 해야겠다고 맘만 먹고 자꾸 미루고 있어요. 퇴근하면 넘 피곤하거든요.",
     "퇴근 후가 힘드시다면 시간대를 바꿔 보는 건 어떨까요? 출근 전 20분이라든가 점심시간 산책처럼 짧게 시작하는 방법도 있거든요."),
    ("아침엔 일어나는 거부터가 전쟁이라서요. 점심시간 산책은 해 볼 만하겠어요.",
     "그러면 점심 먹고 회사 근처를 15분만 걸어 보세요. 처음 2주는 거리보단 안 빠지는 게 더 중요하죠."),
    ("2주 동안 매일요? 비 오는 날엔 어떡하죠?",
     "비 오는 날엔 건물 계단을 몇 층 오르내리는 거로 대신하시면 되죠. 달력에 한 날만 표시해 놓으면 빠진 날이 금방 보여요."),
    ("달력에 표시하는 거 좋네요. 근데 그렇게 하면 살이 빠질까요?",
     "처음 목표는 살이 아니라 습관이에요. 한 달 정도 지나서 몸이 익숙해지면 그때 저녁 운동을 하나 더 붙이시면 돼요."),
    ("생각보다 부담 없네요. 내일부터 당장 해 볼게요.",
     "좋아요. 내일 점심에 몇 분 걸으셨는지 한 줄만 적어 두세요. 기록이 쌓이면 그게 젤 큰 동기가 되거든요."),
]
PUNCTUATION = [
    ("요즘 운동을 해야겠다고 마음만 먹고 계속 미루고 있어요ㅠㅠ 퇴근하면 너무 피곤해서요...",
     "퇴근 후가 힘드시면 시간대부터 바꿔 보는 게 어떨까요?? 출근 전 20분이나 점심시간 산책처럼 짧게 시작하는 방법도 있어요 😊"),
    ("아침에는 일어나는 것부터가 전쟁이라서요 ㅋㅋㅋㅋ 점심시간 산책은 해 볼 만하겠네요!",
     "그럼 점심 먹고 회사 주변을 15분만 걸어 보세요~ 처음 2주는 거리보다 빠지지 않는 게 더 중요해요!!"),
    ("2주 동안 매일이요?! 비 오는 날은 어떡하죠",
     "비 오는 날은 건물 계단을 몇 층 오르내리는 걸로 대신하시면 돼요 ㅎㅎ 달력에 한 날만 표시해 두면 빠진 날이 바로 보여요."),
    ("달력에 표시하는 건 좋네요 👍 근데 그렇게 해서 살이 빠질까요...?",
     "처음 목표는 살보다 습관이에요! 한 달쯤 지나서 몸이 익숙해지면 그때 저녁 운동을 하나 더 붙이면 됩니다."),
    ("생각보다 부담이 없네요ㅋㅋ 내일부터 바로 해 볼게요!!",
     "좋아요 😄 내일 점심에 몇 분 걸으셨는지 한 줄만 적어 두세요. 기록이 쌓이면 그게 제일 큰 동기가 돼요~"),
]
SIBLING = [  # same type, topic and first user line; a different conversation
    (BASE[0][0], "피곤한 게 당연하죠. 혹시 하루 중에 그나마 기운이 남는 때가 언제예요?"),
    ("주말 오전이요. 평일엔 정말 아무것도 못 하겠어요.",
     "그럼 평일은 아예 비워 두고 토요일 아침 한 번으로 시작해 보세요. 동네 수영장 자유 수영 시간표를 먼저 찾아보시면 좋아요."),
    ("수영은 어릴 때 배운 뒤로 한 번도 안 했는데 괜찮을까요?",
     "처음엔 걷기 레인에서 물에 익숙해지는 것만 해도 돼요. 강습 신청은 두세 번 가 보고 정하셔도 늦지 않아요."),
    ("수영복부터 사야겠네요. 가격이 꽤 하려나요?",
     "입문용은 삼만 원 안쪽으로도 충분해요. 수경이랑 수모까지 같이 사도 오만 원이면 됩니다."),
    ("생각보다 비싸지 않네요. 이번 주말에 한번 가 볼게요.",
     "다녀오시면 몇 바퀴 도셨는지 알려 주세요. 처음 기록을 남겨 두면 나중에 비교하는 재미가 있어요."),
]
OTHER = [  # same type and topic, nothing else in common
    ("헬스장을 등록했는데 기구 쓰는 법을 하나도 몰라서 자꾸 러닝머신만 타요.",
     "처음엔 다들 그래요. 트레이너 무료 오리엔테이션이 있는지 카운터에 먼저 물어보세요."),
    ("오리엔테이션은 한 번뿐이라던데 그걸로 다 배울 수 있을까요?",
     "다 배우긴 어렵죠. 그날은 하체 기구 세 개만 정해서 자세를 확실히 익히는 걸 목표로 하세요."),
    ("세 개만요? 너무 적은 거 아닌가요?",
     "적어 보여도 석 달은 충분히 쓸 수 있어요. 익숙해지면 그때 상체 기구를 하나씩 늘리면 됩니다."),
]


def msgs(pairs: list[tuple[str, str]]) -> list[dict[str, str]]:
    out = []
    for u, a in pairs:
        out += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return out


LABELLED = [  # (name, rewrite of BASE or another chat, is a near-duplicate)
    ("register switch, assistant only", [(u, a) for (u, _), a in zip(BASE, CASUAL_ASSISTANT)], True),
    ("register switch, both speakers", list(zip(CASUAL_USER, CASUAL_ASSISTANT)), True),
    ("one exchange dropped", BASE[:2] + BASE[3:], True),
    ("particle and ending changes in every sentence", PARTICLES, True),
    ("punctuation, ㅋㅋ and emoji", PUNCTUATION, True),
    ("one turn rewritten", BASE[:2] + [(BASE[2][0], "그런 날은 집에서 스쿼트 스무 개로 바꿔도 충분해요. 중요한 건 하루도 0으로 "
                                                  "비워 두지 않는 거예요.")] + BASE[3:], True),
    ("different chat sharing type, topic and first user line", SIBLING, False),
    ("different chat on the same topic", OTHER, False),
]
TOPIC = "운동 습관 만들기"


def dialogue(pairs: list[tuple[str, str]], mbti: str = "ISTJ", topic: str = TOPIC, source: str = "generated") -> Dialogue:
    return Dialogue.build(mbti, topic, msgs(pairs), source=source)


def filler(n: int) -> list[Dialogue]:
    """n different hand-written chats: the repository's seeds, as generated records of their type."""
    seeds = [d for ds in seed_pool().values() for d in ds][:n]
    return [Dialogue.build(d.mbti, d.topic, [dict(m) for m in d.messages]) for d in seeds]


def items_of(dialogues: list[Dialogue], cfg: CurateConfig = CurateConfig()) -> list[Item]:
    items = []
    for i, d in enumerate(dialogues):
        items.append(Item("generated", "t.jsonl", i + 1, d.mbti))
        items[-1].set_record(d)
    add_dedup_keys(items, cfg)
    return items


def dedup(dialogues: list[Dialogue], cfg: CurateConfig = CurateConfig()) -> list[Item]:
    return list(drop_near_duplicates(drop_exact_duplicates(items_of(dialogues, cfg)), cfg))


@pytest.mark.parametrize("name, pairs, is_dup", LABELLED, ids=[x[0] for x in LABELLED])
def test_labelled_pairs_at_the_defaults(name, pairs, is_dup):
    first, second = dedup([dialogue(BASE), dialogue(pairs)])
    assert first.kept
    assert (second.reason == "near_dup") is is_dup, second.detail
    if is_dup:
        assert second.dup_of is first and second.detail.startswith("character 3-gram Jaccard ≈")


def test_the_default_threshold_sits_in_the_gap_of_the_labelled_set():
    cfg = CheckConfig()
    base = dialogue_shingles(dialogue(BASE), cfg.near_dup_ngram)
    scores = {name: jaccard(base, dialogue_shingles(dialogue(p), cfg.near_dup_ngram)) for name, p, _ in LABELLED}
    dups = [scores[name] for name, _, d in LABELLED if d]
    keeps = [scores[name] for name, _, d in LABELLED if not d]
    assert min(dups) >= cfg.near_dup_threshold + 0.1  # the paraphrase of every sentence: 0.51
    assert max(keeps) <= cfg.near_dup_threshold - 0.25  # the sibling: 0.10
    # Whitespace-word 5-grams (the usual dedup shingle) would not do: the 존댓말/반말 pair and the
    # paraphrase share 0.14 and 0.08 of them, where their character 3-grams share 0.67 and 0.51.
    def word5(d: Dialogue) -> set[tuple[str, ...]]:
        w = d.text.split()
        return {tuple(w[i:i + 5]) for i in range(len(w) - 4)}

    for name, pairs, _ in LABELLED[1:4:2]:
        assert jaccard(word5(dialogue(BASE)), word5(dialogue(pairs))) < 0.15 and scores[name] > 0.5


def test_exact_duplicate_after_normalisation():
    spaced = [(u.replace(" ", "  "), a + " ㅋㅋㅋㅋㅋ") for u, a in BASE]
    laughing = [(u, a + " ㅋㅋ") for u, a in BASE]
    first, second = dedup([dialogue(laughing), dialogue(spaced, mbti="ENFP")])
    assert first.kept and second.reason == "exact_dup" and second.dup_of is first
    assert second.detail == f"same normalised text as record {first.id} (t.jsonl:1)"


def test_the_earliest_of_a_near_duplicate_cluster_is_kept():
    a, b, c = dialogue(BASE), dialogue(PUNCTUATION), dialogue(PARTICLES)
    out = dedup([a, b, c])
    assert [it.reason for it in out] == [None, "near_dup", "near_dup"]
    assert out[1].dup_of is out[0] and out[2].dup_of is out[0]


# --- the batch LSH against datasketch ------------------------------------------------------------


def test_sorted_index_decides_like_datasketch_minhashlsh():
    ds = filler(40)
    variants = [dialogue(p) for _, p, _ in LABELLED] + [dialogue(BASE)]
    stream = [d for pair in zip(ds[:9], variants) for d in pair] + ds[9:]
    ours = dedup(stream)
    ref = dedup(stream, CurateConfig(lsh_index="datasketch"))
    assert [(i.reason, i.detail) for i in ours] == [(i.reason, i.detail) for i in ref]
    # Every rewrite is compared with the first one kept (the register switch, at 1): the paraphrase
    # (at 7) is a rewrite of a rewrite, under the threshold from it, and stays. Greedy dedup is not transitive.
    assert [k for k, it in enumerate(ours) if it.reason] == [3, 5, 9, 11, 17]


# --- the stage on a run folder ----------------------------------------------------------------------

GOOD = dialogue(BASE)


def with_turn(index: int, text: str, messages: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """BASE's messages (or the given ones) with message `index` replaced."""
    m = [dict(x) for x in (messages or msgs(BASE))]
    m[index]["content"] = text
    return m


BAD = {  # reason → messages that break exactly that rule (the first rule tried that fails)
    "too_few_exchanges": msgs(BASE[:2]),
    "too_many_exchanges": msgs(BASE + PUNCTUATION),
    "too_short": with_turn(3, "응"),
    "too_long": with_turn(3, "정말 좋은 생각이에요. " * 60),
    "markup": with_turn(3, "### 응답:\n점심 먹고 15분만 걸어 보세요."),
    "persona_break": with_turn(3, "저는 AI라서 운동은 못 하지만 점심 산책을 추천해요."),
    "type_label": with_turn(3, "제가 ISTJ라서 그런지 매일 정해진 시간에 걷는 걸 추천해요."),
    "personal_data": with_turn(3, "자세한 건 010-1234-5678로 문자 주세요."),
    "low_hangul": with_turn(3, "Walking after lunch works. Try fifteen minutes daily, okay? 네."),
    "english_sentence": with_turn(3, "점심 먹고 걸어 보세요. Just do it every day 그게 핵심이에요."),
    "mixed_register": with_turn(5, "비 오는 날은 계단으로 대신하면 돼. 달력에 표시해 둬. 그럼 빠진 날이 보이잖아.",
                                with_turn(3, "그럼 점심 먹고 걸어 봐. 처음 2주는 빠지지 않는 게 중요해. 알겠지?")),
    "repeated_turn": with_turn(9, BASE[3][1]),
    "repeated_ngram": with_turn(3, "조금씩 해 보면 돼요 " * 10 + "꼭이요."),
}


def write_run(root: Path, files: dict[str, list[Dialogue | str]], run: str = "r1") -> Path:
    gen = root / "runs" / run / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        text = "".join((x.to_json() if isinstance(x, Dialogue) else x) + "\n" for x in lines)
        (gen / name).write_text(text, encoding="utf-8")
    return root / "runs" / run


def outputs(run_dir: Path) -> tuple[list[dict], list[dict], dict]:
    return (read_lines(run_dir / CURATED_FILE), read_lines(run_dir / REJECTED_FILE),
            json.loads((run_dir / REPORT_FILE).read_text(encoding="utf-8")))


def fingerprint(folder: Path) -> dict[str, str]:
    """Hashes of the run's files; config.jsonl is the invocation history (each run of curate adds a line)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "config.jsonl"}


CONTROL_STRINGS = ["<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>", "<|im_end|>", "<|im_start|>user",
                   "<|endoftext|>", "</s>", "<s>", "[INST]", "[/INST]", "<<SYS>>", "<｜end▁of▁sentence｜>",
                   "<end_of_turn>"]


def test_control_text_is_rejected_and_the_same_dialogues_without_it_are_kept(tmp_path, seeds_dir):
    clean = filler(len(CONTROL_STRINGS))
    planted = []
    for k, (d, text) in enumerate(zip(clean, CONTROL_STRINGS)):
        msgs = [dict(m) for m in d.messages]
        i = 1 + 2 * (k % d.exchanges)  # an assistant turn (a user one every third time)
        i = i - 1 if k % 3 == 2 else i
        msgs[i]["content"] = msgs[i]["content"] + " " + text if k % 2 else text + msgs[i]["content"]
        planted.append(Dialogue.build(d.mbti, d.topic, msgs))
    run_dir = write_run(tmp_path, {"ISTJ.jsonl": planted}, run="planted")
    report = curate("planted", tmp_path, seeds_dir=seeds_dir)
    assert report.kept == 0 and report.reasons == {"control_token": len(CONTROL_STRINGS)}
    _, rejected, _ = outputs(run_dir)
    first_hit = [t.replace("assistant<|end_header_id|>", "").replace("user", "") for t in CONTROL_STRINGS]
    assert [r["detail"].split(" has chat-template control text ")[1] for r in rejected] == [repr(t) for t in first_hit]
    write_run(tmp_path, {"ISTJ.jsonl": clean}, run="clean")
    assert curate("clean", tmp_path, seeds_dir=seeds_dir).summary() == f"kept {len(clean)}/{len(clean)}"


def test_every_filter_rejects_with_its_reason(tmp_path, seeds_dir):
    bad = {reason: Dialogue.build("ISTJ", TOPIC, m) for reason, m in BAD.items()}
    run_dir = write_run(tmp_path, {"ISTJ.jsonl": [GOOD, *bad.values()]})
    report = curate("r1", tmp_path, seeds_dir=seeds_dir)
    curated, rejected, rep = outputs(run_dir)
    assert [r["id"] for r in curated] == [GOOD.id]
    assert [(r["reason"], r["record"]["id"]) for r in rejected] == [(k, d.id) for k, d in bad.items()]
    assert all(r["file"] == "generated/ISTJ.jsonl" and r["detail"] for r in rejected)
    assert report.kept == 1 and report.total == 1 + len(BAD)
    assert rep["rejected"] == {reason: 1 for reason in sorted(BAD)}
    assert rep["by_type"]["ISTJ"] == {"total": 1 + len(BAD), "kept": 1, **{reason: 1 for reason in BAD}}
    assert rep["summary"] == report.summary() == f"kept 1/{1 + len(BAD)} (" + ", ".join(f"{r}=1" for r in sorted(BAD)) + ")"


def test_seeds_are_the_reference_and_are_not_written(tmp_path, seeds_dir):
    seed = seed_record("ISTJ", 0)
    copy = Dialogue.build("ENFP", seed.topic, [dict(m) for m in seed.messages])  # a seed's text under another type
    near = Dialogue.build("ISTJ", seed.topic, [dict(m, content=m["content"].replace("요.", "요!")) for m in seed.messages])
    run_dir = write_run(tmp_path, {"ISTJ.jsonl": [near, GOOD], "ENFP.jsonl": [copy]})
    report = curate("r1", tmp_path, seeds_dir=seeds_dir)
    curated, rejected, rep = outputs(run_dir)
    assert [r["id"] for r in curated] == [GOOD.id]
    assert {r["record"]["id"]: r["reason"] for r in rejected} == {near.id: "near_dup", copy.id: "exact_dup"}
    assert all(f"seed {seed.id} (seeds/dialogues/ISTJ.jsonl:1)" in r["detail"] for r in rejected)
    assert rep["dedup"]["of_a_seed"] == 2 and rep["dedup"]["across_types"] == 1
    assert report.seeds["read"] == 6


def test_duplicates_across_types_keep_the_first_file_in_type_order(tmp_path, seeds_dir):
    run_dir = write_run(tmp_path, {"ENFP.jsonl": [dialogue(BASE, mbti="ENFP")], "ISTJ.jsonl": [dialogue(PUNCTUATION)]})
    curate("r1", tmp_path, seeds_dir=seeds_dir)
    curated, rejected, rep = outputs(run_dir)
    assert [r["mbti"] for r in curated] == ["ISTJ"]  # ISTJ comes first in MBTI_TYPES
    assert rejected[0]["record"]["mbti"] == "ENFP" and rep["dedup"]["across_types"] == 1


def test_bad_lines_are_counted_and_the_run_is_left_untouched(tmp_path, seeds_dir):
    schema_bad = json.dumps({"id": "ISTJ-0", "mbti": "ISTJ", "topic": "x", "messages": [{"role": "assistant", "content": "안녕"}]})
    meta_bad = json.dumps({**GOOD.to_dict(), "meta": "not an object"}, ensure_ascii=False)
    run_dir = write_run(tmp_path, {"ISTJ.jsonl": [GOOD, "{not json", schema_bad, meta_bad]})
    torn = run_dir / "generated" / "ENFP.jsonl"
    torn.write_text(dialogue(SIBLING, mbti="ENFP").to_json() + "\n" + '{"mbti": "ENFP", "top', encoding="utf-8")
    (run_dir / "rejected.jsonl").write_text('{"from": "generate"}\n', encoding="utf-8")  # generate's own rejects
    before = fingerprint(run_dir)
    report = curate("r1", tmp_path, seeds_dir=seeds_dir)
    after = fingerprint(run_dir)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {CURATED_FILE, REJECTED_FILE, REPORT_FILE}
    assert report.kept == 2 and report.reasons == {"bad_json": 1, "schema": 2, "torn_line": 1}
    _, rejected, rep = outputs(run_dir)
    assert [(r["reason"], r["line"], r["record"]) for r in rejected] == [
        ("bad_json", 2, None), ("schema", 3, None), ("schema", 4, None), ("torn_line", 2, None)]
    assert rejected[0]["raw"] == "{not json" and rejected[1]["detail"] == "first_not_user: the first message must be from 'user'"
    assert rep["bad_lines"][3] == "generated/ENFP.jsonl:2: torn_line: last line is cut short (an interrupted write); it is ignored"


def test_missing_and_empty_runs_are_clear_errors(tmp_path, seeds_dir):
    with pytest.raises(UserError, match=r"no run 'nope' in .*runs \(there are no runs yet"):
        curate("nope", tmp_path, seeds_dir=seeds_dir)
    write_run(tmp_path, {}, run="empty")
    with pytest.raises(UserError, match=r"no run 'nope' in .*runs \(runs there: empty\)"):
        curate("nope", tmp_path, seeds_dir=seeds_dir)
    with pytest.raises(UserError, match="run 'empty' has no generated records"):
        curate("empty", tmp_path, seeds_dir=seeds_dir)
    write_run(tmp_path, {"ISTJ.jsonl": []}, run="blank")
    with pytest.raises(UserError, match="run 'blank' has no generated records"):
        curate("blank", tmp_path, seeds_dir=seeds_dir)
    write_run(tmp_path, {"ISTJ.jsonl": [GOOD]})
    with pytest.raises(UserError, match="has no dialogues/"):
        curate("r1", tmp_path, seeds_dir=tmp_path / "no-seeds")


def test_config_problems_are_named():
    with pytest.raises(UserError, match="near_dup_bands must be between 1 and near_dup_num_perm"):
        CurateConfig(rules=CheckConfig(near_dup_bands=0))
    with pytest.raises(UserError, match="near_dup_threshold must be in"):
        CurateConfig(rules=CheckConfig(near_dup_threshold=0))


def test_rerun_and_parallel_workers_give_identical_files(tmp_path, seeds_dir):
    ds = filler(24)
    files = {"ISTJ.jsonl": ds[:12] + [dialogue(BASE), dialogue(PARTICLES)], "ENFP.jsonl": ds[12:] + ["{not json"]}
    run_dir = write_run(tmp_path, files)
    expected = curate("r1", tmp_path, CurateConfig(workers=1), seeds_dir).summary()
    assert expected == "kept 25/27 (bad_json=1, near_dup=1)"
    first = fingerprint(run_dir)
    curate("r1", tmp_path, CurateConfig(workers=1), seeds_dir)
    assert fingerprint(run_dir) == first
    parallel = CurateConfig(workers=2, parallel_min_lines=0, chunk_lines=5)
    report = curate("r1", tmp_path, parallel, seeds_dir)
    outs = {k: v for k, v in fingerprint(run_dir).items() if k != REPORT_FILE}
    assert outs == {k: v for k, v in first.items() if k != REPORT_FILE}  # the report differs only in the config
    assert report.summary() == expected


# --- the command --------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "datagen.cli", "curate", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def test_cli_prints_the_table_and_summary(tmp_path, seeds_dir):
    write_run(tmp_path / "outputs", {"ISTJ.jsonl": [GOOD, dialogue(PUNCTUATION)]})
    done = run_cli("--run", "r1", "--seeds", str(seeds_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "┃ type ┃ total ┃ kept ┃ near_dup ┃" in done.stdout
    assert "kept 1/2 (near_dup=1)\n" in done.stdout
    missing = run_cli("--run", "r2", "--seeds", str(seeds_dir), cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "error: no run 'r2' in outputs/runs (runs there: r1)" in missing.stderr

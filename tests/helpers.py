"""One helper per idiom, shared by the test files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from datagen.checks import CheckConfig, first_violation
from datagen.schema import Dialogue
from datagen.seed_check import format_seeds

GOOD_MESSAGES = [
    {"role": "user", "content": "요즘 이직할까 말까 계속 고민돼요. 회사가 싫은 건 아닌데 뭔가 정체된 느낌이라서요."},
    {"role": "assistant", "content": "정체됐다고 느끼신 게 언제부터였어요? 시점을 먼저 짚어 보면 원인이 보일 때가 많거든요."},
    {"role": "user", "content": "작년 연말 평가 끝나고부터요. 열심히 했는데 평가가 그냥 그랬어요."},
    {"role": "assistant", "content": "그럼 회사 자체보다 평가 방식이 걸리는 걸 수도 있겠네요. 평가 기준을 직접 물어본 적은 있으세요?"},
    {"role": "user", "content": "아뇨, 괜히 불만 있는 사람처럼 보일까 봐 못 물어봤어요."},
    {"role": "assistant", "content": "물어보는 건 불만이 아니라 확인이에요. 기준을 알고 나서 떠나도 늦지 않아요."},
]


def make_dialogue(**overrides: Any) -> Dialogue:
    """A valid 3-exchange 존댓말 ISTJ dialogue; override any field (messages, mbti, topic, source, meta)."""
    fields = {"mbti": "ISTJ", "topic": "이직 고민", "messages": GOOD_MESSAGES, "source": "seed", "meta": {}}
    fields.update(overrides)
    return Dialogue.build(fields["mbti"], fields["topic"], fields["messages"], fields["source"], fields["meta"])


def with_assistant(text: str, index: int = 1, messages: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """GOOD_MESSAGES with message `index` replaced by `text`."""
    msgs = [dict(m) for m in (messages or GOOD_MESSAGES)]
    msgs[index]["content"] = text
    return msgs


def assert_rejected(d: Dialogue, rule: str, cfg: CheckConfig = CheckConfig()) -> None:
    v = first_violation(d, cfg)
    assert v is not None and v.rule == rule, f"expected {rule}, got {v}"


def assert_kept(d: Dialogue, cfg: CheckConfig = CheckConfig()) -> None:
    v = first_violation(d, cfg)
    assert v is None, f"expected no violation, got {v}"


# A small persona profile with every required key, for seeds folders built in tests.
PERSONA = {
    "nickname": "꼼꼼한 기록가", "summary": "차분하게 사실부터 확인하는 대화 상대.",
    "functions": {"dominant": "내향 감각 (Si)", "auxiliary": "외향 사고 (Te)"},
    "traits": ["약속을 지킨다.", "사실을 먼저 본다.", "차분하다.", "계획을 세운다.", "책임감이 강하다."],
    "speaking_style": {"tone": "차분하다.", "sentence_habits": "결론부터 말한다.", "expressions": {"존댓말": ["일단 정리해 보면요"], "반말": ["일단 정리해 보면"]},
                       "length": "두세 문장."},
    "reactions": {"worry": "구체적으로 묻는다.", "conflict": "사실을 정리한다.", "good_news": "담백하게 축하한다.",
                  "plan_change": "대안을 세운다."},
    "avoids": ["과장"], "sample_lines": ["일단 순서대로 정리해 볼까요?"],
}


SEED_TOPICS = ("이직 고민", "이사", "발표 준비", "자격증 공부")


def write_seeds(root: Path, dialogues: dict[str, list[dict]], personas=("ISTJ", "ENFP"), topics=SEED_TOPICS) -> Path:
    """A seeds folder: a PERSONA profile per type, topics.yaml, and the given dialogue rows (ids filled in)."""
    (root / "personas").mkdir(parents=True, exist_ok=True)
    (root / "dialogues").mkdir(parents=True, exist_ok=True)
    for t in personas:
        (root / "personas" / f"{t}.yaml").write_text(yaml.safe_dump({"mbti": t} | PERSONA, allow_unicode=True), "utf-8")
    (root / "topics.yaml").write_text(yaml.safe_dump({"topics": list(topics)}, allow_unicode=True), "utf-8")
    for t, rows in dialogues.items():
        (root / "dialogues" / f"{t}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    format_seeds(root)
    return root

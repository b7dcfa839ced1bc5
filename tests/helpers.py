"""One helper per idiom, shared by the test files."""

from __future__ import annotations

from typing import Any

from datagen.checks import CheckConfig, first_violation
from datagen.schema import Dialogue

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

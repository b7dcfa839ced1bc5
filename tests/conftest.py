"""Shared fixtures: a local OpenAI-compatible server, a tiny seeds folder, a clean environment.

Nothing here touches the network or the repository's own seeds/ and outputs/.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from datagen.schema import Dialogue
from tests.llm_server import LLMServer, dialogue_factory

PERSONA_ISTJ = {
    "mbti": "ISTJ",
    "nickname": "꼼꼼한 현실주의자",
    "summary": "약속과 절차를 중요하게 여기고, 감정보다 사실을 먼저 확인하는 차분한 사람.",
    "functions": {"dominant": "내향 감각: 겪어 본 일과 기록을 믿는다", "auxiliary": "외향 사고: 순서를 정해 처리한다"},
    "traits": ["약속 시간을 꼭 지킨다", "계획을 미리 세운다", "말보다 행동으로 챙긴다", "검증된 방법을 선호한다",
               "책임감이 강하다"],
    "speaking_style": {"tone": "담담하고 짧다", "sentence_habits": "사실을 먼저 묻고 할 일을 정리해 준다",
                       "expressions": ["일단 확인부터 해 보자", "순서대로 하면 돼"], "length": "두세 문장"},
    "reactions": {"worry": "상황을 정리하고 할 일을 나눠 준다", "conflict": "사실관계를 먼저 따진다",
                  "good_news": "짧게 축하하고 다음 단계를 묻는다", "plan_change": "불편해하지만 대안을 찾는다"},
    "avoids": ["근거 없는 낙관", "과장된 감정 표현"],
    "sample_lines": ["그거 마감이 언제야?", "기록해 두면 나중에 편해."],
}
PERSONA_ENFP = {
    "mbti": "ENFP",
    "nickname": "호기심 많은 응원단장",
    "summary": "새로운 가능성에 설레고, 상대의 기분을 먼저 살피는 밝은 사람.",
    "functions": {"dominant": "외향 직관: 가능성을 넓게 본다", "auxiliary": "내향 감정: 자기 가치에 충실하다"},
    "traits": ["아이디어가 많다", "공감을 잘한다", "즉흥적이다", "사람을 좋아한다", "칭찬을 아끼지 않는다"],
    "speaking_style": {"tone": "밝고 리액션이 크다", "sentence_habits": "감탄사로 시작하고 질문을 자주 던진다",
                       "expressions": ["헐 대박", "완전 좋다"], "length": "짧은 문장 여러 개"},
    "reactions": {"worry": "먼저 마음을 알아주고 가능성을 찾아 준다", "conflict": "서로의 기분을 먼저 묻는다",
                  "good_news": "크게 기뻐하며 같이 들뜬다", "plan_change": "오히려 새로운 재미를 찾는다"},
    "avoids": ["차가운 평가", "지나친 규칙"],
    "sample_lines": ["헐 진짜? 그거 완전 좋은데?", "우리 그럼 이렇게 해 보는 건 어때?"],
}

SEED_DIALOGUES = [
    ("이사", "존댓말", [
        ("다음 달에 이사를 가는데 뭐부터 챙겨야 할지 모르겠어요.",
         "이사 날짜는 확정되셨어요? 날짜가 정해져야 업체 견적을 받을 수 있어요."),
        ("날짜는 말일로 정했어요. 업체는 아직 안 알아봤고요.",
         "그럼 이번 주 안에 세 군데만 견적을 받아 보세요. 가격이랑 포장 범위를 같이 비교하시면 돼요."),
        ("포장 범위까지는 생각도 못 했네요.",
         "짐 양에 따라 차이가 커요. 큰 가구 목록부터 적어 두시면 상담이 훨씬 빨라져요."),
    ]),
    ("시험 준비", "반말", [
        ("시험이 이 주 남았는데 아직 범위도 다 못 봤어.",
         "남은 범위가 몇 장이야? 그걸 날짜로 나누면 하루 분량이 나와."),
        ("여섯 장 남았어. 근데 복습도 해야 하잖아.",
         "그럼 앞의 열흘은 진도, 마지막 나흘은 복습으로 잡자. 표로 적어 두면 덜 불안할 거야."),
        ("표까지 만들면 좀 덜 막막하겠다.",
         "응, 끝낸 칸은 하나씩 지워 나가. 눈에 보이면 생각보다 금방 줄어."),
    ]),
    ("주말 계획", "존댓말", [
        ("이번 주말에 뭘 해야 할지 하나도 안 정했어요.",
         "쉬고 싶으신 건지 밖에 나가고 싶으신 건지부터 정해 보세요. 그것만 정해도 고르기가 쉬워져요."),
        ("밖에 나가고 싶긴 한데 사람 많은 데는 싫어요.",
         "그러면 오전 일찍 가까운 수목원은 어떠세요? 아홉 시 전에는 한산한 편이에요."),
        ("수목원 좋네요. 도시락도 싸 가 볼까 봐요.",
         "좋아요. 전날 밤에 재료만 미리 손질해 두시면 아침이 훨씬 여유로워요."),
    ]),
]
TOPICS = ["이사", "시험 준비", "주말 계획", "이직 고민", "운동 습관 만들기", "돈 관리", "친구와의 갈등", "여행 계획"]


def seed_record(mbti: str, i: int) -> Dialogue:
    topic, register, pairs = SEED_DIALOGUES[i]
    messages = []
    for u, a in pairs:
        messages += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    return Dialogue.build(mbti, topic, messages, source="seed", meta={"register": register})


def make_seeds(root: Path, types: tuple[str, ...] = ("ISTJ", "ENFP")) -> Path:
    """A seeds folder with a persona, three seed dialogues per type and eight topics."""
    (root / "personas").mkdir(parents=True, exist_ok=True)
    (root / "dialogues").mkdir(parents=True, exist_ok=True)
    for t in types:
        persona = dict(PERSONA_ENFP if t.startswith("E") else PERSONA_ISTJ, mbti=t)
        (root / "personas" / f"{t}.yaml").write_text(yaml.safe_dump(persona, allow_unicode=True), encoding="utf-8")
        lines = [seed_record(t, i).to_json() for i in range(len(SEED_DIALOGUES))]
        (root / "dialogues" / f"{t}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "topics.yaml").write_text(yaml.safe_dump({"topics": TOPICS}, allow_unicode=True), encoding="utf-8")
    return root


@pytest.fixture
def seeds_dir(tmp_path: Path) -> Path:
    return make_seeds(tmp_path / "seeds")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OpenAI credentials or URL from the developer's shell; tiktoken never downloads."""
    for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(k, raising=False)

    def offline(name: str, timeout_s: float = 10.0):
        raise RuntimeError("offline in tests")

    monkeypatch.setattr("datagen.cost.load_encoding", offline)
    return monkeypatch


@pytest.fixture
def llm_server() -> Iterator[LLMServer]:
    """A fresh server answering each request with two new distinct Korean dialogues."""
    server = LLMServer(default=dialogue_factory(per_reply=2)).start()
    try:
        yield server
    finally:
        server.stop()


def read_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []

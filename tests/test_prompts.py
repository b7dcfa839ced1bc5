"""The generate prompt: exact rendered text, deterministic planning, and the response contract."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from datagen.generate import GenerateConfig, open_states, plan_request, request_body
from datagen.llm import LLMConfig
from datagen.prompts import RELATIONS, RESPONSE_SCHEMA, Item, format_example, load_template, register_of, render_generation
from tests.conftest import TOPICS, seed_record

EXPECTED_USER = '''아래 인물이 assistant가 되어 평범한 사람(user)과 메신저로 나누는 새 대화 2개를 써 주세요.

[인물 소개]
별칭: 꼼꼼한 현실주의자
말투: 담담하고 짧다

[이 인물의 대화 예시]
예시 1 · 말투: 반말
{"topic": "시험 준비", "messages": [
  {"role": "user", "content": "시험이 이 주 남았는데 아직 범위도 다 못 봤어."},
  {"role": "assistant", "content": "남은 범위가 몇 장이야? 그걸 날짜로 나누면 하루 분량이 나와."},
  {"role": "user", "content": "여섯 장 남았어. 근데 복습도 해야 하잖아."},
  {"role": "assistant", "content": "그럼 앞의 열흘은 진도, 마지막 나흘은 복습으로 잡자. 표로 적어 두면 덜 불안할 거야."},
  {"role": "user", "content": "표까지 만들면 좀 덜 막막하겠다."},
  {"role": "assistant", "content": "응, 끝낸 칸은 하나씩 지워 나가. 눈에 보이면 생각보다 금방 줄어."}
]}

[새로 쓸 대화]
1. 주제: 이직 고민 / 말투: 존댓말 / 상대: 회사 동료 / 주고받기 4번 (메시지 8개)
2. 주제: 돈 관리 / 말투: 반말 / 상대: 친구 / 주고받기 3번 (메시지 6개)

[지킬 것]
- 주고받기 한 번은 user의 메시지 하나와 그에 대한 assistant의 답 하나입니다. 대화마다 위에 적힌 횟수만큼 주고받으니 메시지 수는 그 두 배이고, user가 먼저 말하고 assistant의 말로 끝납니다.
- user는 위에 적힌 상대입니다. 처음 이야기하는 사람일 수도, 회사 동료나 친구일 수도 있습니다. 존댓말 대화는 아직 가깝지 않은 사이, 반말 대화는 친구 사이의 말투로 씁니다. 함께 겪은 일이 있는 것처럼 꾸며 내지 말고, 필요한 사정은 user가 대화 안에서 직접 말하게 합니다.
- assistant의 말투는 위에 정해 둔 대로 처음부터 끝까지 지키고, 한 대화 안에서 존댓말과 반말을 섞지 않습니다. 인물 소개의 '자주 쓰는 표현'은 말투별로 나뉘어 있으니 그 대화의 말투 쪽을 참고하되, 그대로 되풀이하지 말고 버릇이 묻어나는 정도로만 씁니다.
- 실제 메신저처럼 짧고 자연스러운 구어체로 씁니다. 상대 마음을 대신 정리해 주는 상담 말투("~하셨을 것 같아요", "그 마음 충분히 이해돼요"), 번역한 듯한 문장, 글에서나 쓰는 말은 피합니다. 모든 답을 질문으로 끝내지 않습니다.
- 성격은 이름표가 아니라 말투와 반응으로 드러냅니다. assistant는 자기 성격 유형(MBTI 네 글자 같은 것)을 말하지 않고, 자기가 AI나 챗봇이라는 말도 하지 않습니다.
- 예시 대화의 상황, 문장, 조언을 베끼거나 살짝 고쳐 쓰지 말고 새로운 상황과 표현으로 씁니다.
- 한국어로만 씁니다. 전화번호나 이메일 같은 개인정보, 목록 번호, 마크다운, "user:" 같은 역할 표시는 대화 내용에 넣지 않습니다.

[출력 형식]
아래 모양의 JSON 객체 하나만 출력하세요. topic에는 위에 정해 둔 주제를 그대로 적습니다.
{"dialogues": [{"topic": "주제", "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}]}'''

EXPECTED_SYSTEM = ("당신은 한국어 대화 데이터를 쓰는 작가입니다. 주어진 인물이 메신저에서 평범한 사람과 나누는 대화를, "
                   "그 인물의 성격과 말버릇이 자연스럽게 묻어나도록 씁니다. 답은 요청받은 JSON 하나로만 합니다.")


def test_exact_rendered_prompt():
    messages = render_generation("별칭: 꼼꼼한 현실주의자\n말투: 담담하고 짧다\n", [seed_record("ISTJ", 1)],
                                 [Item("이직 고민", "존댓말", "회사 동료", 4), Item("돈 관리", "반말", "친구", 3)])
    assert messages == [{"role": "system", "content": EXPECTED_SYSTEM}, {"role": "user", "content": EXPECTED_USER}]


def test_templates_say_json_for_json_object_mode():
    # OpenAI's json_object mode requires the word JSON in the messages.
    assert "JSON" in load_template("generate_system").template and "JSON" in load_template("generate_user").template


def test_format_example_round_trips_as_the_response_shape():
    import json

    d = seed_record("ENFP", 0)
    obj = json.loads(format_example(d))
    assert obj == {"topic": d.topic, "messages": [dict(m) for m in d.messages]}
    assert register_of(d) == "존댓말"


def _state(seeds_dir: Path, tmp_path: Path, **kw):
    cfg = GenerateConfig(types=("ISTJ",), count=10, out_dir=tmp_path / "out", seeds_dir=seeds_dir, **kw)
    [state] = open_states(cfg, cfg.count, cfg.types)
    return cfg, state.plan


def test_plan_is_fixed_by_the_seed(seeds_dir, tmp_path):
    cfg, state = _state(seeds_dir, tmp_path, seed=7, per_request=2, seed_examples=1, generated_examples=1)
    p = plan_request(state, 0, cfg)
    assert p.examples == ("ISTJ-0022db704693", "ISTJ-d40bce96778b")  # no generated yet: a seed fills in
    assert p.items == (Item("이직 고민", "존댓말", "회사 동료", 3), Item("여행 계획", "반말", "동갑인 회사 동료", 3))
    assert p.custom_id == f"ISTJ-000000-{p.request_hash[:16]}"
    shown = [d for d in state.seeds if d.id in p.examples]
    shown.sort(key=lambda d: p.examples.index(d.id))
    assert p.body == request_body(render_generation(state.persona.profile_text(), shown, p.items), cfg.llm)
    assert plan_request(state, 0, cfg) == p  # same state, same request (the cache relies on it)
    cfg8, state8 = _state(seeds_dir, tmp_path, seed=8, per_request=2, seed_examples=1, generated_examples=1)
    assert plan_request(state8, 0, cfg8).request_hash != p.request_hash


def test_generated_examples_join_once_accepted(seeds_dir, tmp_path):
    cfg, state = _state(seeds_dir, tmp_path, seed_examples=1, generated_examples=1)
    other = seed_record("ISTJ", 0)
    from datagen.schema import Dialogue

    gen = Dialogue.build("ISTJ", other.topic, [dict(m) for m in other.messages][:4] + [
        {"role": "user", "content": "그럼 견적은 언제까지 받으면 될까요?"},
        {"role": "assistant", "content": "이번 주 금요일까지만 받아 두시면 충분해요."}], source="generated")
    state.accepted.append(gen)
    p = plan_request(state, 3, cfg)
    assert len(p.examples) == 2 and p.examples[-1] == gen.id


def test_topics_cover_the_list_evenly_and_registers_balance(seeds_dir, tmp_path):
    cfg, state = _state(seeds_dir, tmp_path, per_request=2)
    plans = [plan_request(state, i, cfg) for i in range(8)]
    items = [it for p in plans for it in p.items]  # 16 slots over 8 topics
    assert Counter(it.topic for it in items) == Counter({t: 2 for t in TOPICS})
    assert Counter(it.register for it in items) == Counter({"존댓말": 8, "반말": 8})
    assert all(it.relation in RELATIONS[it.register] for it in items)


def test_each_dialogue_gets_its_own_length_and_no_example_shares_a_requested_topic(seeds_dir, tmp_path):
    cfg, state = _state(seeds_dir, tmp_path, per_request=3)
    lengths = [3, 5, 7, 8, 4]  # a seed spread like the committed seeds' (3-8)
    from datagen.generate.planning import exchange_choices

    seeds_like = [type("S", (), {"exchanges": n})() for n in lengths]
    assert exchange_choices(seeds_like, cfg) == sorted(lengths)
    assert exchange_choices([type("S", (), {"exchanges": 12})()], cfg) == [8]  # within the rules' bounds
    assert exchange_choices([], cfg) == [3, 4, 5, 6, 7, 8]
    by_id = {d.id: d for d in state.seeds}
    for i in range(40):
        p = plan_request(state, i, cfg)
        assert all(it.exchanges == 3 for it in p.items)  # the fixture's seeds all have 3 exchanges
        asked = {it.topic for it in p.items}
        assert not asked & {by_id[e].topic for e in p.examples}
        user = p.body["messages"][1]["content"]
        for j, it in enumerate(p.items, 1):
            assert f"{j}. 주제: {it.topic} / 말투: {it.register} / 상대: {it.relation} / 주고받기 3번 (메시지 6개)" in user


def test_request_body_asks_for_strict_json_schema():
    body = request_body([{"role": "user", "content": "x"}], LLMConfig(model="gpt-4o-mini", max_tokens=100))
    assert body["response_format"] == {"type": "json_schema", "json_schema": RESPONSE_SCHEMA}
    assert body["max_tokens"] == 100 and "max_completion_tokens" not in body
    assert request_body([], LLMConfig(model="gpt-5-mini"))["max_completion_tokens"] == 6000
    assert "response_format" not in request_body([], LLMConfig(structured_output="none"))
    schema = RESPONSE_SCHEMA["schema"]
    assert RESPONSE_SCHEMA["strict"] is True and schema["required"] == ["dialogues"]
    msg = schema["properties"]["dialogues"]["items"]["properties"]["messages"]["items"]
    assert msg["properties"]["role"]["enum"] == ["user", "assistant"]
    assert all(s["additionalProperties"] is False for s in (schema, schema["properties"]["dialogues"]["items"], msg))

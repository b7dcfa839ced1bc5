import pytest

from datagen.checks import CheckConfig, first_violation, violations
from datagen.dedup import MinHashIndex
from tests.helpers import GOOD_MESSAGES, assert_kept, assert_rejected, make_dialogue, with_assistant

CASUAL = [
    {"role": "user", "content": "야 나 이번 주말에 이사하는데 너무 막막하다."},
    {"role": "assistant", "content": "헐 벌써 이번 주야? 짐은 얼마나 쌌어?"},
    {"role": "user", "content": "반도 못 쌌어. 뭐부터 해야 할지 모르겠어."},
    {"role": "assistant", "content": "그럼 안 쓰는 것부터 박스에 넣자. 계절 옷이랑 책부터 하면 금방 줄어."},
    {"role": "user", "content": "오 그거 좋다. 오늘 저녁에 바로 해 볼게."},
    {"role": "assistant", "content": "응, 다 싸면 사진 보내 줘. 내가 빠진 거 있는지 봐 줄게."},
]


def test_good_dialogues_pass_every_rule():
    assert violations(make_dialogue()) == []
    assert violations(make_dialogue(messages=CASUAL, meta={"register": "반말"})) == []


def test_exchanges():
    assert_rejected(make_dialogue(messages=GOOD_MESSAGES[:4]), "too_few_exchanges")
    assert_kept(make_dialogue(messages=GOOD_MESSAGES[:4]), CheckConfig(min_exchanges=2))
    assert_rejected(make_dialogue(), "too_many_exchanges", CheckConfig(min_exchanges=1, max_exchanges=2))


def test_length():
    assert_rejected(make_dialogue(messages=with_assistant("응")), "too_short")
    assert_rejected(make_dialogue(messages=with_assistant("정말 " * 400)), "too_long")
    v = first_violation(make_dialogue(), CheckConfig(max_total_chars=100))
    assert (v.rule, v.detail) == ("too_long", f"{sum(len(m['content']) for m in GOOD_MESSAGES)} characters in all; at most 100")


def test_hangul_share():
    latin = "Honestly I think 그건 좋은 생각이에요. Let me know 나중에 알려 주세요."
    assert_rejected(make_dialogue(messages=with_assistant(latin)), "low_hangul", CheckConfig(min_hangul_share=0.9))
    # Hanja is not Hangul, though the common [ㄱ-힣] would count it as such
    hanja = [dict(m, content="人生 問題는 簡單하지 않아요. 時間이 必要해요.") if m["role"] == "assistant" else m
             for m in GOOD_MESSAGES]
    v = first_violation(make_dialogue(messages=hanja))
    assert v.rule == "low_hangul" and v.detail.endswith("of letters; at least 90%")


def test_english_sentence():
    text = "그건 이렇게 생각해요. You should just quit it now 그렇죠?"
    assert_rejected(make_dialogue(messages=with_assistant(text)), "english_sentence", CheckConfig(min_hangul_share=0.0))
    assert_kept(make_dialogue(messages=with_assistant("내일 PPT 한 장만 더 만들면 끝이에요.")))


@pytest.mark.parametrize("text, hit", [
    ("저는 AI라서 그런 감정은 잘 몰라요.", "'AI'"),
    ("인공지능인 제가 보기엔 괜찮아 보여요.", "'인공지능'"),
    ("언어 모델로서 말씀드리면 좋은 선택이에요.", "'언어 모델'"),
    ("챗봇한테 물어보는 것보다 직접 부딪혀 보세요.", "'챗봇'"),
])
def test_persona_break(text, hit):
    v = first_violation(make_dialogue(messages=with_assistant(text)))
    assert v.rule == "persona_break" and hit in v.detail


def test_persona_break_only_in_assistant_turns_and_whole_words():
    msgs = [dict(m) for m in GOOD_MESSAGES]
    msgs[0]["content"] = "요즘 회사에서 AI 도입한다고 난리인데 이직해야 할까요?"
    assert_kept(make_dialogue(messages=msgs))
    assert_kept(make_dialogue(messages=with_assistant("메일 보냈어요. 답장은 내일쯤 오겠죠?")))  # 'MAIL' is no 'AI' word


def test_type_label():
    v = first_violation(make_dialogue(messages=with_assistant("제가 원래 좀 istj라서 계획이 있어야 마음이 편해요.")))
    assert (v.rule, v.detail) == ("type_label", "message 1 names a type label 'istj'")
    assert_rejected(make_dialogue(messages=with_assistant("엠비티아이 말고 MBTI 얘기 해 볼까요?")), "type_label")


def test_mixed_register():
    mixed = with_assistant("그럼 회사보다 평가가 문제일 수도 있겠다. 기준은 물어봤어? 난 그게 먼저인 것 같아.", index=3)
    v = first_violation(make_dialogue(messages=mixed))
    assert v.rule == "mixed_register" and v.detail.startswith("assistant mostly 존댓말 but")


def test_register_mismatch_with_declared_register():
    v = first_violation(make_dialogue(meta={"register": "반말"}))
    assert (v.rule, v.detail) == ("register_mismatch", "meta.register is 반말 but the assistant speaks 존댓말")
    assert_kept(make_dialogue(meta={"register": "존댓말"}))


def test_repeated_turn_and_ngram():
    msgs = [dict(m) for m in GOOD_MESSAGES]
    msgs[5]["content"] = msgs[3]["content"]
    assert_rejected(make_dialogue(messages=msgs), "repeated_turn")
    loop = "정말 좋은 생각이에요 " * 8 + "꼭 해 보세요."
    assert_rejected(make_dialogue(messages=with_assistant(loop)), "repeated_ngram")


@pytest.mark.parametrize("text, what", [
    ("User: 고마워요\n좋은 하루 보내세요.", "role tag"),
    ("### 응답:\n네, 그렇게 해 보세요.", "markdown header"),
    ('{"role": "assistant", "content": "네 좋아요"}', "JSON fragment"),
    ("1. 먼저 기준을 물어보세요.\n2. 그다음에 결정해요.", "list numbering"),
    ("좋아요 <br> 그렇게 해요.", "HTML tag"),
])
def test_markup(text, what):
    v = first_violation(make_dialogue(messages=with_assistant(text)))
    assert (v.rule, v.detail) == ("markup", f"message 1 has a {what}")


@pytest.mark.parametrize("text, what", [
    ("제 번호 010-1234-5678로 연락 주세요.", "mobile number"),
    ("사무실은 02-123-4567이에요.", "landline number"),
    ("주민번호 900101-1234567 적으시면 돼요.", "resident registration number"),
    ("메일은 someone@example.com으로 보내 주세요.", "email address"),
    ("카드 1234-5678-9012-3456으로 결제했어요.", "card number"),
])
def test_personal_data(text, what):
    v = first_violation(make_dialogue(messages=with_assistant(text)))
    assert (v.rule, v.detail) == ("personal_data", f"message 1 has a {what}")


def test_personal_data_leaves_ordinary_numbers():
    assert_kept(make_dialogue(messages=with_assistant("월급이 300만 원이면 50만 원은 저축해 보세요. 2025년 목표로요.")))


def test_near_dup_index_finds_the_register_pair_not_a_different_dialogue():
    idx = MinHashIndex(CheckConfig())
    polite = make_dialogue()
    idx.insert(polite.id, polite)
    casual_msgs = [dict(m) for m in GOOD_MESSAGES]
    casual_msgs[1]["content"] = "정체됐다고 느낀 게 언제부터였어? 시점을 먼저 짚어 보면 원인이 보일 때가 많거든."
    casual_msgs[3]["content"] = "그럼 회사 자체보다 평가 방식이 걸리는 걸 수도 있겠네. 평가 기준을 직접 물어본 적은 있어?"
    casual_msgs[5]["content"] = "물어보는 건 불만이 아니라 확인이야. 기준을 알고 나서 떠나도 늦지 않아."
    hit = idx.query(make_dialogue(messages=casual_msgs))
    assert hit is not None and hit[0] == polite.id and hit[1] >= 0.7
    assert idx.query(make_dialogue(messages=CASUAL)) is None


def test_near_dup_threshold_catches_a_paraphrase_and_keeps_a_sibling():
    # The default (0.4) was chosen on tests/test_curate.py's labelled set: a paraphrase of every
    # sentence (particles, endings) sits at ~0.51 and was missed at the earlier 0.5 by MinHash
    # noise; a different chat sharing type, topic and first user line sits at ~0.10.
    from tests.test_curate import BASE, PARTICLES, SIBLING, dialogue

    idx = MinHashIndex(CheckConfig())
    idx.insert(dialogue(BASE).id, dialogue(BASE))
    assert idx.query(dialogue(PARTICLES))[0] == dialogue(BASE).id
    assert idx.query(dialogue(SIBLING)) is None


@pytest.mark.parametrize("text", ["<|eot_id|>", "말 끝<|im_end|>", "[INST] 질문", "</s>", "<<SYS>>", "<｜User｜>", "<end_of_turn>"])
def test_control_token(text):
    assert_rejected(make_dialogue(messages=with_assistant("그럼 정리해 볼까요? " + text)), "control_token")


def test_control_token_leaves_ordinary_brackets():
    assert_kept(make_dialogue(messages=with_assistant("<3 진짜 고마워요. [중요] 내일 꼭 챙기세요. 1 < 2 맞죠?")))

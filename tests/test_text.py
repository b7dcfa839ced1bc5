import pytest

from datagen.text import char_shingles, dedup_normalize, dialogue_register, hangul_share, jaccard, sentence_register

# Sentences labelled by hand: (sentence, register or None when the ending does not tell)
LABELLED = [
    ("그럼 내일 봬요!", "polite"), ("그건 좀 아니지 ㅋㅋ", "casual"), ("진짜 대박.", None), ("네", "polite"),
    ("응", "casual"), ("고생 많으셨습니다.", "polite"), ("발표 자료는 다 만드셨나요?", "polite"),
    ("그쵸, 저도 그렇게 생각했어요", "polite"), ("합격 축하드립니다", "polite"), ("어디서 만날까?", "casual"),
    ("그래서 내가 말했잖아", "casual"), ("너 진짜 대단하다", "casual"), ("일단 먹고 생각하자~", "casual"),
    ("그건 네 잘못이 아니야.", "casual"), ("이번엔 내가 살게", "casual"), ("그러니까", None),
    ("괜찮으시겠어요?", "polite"), ("언제 가는데?", "casual"), ("오늘 날씨 좋네", "casual"),
    ("정말 잘됐다!!", "casual"), ("그렇게 하시죠.", "polite"), ("오 좋은데?", "casual"),
]


@pytest.mark.parametrize("sentence, expected", LABELLED)
def test_sentence_register_on_labelled_set(sentence, expected):
    assert sentence_register(sentence) == expected


def test_quoted_speech_is_left_out():
    assert dialogue_register(["엄마가 '왜 그랬어?' 하시더라고요. 그래서 좀 서운했어요."]) == ("존댓말", 0.0)


def test_dialogue_register_minority_share():
    assert dialogue_register(["좋아요. 그렇게 해요.", "근데 그건 좀 아니다."]) == ("존댓말", pytest.approx(1 / 3))
    assert dialogue_register(["ㅋㅋㅋ", "..."]) == (None, 0.0)


def test_hangul_share_excludes_hanja_and_latin():
    assert hangul_share("한국어") == 1.0
    assert hangul_share("人生은") == pytest.approx(1 / 3)
    assert hangul_share("123 !!") == 1.0
    assert hangul_share("ㅋㅋ ok") == 0.5


def test_dedup_normalize_compresses_laughs_and_space():
    assert dedup_normalize("진짜ㅋㅋㅋㅋㅋ   대박!!!!") == "진짜ㅋㅋ 대박!!"


def test_register_pair_is_near_on_char_trigrams_not_on_words():
    polite = "오늘 회의에서 제가 낸 의견이 통과됐어요. 팀장님도 좋다고 하셨어요."
    casual = "오늘 회의에서 내가 낸 의견이 통과됐어. 팀장님도 좋다고 하셨어."
    assert jaccard(char_shingles(polite), char_shingles(casual)) >= 0.5
    words = lambda s: {tuple(s.split()[i:i + 5]) for i in range(len(s.split()) - 4)}
    assert jaccard(words(polite), words(casual)) == 0.0  # why word 5-gram dedup fails on Korean

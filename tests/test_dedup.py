"""MinHashIndex: Korean near-duplicates found, different dialogues left alone, reusable insert/query."""

from __future__ import annotations

import itertools

from datagen.checks import CheckConfig, dialogue_shingles
from datagen.dedup import MinHashIndex
from datagen.schema import Dialogue
from datagen.text import jaccard
from tests.llm_server import distinct_dialogue, korean_dialogue


def record(d: dict, mbti: str = "ISTJ") -> Dialogue:
    return Dialogue.build(mbti, d["topic"], d["messages"])


def test_register_rewrite_is_a_near_duplicate():
    polite = record(korean_dialogue(3, polite=True))
    casual = record(korean_dialogue(3, polite=False))  # same lines, 반말 endings
    assert polite.id != casual.id
    exact = jaccard(dialogue_shingles(polite, 3), dialogue_shingles(casual, 3))
    assert exact >= 0.5
    index = MinHashIndex()
    index.insert(polite.id, polite)
    key, est = index.query(casual)
    assert key == polite.id and abs(est - exact) < 0.15


def test_different_dialogues_are_not_matched():
    index = MinHashIndex()
    ds = [record(distinct_dialogue(k)) for k in range(60)]
    for d in ds[:40]:
        assert index.query(d) is None
        index.insert(d.id, d)
    assert all(index.query(d) is None for d in ds[40:])
    assert index.query(ds[7]) == (ds[7].id, 1.0)  # a stored one finds itself


def test_estimate_tracks_exact_jaccard():
    ds = [record(korean_dialogue(i)) for i in range(12)]
    index = MinHashIndex(threshold=0.01)
    for a, b in itertools.combinations(ds, 2):
        sa, sb = index.signature(a), index.signature(b)
        exact = jaccard(dialogue_shingles(a, 3), dialogue_shingles(b, 3))
        assert abs(sa.jaccard(sb) - exact) < 0.15


def test_insert_query_remove_and_other_inputs():
    index = MinHashIndex.from_config(CheckConfig(near_dup_threshold=0.6, near_dup_ngram=2))
    assert (index.threshold, index.ngram) == (0.6, 2)
    text = "다음 주에 이사하는데 짐 싸는 게 너무 막막해요"
    index.insert("a", text)
    index.insert("a", "전혀 다른 문장")  # a stored key keeps its first item
    assert len(index) == 1 and "a" in index
    assert index.query(text + "!")[0] == "a"
    assert index.query({"완전", "다른", "집합"}) is None
    assert index.matches(text) == [("a", 1.0)]
    index.remove("a")
    assert len(index) == 0 and index.query(text) is None


def test_korean_only_text_is_not_empty_to_the_index():
    # rouge_score's default tokenizer would see nothing here; character n-grams see everything.
    a = MinHashIndex().signature("밥 먹었어?")
    b = MinHashIndex().signature("밥 먹었어?")
    assert a.jaccard(b) == 1.0 and not a.is_empty()

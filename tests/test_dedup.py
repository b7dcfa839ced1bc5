"""MinHashIndex: Korean near-duplicates found, different dialogues left alone, reusable insert/query."""

from __future__ import annotations

import itertools

import numpy as np
from datasketch import MinHash

from datagen.checks import CheckConfig
from datagen.dedup import (MinHashIndex, band_keys, candidate_pairs, dialogue_shingles, dialogue_text, minhash_signatures,
                           near_duplicates, rows_per_band, shingle_hashes, signatures, similar_pairs)
from datagen.schema import Dialogue
from datagen.text import char_shingles, jaccard
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
    index = MinHashIndex(CheckConfig(near_dup_threshold=0.01))
    for a, b in itertools.combinations(ds, 2):
        sa, sb = index.minhash(a), index.minhash(b)
        exact = jaccard(dialogue_shingles(a, 3), dialogue_shingles(b, 3))
        assert abs(sa.jaccard(sb) - exact) < 0.15


def test_insert_query_remove_and_other_inputs():
    index = MinHashIndex(CheckConfig(near_dup_threshold=0.6, near_dup_ngram=2))
    assert (index.threshold, index.ngram) == (0.6, 2)
    text = "다음 주에 이사하는데 짐 싸는 게 너무 막막해요"
    index.insert("a", text)
    index.insert("a", "전혀 다른 문장")  # a stored key keeps its first item
    assert len(index) == 1 and "a" in index
    assert index.query(text + "!")[0] == "a"
    assert index.query("완전 다른 집합") is None
    assert index.matches(text) == [("a", 1.0)]
    index.remove("a")
    assert len(index) == 0 and index.query(text) is None


def test_korean_only_text_is_not_empty_to_the_index():
    # rouge_score's default tokenizer would see nothing here; character n-grams see everything.
    a = MinHashIndex().minhash("밥 먹었어?")
    b = MinHashIndex().minhash("밥 먹었어?")
    assert a.jaccard(b) == 1.0 and not a.is_empty()


# --- signatures and bands against datasketch --------------------------------------------------------

BASE_TEXT = "다음 주에 이사하는데 짐 싸는 게 막막해요.\n안 쓰는 물건부터 상자에 넣어 보세요."


def test_shingle_hashes_cover_char_shingles():
    text = BASE_TEXT
    assert len(set(shingle_hashes(text, 3).tolist())) == len(char_shingles(text, 3))
    assert len(shingle_hashes("밥", 3)) == 1 and len(shingle_hashes("  ", 3)) == 0


def test_signatures_equal_datasketch_minhash_on_the_same_hashes():
    hashes = [shingle_hashes(record(korean_dialogue(i)).text, 3) for i in range(8)]
    ours = minhash_signatures(hashes, 128, 1)
    for h, sig in zip(hashes, ours):
        m = MinHash(num_perm=128, seed=1, hashfunc=int)
        m.update_batch(h.tolist())
        assert np.array_equal(m.hashvalues, sig)


def test_candidate_pairs_are_the_pairs_sharing_a_band():
    keys = np.array([[1, 2], [3, 2], [1, 9], [7, 8], [1, 5]], dtype=np.uint64)
    assert candidate_pairs(keys).tolist() == [[0, 1], [0, 2], [0, 4], [2, 4]]
    assert candidate_pairs(np.zeros((1, 4), dtype=np.uint64)).tolist() == []


def test_band_keys_equal_for_equal_bands_only():
    sigs = np.array([[1, 2, 3, 4], [1, 2, 9, 9], [2, 1, 3, 4]], dtype=np.uint32)
    k = band_keys(sigs, bands=2, rows=2)
    assert k[0, 0] == k[1, 0] and k[0, 1] == k[2, 1]
    assert k[0, 0] != k[2, 0] and k[0, 1] != k[1, 1]


def test_online_index_and_batch_agree_on_every_pair():
    """Generation's online index and curation's batch LSH use one definition: the same pairs, the same verdicts."""
    cfg = CheckConfig()
    ds = [record(korean_dialogue(i, polite=i % 3 != 0)) for i in range(300)]
    ds += [record(korean_dialogue(i, polite=i % 3 == 0)) for i in range(0, 300, 7)]  # planted register rewrites
    sigs = signatures([dialogue_text(d) for d in ds], cfg)
    keys = band_keys(sigs, cfg.near_dup_bands, rows_per_band(cfg))
    pairs, _ = similar_pairs(sigs, keys, cfg.near_dup_threshold)
    batch = {tuple(p) for p in pairs.tolist()}
    online = MinHashIndex(cfg)
    online.extend(enumerate(ds))
    found = {(min(i, j), max(i, j)) for j in range(len(ds)) for i, _ in online.matches(sigs[j]) if i != j}
    assert found == batch and len(batch) >= 43  # every planted rewrite at least
    # and the greedy stream verdicts: query, then insert what is kept
    stream = MinHashIndex(cfg)
    verdicts = {}
    for j, sig in enumerate(sigs):
        if (hit := stream.query(sig)) is not None:
            verdicts[j] = hit
        else:
            stream.insert(j, sig)
    assert verdicts == near_duplicates(sigs, keys, cfg.near_dup_threshold)

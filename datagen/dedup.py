"""The one near-duplicate definition: MinHash LSH over character n-grams, online and in batch.

Two dialogues are near-duplicates when the MinHash estimate of the Jaccard similarity of their
character n-grams (role tags and spaces left out, `dedup_normalize`d: 존댓말/반말 rewrites of one
chat still share ~0.7 of their 3-grams) reaches `CheckConfig.near_dup_threshold`, and they share at
least one LSH band. Every stage decides it with the same code and the same parameters (all in
`CheckConfig`), so they agree on every pair:

- **online** (`MinHashIndex`): generation asks whether a candidate matches anything accepted so
  far, then inserts it; the seed check does the same over the seeds. One dict of band keys per band.
- **in batch** (`near_duplicates`): curation finds every candidate pair of a whole run at once by
  sorting each band's keys in numpy (measured ~20x faster than querying datasketch's MinHashLSH at
  100k records, bench/dedup.py), then decides greedily in stream order, which gives exactly the
  verdicts of querying-then-inserting each record online.

Signatures are datasketch's affine32 MinHash, computed in numpy over many texts at once
(`signatures`): datasketch hashes each shingle with SHA-1 in a Python loop, ~0.4 s per 1,000
dialogues; this takes ~0.06 s (bench/dedup.py). tests/test_dedup.py checks them equal to
datasketch's own `MinHash` fed the same shingle hashes.

Never use rouge_score's default tokenizer on Korean: it keeps only `[a-z0-9]`, so two identical
Korean sentences score 0.0.

>>> from datagen.schema import Dialogue
>>> a = Dialogue.build("ISTJ", "이사", [{"role": "user", "content": "다음 주에 이사하는데 짐 싸는 게 막막해요."},
...     {"role": "assistant", "content": "안 쓰는 물건부터 상자에 넣어 보세요. 계절 옷이랑 책부터 하면 금방 줄어요."}])
>>> b = Dialogue.build("ISTJ", "이사", [{"role": "user", "content": "다음 주에 이사하는데 짐 싸는 게 막막해."},
...     {"role": "assistant", "content": "안 쓰는 물건부터 상자에 넣어 봐. 계절 옷이랑 책부터 하면 금방 줄어."}])
>>> index = MinHashIndex()  # the shared rules' n-gram size, threshold and bands
>>> _ = index.insert(a.id, a)
>>> index.query(b)[0] == a.id
True
"""

from __future__ import annotations

from functools import lru_cache
from typing import Hashable, Iterable

import numpy as np
from datasketch import LeanMinHash, MinHash

from datagen.checks import CheckConfig
from datagen.schema import Dialogue
from datagen.text import char_shingles, dedup_normalize

SCHEME = "affine32"  # datasketch 2.x's default scheme; signatures below match it bit for bit
SEED = 1  # datasketch's default seed: signatures are interchangeable with `datasketch.MinHash(seed=1)`

_POLY = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: the polynomial base folding n code points
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))
_BAND_MULT = np.random.default_rng(0x5EED).integers(1, 2**63, size=64, dtype=np.uint64) | np.uint64(1)


def dialogue_text(d: Dialogue) -> str:
    """What near-duplicate detection compares: the messages' text (`Dialogue.text`, no role tags), normalised."""
    return dedup_normalize(d.text)


def dialogue_shingles(d: Dialogue, n: int) -> set[str]:
    """The exact character n-gram set of `dialogue_text` (the reference the MinHash estimate approximates)."""
    return char_shingles(dialogue_text(d), n)


# --- shingles and signatures (vectorised over many texts) ----------------------------------------


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """32-bit hashes of the character n-grams `text.char_shingles(text, n)` yields (as a multiset).

    >>> len(shingle_hashes("밥 먹었어?", 3))  # 밥먹었 먹었어 었어?
    3
    """
    flat, _ = chunk_shingle_hashes([dedup_normalize(text)], n)
    return flat


def chunk_shingle_hashes(normalised: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The shingle hashes of many normalised texts at once: `(flat hashes, count per text)`.

    Spaces are dropped (Korean spacing varies), as in `char_shingles`; a text shorter than n is
    one shingle. All texts are hashed in one pass over their concatenation (per-text numpy calls
    cost more than the hashing), then the windows that straddle two texts are dropped.
    """
    texts = [t.replace(" ", "") for t in normalised]  # dedup_normalize leaves single ASCII spaces only
    lengths = np.array([len(t) for t in texts], dtype=np.int64)
    counts = np.where(lengths >= n, lengths - n + 1, np.minimum(lengths, 1))
    out = np.empty(int(counts.sum()), dtype=np.uint64)
    offsets = np.cumsum(counts) - counts
    cp = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    long = lengths >= n
    if len(cp) >= n and long.any():
        span = len(cp) - n + 1
        h = cp[:span].copy()
        with np.errstate(over="ignore"):
            for i in range(1, n):
                h = h * _POLY + cp[i:i + span]
        starts = np.cumsum(lengths) - lengths
        c = counts[long]
        step = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)  # 0, 1, ... within each text
        out[np.repeat(offsets[long], c) + step] = h[np.repeat(starts[long], c) + step]
    for k in np.flatnonzero(~long & (lengths > 0)):  # shorter than n: the whole text is one shingle
        v = np.uint64(0)
        with np.errstate(over="ignore"):
            for ch in texts[k]:
                v = v * _POLY + np.uint64(ord(ch))
        out[offsets[k]] = v
    s1, m1, m2 = _FMIX64
    with np.errstate(over="ignore"):
        out ^= out >> s1
        out *= m1
        out ^= out >> s1
        out *= m2
        out ^= out >> s1
    return (out >> np.uint64(32)).astype(np.uint32), counts


@lru_cache(maxsize=8)
def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    return a.astype(np.uint32), b.astype(np.uint32)


def _fmix32(h: np.ndarray) -> np.ndarray:
    s1, m1, s2, m2 = _FMIX32
    h = h ^ (h >> s1)
    h = h * m1
    h = h ^ (h >> s2)
    h = h * m2
    return h ^ (h >> s1)


def minhash_signatures(hash_lists: list[np.ndarray], num_perm: int, seed: int = SEED) -> np.ndarray:
    """`(len(hash_lists), num_perm)` uint32 signatures, equal to datasketch's affine32 `MinHash`
    with `hashfunc` returning these hashes (fmix32 pre-mix, then `a*h + b mod 2^32`, then min)."""
    flat = np.concatenate(hash_lists) if hash_lists else np.zeros(0, dtype=np.uint32)
    return minhash_flat(flat, np.array([len(h) for h in hash_lists], dtype=np.int64), num_perm, seed)


def minhash_flat(flat: np.ndarray, counts: np.ndarray, num_perm: int, seed: int = SEED) -> np.ndarray:
    """`minhash_signatures` of texts whose hashes lie back to back in `flat` (`counts` per text)."""
    a, b = _permutations(num_perm, seed)
    out = np.full((len(counts), num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    nonempty = np.flatnonzero(counts)
    if not len(nonempty):
        return out
    starts = (np.cumsum(counts) - counts)[nonempty]  # empty texts own no hashes, so reduceat skips them
    hv = _fmix32(flat)
    tmp = np.empty_like(hv)
    cols = np.empty((len(nonempty), num_perm), dtype=np.uint32)
    for k in range(num_perm):  # one permutation over the whole chunk at a time: cache-friendly
        np.multiply(hv, a[k], out=tmp)
        np.add(tmp, b[k], out=tmp)
        cols[:, k] = np.minimum.reduceat(tmp, starts)
    out[nonempty] = cols
    return out


def signatures(normalised: list[str], cfg: CheckConfig) -> np.ndarray:
    """MinHash signatures `(len(texts), cfg.near_dup_num_perm)` of already `dedup_normalize`d texts."""
    flat, counts = chunk_shingle_hashes(normalised, cfg.near_dup_ngram)
    return minhash_flat(flat, counts, cfg.near_dup_num_perm)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """`(len(sigs), bands)` uint64 keys, one per band of `rows` consecutive values (datasketch's
    banding): equal bands give equal keys; unequal ones collide with p≈2^-64, and a collision only
    adds a candidate that the threshold then checks."""
    block = sigs[:, :bands * rows].reshape(len(sigs), bands, rows).astype(np.uint64)
    keys = np.zeros((len(sigs), bands), dtype=np.uint64)
    s1, m1, m2 = _FMIX64
    with np.errstate(over="ignore"):
        for r in range(rows):
            keys ^= block[:, :, r] * _BAND_MULT[r % len(_BAND_MULT)]
            keys ^= keys >> s1  # fmix64: every input bit reaches every output bit
            keys *= m1
            keys ^= keys >> s1
            keys *= m2
            keys ^= keys >> s1
    return keys


def rows_per_band(cfg: CheckConfig) -> int:
    return cfg.near_dup_num_perm // cfg.near_dup_bands


# --- in batch --------------------------------------------------------------------------------------


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """`(P, 2)` unique index pairs `(i, j)`, i < j, that share a key in at least one band (column)."""
    n = len(keys)
    found = []
    for band in keys.T:
        order = np.argsort(band, kind="stable")
        sorted_keys = band[order]
        group = np.concatenate(([0], np.cumsum(sorted_keys[1:] != sorted_keys[:-1])))
        # pair each position with the ones 1, 2, ... places after it in the same bucket
        pos = np.arange(n - 1)
        step = 1
        while len(pos):
            pos = pos[pos + step < n]
            pos = pos[group[pos] == group[pos + step]]
            if len(pos):
                a, b = order[pos], order[pos + step]
                found.append(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1))
            step += 1
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])  # one int per pair: a 1-D unique, sorted by (i, j)
    return np.stack([codes // n, codes % n], axis=1)


_PAIRS_AT_ONCE = 100_000  # candidate pairs compared per numpy call: ~2 × 50 MB of signatures at 128 permutations


def similar_pairs(sigs: np.ndarray, keys: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Every candidate pair (sharing a band) whose estimated Jaccard reaches `threshold`, and the estimates."""
    pairs = candidate_pairs(keys)
    scores = np.empty(len(pairs))
    for lo in range(0, len(pairs), _PAIRS_AT_ONCE):
        p = pairs[lo:lo + _PAIRS_AT_ONCE]
        scores[lo:lo + len(p)] = (sigs[p[:, 0]] == sigs[p[:, 1]]).mean(axis=1)
    hits = scores >= threshold
    return pairs[hits], scores[hits]


def near_duplicates(sigs: np.ndarray, keys: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """{index of a rejected item: (index of the kept earlier item it matches best, estimated Jaccard)}.

    Greedy in stream order: j is a duplicate if a still-kept earlier i matches it (the same verdicts
    as querying, then inserting, each kept item into a `MinHashIndex` in order).
    """
    if len(sigs) < 2:
        return {}
    pairs, scores = similar_pairs(sigs, keys, threshold)
    by_later: dict[int, list[tuple[int, float]]] = {}
    for (i, j), sc in zip(pairs.tolist(), scores.tolist()):
        by_later.setdefault(j, []).append((i, sc))
    rejected: dict[int, tuple[int, float]] = {}
    for j in sorted(by_later):
        kept = [(i, sc) for i, sc in by_later[j] if i not in rejected]
        if kept:
            rejected[j] = max(kept, key=lambda p: (p[1], -p[0]))
    return rejected


# --- online ----------------------------------------------------------------------------------------


class MinHashIndex:
    """Insert dialogues (or texts) under a key; query the most similar stored key.

    The same signatures, bands and threshold as `near_duplicates`, one item at a time: a dict of
    band key → stored keys per band, so the cost per query does not grow with the pool (pairwise
    comparison does: bench/generate_throughput.py).
    """

    def __init__(self, cfg: CheckConfig = CheckConfig()):
        self.cfg = cfg
        self.threshold = cfg.near_dup_threshold
        self.ngram = cfg.near_dup_ngram
        self.rows = rows_per_band(cfg)
        self._buckets: list[dict[int, list[Hashable]]] = [{} for _ in range(cfg.near_dup_bands)]
        self._sigs: dict[Hashable, np.ndarray] = {}
        self._keys: dict[Hashable, np.ndarray] = {}
        self._order: dict[Hashable, int] = {}
        self._inserted = 0

    def signature(self, item: Dialogue | str) -> np.ndarray:
        """The MinHash signature (uint32 values) of a dialogue or a text; query and insert take it too."""
        text = dialogue_text(item) if isinstance(item, Dialogue) else dedup_normalize(item)
        return signatures([text], self.cfg)[0]

    def minhash(self, item: Dialogue | str) -> LeanMinHash:
        """The same signature as a datasketch MinHash (to compare with datasketch's own)."""
        return LeanMinHash(seed=SEED, hashvalues=self.signature(item), scheme=SCHEME)

    def matches(self, item: Dialogue | str | np.ndarray) -> list[tuple[Hashable, float]]:
        """Every stored key sharing a band with `item` at or above the threshold, with its estimated
        Jaccard, most similar first (earliest inserted on a tie)."""
        sig = item if isinstance(item, np.ndarray) else self.signature(item)
        keys = band_keys(sig[None, :], self.cfg.near_dup_bands, self.rows)[0].tolist()
        seen: dict[Hashable, None] = {}
        for bucket, k in zip(self._buckets, keys):
            for key in bucket.get(k, ()):
                seen.setdefault(key)
        order = self._order
        out = []
        for key in seen:
            j = float(np.count_nonzero(self._sigs[key] == sig)) / len(sig)
            if j >= self.threshold:
                out.append((key, j))
        out.sort(key=lambda kj: (-kj[1], order[kj[0]]))
        return out

    def query(self, item: Dialogue | str | np.ndarray) -> tuple[Hashable, float] | None:
        """The most similar stored key at or above the threshold, with its estimated Jaccard, or None."""
        found = self.matches(item)
        return found[0] if found else None

    def insert(self, key: Hashable, item: Dialogue | str | np.ndarray) -> np.ndarray:
        """Store an item under `key` (a key already stored is left as it is); returns its signature."""
        sig = item if isinstance(item, np.ndarray) else self.signature(item)
        if key not in self._sigs:
            keys = band_keys(sig[None, :], self.cfg.near_dup_bands, self.rows)[0]
            for bucket, k in zip(self._buckets, keys.tolist()):
                bucket.setdefault(k, []).append(key)
            self._sigs[key] = sig
            self._keys[key] = keys
            self._order[key] = self._inserted
            self._inserted += 1
        return sig

    def remove(self, key: Hashable) -> None:
        if key in self._sigs:
            for bucket, k in zip(self._buckets, self._keys.pop(key).tolist()):
                bucket[k].remove(key)
                if not bucket[k]:
                    del bucket[k]
            del self._sigs[key], self._order[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._sigs

    def __len__(self) -> int:
        return len(self._sigs)

    def extend(self, items: Iterable[tuple[Hashable, Dialogue]]) -> None:
        """Insert many dialogues, their signatures computed in one vectorised pass."""
        pairs = list(items)
        if not pairs:
            return
        sigs = signatures([dialogue_text(d) for _, d in pairs], self.cfg)
        for (key, _), sig in zip(pairs, sigs):
            self.insert(key, sig)


def agreement(sigs: np.ndarray, cfg: CheckConfig) -> dict[str, object]:
    """Whether the online index and the batch LSH decide alike on these signatures (they must).

    Pairs: every pair the batch finds (sharing a band, estimate at the threshold) against every pair an
    index holding all items returns. Verdicts: query-then-insert in stream order against `near_duplicates`.
    bench/dedup.py --agree runs it at 10k planted near-duplicates; tests/test_dedup.py on a few hundred.
    """
    keys = band_keys(sigs, cfg.near_dup_bands, rows_per_band(cfg))
    pairs, _ = similar_pairs(sigs, keys, cfg.near_dup_threshold)
    batch = {tuple(p) for p in pairs.tolist()}
    decided = near_duplicates(sigs, keys, cfg.near_dup_threshold)
    everything = MinHashIndex(cfg)
    for i, sig in enumerate(sigs):
        everything.insert(i, sig)
    online = {(min(i, j), max(i, j)) for j, sig in enumerate(sigs) for i, _ in everything.matches(sig) if i != j}
    stream = MinHashIndex(cfg)
    verdicts: dict[int, tuple] = {}
    for j, sig in enumerate(sigs):
        if (hit := stream.query(sig)) is not None:
            verdicts[j] = hit
        else:
            stream.insert(j, sig)
    return {"pairs": len(batch), "same_pairs": online == batch, "only_batch": len(batch - online),
            "only_online": len(online - batch), "verdicts": len(decided), "same_verdicts": verdicts == decided}

"""Near-duplicate lookup that is correct on Korean and fast at dataset scale.

`MinHashIndex` keeps a MinHash signature of each dialogue's character n-grams
(`datagen.checks.dialogue_shingles`: role tags and spaces left out, so 존댓말/반말
rewrites of one chat still share ~0.7 of their 3-grams) in a datasketch `MinHashLSH`.
A query asks the LSH for candidates and keeps those whose estimated Jaccard reaches the
threshold, so the cost per query does not grow with the pool (pairwise comparison does:
see bench/generate_throughput.py). Generation uses it online against each type's pool.
Curation dedups a whole run at once with a batch version of the same scheme
(datagen/curate.py: datasketch's permutations computed in numpy per chunk, checked equal
to datasketch's own MinHash in tests/test_curate.py).

Never use rouge_score's default tokenizer on Korean: it keeps only `[a-z0-9]`, so two
identical Korean sentences score 0.0.

>>> from datagen.schema import Dialogue
>>> a = Dialogue.build("ISTJ", "이사", [{"role": "user", "content": "다음 주에 이사하는데 짐 싸는 게 막막해요."},
...     {"role": "assistant", "content": "안 쓰는 물건부터 상자에 넣어 보세요. 계절 옷이랑 책부터 하면 금방 줄어요."}])
>>> b = Dialogue.build("ISTJ", "이사", [{"role": "user", "content": "다음 주에 이사하는데 짐 싸는 게 막막해."},
...     {"role": "assistant", "content": "안 쓰는 물건부터 상자에 넣어 봐. 계절 옷이랑 책부터 하면 금방 줄어."}])
>>> index = MinHashIndex()  # the shared rules' n-gram size and threshold
>>> _ = index.insert(a.id, a)
>>> index.query(b)[0] == a.id
True
"""

from __future__ import annotations

import zlib
from typing import Hashable, Iterable

import numpy as np
from datasketch import MinHash, MinHashLSH

from datagen.checks import CheckConfig, dialogue_shingles
from datagen.schema import Dialogue
from datagen.text import char_shingles

SCHEME = "affine32"
LSH_THRESHOLD_FACTOR = 0.8
"""The LSH band layout targets 0.8 × threshold, so pairs just above the threshold are rarely
missed (its S-curve is soft); candidates are then checked against the real threshold."""


class MinHashIndex:
    """Insert dialogues (or texts, or shingle sets) under a key; query the most similar stored key.

    `threshold` is the Jaccard of character `ngram`-grams at which two items count as
    near-duplicates (estimated from `num_perm` MinHash values: std ≈ 0.04 at 128).
    """

    def __init__(self, threshold: float = CheckConfig.near_dup_threshold, ngram: int = CheckConfig.near_dup_ngram,
                 num_perm: int = 128, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold
        self.ngram = ngram
        self.num_perm = num_perm
        self.seed = seed
        self._lsh = MinHashLSH(threshold=threshold * LSH_THRESHOLD_FACTOR, num_perm=num_perm)
        self._perms = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self._sigs: dict[Hashable, np.ndarray] = {}

    @classmethod
    def from_config(cls, cfg: CheckConfig, num_perm: int = 128, seed: int = 1) -> "MinHashIndex":
        """The index for the shared rules' near-duplicate settings (n-gram size and threshold)."""
        return cls(threshold=cfg.near_dup_threshold, ngram=cfg.near_dup_ngram, num_perm=num_perm, seed=seed)

    def shingles(self, item: Dialogue | str | Iterable[str]) -> set[str]:
        """Character n-grams of a dialogue (`dialogue_shingles`), of a text, or the given strings."""
        if isinstance(item, Dialogue):
            return dialogue_shingles(item, self.ngram)
        if isinstance(item, str):
            return char_shingles(item, self.ngram)
        return set(item)

    def signature(self, item: Dialogue | str | Iterable[str] | MinHash) -> MinHash:
        """The MinHash of a dialogue, a text or a shingle set (a MinHash is returned as is).

        Input hashes are crc32 of each n-gram's UTF-8 bytes (deterministic across processes,
        unlike `hash()`); datasketch premixes them with the murmur3 finaliser and applies its
        affine32 permutations. (A numpy-vectorised hash of packed code points was tried: ~0.05 ms
        faster per dialogue but it flagged ~70% more false near-duplicates near the threshold.)
        """
        if isinstance(item, MinHash):
            return item
        m = MinHash(num_perm=self.num_perm, seed=self.seed, hashfunc=int, permutations=self._perms, scheme=SCHEME)
        m.update_batch([zlib.crc32(s.encode("utf-8")) for s in self.shingles(item)])
        return m

    def matches(self, item: Dialogue | str | Iterable[str] | MinHash) -> list[tuple[Hashable, float]]:
        """Every stored key at or above the threshold with its estimated Jaccard, most similar first."""
        sig = self.signature(item)
        hv = sig.hashvalues
        out = []
        for key in self._lsh.query(sig):
            j = float(np.count_nonzero(self._sigs[key] == hv)) / self.num_perm
            if j >= self.threshold:
                out.append((key, j))
        out.sort(key=lambda kj: (-kj[1], str(kj[0])))
        return out

    def query(self, item: Dialogue | str | Iterable[str] | MinHash) -> tuple[Hashable, float] | None:
        """The most similar stored key at or above the threshold, with its estimated Jaccard, or None."""
        found = self.matches(item)
        return found[0] if found else None

    def insert(self, key: Hashable, item: Dialogue | str | Iterable[str] | MinHash) -> MinHash:
        """Store an item under `key` (a key already stored is left as it is); returns its signature."""
        sig = self.signature(item)
        if key not in self._sigs:
            self._lsh.insert(key, sig, check_duplication=False)
            self._sigs[key] = sig.hashvalues
        return sig

    def remove(self, key: Hashable) -> None:
        if key in self._sigs:
            self._lsh.remove(key)
            del self._sigs[key]

    def __contains__(self, key: Hashable) -> bool:
        return key in self._sigs

    def __len__(self) -> int:
        return len(self._sigs)

"""Near-duplicate detection on Korean dialogues: precision, recall and speed of `datagen curate`.

Synthesises N Korean dialogues from the seed sentences with planted near-duplicates of known
kinds (register switch, particle and ending changes, one exchange dropped, one turn rewritten,
punctuation and ㅋㅋ/emoji changes) and hard negatives (a different dialogue that shares the
type, the topic and the first user line), then reports:

- precision / recall of curate's dedup (exact + MinHash LSH) on the planted pairs, and its
  dialogues/s, at N = 10k and 100k;
- the whole `curate()` (read, schema, rules, dedup, write; no judge) wall time at each N;
- the Alpaca baseline, pairwise ROUGE-L with rouge_score's default tokenizer (keeps only
  [a-z0-9]: recall ≈ 0 on Korean), and a Korean-aware pairwise ROUGE-L (syllable tokens), on a
  subset, with the time for all N² / 2 pairs extrapolated;
- character n-gram Jaccard per kind of pair (why the defaults are what they are).

    python bench/dedup.py                 # 10k and 100k (a few minutes on 2 cores)
    python bench/dedup.py --sizes 2000    # quick look

rouge_score is optional (`pip install rouge-score`); without it that column says so.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


from datagen.dedup import SEED, agreement, dialogue_shingles, dialogue_text, rows_per_band, signatures  # noqa: E402
from datagen.curate import (EXACT_DUP, NEAR_DUP, CurateConfig, Item, add_dedup_keys,  # noqa: E402
                            drop_exact_duplicates, drop_near_duplicates)
from datagen.schema import MBTI_TYPES, Dialogue, write_jsonl  # noqa: E402
from datagen.seeds import DEFAULT_SEEDS_DIR, seed_pool  # noqa: E402
from datagen.text import dialogue_register, jaccard  # noqa: E402

KINDS = ("register", "particles", "drop_exchange", "rewrite_turn", "punctuation")
PLANTED_SHARE = 0.25   # share of base dialogues that get a near-duplicate planted later in the stream
SIBLING_SHARE = 0.10   # share that get a hard negative (same type, topic and first user line)
ROUGE_SUBSET = 200     # dialogues for the pairwise ROUGE-L baselines (N² / 2 pairs)
ROUGE_THRESHOLD = 0.7  # stanford_alpaca's near-duplicate cut-off

# --- sentence pools from the seeds ------------------------------------------------------------

_SPLIT = re.compile(r"(?<=[.!?…~])\s+")


@dataclass
class Pools:
    user: list[str]
    assistant: dict[str, list[str]]  # register → sentences
    topics: list[str]


def build_pools(seeds_dir: Path = DEFAULT_SEEDS_DIR) -> Pools:
    user: list[str] = []
    assistant: dict[str, list[str]] = {"존댓말": [], "반말": []}
    topics: set[str] = set()
    for dialogues in seed_pool(seeds_dir).values():
        for d in dialogues:
            register, _ = dialogue_register(d.turns("assistant"))
            topics.add(d.topic)
            for m in d.messages:
                sents = [s for s in _SPLIT.split(m["content"]) if s.strip()]
                (user if m["role"] == "user" else assistant[register or "존댓말"]).extend(sents)
    return Pools(sorted(set(user)), {k: sorted(set(v)) for k, v in assistant.items()}, sorted(topics))


def _message(rng: random.Random, pool: list[str], lo: int, hi: int) -> str:
    return " ".join(rng.sample(pool, rng.randint(lo, hi)))


def base_dialogue(rng: random.Random, pools: Pools, mbti: str, topic: str, register: str,
                  first_user: str | None = None) -> list[dict[str, str]]:
    exchanges = rng.choice((3, 4, 4, 5, 5, 6, 7, 8))
    msgs = []
    for i in range(exchanges):
        user = first_user if (i == 0 and first_user) else _message(rng, pools.user, 1, 2)
        msgs += [{"role": "user", "content": user},
                 {"role": "assistant", "content": _message(rng, pools.assistant[register], 1, 3)}]
    return msgs


# --- planted near-duplicates --------------------------------------------------------------------

_TO_CASUAL = [("하세요", "해"), ("보세요", "봐"), ("주세요", "줘"), ("으세요", "어"), ("세요", "어"), ("셨어요", "었어"),
              ("이에요", "이야"), ("예요", "야"), ("에요", "야"), ("입니다", "이야"), ("합니다", "해"), ("습니다", "어"),
              ("니다", "다"), ("거든요", "거든"), ("잖아요", "잖아"), ("는데요", "는데"), ("네요", "네"), ("군요", "구나"),
              ("죠", "지"), ("까요", "까"), ("래요", "래"), ("게요", "게"), ("고요", "고"), ("해요", "해"), ("요", "")]
_TO_POLITE = [("이야", "이에요"), ("거든", "거든요"), ("잖아", "잖아요"), ("는데", "는데요"), ("구나", "군요"), ("야", "예요"),
              ("지", "죠"), ("네", "네요"), ("까", "까요"), ("래", "래요"), ("게", "게요"), ("해", "해요"), ("어", "어요"),
              ("아", "아요"), ("워", "워요"), ("봐", "봐요"), ("줘", "줘요"), ("돼", "돼요"), ("다", "어요"), ("자", "요")]
_PRONOUNS_CASUAL = [("저는", "나는"), ("제가", "내가"), ("저도", "나도"), ("저희", "우리"), ("저한테", "나한테"), ("드릴게", "줄게")]
_SENT = re.compile(r"^(.*?)([.!?…~]*)$", re.S)
_PARTICLES = [("그런데", "근데"), ("그러니까", "그니까"), ("이것", "이거"), ("그것", "그거"), ("것은", "건"), ("것을", "걸"),
              ("저는", "전"), ("나는", "난"), ("너무", "엄청"), ("정말", "진짜"), ("조금", "좀"), ("에게", "한테"),
              ("하지만", "그래도"), ("많이", "꽤"), ("아주", "되게"), ("거든요", "더라고요"), ("같아요", "같네요"),
              ("를 ", " "), ("을 ", " "), ("는 ", "은 "), ("이랑", "하고"), ("면 ", "면은 ")]
_LAUGHS = (" ㅋㅋ", " ㅎㅎ", " ㅋㅋㅋㅋㅋ", "ㅠㅠ", " 😊", " 😂", " 👍", "!!")


def switch_register(text: str, to: str) -> str:
    """Rewrite each sentence's ending into the other register (rule of thumb, like a paraphrasing LLM)."""
    table = _TO_CASUAL if to == "반말" else _TO_POLITE
    out = []
    for sent in _SPLIT.split(text):
        body, punct = _SENT.match(sent).groups()
        for old, new in table:
            if body.endswith(old):
                body = body[: len(body) - len(old)] + new
                break
        out.append(body + punct)
    text = " ".join(out)
    for a, b in _PRONOUNS_CASUAL:
        text = text.replace(a, b) if to == "반말" else text.replace(b, a)
    return text


def change_particles(rng: random.Random, text: str) -> str:
    for old, new in _PARTICLES:
        parts = text.split(old)
        text = parts[0] + "".join((new if rng.random() < 0.6 else old) + p for p in parts[1:])
    return text


def punctuate(rng: random.Random, text: str) -> str:
    text = re.sub(r"\.(\s|$)", lambda m: rng.choice((".", "!", "~", "...", "")) + m.group(1), text)
    if rng.random() < 0.6:
        text += rng.choice(_LAUGHS)
    return text


def plant(rng: random.Random, pools: Pools, msgs: list[dict[str, str]], register: str, kind: str) -> list[dict[str, str]]:
    msgs = [dict(m) for m in msgs]
    if kind == "register":
        other = "반말" if register == "존댓말" else "존댓말"
        for m in msgs:
            if m["role"] == "assistant":
                m["content"] = switch_register(m["content"], other)
    elif kind == "particles":
        for m in msgs:
            m["content"] = change_particles(rng, m["content"])
    elif kind == "drop_exchange":
        k = rng.randrange(len(msgs) // 2)
        del msgs[2 * k: 2 * k + 2]
    elif kind == "rewrite_turn":
        k = rng.randrange(len(msgs) // 2)
        msgs[2 * k + 1]["content"] = _message(rng, pools.assistant[register], 1, 3)
    elif kind == "punctuation":
        for m in msgs:
            m["content"] = punctuate(rng, m["content"])
    return msgs


@dataclass
class Sample:
    dialogue: Dialogue
    label: str           # "base", "sibling" (hard negative) or a planted kind
    of: int = -1         # for a planted duplicate: the index of its original


def synthesise(n: int, seed: int = 0, pools: Pools | None = None) -> list[Sample]:
    """n dialogues: bases, planted near-duplicates (after their original) and siblings, shuffled."""
    rng = random.Random(seed)
    pools = pools or build_pools()
    n_planted = round(n * PLANTED_SHARE / (1 + PLANTED_SHARE + SIBLING_SHARE))
    n_siblings = round(n * SIBLING_SHARE / (1 + PLANTED_SHARE + SIBLING_SHARE))
    n_bases = n - n_planted - n_siblings
    bases = []
    for i in range(n_bases):
        mbti, topic, register = rng.choice(MBTI_TYPES), rng.choice(pools.topics), rng.choice(("존댓말", "반말"))
        bases.append((mbti, topic, register, base_dialogue(rng, pools, mbti, topic, register)))
    extra: list[tuple[int, str, list[dict[str, str]]]] = []
    for k, i in enumerate(rng.sample(range(n_bases), n_planted + n_siblings)):
        mbti, topic, register, msgs = bases[i]
        if k < n_planted:
            kind = KINDS[k % len(KINDS)]
            extra.append((i, kind, plant(rng, pools, msgs, register, kind)))
        else:
            extra.append((i, "sibling", base_dialogue(rng, pools, mbti, topic, register, first_user=msgs[0]["content"])))
    # stream order: base i sits at i; each extra lands at a random point after its original
    keyed = [(float(i), "base", i, bases[i][3]) for i in range(len(bases))]
    keyed += [(rng.uniform(i + 0.5, len(bases)), kind, i, msgs) for i, kind, msgs in extra]
    keyed.sort(key=lambda k: k[0])
    samples: list[Sample] = []
    pos_of_base: dict[int, int] = {}
    for _, kind, i, msgs in keyed:
        mbti, topic = bases[i][0], bases[i][1]
        if kind == "base":
            pos_of_base[i] = len(samples)
        of = pos_of_base[i] if kind not in ("base", "sibling") else -1
        samples.append(Sample(Dialogue.build(mbti, topic, msgs), kind, of))
    return samples


# --- measurements -------------------------------------------------------------------------------


@dataclass
class Scores:
    precision: float
    recall: float
    per_kind: dict[str, float]
    seconds: float


def score(samples: list[Sample], flagged: list[bool], seconds: float) -> Scores:
    planted = [s.of >= 0 for s in samples]
    tp = sum(f and p for f, p in zip(flagged, planted))
    per_kind = {k: _share([f for f, s in zip(flagged, samples) if s.label == k]) for k in KINDS}
    per_kind["sibling kept"] = 1 - _share([f for f, s in zip(flagged, samples) if s.label == "sibling"])
    return Scores(tp / max(1, sum(flagged)), tp / max(1, sum(planted)), per_kind, seconds)


def _share(xs: list[bool]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _items(samples: list[Sample]) -> list[Item]:
    items = []
    for i, s in enumerate(samples):
        items.append(Item("generated", "bench", i, s.dialogue.mbti))
        items[-1].set_record(s.dialogue)
    return items


def run_dedup(samples: list[Sample], cfg: CurateConfig) -> Scores:
    """curate's dedup steps alone (keys, exact, near), in-process, on already-valid records."""
    t0 = time.perf_counter()
    items = _items(samples)
    for k in range(0, len(items), cfg.chunk_lines):
        add_dedup_keys(items[k:k + cfg.chunk_lines], cfg)
    items = list(drop_near_duplicates(drop_exact_duplicates(items), cfg))
    seconds = time.perf_counter() - t0
    return score(samples, [it.reason in (EXACT_DUP, NEAR_DUP) for it in items], seconds)


def time_index(samples: list[Sample], cfg: CurateConfig) -> float:
    """Seconds for the near-dup index step alone (query + insert of every record)."""
    items = _items(samples)
    for k in range(0, len(items), cfg.chunk_lines):
        add_dedup_keys(items[k:k + cfg.chunk_lines], cfg)
    t0 = time.perf_counter()
    for _ in drop_near_duplicates(items, cfg):
        pass
    return time.perf_counter() - t0


def run_curate(samples: list[Sample], sets: list[str] = ()) -> tuple[float, str]:
    """Wall time of `datagen curate` in a fresh process (as a user runs it: imports, read, schema,
    rules, dedup, write; no judge) on a run folder written from the samples, and its summary."""
    with tempfile.TemporaryDirectory() as tmp:
        gen = Path(tmp) / "runs" / "bench" / "generated"
        by_type: dict[str, list[Dialogue]] = {}
        for s in samples:
            by_type.setdefault(s.dialogue.mbti, []).append(s.dialogue)
        for t, ds in by_type.items():
            write_jsonl(gen / f"{t}.jsonl", ds)
        cmd = [sys.executable, "-m", "datagen.cli", "curate", "--run", "bench", "--out", tmp,
               *[x for kv in sets for x in ("--set", kv)]]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        seconds = time.perf_counter() - t0
        summary = next(line for line in done.stdout.splitlines() if line.startswith("kept "))
        return seconds, summary


def rouge_baselines(samples: list[Sample], n_total: int, rng: random.Random) -> dict[str, tuple[float, float, float]]:
    """Pairwise ROUGE-L ≥ 0.7 (the Alpaca rule) on a subset: {name: (precision, recall, hours for n_total)}."""
    subset = _rouge_subset(samples, rng)
    out: dict[str, tuple[float, float, float]] = {}
    try:
        from rouge_score import rouge_scorer, tokenizers
    except ImportError:
        return out

    class HangulTokenizer(tokenizers.Tokenizer):
        """rouge_score's tokenizer keeps [a-z0-9] only; this one keeps Hangul words too."""

        def tokenize(self, text: str) -> list[str]:
            return re.findall(r"[가-힣ㄱ-ㅎㅏ-ㅣ]+|[a-z0-9]+", text.lower())

    for name, scorer in (("rouge_score default tokenizer", rouge_scorer.RougeScorer(["rougeL"])),
                         ("ROUGE-L, Hangul word tokens", rouge_scorer.RougeScorer(["rougeL"], tokenizer=HangulTokenizer()))):
        texts = [s.dialogue.text for s in subset]
        t0 = time.perf_counter()
        flagged = []
        for i, t in enumerate(texts):
            flagged.append(any(scorer.score(texts[j], t)["rougeL"].fmeasure >= ROUGE_THRESHOLD for j in range(i)))
        pairs = len(texts) * (len(texts) - 1) / 2
        per_pair = (time.perf_counter() - t0) / pairs  # any() stops early on a hit: a slight underestimate
        sc = score(subset, flagged, 0.0)
        out[name] = (sc.precision, sc.recall, per_pair * n_total * (n_total - 1) / 2 / 3600)
    return out


def _rouge_subset(samples: list[Sample], rng: random.Random) -> list[Sample]:
    """Planted pairs, sibling pairs and plain bases, in stream order, with `of` re-pointed inside the subset."""
    planted = [i for i, s in enumerate(samples) if s.of >= 0]
    chosen = set()
    for i in rng.sample(planted, min(len(planted), ROUGE_SUBSET // 4)):
        chosen |= {i, samples[i].of}
    bases = [i for i, s in enumerate(samples) if s.label in ("base", "sibling")]
    while len(chosen) < min(ROUGE_SUBSET, len(samples)):
        chosen.add(rng.choice(bases))
    order = sorted(chosen)
    pos = {i: k for k, i in enumerate(order)}
    return [replace(samples[i], of=pos.get(samples[i].of, -1) if samples[i].of >= 0 else -1) for i in order]


def minhash_speed(samples: list[Sample], cfg: CurateConfig) -> tuple[float, float]:
    """Seconds to MinHash these dialogues: datasketch's own MinHash.update_batch (SHA-1 per shingle,
    in a Python loop) against curate's numpy version of the same affine32 scheme."""
    from datasketch import MinHash

    t0 = time.perf_counter()
    for s in samples:
        m = MinHash(num_perm=cfg.rules.near_dup_num_perm, seed=SEED)
        m.update_batch([x.encode("utf-8") for x in dialogue_shingles(s.dialogue, cfg.rules.near_dup_ngram)])
    theirs = time.perf_counter() - t0
    t0 = time.perf_counter()
    add_dedup_keys(_items(samples), cfg)
    return theirs, time.perf_counter() - t0


def jaccard_by_kind(samples: list[Sample], ngrams: tuple[int, ...], rng: random.Random, pairs: int = 2000) -> dict[str, list[str]]:
    """Median (min) exact character n-gram Jaccard per kind of pair, per n."""
    first_user = {s.dialogue.messages[0]["content"]: i for i, s in enumerate(samples) if s.label == "base"}
    kinds: dict[str, list[tuple[int, int]]] = {k: [] for k in (*KINDS, "sibling", "unrelated")}
    for i, s in enumerate(samples):
        if s.of >= 0:
            kinds[s.label].append((i, s.of))
        elif s.label == "sibling":
            kinds["sibling"].append((i, first_user[s.dialogue.messages[0]["content"]]))
    kinds["unrelated"] = [tuple(rng.sample(range(len(samples)), 2)) for _ in range(pairs)]
    out: dict[str, list[str]] = {}
    for kind, ps in kinds.items():
        ps = ps[:pairs]
        cells = []
        for n in ngrams:
            js = [jaccard(dialogue_shingles(samples[i].dialogue, n), dialogue_shingles(samples[j].dialogue, n)) for i, j in ps]
            lo, hi = (min(js), max(js))
            cells.append(f"{statistics.median(js):.2f} ({lo:.2f}–{hi:.2f})")
        out[kind] = cells
    return out


def agreement_at(samples: list[Sample], cfg: CurateConfig) -> dict:
    """`datagen.dedup.agreement` on the samples' signatures, timed."""
    t0 = time.perf_counter()
    sigs = signatures([dialogue_text(s.dialogue) for s in samples], cfg.rules)
    out = agreement(sigs, cfg.rules)
    return {**out, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-rouge", action="store_true", help="skip the pairwise ROUGE-L baselines (minutes)")
    ap.add_argument("--no-datasketch-index", action="store_true", help="skip timing datasketch's MinHashLSH index")
    ap.add_argument("--curate-set", action="append", default=[], metavar="KEY=VALUE",
                    help="pass --set KEY=VALUE to the timed `datagen curate` (e.g. naturalness=false)")
    ap.add_argument("--agree", type=int, metavar="N",
                    help="only check that generate's online index and curate agree on every pair at N dialogues")
    args = ap.parse_args()
    if args.agree:
        a = agreement_at(synthesise(args.agree, args.seed, build_pools()), CurateConfig())
        print("| N | near-duplicate pairs (batch) | same pairs online | only batch | only online | greedy verdicts "
              "| same verdicts | both ways |")
        print("| ---: | ---: | --- | ---: | ---: | ---: | --- | ---: |")
        print(f"| {args.agree:,} | {a['pairs']:,} | {'yes' if a['same_pairs'] else 'NO'} | {a['only_batch']} "
              f"| {a['only_online']} | {a['verdicts']:,} | {'yes' if a['same_verdicts'] else 'NO'} "
              f"| {a['seconds']:.1f} s |")
        return
    rng = random.Random(args.seed)
    cfg = CurateConfig()
    pools = build_pools()
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"defaults: character {cfg.rules.near_dup_ngram}-grams, Jaccard ≥ {cfg.rules.near_dup_threshold}, "
          f"{cfg.rules.near_dup_num_perm} permutations, {cfg.rules.near_dup_bands}×{rows_per_band(cfg.rules)} bands\n")
    rows = []
    kind_rows = []
    for n in args.sizes:
        samples = synthesise(n, args.seed, pools)
        planted = sum(s.of >= 0 for s in samples)
        sc = run_dedup(samples, cfg)
        idx_dict = time_index(samples, cfg)
        idx_ds = None if args.no_datasketch_index else time_index(samples, replace(cfg, lsh_index="datasketch"))
        load = os.getloadavg()[0]
        whole, summary = run_curate(samples, args.curate_set)
        rows.append((n, planted, sc, idx_dict, idx_ds, whole, summary, load))
        kind_rows.append((n, sc.per_kind))
        if n == args.sizes[0]:
            rouge = {} if args.no_rouge else rouge_baselines(samples, n, rng)
            mh_theirs, mh_ours = minhash_speed(samples[:1000], cfg)
            jac = jaccard_by_kind(samples, (2, 3, 4, 5), rng)
    print("| N | planted | method | precision | recall | time | dialogues/s |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for n, planted, sc, *_ in rows:
        print(f"| {n:,} | {planted:,} | curate dedup (exact + MinHash LSH, 1 core) | {sc.precision:.3f} | {sc.recall:.3f} "
              f"| {sc.seconds:.1f} s | {n / sc.seconds:,.0f} |")
    for n, *_rest in rows[:1]:
        for name, (p, r, hours) in rouge.items():
            print(f"| {n:,} (subset of {ROUGE_SUBSET}, extrapolated) | | pairwise {name} ≥ {ROUGE_THRESHOLD} "
                  f"| {p:.3f} | {r:.3f} | {hours:,.1f} h | {n / (hours * 3600):,.1f} |")
        if not rouge:
            why = "skipped (--no-rouge)" if args.no_rouge else "rouge_score not installed (pip install rouge-score)"
            print(f"| | | pairwise ROUGE-L baselines | {why} | | | |")
    for n in args.sizes[1:]:
        for name, (p, r, hours) in rouge.items():
            scale = (n * (n - 1)) / (args.sizes[0] * (args.sizes[0] - 1))
            print(f"| {n:,} (extrapolated) | | pairwise {name} ≥ {ROUGE_THRESHOLD} | | | {hours * scale:,.0f} h "
                  f"| {n / (hours * scale * 3600):,.1f} |")
    print()
    print("| N | whole `datagen curate` (fresh process; no judge) | load avg before | near-dup step: sorted band keys | "
          "near-dup step: datasketch MinHashLSH | summary |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    for n, planted, sc, idx_dict, idx_ds, whole, summary, load in rows:
        ds = f"{idx_ds:.1f} s" if idx_ds is not None else "skipped"
        print(f"| {n:,} | {whole:.1f} s ({n / whole:,.0f}/s) | {load:.1f} | {idx_dict:.1f} s | {ds} | `{summary}` |")
    print()
    print("| N | " + " | ".join(f"recall: {k}" for k in KINDS) + " | sibling kept |")
    print("| ---: |" + " ---: |" * (len(KINDS) + 1))
    for n, pk in kind_rows:
        print(f"| {n:,} | " + " | ".join(f"{pk[k]:.3f}" for k in KINDS) + f" | {pk['sibling kept']:.3f} |")
    print()
    print(f"MinHash of 1,000 dialogues ({cfg.rules.near_dup_num_perm} permutations): datasketch MinHash.update_batch {mh_theirs:.2f} s, "
          f"curate's numpy version of the same scheme {mh_ours:.2f} s (incl. normalising and band keys)\n")
    print("Character n-gram Jaccard per kind of pair, median (min–max):\n")
    print("| pair | n=2 | n=3 | n=4 | n=5 |")
    print("| --- | --- | --- | --- | --- |")
    for kind, cells in jac.items():
        print(f"| {kind} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""`datagen seeds check`: every rule over every seed file, all problems listed at once.

Per-record rules come from `datagen.checks` (the same ones generation and curation use);
the collection rules here are about the seed set as a whole: counts per type, average
length, one topic per dialogue within a type, both registers per type, no duplicate pairs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datagen.checks import CheckConfig, violations
from datagen.dedup import MinHashIndex
from datagen.naturalness import unnatural
from datagen.schema import MBTI_TYPES, Dialogue, LineError, RecordError, iter_jsonl, write_jsonl
from datagen.seeds import DEFAULT_SEEDS_DIR, load_personas, load_seed_dialogues, load_topics
from datagen.text import dedup_normalize, dialogue_register


@dataclass(frozen=True)
class SeedCheckConfig:
    """What the seed set as a whole must satisfy."""

    min_dialogues: int = 10
    """Fewest seed dialogues per type (the generation prompt samples from them)."""
    min_avg_exchanges: float = 4.0
    """Least average exchanges per type, so generated chats learn to be multi-turn."""
    require_both_registers: bool = True
    """Every type needs 존댓말 and 반말 seeds, so generation can produce both."""
    min_distinct_exchanges: int = 4
    """Fewest different exchange counts per type: generated data copy the seeds' lengths, and a model
    trained on one length talks at one length (147 of 176 seeds once had exactly 5 exchanges)."""
    short_exchanges: int | None = 3
    """Every type needs a dialogue of at most this many exchanges (a quick check-in); None: no such rule."""
    long_exchanges: int | None = 7
    """Every type needs a dialogue of at least this many exchanges (a long heart-to-heart); None: no such rule."""
    require_register_expressions: bool = True
    """Persona profiles list typical expressions per register (존댓말 and 반말), so a 존댓말 dialogue is not
    shown only 반말 phrases to copy."""
    rules: CheckConfig = field(default_factory=CheckConfig)
    """The per-dialogue rules."""


@dataclass
class TypeStats:
    mbti: str
    dialogues: int = 0
    exchanges: int = 0
    polite: int = 0
    casual: int = 0
    topics: int = 0
    problems: int = 0
    lengths: Counter = field(default_factory=Counter)
    """Dialogues per exchange count."""
    unnatural: int = 0
    """Hits of the soft naturalness check (`datagen.naturalness`) in the type's assistant turns."""

    @property
    def avg_exchanges(self) -> float:
        return self.exchanges / self.dialogues if self.dialogues else 0.0

    def spread(self) -> str:
        """`3-8 (6)`: shortest and longest exchange count and how many different counts."""
        if not self.lengths:
            return "-"
        return f"{min(self.lengths)}-{max(self.lengths)} ({len(self.lengths)})"


@dataclass
class SeedReport:
    stats: dict[str, TypeStats]
    problems: list[LineError]
    personas: int
    topics: int
    soft: list[LineError] = field(default_factory=list)
    """Naturalness hits, one per match (`file:line: unnatural: pattern ...`): counted, never problems."""

    @property
    def ok(self) -> bool:
        return not self.problems


def check_seeds(seeds_dir: str | Path = DEFAULT_SEEDS_DIR, cfg: SeedCheckConfig = SeedCheckConfig(),
                types: tuple[str, ...] = MBTI_TYPES) -> SeedReport:
    """Check personas, topics and seed dialogues; never raises on bad content."""
    seeds_dir = Path(seeds_dir)
    personas, problems = load_personas(seeds_dir, types)
    topics, topic_problems = load_topics(seeds_dir)
    problems += topic_problems
    by_type, dialogue_problems = load_seed_dialogues(seeds_dir, types=types)
    problems += dialogue_problems
    topic_set = set(topics)
    stats = {t: TypeStats(t) for t in types}
    soft: list[LineError] = []
    exact: dict[str, tuple[str, int]] = {}
    near = MinHashIndex(cfg.rules)
    where: dict[str, tuple[str, int]] = {}

    for mbti in types:
        path = str(seeds_dir / "dialogues" / f"{mbti}.jsonl")
        st = stats[mbti]
        seen_topics: dict[str, int] = {}
        for line, d in by_type.get(mbti, []):
            st.dialogues += 1
            st.exchanges += d.exchanges
            st.lengths[d.exchanges] += 1
            register, _ = dialogue_register(d.turns("assistant"))
            st.polite += register == "존댓말"
            st.casual += register == "반말"
            for v in violations(d, cfg.rules):
                problems.append(LineError(path, line, v.rule, v.detail))
            for hit in unnatural(d):
                st.unnatural += 1
                soft.append(LineError(path, line, "unnatural", str(hit)))
            if topic_set and d.topic not in topic_set:
                problems.append(LineError(path, line, "unknown_topic", f"{d.topic!r} is not in seeds/topics.yaml; add it there or pick one"))
            if d.topic in seen_topics:
                problems.append(LineError(path, line, "repeated_topic", f"{d.topic!r} is already used on line {seen_topics[d.topic]}; each dialogue of a type needs its own topic"))
            seen_topics.setdefault(d.topic, line)
            key = dedup_normalize(d.text)
            if key in exact:
                p, l = exact[key]
                problems.append(LineError(path, line, "exact_duplicate", f"same text as {p}:{l}"))
            else:
                exact[key] = (path, line)
                sig = near.signature(d)
                if hit := near.query(sig):
                    p, l = where[hit[0]]
                    problems.append(LineError(path, line, "near_duplicate", f"character {cfg.rules.near_dup_ngram}-gram Jaccard ~{hit[1]:.2f} with {p}:{l}"))
                near.insert(d.id, sig)
                where[d.id] = (path, line)
        st.topics = len(seen_topics)
        if st.dialogues < cfg.min_dialogues and Path(path).exists():  # a missing file is reported once already
            problems.append(LineError(path, 0, "too_few_dialogues", f"{mbti} has {st.dialogues} seed dialogues; write at least {cfg.min_dialogues}"))
        elif st.avg_exchanges < cfg.min_avg_exchanges:
            problems.append(LineError(path, 0, "low_avg_exchanges", f"{mbti} averages {st.avg_exchanges:.1f} exchanges; at least {cfg.min_avg_exchanges}"))
        if cfg.require_both_registers and st.dialogues and (not st.polite or not st.casual):
            missing = "반말" if st.polite else "존댓말"
            problems.append(LineError(path, 0, "single_register", f"{mbti} has no {missing} dialogue; every type needs both"))

        problems.extend(_length_problems(st, cfg, path))

    if cfg.require_register_expressions:
        for mbti, persona in personas.items():
            if not isinstance(persona.speaking_style["expressions"], dict):
                problems.append(LineError(persona.path, 0, "expressions_one_register",
                                          f"{mbti}'s speaking_style.expressions is one list; give 존댓말: [...] and "
                                          "반말: [...] so each register's dialogues see their own phrases"))

    counts: dict[str, int] = {}
    for p in problems:
        counts[Path(p.path).stem] = counts.get(Path(p.path).stem, 0) + 1
    for mbti, st in stats.items():
        st.problems = counts.get(mbti, 0)
    return SeedReport(stats=stats, problems=problems, personas=len(personas), topics=len(topics), soft=soft)


def _length_problems(st: TypeStats, cfg: SeedCheckConfig, path: str) -> list[LineError]:
    """The spread of a type's dialogue lengths: several different counts, a short one and a long one."""
    if not st.lengths:
        return []
    out = []
    if len(st.lengths) < cfg.min_distinct_exchanges:
        out.append(LineError(path, 0, "narrow_lengths", f"{st.mbti} has {len(st.lengths)} different exchange counts "
                             f"({', '.join(map(str, sorted(st.lengths)))}); vary them over at least "
                             f"{cfg.min_distinct_exchanges}"))
    if cfg.short_exchanges is not None and min(st.lengths) > cfg.short_exchanges:
        out.append(LineError(path, 0, "no_short_dialogue", f"{st.mbti} has no dialogue of {cfg.short_exchanges} "
                             f"exchanges or fewer (shortest {min(st.lengths)}); add a quick one"))
    if cfg.long_exchanges is not None and max(st.lengths) < cfg.long_exchanges:
        out.append(LineError(path, 0, "no_long_dialogue", f"{st.mbti} has no dialogue of {cfg.long_exchanges} "
                             f"exchanges or more (longest {max(st.lengths)}); add a long one"))
    return out


def format_seeds(seeds_dir: str | Path = DEFAULT_SEEDS_DIR, types: tuple[str, ...] | None = None) -> tuple[int, list[LineError]]:
    """Fill in missing ids (and fix stale ones) in every seed file (or those of `types`), in place.

    Returns (ids written, problems). A file with any line that does not parse or build is
    left untouched, so nothing hand-written is ever dropped.
    """
    changed = 0
    problems: list[LineError] = []
    for path in sorted((Path(seeds_dir) / "dialogues").glob("*.jsonl")):
        if types is not None and path.stem not in types:
            continue
        records: list[Dialogue] = []
        file_problems: list[LineError] = []
        file_changed = 0
        for line, obj in iter_jsonl(path):
            if isinstance(obj, LineError):
                file_problems.append(obj)
                continue
            try:
                body = {k: v for k, v in obj.items() if k != "id"} if isinstance(obj, dict) else obj
                d = Dialogue.from_dict(body, fill_id=True)
            except RecordError as e:
                file_problems.append(LineError(str(path), line, e.rule, e.detail))
                continue
            file_changed += obj.get("id") != d.id
            records.append(d)
        if file_problems:
            problems += file_problems
        elif file_changed:
            write_jsonl(path, records)
            changed += file_changed
    return changed, problems

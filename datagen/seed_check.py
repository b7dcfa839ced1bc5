"""`datagen seeds check`: every rule over every seed file, all problems listed at once.

Per-record rules come from `datagen.checks` (the same ones generation and curation use);
the collection rules here are about the seed set as a whole: counts per type, average
length, one topic per dialogue within a type, both registers per type, no duplicate pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from datagen.checks import CheckConfig, violations
from datagen.dedup import MinHashIndex
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

    @property
    def avg_exchanges(self) -> float:
        return self.exchanges / self.dialogues if self.dialogues else 0.0


@dataclass
class SeedReport:
    stats: dict[str, TypeStats]
    problems: list[LineError]
    personas: int
    topics: int

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
            register, _ = dialogue_register(d.turns("assistant"))
            st.polite += register == "존댓말"
            st.casual += register == "반말"
            for v in violations(d, cfg.rules):
                problems.append(LineError(path, line, v.rule, v.detail))
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
                if hit := near.query(d):
                    p, l = where[hit[0]]
                    problems.append(LineError(path, line, "near_duplicate", f"character {cfg.rules.near_dup_ngram}-gram Jaccard ~{hit[1]:.2f} with {p}:{l}"))
                near.insert(d.id, d)
                where[d.id] = (path, line)
        st.topics = len(seen_topics)
        if st.dialogues < cfg.min_dialogues and Path(path).exists():  # a missing file is reported once already
            problems.append(LineError(path, 0, "too_few_dialogues", f"{mbti} has {st.dialogues} seed dialogues; write at least {cfg.min_dialogues}"))
        elif st.avg_exchanges < cfg.min_avg_exchanges:
            problems.append(LineError(path, 0, "low_avg_exchanges", f"{mbti} averages {st.avg_exchanges:.1f} exchanges; at least {cfg.min_avg_exchanges}"))
        if cfg.require_both_registers and st.dialogues and (not st.polite or not st.casual):
            missing = "반말" if st.polite else "존댓말"
            problems.append(LineError(path, 0, "single_register", f"{mbti} has no {missing} dialogue; every type needs both"))

    counts: dict[str, int] = {}
    for p in problems:
        counts[Path(p.path).stem] = counts.get(Path(p.path).stem, 0) + 1
    for mbti, st in stats.items():
        st.problems = counts.get(mbti, 0)
    return SeedReport(stats=stats, problems=problems, personas=len(personas), topics=len(topics))


def format_seeds(seeds_dir: str | Path = DEFAULT_SEEDS_DIR) -> tuple[int, list[LineError]]:
    """Fill in missing ids (and fix stale ones) in every seed file, in place.

    Returns (ids written, problems). A file with any line that does not parse or build is
    left untouched, so nothing hand-written is ever dropped.
    """
    changed = 0
    problems: list[LineError] = []
    for path in sorted((Path(seeds_dir) / "dialogues").glob("*.jsonl")):
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

"""Loading `seeds/`: the 16 persona profiles, the topic list and the hand-written dialogues.

Everything here returns problems as `LineError`s (file, line, rule, detail) instead of
raising, so `datagen seeds check` can list every problem at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datagen.prompts import REGISTERS
from datagen.schema import MBTI_TYPES, Dialogue, LineError, read_jsonl_numbered

def _default_seeds_dir() -> Path:
    """The repository's seeds/ when running from a checkout (also an editable install), else the copy a
    wheel ships inside the package (datagen/seeds_data, see pyproject.toml)."""
    checkout = Path(__file__).resolve().parent.parent / "seeds"
    return checkout if (checkout / "personas").is_dir() else Path(__file__).resolve().parent / "seeds_data"


DEFAULT_SEEDS_DIR = _default_seeds_dir()

# The profile keys a persona file must have (values are Korean prose). See seeds/personas/*.yaml.
PERSONA_KEYS: dict[str, type] = {
    "mbti": str, "nickname": str, "summary": str, "functions": dict, "traits": list,
    "speaking_style": dict, "reactions": dict, "avoids": list, "sample_lines": list,
}
FUNCTION_KEYS = ("dominant", "auxiliary")
STYLE_KEYS = ("tone", "sentence_habits", "expressions", "length")
REACTION_KEYS = ("worry", "conflict", "good_news", "plan_change")
# `speaking_style.expressions` may be a list, or a mapping with one list per register (REGISTERS; the seeds use that).
MIN_TRAITS = 5


@dataclass(frozen=True)
class Persona:
    """One type's conversational profile (a style from a popular typology, not a diagnosis)."""

    mbti: str
    nickname: str
    summary: str
    functions: dict[str, str]
    traits: list[str]
    speaking_style: dict[str, Any]
    reactions: dict[str, str]
    avoids: list[str]
    sample_lines: list[str]
    path: str = field(default="", compare=False)

    def profile_text(self) -> str:
        """The profile as Korean prose for generation and judge prompts (type code not shown)."""
        s, r = self.speaking_style, self.reactions
        lines = [
            f"별칭: {self.nickname}",
            f"요약: {self.summary}",
            f"주기능/부기능: {self.functions['dominant']} / {self.functions['auxiliary']}",
            "핵심 성향:", *[f"- {t}" for t in self.traits],
            f"말투: {s['tone']}",
            f"문장 습관: {s['sentence_habits']}",
            *self.expression_lines(),
            f"말하는 분량: {s['length']}",
            f"고민을 들으면: {r['worry']}",
            f"갈등 상황에서: {r['conflict']}",
            f"좋은 소식을 들으면: {r['good_news']}",
            f"계획이 갑자기 바뀌면: {r['plan_change']}",
            "잘 하지 않는 것:", *[f"- {a}" for a in self.avoids],
            "이 사람다운 말:", *[f"- {x}" for x in self.sample_lines],
        ]
        return "\n".join(lines)

    def expression_lines(self) -> list[str]:
        """`자주 쓰는 표현` lines of the profile text: one per register when the profile gives both.

        The generation prompt asks for 존댓말 and 반말 dialogues side by side, so each register's
        expressions are shown as they would be said in it (a 반말 list alone got copied into 존댓말 chats).
        """
        ex = self.speaking_style["expressions"]
        if isinstance(ex, dict):
            return [f"자주 쓰는 표현 ({reg} 대화에서): {', '.join(ex[reg])}" for reg in REGISTERS]
        return [f"자주 쓰는 표현: {', '.join(ex)}"]

    def system_prompt(self) -> str:
        """The Korean system message that names the persona in published data, training and chat."""
        s = self.speaking_style
        return (f"당신은 {self.mbti} 성향의 대화 상대입니다. {self.summary} "
                f"말투: {s['tone']} {s['sentence_habits']}")


def _problem(path: Path, rule: str, detail: str, line: int = 1) -> LineError:
    return LineError(str(path), line, rule, detail)


def _check_persona_obj(obj: Any, path: Path, expected: str) -> list[LineError]:
    if not isinstance(obj, dict):
        return [_problem(path, "persona_format", "the file must be a YAML mapping of the profile keys")]
    problems = []
    for key, typ in PERSONA_KEYS.items():
        if key not in obj:
            problems.append(_problem(path, "persona_field_missing", f"missing key '{key}'"))
        elif not isinstance(obj[key], typ) or not obj[key]:
            problems.append(_problem(path, "persona_field_type", f"'{key}' must be a non-empty {typ.__name__}"))
    if problems:
        return problems
    if obj["mbti"] != expected:
        problems.append(_problem(path, "mbti_mismatch", f"mbti is {obj['mbti']!r} but the file is for {expected}"))
    for key, sub in (("functions", FUNCTION_KEYS), ("speaking_style", STYLE_KEYS), ("reactions", REACTION_KEYS)):
        for k in sub:
            if not obj[key].get(k):
                problems.append(_problem(path, "persona_field_missing", f"missing key '{key}.{k}'"))
    problems.extend(_check_expressions(obj["speaking_style"].get("expressions"), path))
    if len(obj["traits"]) < MIN_TRAITS:
        problems.append(_problem(path, "persona_traits", f"{len(obj['traits'])} traits; write at least {MIN_TRAITS}"))
    return problems


def _check_expressions(ex: Any, path: Path) -> list[LineError]:
    def strings(x: Any) -> bool:
        return isinstance(x, list) and bool(x) and all(isinstance(v, str) and v.strip() for v in x)

    if isinstance(ex, dict):
        if set(ex) != set(REGISTERS) or not all(strings(ex[k]) for k in REGISTERS):
            return [_problem(path, "persona_field_type", "'speaking_style.expressions' as a mapping needs exactly "
                             f"{' and '.join(REGISTERS)}, each a non-empty list of phrases")]
        return []
    if ex is not None and not strings(ex):
        return [_problem(path, "persona_field_type", "'speaking_style.expressions' must be a list of phrases, or "
                         f"{' / '.join(REGISTERS)} lists")]
    return []


def load_personas(seeds_dir: str | Path = DEFAULT_SEEDS_DIR,
                  types: tuple[str, ...] = MBTI_TYPES) -> tuple[dict[str, Persona], list[LineError]]:
    """`seeds/personas/<TYPE>.yaml` for all 16 types; a missing or malformed one is a problem."""
    pdir = Path(seeds_dir) / "personas"
    personas: dict[str, Persona] = {}
    problems: list[LineError] = []
    for mbti in types:
        path = pdir / f"{mbti}.yaml"
        if not path.exists():
            problems.append(_problem(path, "persona_missing", f"no profile for {mbti}; add {path.name} (copy another type's file as a template)", 0))
            continue
        try:
            obj = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", 0) + 1
            problems.append(_problem(path, "bad_yaml", str(getattr(e, "problem", e)), line))
            continue
        errs = _check_persona_obj(obj, path, mbti)
        if errs:
            problems.extend(errs)
            continue
        personas[mbti] = Persona(**{k: obj[k] for k in PERSONA_KEYS}, path=str(path))
    return personas, problems


def load_topics(seeds_dir: str | Path = DEFAULT_SEEDS_DIR) -> tuple[list[str], list[LineError]]:
    """`seeds/topics.yaml` → the topic strings, in file order; duplicates are a problem."""
    path = Path(seeds_dir) / "topics.yaml"
    if not path.exists():
        return [], [_problem(path, "topics_missing", "no topics.yaml; it lists everyday topics under 'topics:'", 0)]
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        return [], [_problem(path, "bad_yaml", str(getattr(e, "problem", e)))]
    topics = obj.get("topics") if isinstance(obj, dict) else None
    if not isinstance(topics, list) or not all(isinstance(t, str) and t.strip() for t in topics):
        return [], [_problem(path, "topics_format", "expected 'topics:' followed by a list of strings")]
    seen: set[str] = set()
    problems = []
    for t in topics:
        if t in seen:
            problems.append(_problem(path, "duplicate_topic", f"{t!r} is listed twice"))
        seen.add(t)
    return list(dict.fromkeys(topics)), problems


def load_seed_dialogues(seeds_dir: str | Path = DEFAULT_SEEDS_DIR, fill_id: bool = False,
                        types: tuple[str, ...] = MBTI_TYPES) -> tuple[dict[str, list[tuple[int, Dialogue]]], list[LineError]]:
    """`seeds/dialogues/<TYPE>.jsonl` → `(line_no, record)` per type; a record of another type in a file is a problem."""
    ddir = Path(seeds_dir) / "dialogues"
    out: dict[str, list[tuple[int, Dialogue]]] = {}
    problems: list[LineError] = []
    for mbti in types:
        path = ddir / f"{mbti}.jsonl"
        if not path.exists():
            problems.append(_problem(path, "seeds_missing", f"no seed dialogues for {mbti}", 0))
            out[mbti] = []
            continue
        numbered, errs = read_jsonl_numbered(path, fill_id=fill_id)
        problems.extend(errs)
        kept = []
        for line_no, rec in numbered:
            if rec.mbti != mbti:
                problems.append(LineError(str(path), line_no, "mbti_mismatch", f"record is {rec.mbti} in {mbti}.jsonl"))
            elif rec.source != "seed":
                problems.append(LineError(str(path), line_no, "bad_source", f"seed files hold source 'seed', not {rec.source!r}"))
            else:
                kept.append((line_no, rec))
        out[mbti] = kept
    return out, problems


def seed_pool(seeds_dir: str | Path = DEFAULT_SEEDS_DIR, types: tuple[str, ...] = MBTI_TYPES) -> dict[str, list[Dialogue]]:
    """The valid seed dialogues per type (problems ignored: `datagen seeds check` reports them)."""
    numbered, _ = load_seed_dialogues(seeds_dir, types=types)
    return {t: [d for _, d in pairs] for t, pairs in numbered.items()}

"""The persona-fidelity judge of `datagen curate --judge`: G-Eval style, Korean rubric templates.

The judge sees only the assistant's turns (never the user's, never the type code) and answers
two requests per dialogue, each a rubric with evaluation steps and a JSON form to fill:

- **guess** (`prompts/judge_guess.txt`), blind: the four-letter type it hears, axis by axis
  (E/I, S/N, T/F, J/P), and naturalness and engagement, 1–5;
- **persona** (`prompts/judge_persona.txt`), with the claimed type's profile
  (`Persona.profile_text()`): persona consistency, 1–5.

Two requests, because the profile gives the type away (it names the cognitive functions): a
guess made after reading it would agree with the claimed type by construction.

A record is rejected with reason `persona` when a score is under its minimum or the guess
differs from the claimed type on more than `max_axis_disagreements` axes. The report gives
agreement per type and per axis.

Shape (distilabel's): pure prompt builders and a pure parser around one client call. The client
and the cache are generate's: `LLMClient` (adaptive concurrency, bounded retries, structured
output with fallback) and a `ResponseStore` keyed by request hash (`<run>/judge/raw.jsonl`), so
a rerun sends nothing already answered and gives the same verdicts. An answer that does not
parse is asked again with a repair turn (a different request, so the cache does not hand the
bad answer back), at most `max_parse_attempts` times; then the record is counted as
`judge_failed`, never a crash. A server that keeps failing stops the stage with a message
(what was answered stays cached).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Callable

from datagen.cost import Budget, BudgetExhausted, Price, TokenCounter, price_for, stored_spend
from datagen.errors import UserError
from datagen.llm import LLMClient, LLMConfig, LLMFatalError, ResponseStore, chat_body, resolve_base_url
from datagen.prompts import load_template
from datagen.schema import MBTI_TYPES, Dialogue
from datagen.seeds import DEFAULT_SEEDS_DIR, load_personas
from datagen.step import Call, LLMStep, Outcome, StageStopped, extract_json, gather_all

AXES = ("E/I", "S/N", "T/F", "J/P")
SCORES = ("persona", "naturalness", "engagement")
SCORE_RANGE = (1, 5)
CACHE_FILE = Path("judge") / "raw.jsonl"


def _judge_llm() -> LLMConfig:
    # Temperature 0: a judge should give the same answer to the same question. 600 tokens fit
    # a one-or-two-sentence reason and the scores with room to spare.
    return LLMConfig(temperature=0.0, max_tokens=600)


@dataclass(frozen=True)
class JudgeConfig:
    """The judge's model and thresholds."""

    llm: LLMConfig = field(default_factory=_judge_llm)
    """Model, server, concurrency and retry bounds (generate's client)."""
    min_persona: int = 3
    """Least persona-consistency score kept (1–5; 3 = "some parts fit, some do not")."""
    min_naturalness: int = 3
    """Least naturalness score kept (3 = "several awkward phrases")."""
    min_engagement: int = 3
    """Least engagement score kept (3 = "responds, but generically")."""
    max_axis_disagreements: int = 2
    """Most axes (of E/I, S/N, T/F, J/P) on which the blind guess may differ from the claimed type.
    Typing from four short turns is noisy, so the default rejects only a guess that is mostly the opposite type."""
    max_parse_attempts: int = 3
    """Most answers asked for per request when an answer does not parse (the first + repairs)."""
    max_failures_in_a_row: int = 8
    """Requests failing in a row (after the client's own retries) that stop the stage: the server is down."""

    def __post_init__(self) -> None:
        lo, hi = SCORE_RANGE
        problems = list(self.llm.problems())
        for name in ("min_persona", "min_naturalness", "min_engagement"):
            if not lo <= getattr(self, name) <= hi:
                problems.append(f"judge {name} must be between {lo} and {hi}")
        if not 0 <= self.max_axis_disagreements <= len(AXES):
            problems.append(f"judge max_axis_disagreements must be between 0 and {len(AXES)}")
        if self.max_parse_attempts < 1 or self.max_failures_in_a_row < 1:
            problems.append("judge max_parse_attempts and max_failures_in_a_row must be at least 1")
        if problems:
            raise UserError("; ".join(problems))

    def resolved(self) -> dict[str, Any]:
        """As recorded in a run's history (no credentials)."""
        return {**asdict(self), "llm": self.llm.resolved()}


# --- prompts (pure) -----------------------------------------------------------------------------


def format_turns(d: Dialogue) -> str:
    """The assistant's turns, numbered, continuation lines indented.

    >>> d = Dialogue.build("ISTJ", "이사", [{"role": "user", "content": "이사 가요"},
    ...     {"role": "assistant", "content": "언제요?"}, {"role": "user", "content": "다음 주요"},
    ...     {"role": "assistant", "content": "그럼 견적부터 받아요.\\n세 군데면 돼요."}])
    >>> print(format_turns(d))
    1. 언제요?
    2. 그럼 견적부터 받아요.
       세 군데면 돼요.
    """
    return "\n".join(f"{i}. " + t.strip().replace("\n", "\n   ") for i, t in enumerate(d.turns("assistant"), 1))


def guess_messages(d: Dialogue) -> list[dict[str, str]]:
    """The blind request: type guess, naturalness, engagement."""
    return [{"role": "system", "content": load_template("judge_system").substitute()},
            {"role": "user", "content": load_template("judge_guess").substitute(turns=format_turns(d))}]


def persona_messages(d: Dialogue, profile: str) -> list[dict[str, str]]:
    """The request with the claimed type's profile: persona consistency."""
    return [{"role": "system", "content": load_template("judge_system").substitute()},
            {"role": "user", "content": load_template("judge_persona").substitute(profile=profile.strip(),
                                                                                  turns=format_turns(d))}]


def repair_messages(messages: list[dict[str, str]], answer: str | None, problem: str) -> list[dict[str, str]]:
    """The same request with the unusable answer and a request to answer again in the form."""
    return [*messages, {"role": "assistant", "content": (answer or "").strip() or "(빈 답)"},
            {"role": "user", "content": load_template("judge_repair").substitute(problem=problem)}]


_SCORE = {"type": "integer", "enum": list(range(SCORE_RANGE[0], SCORE_RANGE[1] + 1))}
GUESS_SCHEMA: dict[str, Any] = {
    "name": "judge_guess", "strict": True,
    "schema": {"type": "object", "additionalProperties": False,
               "properties": {"reason": {"type": "string"}, "guess": {"type": "string", "enum": list(MBTI_TYPES)},
                              "naturalness": _SCORE, "engagement": _SCORE},
               "required": ["reason", "guess", "naturalness", "engagement"]},
}
PERSONA_SCHEMA: dict[str, Any] = {
    "name": "judge_persona", "strict": True,
    "schema": {"type": "object", "additionalProperties": False,
               "properties": {"reason": {"type": "string"}, "persona": _SCORE},
               "required": ["reason", "persona"]},
}
SCHEMAS = {"guess": GUESS_SCHEMA, "persona": PERSONA_SCHEMA}


def request_body(messages: list[dict[str, str]], kind: str, llm: LLMConfig) -> dict[str, Any]:
    """A chat-completions body asking for the judge's form as structured output."""
    return chat_body(messages, llm, SCHEMAS[kind])


# --- parsing (pure) -----------------------------------------------------------------------------

def parse_answer(content: str | None, kind: str) -> tuple[dict[str, Any] | None, str | None]:
    """The judge's form as `{field: value}`, or (None, what is wrong) for the repair turn and the report.

    >>> parse_answer('```json\\n{"reason": "차분함", "guess": "istj", "naturalness": 4, "engagement": "5"}\\n```', "guess")
    ({'reason': '차분함', 'guess': 'ISTJ', 'naturalness': 4, 'engagement': 5}, None)
    >>> parse_answer('{"reason": "", "persona": 7}', "persona")
    (None, 'persona must be an integer from 1 to 5, got 7')
    """
    try:
        obj = extract_json(content)
    except json.JSONDecodeError:
        obj = None
    if not isinstance(obj, dict):
        return None, f"not a JSON object: {(content or '').strip()[:80]!r}"
    out: dict[str, Any] = {"reason": str(obj.get("reason") or "").strip()[:300]}
    if kind == "guess":
        guess = obj.get("guess")
        guess = guess.strip().upper() if isinstance(guess, str) else guess
        if guess not in MBTI_TYPES:
            return None, f"guess must be one of the 16 four-letter types, got {guess!r}"
        out["guess"] = guess
    for name in ("naturalness", "engagement") if kind == "guess" else ("persona",):
        score = _score(obj.get(name))
        if score is None:
            return None, f"{name} must be an integer from {SCORE_RANGE[0]} to {SCORE_RANGE[1]}, got {obj.get(name)!r}"
        out[name] = score
    return out, None


def _score(x: Any) -> int | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, str):
        x = x.strip()
        x = int(x) if x.isdigit() else None
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return x if isinstance(x, int) and SCORE_RANGE[0] <= x <= SCORE_RANGE[1] else None


# --- verdicts (pure) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """Both answers about one dialogue, and what the thresholds make of them."""

    claimed: str
    guess: str
    persona: int
    naturalness: int
    engagement: int
    reasons: tuple[str, str] = ("", "")
    """The judge's own one-line reasons (guess, persona)."""

    @property
    def axes(self) -> tuple[bool, ...]:
        """Per axis (E/I, S/N, T/F, J/P): does the guess agree with the claimed type?"""
        return tuple(a == b for a, b in zip(self.guess, self.claimed))

    def problems(self, cfg: JudgeConfig) -> list[str]:
        """Why the record is rejected (empty: kept).

        >>> Verdict("ISTJ", "ENFP", 2, 4, 4).problems(JudgeConfig())
        ['persona 2 < 3', 'guessed ENFP for ISTJ: 4 of 4 axes differ (at most 2)']
        """
        out = [f"{name} {getattr(self, name)} < {least}"
               for name, least in (("persona", cfg.min_persona), ("naturalness", cfg.min_naturalness),
                                   ("engagement", cfg.min_engagement)) if getattr(self, name) < least]
        differ = len(AXES) - sum(self.axes)
        if differ > cfg.max_axis_disagreements:
            out.append(f"guessed {self.guess} for {self.claimed}: {differ} of {len(AXES)} axes differ "
                       f"(at most {cfg.max_axis_disagreements})")
        return out

    def to_meta(self, model: str) -> dict[str, Any]:
        """What goes into the record's `meta.judge`."""
        return {"model": model, "guess": self.guess, "persona": self.persona, "naturalness": self.naturalness,
                "engagement": self.engagement, "axes_agree": sum(self.axes),
                "reason_guess": self.reasons[0], "reason_persona": self.reasons[1]}


def agreement(verdicts: list[Verdict]) -> dict[str, Any]:
    """Exact-type and per-axis agreement with the claimed type, and mean scores.

    >>> agreement([Verdict("ISTJ", "ISTJ", 5, 4, 4), Verdict("ISTJ", "ESTP", 3, 4, 2)])["axes"]
    {'E/I': 0.5, 'S/N': 1.0, 'T/F': 1.0, 'J/P': 0.5}
    """
    n = len(verdicts)
    if not n:
        return {"judged": 0}
    return {
        "judged": n,
        "type": round(sum(v.guess == v.claimed for v in verdicts) / n, 3),
        "axes": {ax: round(sum(v.axes[i] for v in verdicts) / n, 3) for i, ax in enumerate(AXES)},
        "mean": {s: round(float(mean(getattr(v, s) for v in verdicts)), 2) for s in SCORES},
    }


def confusion(verdicts: list[Verdict]) -> dict[str, dict[str, int]]:
    """Claimed type → guessed type → count (only pairs that occur), types in `MBTI_TYPES` order.

    >>> confusion([Verdict("ISTJ", "ISTJ", 5, 4, 4), Verdict("ISTJ", "ESTJ", 5, 4, 4), Verdict("ENFP", "ENFP", 5, 4, 4)])
    {'ISTJ': {'ISTJ': 1, 'ESTJ': 1}, 'ENFP': {'ENFP': 1}}
    """
    out: dict[str, dict[str, int]] = {}
    for t in MBTI_TYPES:
        row = {g: sum(v.claimed == t and v.guess == g for v in verdicts) for g in MBTI_TYPES}
        if any(row.values()):
            out[t] = {g: n for g, n in row.items() if n}
    return out


# --- the calls ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judgement:
    """Both answers about one dialogue, or why there is no verdict; what it took to get them."""

    record: str
    """The judged record's id."""
    claimed: str
    verdict: Verdict | None
    problem: str = ""
    """Why there is no verdict (no usable answer after repairs, or no answer at all)."""
    requests: int = 0
    repairs: int = 0


def judge_calls(d: Dialogue, profile: str, llm: LLMConfig) -> tuple[Call, Call]:
    """The two requests about one dialogue (pure): the blind guess and the persona check."""
    fields = {"mbti": d.mbti, "record": d.id}
    return (Call(request_body(guess_messages(d), "guess", llm), {"kind": "guess", **fields}, "judge:guess"),
            Call(request_body(persona_messages(d, profile), "persona", llm), {"kind": "persona", **fields},
                 "judge:persona"))


def parse_call(text: str, call: Call) -> tuple[dict[str, Any] | None, str | None]:
    return parse_answer(text, call.fields["kind"])


def judgement(d: Dialogue, guess: Outcome, persona: Outcome) -> Judgement:
    """One dialogue's judgement from the outcomes of its two calls (pure)."""
    requests = guess.sent + guess.cached + persona.sent + persona.cached
    repairs = guess.repairs + persona.repairs
    bad = guess if guess.value is None else persona if persona.value is None else None
    if bad is not None:
        n = bad.sent + bad.cached
        problem = (bad.problem[1] if bad.problem and bad.problem[0] == "bad_answer"
                   else ": ".join(bad.problem or ("failed", "")))
        return Judgement(d.id, d.mbti, None, f"no usable judge answer after {n} request(s): {problem}", requests, repairs)
    g, p = guess.value, persona.value
    v = Verdict(d.mbti, g["guess"], p["persona"], g["naturalness"], g["engagement"], (g["reason"], p["reason"]))
    return Judgement(d.id, d.mbti, v, "", requests, repairs)


def summary(judgements: list[Judgement], cfg: JudgeConfig) -> dict[str, Any]:
    """The report section: counts, thresholds, agreement overall and per claimed type."""
    verdicts = [j.verdict for j in judgements if j.verdict is not None]
    by_type = {t: agreement([v for v in verdicts if v.claimed == t]) for t in MBTI_TYPES
               if any(v.claimed == t for v in verdicts)}
    return {"model": cfg.llm.model, "judged": len(verdicts), "failed": len(judgements) - len(verdicts),
            "rejected": sum(bool(v.problems(cfg)) for v in verdicts),
            "thresholds": {"min_persona": cfg.min_persona, "min_naturalness": cfg.min_naturalness,
                           "min_engagement": cfg.min_engagement, "max_axis_disagreements": cfg.max_axis_disagreements},
            "requests": sum(j.requests for j in judgements), "repairs": sum(j.repairs for j in judgements),
            "agreement": agreement(verdicts), "by_type": by_type}


def seed_profiles(types: set[str] | list[str], seeds_dir: Path = DEFAULT_SEEDS_DIR) -> dict[str, str]:
    """The profile text of each type from `seeds/personas/` (what the persona request judges against)."""
    wanted = tuple(t for t in MBTI_TYPES if t in set(types))
    personas, problems = load_personas(seeds_dir, wanted)
    if problems:
        raise UserError(f"the judge needs the persona of every judged type: {problems[0]}"
                        + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return {t: p.profile_text() for t, p in personas.items()}


class Judge:
    """Judges `Dialogue`s with any OpenAI-compatible model through the LLM step; answers cached in `cache`.

    `judge(records, profiles)` returns a `Judgement` per record (profiles: type → profile text).
    `max_cost` caps what this judge's cache may be billed in all (earlier invocations count);
    `progress(done, total)` is called as dialogues finish.
    """

    def __init__(self, cfg: JudgeConfig, cache: Path, api_key: str | None = None,
                 progress: Callable[[int, int], None] | None = None, max_cost: float | None = None,
                 price: Price | None = None, cap_flag: str = "--max-cost"):
        self.cfg = cfg
        self.cache = Path(cache)
        self.api_key = api_key
        self.progress = progress or (lambda done, total: None)
        self.max_cost = max_cost
        self.cap_flag = cap_flag
        """The option that sets the cap, as the messages name it (eval's is --judge-max-cost)."""
        self.price = price or price_for(cfg.llm.model)
        self.stats = {"sent": 0, "cached": 0}
        """Requests sent to the server / answered from the cache by this instance (not in report.json: a rerun differs)."""
        if not (api_key or os.environ.get("OPENAI_API_KEY")) and not resolve_base_url(cfg.llm.base_url):
            raise UserError("--judge needs a model: set OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL / --base-url for "
                            "a local OpenAI-compatible server (vLLM, Ollama, llama.cpp)")
        if max_cost is not None and self.price is None:
            prefix = cap_flag[:-len("max-cost")]  # --max-cost -> --price-in; --judge-max-cost -> --judge-price-in
            raise UserError(f"no price known for judge model {cfg.llm.model}, so {cap_flag} cannot be enforced; pass "
                            f"{prefix}price-in and {prefix}price-out (USD per 1M tokens; 0 for a local server)")

    def resolved(self) -> dict[str, Any]:
        """The judge's settings as recorded in a run's history (no credentials)."""
        return {**self.cfg.resolved(), "max_cost": self.max_cost, "price": self.price.to_dict() if self.price else None}

    def judge(self, records: list[Dialogue], profiles: dict[str, str]) -> list[Judgement]:
        """A judgement per record, in order; raises UserError when the stage cannot finish (all answers stay cached)."""
        missing = sorted({d.mbti for d in records} - set(profiles))
        if missing:
            raise UserError(f"the judge needs the persona profile of every judged type; missing: {', '.join(missing)}")
        if not records:
            return []
        store = ResponseStore(self.cache)
        budget = Budget(self.max_cost, self.price, TokenCounter(self.cfg.llm.model) if self.max_cost is not None else None,
                        spent_before=stored_spend(store.lines(), self.price), flag=self.cap_flag)
        done = {"n": 0}

        async def main() -> list[Judgement]:
            async with LLMClient(self.cfg.llm, api_key=self.api_key) as client:
                step: LLMStep = LLMStep(client, lambda call: store, budget, parse=parse_call, repair=repair_messages,
                                        max_attempts=self.cfg.max_parse_attempts,
                                        max_failures_in_a_row=self.cfg.max_failures_in_a_row, what="judge requests")

                async def one(d: Dialogue) -> Judgement:
                    g, p = judge_calls(d, profiles[d.mbti], self.cfg.llm)
                    guess, persona = await asyncio.gather(step.run(g), step.run(p))
                    done["n"] += 1
                    self.progress(done["n"], len(records))
                    return judgement(d, guess, persona)

                try:
                    return await gather_all(one(d) for d in records)
                finally:
                    self.stats["sent"] += step.sent
                    self.stats["cached"] += step.cached

        try:
            return asyncio.run(main())
        except LLMFatalError as e:
            raise UserError(f"judge: {e}; answers so far are cached in {self.cache}") from None
        except (StageStopped, BudgetExhausted) as e:
            more = f"; rerun with a higher {self.cap_flag} to continue" if isinstance(e, BudgetExhausted) else ""
            raise UserError(f"judge stopped: {e}; nothing was written, answers so far are cached in {self.cache}: "
                            f"rerun the same command to continue{more}") from None
        finally:
            store.close()

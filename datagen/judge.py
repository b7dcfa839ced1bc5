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
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from statistics import mean
from typing import Any, Callable

from datagen.curate import JUDGE_FAILED, PERSONA, Item
from datagen.errors import UserError
from datagen.llm import (ChatResult, LLMClient, LLMConfig, LLMFatalError, ResponseStore, completion_failure,
                         read_completion, redact_url, request_hash, resolve_base_url,
                         uses_max_completion_tokens)
from datagen.prompts import load_template
from datagen.schema import MBTI_TYPES, Dialogue
from datagen.seeds import DEFAULT_SEEDS_DIR, Persona, load_personas

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
    body: dict[str, Any] = {"model": llm.model, "messages": messages, "temperature": llm.temperature}
    body["max_completion_tokens" if uses_max_completion_tokens(llm.model) else "max_tokens"] = llm.max_tokens
    if llm.structured_output != "none":
        body["response_format"] = ({"type": "json_schema", "json_schema": SCHEMAS[kind]}
                                   if llm.structured_output == "json_schema" else {"type": "json_object"})
    return body


# --- parsing (pure) -----------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def parse_answer(content: str | None, kind: str) -> tuple[dict[str, Any] | None, str | None]:
    """The judge's form as `{field: value}`, or (None, what is wrong) for the repair turn and the report.

    >>> parse_answer('```json\\n{"reason": "차분함", "guess": "istj", "naturalness": 4, "engagement": "5"}\\n```', "guess")
    ({'reason': '차분함', 'guess': 'ISTJ', 'naturalness': 4, 'engagement': 5}, None)
    >>> parse_answer('{"reason": "", "persona": 7}', "persona")
    (None, 'persona must be an integer from 1 to 5, got 7')
    """
    text = _FENCE.sub("", content or "").strip()
    try:
        obj = json.loads(text)
    except ValueError:
        start, end = text.find("{"), text.rfind("}")
        try:
            obj = json.loads(text[start:end + 1]) if 0 <= start < end else None
        except ValueError:
            obj = None
    if not isinstance(obj, dict):
        return None, f"not a JSON object: {text[:80]!r}"
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


# --- the calls ----------------------------------------------------------------------------------


@dataclass
class _Asked:
    answer: dict[str, Any] | None = None
    problem: str = ""
    requests: int = 0
    repairs: int = 0


class Judge:
    """Judges the kept records of a curate run; `apply` is what `curate(..., judge=...)` calls.

    Personas come from `seeds_dir`; answers are cached in `<run_dir>/judge/raw.jsonl`.
    `progress(done, total)` is called as dialogues finish.
    """

    def __init__(self, cfg: JudgeConfig, run_dir: Path, seeds_dir: Path = DEFAULT_SEEDS_DIR, api_key: str | None = None,
                 progress: Callable[[int, int], None] | None = None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.seeds_dir = Path(seeds_dir)
        self.api_key = api_key
        self.progress = progress or (lambda done, total: None)
        self.stats = {"sent": 0, "cached": 0}
        """Requests sent to the server / answered from the cache by this instance (not in report.json: a rerun differs)."""
        if not (api_key or os.environ.get("OPENAI_API_KEY")) and not resolve_base_url(cfg.llm.base_url):
            raise UserError("--judge needs a model: set OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL / --base-url for "
                            "a local OpenAI-compatible server (vLLM, Ollama, llama.cpp)")

    def apply(self, items: list[Item]) -> dict[str, Any]:
        """Judge every kept item; reject with `persona` or `judge_failed`; return the report section."""
        todo = [it for it in items if it.kept]
        records = [it.record for it in todo]
        personas = self._personas({d.mbti for d in records})
        results = self._run(records, personas)
        verdicts: list[Verdict] = []
        failed = rejected = 0
        for it, d, (guess, persona) in zip(todo, records, results):
            if guess.answer is None or persona.answer is None:
                bad = guess if guess.answer is None else persona
                it.reject(JUDGE_FAILED, f"no usable judge answer after {bad.requests} request(s): {bad.problem}")
                failed += 1
                continue
            v = Verdict(d.mbti, guess.answer["guess"], persona.answer["persona"], guess.answer["naturalness"],
                        guess.answer["engagement"], (guess.answer["reason"], persona.answer["reason"]))
            verdicts.append(v)
            it.judge = v.to_meta(self.cfg.llm.model)
            if problems := v.problems(self.cfg):
                it.reject(PERSONA, "; ".join(problems))
                rejected += 1
        by_type = {t: agreement([v for v in verdicts if v.claimed == t]) for t in MBTI_TYPES
                   if any(v.claimed == t for v in verdicts)}
        requests = sum(g.requests + p.requests for g, p in results)
        repairs = sum(g.repairs + p.repairs for g, p in results)
        return {"model": self.cfg.llm.model, "judged": len(verdicts), "failed": failed, "rejected": rejected,
                "thresholds": {"min_persona": self.cfg.min_persona, "min_naturalness": self.cfg.min_naturalness,
                               "min_engagement": self.cfg.min_engagement,
                               "max_axis_disagreements": self.cfg.max_axis_disagreements},
                "requests": requests, "repairs": repairs,
                "agreement": agreement(verdicts), "by_type": by_type}

    def _personas(self, types: set[str]) -> dict[str, Persona]:
        wanted = tuple(t for t in MBTI_TYPES if t in types)
        personas, problems = load_personas(self.seeds_dir, wanted)
        if problems:
            raise UserError(f"the judge needs the persona of every judged type: {problems[0]}"
                            + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        return personas

    def _run(self, records: list[Dialogue], personas: dict[str, Persona]) -> list[tuple[_Asked, _Asked]]:
        store = ResponseStore(self.run_dir / CACHE_FILE)
        state = {"fails_in_a_row": 0, "last": "", "stop": "", "done": 0}

        async def ask(client: LLMClient, messages: list[dict[str, str]], kind: str, d: Dialogue) -> _Asked:
            asked = _Asked()
            for attempt in range(self.cfg.max_parse_attempts):
                if state["stop"]:
                    asked.problem = "stopped: " + state["stop"]
                    return asked
                body = request_body(messages, kind, self.cfg.llm)
                key = request_hash(body)
                line = store.get(key)
                asked.requests += 1
                if line is None:
                    res = await client.complete(body, key=key)
                    line = _raw_line(key, kind, d, res)
                    store.add(line)
                    self.stats["sent"] += 1
                    if res.completion is None:
                        state["fails_in_a_row"] += 1
                        state["last"] = f"{res.error}: {res.detail}"
                        if state["fails_in_a_row"] >= self.cfg.max_failures_in_a_row and not state["stop"]:
                            where = redact_url(client.base_url) or "OpenAI"
                            state["stop"] = (f"{state['fails_in_a_row']} judge requests in a row failed at {where} "
                                             f"(last: {state['last']})")
                        asked.problem = f"request failed: {res.error}: {res.detail}"
                        return asked
                    state["fails_in_a_row"] = 0
                else:
                    self.stats["cached"] += 1
                c = read_completion(line["completion"])
                failure = completion_failure(c)
                answer, problem = (None, f"{failure[0]}: {failure[1]}") if failure else parse_answer(c.content, kind)
                if answer is not None:
                    asked.answer = answer
                    return asked
                asked.problem = problem or ""
                if attempt + 1 < self.cfg.max_parse_attempts:
                    messages = repair_messages(messages, c.content, asked.problem)
                    asked.repairs += 1
            return asked

        async def one(client: LLMClient, d: Dialogue) -> tuple[_Asked, _Asked]:
            guess, persona = await asyncio.gather(
                ask(client, guess_messages(d), "guess", d),
                ask(client, persona_messages(d, personas[d.mbti].profile_text()), "persona", d))
            state["done"] += 1
            self.progress(state["done"], len(records))
            return guess, persona

        async def main() -> list[tuple[_Asked, _Asked]]:
            async with LLMClient(self.cfg.llm, api_key=self.api_key) as client:
                return list(await asyncio.gather(*(one(client, d) for d in records)))

        try:
            if not records:
                return []
            results = asyncio.run(main())
        except LLMFatalError as e:
            raise UserError(f"judge: {e}; answers so far are cached in {self.run_dir / CACHE_FILE}") from None
        finally:
            store.close()
        if state["stop"]:
            raise UserError(f"judge stopped: {state['stop']}; nothing was written, answers so far are cached in "
                            f"{self.run_dir / CACHE_FILE}: rerun the same command to continue")
        return results


def _raw_line(key: str, kind: str, d: Dialogue, res: ChatResult) -> dict[str, Any]:
    return {"request_hash": key, "kind": kind, "mbti": d.mbti, "record": d.id, "response_format": res.response_format,
            "attempts": res.attempts, "latency_s": round(res.latency_s, 3),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "completion": res.completion, "error": res.error, "detail": res.detail}

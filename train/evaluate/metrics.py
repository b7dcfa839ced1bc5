"""The numbers of `results.json`, from the generated chats, the judge's verdicts and the losses (all pure).

One block of metrics per condition, the same block per type inside it:

- the blind judge (assistant turns only, no type shown): `full_type` accuracy, accuracy per axis
  (`axes`: E/I, S/N, T/F, J/P), and the 16×16 `confusion` (claimed → guessed → count);
- the judge's `scores`, 1–5 means: `persona` (consistency with the claimed profile), `naturalness`, `engagement`;
- the shared Korean rules (datagen/checks.py) over each whole chat: `rules_pass` (share of chats breaking
  none) and `rules_failed` (rule → chats). The shape rules (exchange count and length bounds) are left out:
  the held-out chat fixes those, not the model. `empty_reply` counts chats with a reply that has no text;
- `stop_rate`: assistant turns that ended on end-of-turn rather than at max_new_tokens;
- `distinct_1`, `distinct_2`: distinct word uni/bigrams over all replies of one type (whitespace words, within
  a reply; Li et al. 2016). A condition's value is the mean over its types: pooling every type would let the
  16 personas' different words count as variety;
- `reply_chars_mean`: characters per reply (the `held_out` block gives the dataset's own for comparison);
- `loss`, `perplexity`: on the replayed chats with the training labels (train/evaluate/loss.py).

A metric that cannot be computed (no verdict, no loss for `reference`, no turn facts for the held-out data)
is `null`; its key is always there.
"""

from __future__ import annotations

from collections import Counter
from statistics import mean
from typing import Any, Sequence

from datagen.checks import CheckConfig, violations
from datagen.judge import AXES, SCORES, Verdict, confusion
from datagen.schema import MBTI_TYPES, Dialogue
from train.evaluate.loss import aggregate
from train.evaluate.replay import EMPTY_REPLY, replies

SHAPE_RULES = frozenset({"too_few_exchanges", "too_many_exchanges", "too_short", "too_long", "register_mismatch"})
"""Rules about a chat's shape, set by the held-out chat (how many exchanges, how long), or about curation
metadata: not counted against a model."""
EMPTY_REPLY_RULE = "empty_reply"


def _r(x: float | None, digits: int) -> float | None:
    return None if x is None else round(float(x), digits)


def replies_only(d: Dialogue) -> Dialogue:
    """The chat with every user turn replaced by a neutral, distinct placeholder: the rules then judge only
    what the model wrote (the user turns are the held-out chat's, the same for every condition, and Korean
    user turns would water down the Hangul share of a reply drifting into Chinese). Empty replies get distinct
    placeholders too: they count once, as `empty_reply`, never as repeated turns."""
    msgs = [{"role": "user", "content": f"질문 {k}"} if m["role"] != "assistant"
            else {"role": "assistant", "content": f"{EMPTY_REPLY} {k}"} if m["content"] == EMPTY_REPLY
            else m for k, m in enumerate(d.messages)]
    return Dialogue(id=None, mbti=d.mbti, topic=d.topic, messages=msgs, source=d.source)  # type: ignore[arg-type]


def rule_failures(d: Dialogue, cfg: CheckConfig = CheckConfig()) -> list[str]:
    """The shared rules the model's replies break (shape rules left out), plus `empty_reply` for a reply with
    no text."""
    failed = [v.rule for v in violations(replies_only(d), cfg) if v.rule not in SHAPE_RULES]
    if any(r == "" for r in replies(d)):
        failed.append(EMPTY_REPLY_RULE)
    return failed


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct word n-grams / all word n-grams over `texts` (n-grams never cross two texts); None if there are none.

    >>> distinct_n(["좋아 좋아 정말", "좋아"], 1), distinct_n(["좋아 좋아 좋아"], 2)
    (0.5, 0.5)
    """
    grams: list[tuple[str, ...]] = []
    for t in texts:
        w = t.split()
        grams += [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else None


def _stops(d: Dialogue) -> list[bool] | None:
    turns = d.meta.get("turns") if d.source == "eval" else None
    if not isinstance(turns, list):
        return None
    return [bool(t.get("stopped")) for t in turns if isinstance(t, dict)]


def block(chats: list[Dialogue], verdicts: Sequence[Verdict | None] | None, losses: dict[str, Any] | None,
          rule_cfg: CheckConfig = CheckConfig(), broken: list[set[str]] | None = None,
          distinct: bool = True) -> dict[str, Any]:
    """The metrics of a set of chats (one condition, or one type of it); `verdicts` align with `chats`.

    `verdicts` None: the judge did not run; `losses` None: no loss for these chats (held-out id → [nll, n]).
    `broken`: each chat's `rule_failures` when the caller has them; `distinct` False leaves distinct-n to the
    caller (None here).
    """
    judged = [v for v in (verdicts or []) if v is not None]
    n = len(judged)
    texts = [r for d in chats for r in replies(d)]
    stops = [s for d in chats for s in (_stops(d) or [])]
    has_stops = bool(chats) and all(_stops(d) is not None for d in chats)
    if broken is None:
        broken = [set(rule_failures(d, rule_cfg)) for d in chats]
    failed = Counter(rule for rules in broken for rule in rules)
    clean = sum(1 for rules in broken if not rules)
    loss, ppl = aggregate([losses.get(d.meta.get("held_out", d.id)) for d in chats]) if losses is not None else (None, None)
    return {
        "n_chats": len(chats),
        "n_turns": len(texts),
        "n_judged": n if verdicts is not None else None,
        "full_type": _r(sum(v.guess == v.claimed for v in judged) / n, 4) if n else None,
        "axes": {ax: _r(sum(v.axes[i] for v in judged) / n, 4) if n else None for i, ax in enumerate(AXES)},
        "scores": {s: _r(mean(getattr(v, s) for v in judged), 2) if n else None for s in SCORES},
        "rules_pass": _r(clean / len(chats), 4) if chats else None,
        "rules_failed": dict(sorted(failed.items(), key=lambda kv: (-kv[1], kv[0]))),
        "stop_rate": _r(sum(stops) / len(stops), 4) if has_stops and stops else None,
        "distinct_1": _r(distinct_n(texts, 1), 4) if distinct else None,
        "distinct_2": _r(distinct_n(texts, 2), 4) if distinct else None,
        "reply_chars_mean": _r(mean(len(t) for t in texts), 1) if texts else None,
        "loss": _r(loss, 4),
        "perplexity": _r(ppl, 3),
    }


def condition_results(chats: list[Dialogue], verdicts: Sequence[Verdict | None] | None,
                      losses: dict[str, Any] | None, rule_cfg: CheckConfig = CheckConfig()) -> dict[str, Any]:
    """One condition's block in the issue's key order, with `per_type` and `confusion`.

    Overall distinct-n is the mean of the per-type values (see the module docstring).
    """
    types = [t for t in MBTI_TYPES if any(d.mbti == t for d in chats)]
    broken = [set(rule_failures(d, rule_cfg)) for d in chats]  # once: the per-type blocks and the overall share them
    per_type = {}
    for t in types:
        idx = [i for i, d in enumerate(chats) if d.mbti == t]
        per_type[t] = block([chats[i] for i in idx], None if verdicts is None else [verdicts[i] for i in idx],
                            losses, rule_cfg, [broken[i] for i in idx])
    overall = block(chats, verdicts, losses, rule_cfg, broken, distinct=False)
    for n in (1, 2):
        values = [distinct_n([r for d in chats if d.mbti == t for r in replies(d)], n) for t in types]
        values = [v for v in values if v is not None]
        overall[f"distinct_{n}"] = _r(mean(values), 4) if values else None
    judged = [v for v in (verdicts or []) if v is not None]
    order = ["n_chats", "n_turns", "n_judged", "full_type", "axes"]
    out = {k: overall[k] for k in order}
    out["per_type"] = per_type
    out["confusion"] = confusion(judged) if judged else None
    out.update({k: v for k, v in overall.items() if k not in order})
    return out


def results(name: str, judge_model: str | None, limit_per_type: int | None,
            conditions: dict[str, dict[str, Any]], held_out: dict[str, Any], setup: dict[str, Any],
            notes: list[str]) -> dict[str, Any]:
    """`results.json`: the issue's keys first (name, judge_model, limit_per_type, conditions), then the held-out
    data's own text metrics (the yardstick for reply length and variety), how the run was set up, and notes."""
    return {"name": name, "judge_model": judge_model, "limit_per_type": limit_per_type, "conditions": conditions,
            "held_out": held_out, "setup": setup, "notes": notes}

"""report.md and the confusion-matrix PNGs, written from results.json (and the chats, for the samples).

lm-evaluation-harness's habit: the machine-readable results come first and the human report is a view of
them, so the report never says a number results.json does not hold. Plot labels stay ASCII (type codes,
English axis titles): most machines have no CJK font and matplotlib would draw Hangul as boxes.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

from datagen.judge import AXES
from datagen.schema import MBTI_TYPES, Dialogue
from train.evaluate.replay import replies

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
SAMPLE_CHARS = 160  # a sample turn longer than this is cut: the report shows the style, not the whole chat
DATA = "held_out"
DISCLAIMER = ("MBTI is a popular typology, not a validated clinical instrument: the personas are conversational "
              "styles, never diagnoses.")

# (label, key, format): the summary table's rows, in reading order.
ROWS: list[tuple[str, tuple[str, ...], str]] = [
    ("chats", ("n_chats",), "int"),
    ("assistant turns", ("n_turns",), "int"),
    ("chats judged", ("n_judged",), "int"),
    ("**full type accuracy** (blind judge)", ("full_type",), "pct"),
    *[(f"axis {ax}", ("axes", ax), "pct") for ax in AXES],
    ("persona consistency (1-5)", ("scores", "persona"), "f2"),
    ("naturalness (1-5)", ("scores", "naturalness"), "f2"),
    ("engagement (1-5)", ("scores", "engagement"), "f2"),
    ("Korean rules pass", ("rules_pass",), "pct"),
    ("stop rate (end-of-turn)", ("stop_rate",), "pct"),
    ("distinct-1", ("distinct_1",), "f3"),
    ("distinct-2", ("distinct_2",), "f3"),
    ("reply characters (mean)", ("reply_chars_mean",), "f1"),
    ("loss", ("loss",), "f3"),
    ("perplexity", ("perplexity",), "f2"),
]


def fmt(value: Any, kind: str) -> str:
    """A cell: `-` for null.

    >>> fmt(0.8125, "pct"), fmt(None, "f2"), fmt(3.0, "f2"), fmt(12, "int")
    ('81.2%', '-', '3.00', '12')
    """
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "int":
        return str(int(value))
    return f"{value:.{kind[1]}f}"


def lookup(block: dict[str, Any] | None, path: tuple[str, ...]) -> Any:
    """The value at `path` in nested results (None where a level is missing)."""
    for key in path:
        if not isinstance(block, dict):
            return None
        block = block.get(key)
    return block


def escape(text: str, limit: int = SAMPLE_CHARS) -> str:
    """One line of model text made safe for markdown (a random model writes anything), cut at `limit`.

    >>> escape("<b>*안녕*</b>\\n| 잘 가"), escape("가나다라마", 3)
    ('&lt;b&gt;\\\\*안녕\\\\*&lt;/b&gt; / \\\\| 잘 가', '가나다…')
    """
    one = " / ".join(x.strip() for x in text.strip().splitlines() if x.strip()) or "(empty)"
    if len(one) > limit:
        one = one[:limit].rstrip() + "…"
    return re.sub(r"([\\`*_\[\]|#])", r"\\\1", html.escape(one, quote=False))


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|",
            *["| " + " | ".join(r) + " |" for r in rows]]


def write_confusion_png(matrix: dict[str, dict[str, int]], title: str, path: Path) -> None:
    """A 16x16 heatmap: rows the claimed type, columns the judge's guess, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    counts = [[matrix.get(c, {}).get(g, 0) for g in MBTI_TYPES] for c in MBTI_TYPES]
    fig, ax = plt.subplots(figsize=(7.2, 6.4))
    im = ax.imshow(counts, cmap="Blues", vmin=0)
    ax.set_xticks(range(len(MBTI_TYPES)), MBTI_TYPES, rotation=90, fontsize=8)
    ax.set_yticks(range(len(MBTI_TYPES)), MBTI_TYPES, fontsize=8)
    ax.set_xlabel("judge's blind guess")
    ax.set_ylabel("persona the model was prompted with")
    ax.set_title(title, fontsize=10)
    top = max((max(r) for r in counts), default=0)
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            if n:  # a right guess (the diagonal) in bold, so hits and misses read at a glance
                ax.text(j, i, str(n), ha="center", va="center", fontsize=7, fontweight="bold" if i == j else "normal",
                        color="white" if n > top / 2 else "black")
    ax.set_xticks([k - 0.5 for k in range(1, len(MBTI_TYPES))], minor=True)
    ax.set_yticks([k - 0.5 for k in range(1, len(MBTI_TYPES))], minor=True)
    ax.grid(which="minor", color="#DDDDDD", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    ax.plot([-0.5, len(MBTI_TYPES) - 0.5], [-0.5, len(MBTI_TYPES) - 0.5], color="#C44E52", linewidth=0.6, alpha=0.35,
            zorder=1)  # the diagonal: a right guess
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="chats")
    bar.locator = matplotlib.ticker.MaxNLocator(integer=True)
    bar.update_ticks()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Software": None})  # bytes depend on the data only
    plt.close(fig)


def write_plots(results: dict[str, Any], folder: Path) -> dict[str, str]:
    """A confusion PNG per judged condition; condition → path relative to `folder`."""
    out = {}
    for cond, block in results["conditions"].items():
        if not block.get("confusion"):
            continue
        rel = f"{PLOTS_DIR}/confusion_{cond}.png"
        title = (f"{cond}: full type {fmt(block['full_type'], 'pct')} of {block['n_judged']} judged chats "
                 f"({results.get('judge_model')})")
        write_confusion_png(block["confusion"], title, folder / rel)
        out[cond] = rel
    return out


def pick_samples(chats: dict[str, list[Dialogue]], k: int) -> list[str]:
    """Held-out ids of `k` chats every condition replayed, of types spread over those present (deterministic)."""
    if not chats or k <= 0:
        return []
    everywhere = set.intersection(*[{d.meta.get("held_out") for d in cs} for cs in chats.values()])
    first = next(iter(chats.values()))
    by_type: dict[str, list[Dialogue]] = {}
    for d in first:
        if d.meta.get("held_out") in everywhere:
            by_type.setdefault(d.mbti, []).append(d)
    types = [t for t in MBTI_TYPES if t in by_type]
    if not types:
        return []
    picks = [types[(i * len(types)) // k] for i in range(min(k, len(types)))] if len(types) >= k else types
    ids = []
    for t in picks:  # the chat of each picked type with the shortest first user turn: a short exchange
        d = min(by_type[t], key=lambda x: (len(x.turns("user")[0]), x.meta.get("held_out")))
        ids.append(d.meta["held_out"])
    return ids


def render_report(results: dict[str, Any], chats: dict[str, list[Dialogue]], plots: dict[str, str],
                  samples: int = 3) -> str:
    """report.md's text."""
    conds = list(results["conditions"])
    blocks = results["conditions"]
    setup = results.get("setup", {})
    data = results.get(DATA) or {}
    lines = [f"# Evaluation: {results['name']}", ""]
    lines += [f"Checkpoint `{setup.get('checkpoint')}` (base `{setup.get('base_model')}`), replaying "
              f"{data.get('n_chats', 0)} held-out chats from `{setup.get('held_out')}`"
              + (f", at most {results['limit_per_type']} per type" if results.get("limit_per_type") else "")
              + ". For every chat the user turns are sent again and the model writes every assistant turn, with "
              "the persona system prompt saved with the checkpoint; its own earlier replies stay in context.", ""]
    gen = setup.get("generation", {})
    models = setup.get("models", {})
    lines += ["- conditions: " + ", ".join(f"`{c}` ({models.get(c, '?')})" for c in conds),
              f"- generation: {setup.get('backend')}; "
              + ("greedy" if not gen.get("temperature") else f"sampled at temperature {gen.get('temperature')}, "
                 f"top_p {gen.get('top_p')}, seed {gen.get('seed')}")
              + f", at most {gen.get('max_new_tokens')} new tokens per reply",
              f"- judge: `{results.get('judge_model')}`" + ("" if results.get("judge_model") else " (not run: --no-judge)")
              + " sees only the assistant's turns and guesses the type blind; persona consistency is scored against "
              "the claimed type's profile (datagen/judge.py)",
              "", DISCLAIMER, ""]
    for note in results.get("notes") or []:
        lines.append(f"> note: {note}")
    if results.get("notes"):
        lines.append("")

    lines += ["## Summary", ""]
    header = ["metric", *[f"`{c}`" for c in conds], "held-out data"]
    rows = [[label, *[fmt(lookup(blocks[c], path), kind) for c in conds], fmt(lookup(data, path), kind)]
            for label, path, kind in ROWS]
    lines += table(header, rows)
    lines += ["", "Accuracies are over the judged chats (chance: 6.25% for the full type, 50% per axis). Stop rate: "
              "assistant turns that ended on the end-of-turn token rather than at the token limit. Distinct-n: "
              "distinct word n-grams over one type's replies, averaged over types. Loss and perplexity: the "
              "training labels (every assistant reply and its end-of-turn token) on the replayed chats.", ""]

    types = [t for t in MBTI_TYPES if any(t in (blocks[c].get("per_type") or {}) for c in conds)]
    if types:
        lines += ["## Per type", "", "Full-type accuracy / persona consistency (1-5) of the judged chats:", ""]
        rows = []
        for t in types:
            n = max((lookup(blocks[c], ("per_type", t, "n_chats")) or 0) for c in conds)
            cells = [f"{fmt(lookup(blocks[c], ('per_type', t, 'full_type')), 'pct')} / "
                     f"{fmt(lookup(blocks[c], ('per_type', t, 'scores', 'persona')), 'f2')}" for c in conds]
            rows.append([t, str(n), *cells])
        lines += table(["type", "chats", *[f"`{c}`" for c in conds]], rows)
        lines += ["", "Reply characters (mean) and stop rate:", ""]
        rows = []
        for t in types:
            cells = [f"{fmt(lookup(blocks[c], ('per_type', t, 'reply_chars_mean')), 'f1')} / "
                     f"{fmt(lookup(blocks[c], ('per_type', t, 'stop_rate')), 'pct')}" for c in conds]
            rows.append([t, *cells, fmt(lookup(data, ("per_type", t, "reply_chars_mean")), "f1")])
        lines += table(["type", *[f"`{c}`" for c in conds], "held-out data"], rows)
        lines.append("")

    rules = sorted({r for c in conds for r in (blocks[c].get("rules_failed") or {})} | set(data.get("rules_failed") or {}))
    lines += ["## Korean rules", ""]
    if rules:
        lines += ["Chats breaking each shared rule (datagen/checks.py; `empty_reply`: a reply with no text):", ""]
        rows = [[f"`{r}`", *[str((blocks[c].get("rules_failed") or {}).get(r, 0)) for c in conds],
                 str((data.get("rules_failed") or {}).get(r, 0))] for r in rules]
        lines += table(["rule", *[f"`{c}`" for c in conds], "held-out data"], rows)
    else:
        lines.append("No chat breaks a rule.")
    lines.append("")

    lines += ["## Confusion matrices", ""]
    if plots:
        lines += ["Rows: the persona the model was prompted with; columns: the judge's blind guess. The diagonal is "
                  "a right guess.", ""]
        lines += [f"![{c}]({rel})" for c, rel in plots.items()]
    else:
        lines.append("None: no chat was judged.")
    lines.append("")

    ids = pick_samples(chats, samples)
    if ids:
        lines += ["## Sample exchanges", "", "The first exchange of the same held-out chats in every condition "
                  "(replies cut at %d characters)." % SAMPLE_CHARS, ""]
        for c in conds:
            lines += [f"### `{c}`", ""]
            by_id = {d.meta.get("held_out"): d for d in chats.get(c, [])}
            for i, hid in enumerate(ids, 1):
                d = by_id[hid]
                stop = (d.meta.get("turns") or [{}])[0].get("stopped")
                lines += [f"{i}. **{d.mbti}** ({escape(d.topic, 40)})",
                          f"   - user: {escape(d.turns('user')[0])}",
                          f"   - {d.mbti}: {escape(replies(d)[0])}" + ("" if stop else " *(cut at the token limit)*")]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_report(folder: Path, results: dict[str, Any], chats: dict[str, list[Dialogue]], samples: int = 3) -> Path:
    plots = write_plots(results, folder)
    path = folder / REPORT_FILE
    path.write_text(render_report(results, chats, plots, samples), encoding="utf-8")
    return path

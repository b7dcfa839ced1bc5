"""The dataset card and its plots, for `datagen publish`.

Modelled on distilabel's auto cards: a YAML header the Hub reads (license, language,
size category, tags, `configs` with `data_files` per split, `dataset_info`), then a body
that explains the data to a stranger: what it is, how to load it and train on it, how it
was made (seeds, generation settings, every curation count), statistics with plots, two
short examples, and its limits.

Everything here is pure except `write_plots`: the card is a function of the rows and of
what the earlier stages left behind (`config.json`, `report.json`), so the same inputs
give the same README byte for byte (no dates), and a rerun uploads nothing new.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from datagen.schema import MBTI_TYPES
from datagen.seeds import Persona

# The Hub's size buckets (datasets/utils/resources/size_categories.json): upper bounds.
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))
TAGS = ("mbti", "persona", "korean", "multi-turn", "conversational", "synthetic", "sft", "role-play")
TRL_BASE_MODEL = "MLP-KTLim/llama-3-Korean-Bllossom-8B"  # Bllossom 8B: the base the README and `make train` default to
PLACEHOLDER_REPO = "USER/NAME"
PLOTS = {  # file under plots/ → alt text in the card
    "type_counts.png": "Dialogues per MBTI type, by split",
    "exchanges.png": "Histogram of exchanges per dialogue",
    "lengths.png": "Histogram of characters per turn, user and assistant",
}
MAX_REPORT_ROWS = 80      # a report.json bigger than this is cut, with a note: the card stays readable
# report.json keys not flattened into the counts table: shown as their own table or folded block, or not card material.
REPORT_APART = ("run", "summary", "by_type", "bad_lines", "files", "config")
MAX_JOINED = 120          # a list of scalars longer than this (joined) is shown as its length
MAX_CONFIG_STRING = 300   # long strings in config.json (whole prompts) are shortened in the card
# Keys whose values never go into a card, whatever config.json holds (max_tokens etc. are kept).
_SECRET_KEY = re.compile(r"(api[_-]?key|secret|passw|authori[sz]ation|cookie|^headers?$|^token$|[_-]token$|^key$)", re.I)
_SECRET_VALUE = re.compile(r"^(sk-|hf_|Bearer\s)\S{8,}")


@dataclass(frozen=True)
class CardInputs:
    """Everything the card says, gathered by `datagen.publish`."""

    run: str
    pretty_name: str
    license: str
    repo_id: str | None
    splits: dict[str, list[dict[str, Any]]]
    """Published rows per split (system message first in `messages`)."""
    personas: dict[str, Persona]
    seed_counts: dict[str, int]
    """Hand-written seed dialogues per type in the seeds folder."""
    test_share: float
    split_seed: int
    dataset_info: dict[str, Any]
    """The `dataset_info` YAML block (features, split sizes) from `datasets`."""
    generation_config: dict[str, Any] | None = None
    """`outputs/runs/<run>/config.json`, if the run has one."""
    curation_report: dict[str, Any] | None = None
    """`outputs/runs/<run>/report.json`, if the run has one."""
    notes: tuple[str, ...] = field(default_factory=tuple)
    """Input problems worth stating in the card (skipped lines, unreadable files)."""


# --- numbers ------------------------------------------------------------------------------------------


def size_category(n: int) -> str:
    """The Hub's size bucket.

    >>> size_category(999), size_category(1000), size_category(25_000)
    ('n<1K', '1K<n<10K', '10K<n<100K')
    """
    for bound, name in SIZE_CATEGORIES:
        if n < bound:
            return name
    return "n>10M" if n < 100_000_000 else "unknown"


def _turns(row: dict[str, Any], role: str) -> list[str]:
    return [m["content"] for m in row["messages"] if m["role"] == role]


def exchanges(row: dict[str, Any]) -> int:
    return len(_turns(row, "assistant"))


def describe(values: list[float]) -> dict[str, float]:
    """min / median / mean / p95 (nearest rank) / max.

    >>> describe([1, 2, 3, 4, 100])
    {'min': 1, 'median': 3, 'mean': 22.0, 'p95': 100, 'max': 100}
    """
    if not values:
        return {"min": 0, "median": 0, "mean": 0.0, "p95": 0, "max": 0}
    s = sorted(values)
    return {"min": s[0], "median": statistics.median(s), "mean": round(statistics.fmean(s), 1),
            "p95": s[max(0, math.ceil(0.95 * len(s)) - 1)], "max": s[-1]}


def type_table(splits: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per type present: counts per split and source, mean exchanges and assistant turn length."""
    rows = []
    for t in MBTI_TYPES:
        recs = [r for split in splits.values() for r in split if r["mbti"] == t]
        if not recs:
            continue
        sources = Counter(r["source"] for r in recs)
        assistant = [len(x) for r in recs for x in _turns(r, "assistant")]
        rows.append({"mbti": t, **{s: sum(r["mbti"] == t for r in splits[s]) for s in splits},
                     "total": len(recs), "seed": sources["seed"], "generated": sources["generated"],
                     "exchanges": statistics.fmean(exchanges(r) for r in recs),
                     "assistant_chars": statistics.fmean(assistant)})
    return rows


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested JSON → `(dotted.key, scalar)` pairs; lists of scalars are joined, other lists counted.

    >>> flatten({"kept": 9, "rejected": {"too_short": 2}, "types": ["ISTJ", "ENFP"]})
    [('kept', 9), ('rejected.too_short', 2), ('types', 'ISTJ, ENFP')]
    """
    if isinstance(obj, dict):
        out: list[tuple[str, Any]] = []
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(obj, list):
        joined = ", ".join(str(x) for x in obj)
        if all(isinstance(x, (str, int, float, bool)) or x is None for x in obj) and len(joined) <= MAX_JOINED:
            return [(prefix, joined)]
        return [(prefix, f"{len(obj)} items")]
    return [(prefix, obj)]


def scrub(obj: Any) -> Any:
    """A copy without secrets (keys like `api_key`, values like `sk-…`) and with long strings cut.

    >>> scrub({"model": "gpt-4o-mini", "api_key": "sk-abc", "max_tokens": 900, "client": {"auth_token": "x"}})
    {'model': 'gpt-4o-mini', 'max_tokens': 900, 'client': {}}
    """
    if isinstance(obj, dict):
        return {k: scrub(v) for k, v in obj.items() if not _SECRET_KEY.search(str(k))}
    if isinstance(obj, list):
        return [scrub(x) for x in obj]
    if isinstance(obj, str):
        if _SECRET_VALUE.match(obj):
            return "<redacted>"
        # URLs may carry credentials (https://user:pass@host); keep the host only.
        obj = re.sub(r"(https?://)[^/@\s]+@", r"\1", obj)
        return obj if len(obj) <= MAX_CONFIG_STRING else obj[:MAX_CONFIG_STRING] + f"… ({len(obj)} chars)"
    return obj


def models_used(splits: dict[str, list[dict[str, Any]]], generation_config: dict[str, Any] | None) -> list[str]:
    """Generator models: from the records' meta first, else from config.json (`llm.model` or `model`)."""
    counts = Counter(r["meta"]["model"] for split in splits.values() for r in split if r["meta"].get("model"))
    if counts:
        return [m for m, _ in counts.most_common()]
    cfg = generation_config or {}
    model = (cfg.get("llm") if isinstance(cfg.get("llm"), dict) else cfg).get("model")
    return [model] if isinstance(model, str) and model else []


# --- plots --------------------------------------------------------------------------------------------


def write_plots(splits: dict[str, list[dict[str, Any]]], folder: Path) -> list[str]:
    """The three PNGs under `folder/plots/`; returns their paths relative to `folder`.

    Axis labels stay ASCII: most machines that build datasets have no CJK font, and
    matplotlib would draw Hangul as empty boxes.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    out = folder / "plots"
    out.mkdir(parents=True, exist_ok=True)
    names = list(splits)
    rows = [r for split in splits.values() for r in split]
    colors = {"train": "#4C72B0", "test": "#DD8452"}

    fig, ax = plt.subplots(figsize=(10, 4.2))
    bottom = [0] * len(MBTI_TYPES)
    for s in names:
        counts = [sum(r["mbti"] == t for r in splits[s]) for t in MBTI_TYPES]
        ax.bar(MBTI_TYPES, counts, bottom=bottom, label=s, color=colors.get(s))
        bottom = [b + c for b, c in zip(bottom, counts)]
    for i, total in enumerate(bottom):
        ax.text(i, total, str(total), ha="center", va="bottom", fontsize=8)
    ax.set_title("Dialogues per MBTI type")
    ax.set_xlabel("type")
    ax.set_ylabel("dialogues")
    ax.tick_params(axis="x", labelrotation=45)
    ax.margins(y=0.12)
    ax.legend()
    _save(fig, out / "type_counts.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    ex = [exchanges(r) for r in rows]
    ax.hist(ex, bins=[x - 0.5 for x in range(min(ex), max(ex) + 2)], color="#4C72B0", rwidth=0.85)
    ax.set_title("Exchanges per dialogue")
    ax.set_xlabel("exchanges (user turn + assistant reply)")
    ax.set_ylabel("dialogues")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _save(fig, out / "exchanges.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    lengths = {role: [len(x) for r in rows for x in _turns(r, role)] for role in ("user", "assistant")}
    top = max(max(v) for v in lengths.values())
    bins = [top * i / 30 for i in range(31)]  # shared bins, so the two roles compare bar for bar
    for (role, values), color in zip(lengths.items(), ("#55A868", "#C44E52")):
        ax.hist(values, bins=bins, alpha=0.6, label=role, color=color)
    ax.set_title("Characters per turn")
    ax.set_xlabel("characters")
    ax.set_ylabel("turns")
    ax.legend()
    _save(fig, out / "lengths.png")
    plt.close("all")
    return [f"plots/{name}" for name in PLOTS]


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    # No "Software" stamp: the PNG bytes depend only on the data, so reruns upload nothing new.
    fig.savefig(path, dpi=110, metadata={"Software": None})


# --- the card -----------------------------------------------------------------------------------------


def card_header(inp: CardInputs) -> dict[str, Any]:
    """The YAML metadata the Hub reads."""
    total = sum(len(rows) for rows in inp.splits.values())
    return {
        "language": ["ko"],
        "license": inp.license,
        "pretty_name": inp.pretty_name,
        "size_categories": [size_category(total)],
        "task_categories": ["text-generation"],
        "tags": list(TAGS),
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*"} for s in inp.splits]}],
        "dataset_info": inp.dataset_info,
    }


def render_card(inp: CardInputs) -> str:
    """README.md: YAML header, then the body sections in reading order."""
    header = yaml.safe_dump(card_header(inp), allow_unicode=True, sort_keys=False, width=1000)
    sections = [_intro(inp), _usage(inp), _fields(), _examples(inp), _provenance(inp), _statistics(inp),
                _limitations(), _license(inp)]
    return f"---\n{header}---\n\n" + "\n\n".join(s.strip("\n") for s in sections) + "\n"


def _intro(inp: CardInputs) -> str:
    total = sum(len(r) for r in inp.splits.values())
    types = [t for t in MBTI_TYPES if any(r["mbti"] == t for rows in inp.splits.values() for r in rows)]
    split_text = ", ".join(f"{len(rows):,} {s}" for s, rows in inp.splits.items())
    missing = [t for t in MBTI_TYPES if t not in types]
    lines = [
        f"# {inp.pretty_name}",
        "",
        f"Korean multi-turn chats in which the assistant talks in the conversational style of one of the "
        f"16 MBTI types. {total:,} dialogues ({split_text}) over {len(types)} types, "
        f"run `{inp.run}`.",
        "",
        "한국어 멀티턴 대화 데이터셋입니다. 어시스턴트는 MBTI 16유형 중 하나의 대화 스타일로 말하고, "
        "사용자는 평범한 사람입니다. 모든 대화의 첫 메시지는 그 페르소나를 설명하는 system 메시지입니다.",
        "",
        "Every record starts with a Korean `system` message naming the persona, followed by alternating "
        "`user` / `assistant` turns, so the `messages` column trains directly with a chat template "
        "(TRL, axolotl, LLaMA-Factory).",
    ]
    if missing:
        lines += ["", f"Types without dialogues in this release: {', '.join(missing)}."]
    return "\n".join(lines)


def _usage(inp: CardInputs) -> str:
    repo = inp.repo_id or PLACEHOLDER_REPO
    test = "test" in inp.splits
    eval_line = '\n    eval_dataset=ds["test"],' if test else ""
    return f'''## Load

```python
from datasets import load_dataset

ds = load_dataset("{repo}")
print(ds)
enfp = ds["train"].filter(lambda r: r["mbti"] == "ENFP")
print(enfp[0]["messages"])
```

## Train with TRL

```python
from datasets import load_dataset
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer

ds = load_dataset("{repo}").select_columns(["messages"])
trainer = SFTTrainer(
    model="{TRL_BASE_MODEL}",
    train_dataset=ds["train"],{eval_line}
    args=SFTConfig(output_dir="mbti-persona-lora", max_length=2048),
    peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"),
)
trainer.train()
```

The project that made this dataset also ships a QLoRA recipe (`make train`) and a chat
command that sets the same system message (`make chat MBTI=ENFP`).'''


def _fields() -> str:
    return """## Fields

| field | type | what |
| --- | --- | --- |
| `id` | string | `TYPE-<12 hex>`: the type plus a hash of the normalised user/assistant turns, stable across releases |
| `mbti` | string | one of the 16 type codes, e.g. `ISTJ` |
| `topic` | string | the everyday topic the chat is about (Korean) |
| `messages` | list of `{role, content}` | `system` (the persona, Korean) first, then `user` / `assistant` alternating, ending with `assistant` |
| `source` | string | `seed` (hand-written) or `generated` (LLM, then curated) |
| `meta` | struct | `model` (generator), `run`, `register` (존댓말 / 반말 where known); empty for fields not recorded |"""


def pick_examples(splits: dict[str, list[dict[str, Any]]], k: int = 2) -> list[dict[str, Any]]:
    """The `k` shortest dialogues of `k` different types (train first), for the card."""
    rows = [r for s in ("train", *splits) if s in splits for r in splits[s]]
    chosen: list[dict[str, Any]] = []
    for r in sorted(rows, key=lambda r: (sum(len(m["content"]) for m in r["messages"][1:]), r["id"])):
        if all(c["mbti"] != r["mbti"] for c in chosen):
            chosen.append(r)
        if len(chosen) == k:
            break
    return chosen


def _examples(inp: CardInputs) -> str:
    parts = ["## Examples", ""]
    for r in pick_examples(inp.splits):
        parts += [f"**{r['mbti']}** · {r['topic']} · `{r['id']}` ({r['source']})", ""]
        for m in r["messages"]:
            text = m["content"].replace("\n", " ")
            parts.append(f"> **{m['role']}**: {text}  ")
        parts.append("")
    return "\n".join(parts)


def _provenance(inp: CardInputs) -> str:
    seeds_total = sum(inp.seed_counts.values())
    seed_rows = sum(r["source"] == "seed" for rows in inp.splits.values() for r in rows)
    per_type = sorted(set(inp.seed_counts.values()))
    if per_type:
        spread = f"{per_type[0]}" if len(per_type) == 1 else f"{per_type[0]}–{per_type[-1]}"
        seeds_text = f"{seeds_total} hand-written Korean dialogues ({spread} for each of {len(inp.seed_counts)} types)"
    else:
        seeds_text = "Hand-written Korean dialogues (not found in the seeds folder of this build)"
    models = models_used(inp.splits, inp.generation_config)
    lines = [
        "## How it was made",
        "",
        f"1. **Seeds.** {seeds_text} and one persona profile "
        "per type (cognitive functions, traits, speaking style, reactions to worry, conflict, good news and a "
        "change of plan, things the persona avoids). "
        + (f"{seed_rows} seed dialogues are included in this dataset (`source: seed`)." if seed_rows
           else "The seeds themselves are not included (`source` is `generated` throughout)."),
        "2. **Generation.** For each type, an LLM was shown the persona profile and a few seed dialogues and asked "
        "for a new multi-turn chat on a given everyday topic (the self-instruct / Alpaca method). "
        f"Model(s): {', '.join(f'`{m}`' for m in models) if models else 'not recorded'}.",
        "3. **Curation.** Exact and near-duplicate removal on character n-grams (word n-grams miss Korean "
        "near-duplicates that differ only in register), rule filters (length, Hangul share, English, persona "
        "breaks such as AI self-reference, type labels in replies, mixed register, repetition, markup, "
        "personal data) and, where it ran, an LLM judge of persona fidelity. The counts it reported are below.",
        f"4. **Split.** Stratified by type with a fixed seed ({inp.split_seed}): "
        + (f"about {inp.test_share:.0%} of each type in `test`." if "test" in inp.splits else "no test split."),
    ]
    if inp.curation_report:
        lines += ["", *_report_section(inp.curation_report)]
    else:
        lines += ["", "_No curation report (`report.json`) was recorded for this run._"]
    if inp.generation_config:
        lines += ["", *_details("Generation settings (`config.json` of the run)", inp.generation_config)]
    else:
        lines += ["", "_No generation settings (`config.json`) were recorded for this run._"]
    if inp.notes:
        lines += ["", "Notes:", *[f"- {n}" for n in inp.notes]]
    return "\n".join(lines)


def _report_section(report: dict[str, Any]) -> list[str]:
    """report.json as tables: its scalar counts, a per-type table when it has one, its settings folded away."""
    lines = ["### Curation report (`report.json`)", ""]
    if isinstance(report.get("summary"), str):
        lines += [f"`{report['summary']}`", ""]
    items = [(k, v) for k, v in flatten({k: v for k, v in report.items() if k not in REPORT_APART}) if k]
    lines += ["Counts as the curate stage reported them: rejects per filter, duplicates removed, judge "
              "agreement where the judge ran.", "", "| item | value |", "| --- | --- |"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in items[:MAX_REPORT_ROWS]]
    if len(items) > MAX_REPORT_ROWS:
        lines.append(f"| … | {len(items) - MAX_REPORT_ROWS} more in `report.json` of the run |")
    by_type = report.get("by_type")
    if isinstance(by_type, dict) and by_type and all(isinstance(c, dict) for c in by_type.values()):
        cols = list(dict.fromkeys(k for c in by_type.values() for k in c))
        lines += ["", "| type | " + " | ".join(cols) + " |", "|" + " --- |" * (len(cols) + 1)]
        lines += [f"| {t} | " + " | ".join(_cell(c.get(k, 0)) for k in cols) + " |" for t, c in by_type.items()]
    if isinstance(report.get("bad_lines"), list) and report["bad_lines"]:
        lines += ["", f"Curate skipped unreadable input lines; {len(report['bad_lines'])} are listed in its report.json."]
    if isinstance(report.get("config"), dict):
        lines += ["", *_details("Curation settings", report["config"])]
    return lines


def _details(title: str, obj: dict[str, Any]) -> list[str]:
    """A folded YAML block (secrets removed, long strings cut): settings stay on the card but out of the way."""
    text = yaml.safe_dump(scrub(obj), allow_unicode=True, sort_keys=False, width=100).rstrip("\n")
    return ["<details>", f"<summary>{title}</summary>", "", "```yaml", text, "```", "", "</details>"]


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        v = f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _statistics(inp: CardInputs) -> str:
    split_names = list(inp.splits)
    head = ["type", "nickname", *split_names, "total", "seed", "generated", "avg exchanges", "avg assistant chars"]
    lines = ["## Statistics", "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    table = type_table(inp.splits)
    for row in table:
        nick = inp.personas[row["mbti"]].nickname if row["mbti"] in inp.personas else ""
        cells = [row["mbti"], nick, *[str(row[s]) for s in split_names], str(row["total"]), str(row["seed"]),
                 str(row["generated"]), f"{row['exchanges']:.1f}", f"{row['assistant_chars']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    totals = [sum(r[c] for r in table) for c in (*split_names, "total", "seed", "generated")]
    lines.append("| **all** | | " + " | ".join(f"**{t}**" for t in totals) + " | | |")
    lines += ["", f"![{PLOTS['type_counts.png']}](plots/type_counts.png)"]

    rows = [r for split in inp.splits.values() for r in split]
    measures = {
        "exchanges per dialogue": [exchanges(r) for r in rows],
        "characters per user turn": [len(x) for r in rows for x in _turns(r, "user")],
        "characters per assistant turn": [len(x) for r in rows for x in _turns(r, "assistant")],
        "characters per dialogue (without system)": [sum(len(m["content"]) for m in r["messages"][1:]) for r in rows],
    }
    lines += ["", "| measure | min | median | mean | p95 | max |", "| --- | --- | --- | --- | --- | --- |"]
    for name, values in measures.items():
        d = describe(values)
        lines.append(f"| {name} | {d['min']} | {d['median']:g} | {d['mean']} | {d['p95']} | {d['max']} |")
    for name in ("exchanges.png", "lengths.png"):
        lines += ["", f"![{PLOTS[name]}](plots/{name})"]
    return "\n".join(lines)


def _limitations() -> str:
    return """## Limitations and biases

- **MBTI is a popular typology, not a validated clinical instrument.** The personas are conversational
  styles written for this dataset, not descriptions of real people of a type, and nothing here is a
  diagnosis or a personality assessment. Do not use models trained on it to label people.
- **Synthetic data.** Most dialogues were written by an LLM imitating a few hand-written examples per type.
  They inherit that model's habits and biases: stereotyped portrayals of each type, a narrow range of
  topics and speakers (mostly everyday worries of young urban adults), overly tidy and helpful turns,
  and phrasing that repeats across dialogues despite deduplication.
- **Filters are heuristics.** Rule filters and the optional judge remove obvious failures (AI
  self-reference, English, mixed register, duplicates); subtler persona drift or factual errors remain.
- **Not advice.** Conversations touch on work, relationships, money and health as small talk; replies
  are not professional, medical, legal or financial advice.
- **Korean only.** The user and assistant turns are Korean; a share of English words is kept (loanwords,
  brand names)."""


def _license(inp: CardInputs) -> str:
    return f"""## License

`{inp.license}`. Generated text may also be subject to the terms of the model that generated it
(see "How it was made"); check them before commercial use."""


def read_json_if_present(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON object from `path`, or `(None, note)` when the file is absent or unreadable (never raises)."""
    if not path.exists():
        return None, None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"{path.name} could not be read ({type(e).__name__}); left out of this card"
    if not isinstance(obj, dict):
        return None, f"{path.name} is not a JSON object; left out of this card"
    return obj, None

"""The held-out chats an evaluation replays: the dataset's test split, or `--prompts FILE`.

Each becomes a `Dialogue` (its user turns are replayed; its own assistant turns are the dataset's
reference for reply length and the other text metrics). Rows the checkpoint cannot play (a type it
has no persona for, a broken chat) are skipped and counted in one note, never a crash. The order is
fixed (types in `MBTI_TYPES` order, file order within a type), so `--limit N` always picks the same
first N chats of each type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from datagen.errors import UserError
from datagen.schema import (
    MBTI_TYPES,
    SOURCES,
    Dialogue,
    LineError,
    RecordError,
    iter_jsonl,
)
from train.config import TrainConfig

DEFAULT_TOPIC = "평가"  # records without a topic (a --prompts file of bare chats) still make valid Dialogues


@dataclass
class HeldOut:
    """The chats to replay, where they came from, and what was skipped."""

    chats: list[Dialogue]
    source: str
    """e.g. `outputs/demo/dataset (test split)` or the --prompts path."""
    notes: list[str] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return [t for t in MBTI_TYPES if any(d.mbti == t for d in self.chats)]


def to_dialogue(row: Any) -> Dialogue:
    """A published row or a datagen record → a `Dialogue` (a leading system message dropped); RecordError if unusable.

    >>> to_dialogue({"mbti": "ENFP", "messages": [{"role": "system", "content": "당신은..."},
    ...     {"role": "user", "content": "안녕"}, {"role": "assistant", "content": "반가워!"}]}).turns("user")
    ['안녕']
    """
    if not isinstance(row, dict):
        raise RecordError("not_object", "each line must be a JSON object")
    messages = row.get("messages")
    if not isinstance(messages, list):
        raise RecordError("no_messages", "messages must be a non-empty list")
    chat = [m for i, m in enumerate(messages) if not (i == 0 and isinstance(m, dict) and m.get("role") == "system")]
    mbti = row.get("mbti")
    if not isinstance(mbti, str):
        raise RecordError("missing_field", "missing mbti")
    topic = row.get("topic") if isinstance(row.get("topic"), str) and row.get("topic").strip() else DEFAULT_TOPIC
    source = row.get("source") if row.get("source") in SOURCES else "generated"
    return Dialogue.build(mbti.strip().upper(), topic, chat, source=source)


def select(rows: Iterable[tuple[str, Any]], known: set[str], limit_per_type: int | None) -> tuple[list[Dialogue], list[str]]:
    """Usable chats in type order (file order within a type), at most `limit_per_type` each, and notes.

    `rows` are (where, row) pairs: `where` names a bad row in the note.
    """
    by_type: dict[str, list[Dialogue]] = {}
    bad: list[str] = []
    unknown: dict[str, int] = {}
    for where, row in rows:
        if isinstance(row, LineError):
            bad.append(f"{where}: {row.rule}: {row.detail}")
            continue
        try:
            d = to_dialogue(row)
        except RecordError as e:
            bad.append(f"{where}: {e.rule}: {e.detail}")
            continue
        if d.mbti not in known:
            unknown[d.mbti] = unknown.get(d.mbti, 0) + 1
            continue
        by_type.setdefault(d.mbti, []).append(d)
    notes = []
    if bad:
        notes.append(f"skipped {len(bad)} unusable held-out chat(s) (first: {bad[0]})")
    if unknown:
        shown = ", ".join(f"{t}={n}" for t, n in sorted(unknown.items()))
        notes.append(f"skipped held-out chats of types the checkpoint has no persona for ({shown})")
    chats = [d for t in MBTI_TYPES for d in by_type.get(t, [])[:limit_per_type]]
    return chats, notes


def _jsonl_rows(path: Path) -> Iterable[tuple[str, Any]]:
    for line_no, obj in iter_jsonl(path):
        yield f"{path}:{line_no}", obj


def load_held_out(cfg: TrainConfig, known_types: set[str], prompts: str | None = None, split: str | None = None,
                  limit_per_type: int | None = None) -> HeldOut:
    """The chats to replay; a missing or empty split, or nothing usable, is one UserError naming the fix."""
    if prompts is not None:
        path = Path(prompts)
        chats, notes = select(_jsonl_rows(path), known_types, limit_per_type)
        source = str(path)
        if not chats:
            raise UserError(f"--prompts {path}: no usable chat of a type this checkpoint knows ({' '.join(sorted(known_types))})"
                            + (f"; {notes[0]}" if notes else "") + "; each line needs mbti and messages "
                            "(user/assistant alternating, ending with assistant)")
        return HeldOut(chats, source, notes)
    from train.data import load_chat_dataset

    split = split or cfg.eval_split
    try:
        dd = load_chat_dataset(cfg.dataset)
    except IndexError:  # datasets (4.x) cannot load_from_disk a DatasetDict holding a split saved with no rows
        raise UserError(f"could not load dataset {cfg.dataset}: one of its splits was saved with no rows, which "
                        "datasets cannot read back; drop the empty split, publish with a larger --test-share, or "
                        "pass --prompts FILE") from None
    source = f"{cfg.dataset} ({split} split)"
    if split not in dd:
        raise UserError(f"dataset {cfg.dataset} has no {split!r} split (it has: {', '.join(dd)}); eval replays "
                        "held-out chats: publish with a test share (`datagen publish --test-share 0.05`), pick "
                        "another with --split, or pass --prompts FILE")
    rows = dd[split]
    if len(rows) == 0:
        raise UserError(f"the {split!r} split of {cfg.dataset} is empty: nothing to replay; publish with a larger "
                        "--test-share, or pass --prompts FILE")
    missing = [c for c in ("mbti", "messages") if c not in rows.column_names]
    if missing:
        raise UserError(f"the {split!r} split of {cfg.dataset} has no {' or '.join(missing)} column (it has: "
                        f"{', '.join(rows.column_names)}); eval needs the `datagen publish` shape")
    pairs = ((f"{split}[{i}]", {"mbti": t, "topic": topic, "messages": m})
             for i, (t, topic, m) in enumerate(zip(rows["mbti"], _column(rows, "topic"), rows["messages"])))
    chats, notes = select(pairs, known_types, limit_per_type)
    if not chats:
        raise UserError(f"no usable chat in {source} of a type this checkpoint knows ({' '.join(sorted(known_types))})"
                        + (f"; {notes[0]}" if notes else ""))
    return HeldOut(chats, source, notes)


def _column(rows, name: str) -> list[Any]:
    return rows[name] if name in rows.column_names else [None] * len(rows)

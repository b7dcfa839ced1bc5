"""The persona system prompts a checkpoint was trained with, saved beside the adapter.

A model learns to answer *the exact system prompts in its training data*. If chat, eval or serve
rebuilt the prompt from whatever `seeds/` holds on the day they run, an edited persona file would
quietly talk to the model in words it never saw. So training writes what it trained on:

    outputs/checkpoints/<name>/personas.json
    {"format": 1, "source": "outputs/dataset/R",
     "personas": {"ENFP": {"system_prompt": "당신은 ENFP ...", "nickname": "가능성 수집가", "summary": "...",
                           "chats": 812}, ...}}

`system_prompt` is read off the training split (the system message of the type's chats; the most
common one when they differ), `nickname` and `summary` come from `seeds/personas/` at training time
(for display: serve's model list, the web page's cards). `merge` copies the file into `merged/`.

`load_personas(folder)` is what chat, eval and serve call: the file when it is there; else (a
checkpoint trained before this existed, or a merged model copied elsewhere) the prompts built from
`seeds/` now, with a one-line note saying so.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from datagen.errors import UserError

PERSONAS_FILE = "personas.json"
FORMAT = 1


@dataclass(frozen=True)
class PersonaPrompt:
    """One type as a checkpoint knows it: the system prompt it was trained with, and how to show it."""

    mbti: str
    system_prompt: str
    nickname: str | None = None
    """Korean nickname from the persona profile (display only)."""
    summary: str | None = None
    """One-line Korean summary from the persona profile (display only)."""
    chats: int | None = None
    """Training chats of this type (None when the prompts came from seeds/)."""


def collect_personas(rows: Iterable[dict[str, Any]], seeds_dir: Path | None = None) -> tuple[dict[str, PersonaPrompt], list[str]]:
    """The system prompt of each type in training rows (`mbti`, `messages`), and notes worth printing.

    >>> rows = [{"mbti": "ENFP", "messages": [{"role": "system", "content": "A"}, {"role": "user", "content": "?"}]},
    ...         {"mbti": "ENFP", "messages": [{"role": "system", "content": "A"}]},
    ...         {"mbti": "ENFP", "messages": [{"role": "system", "content": "B"}]}]
    >>> personas, notes = collect_personas(rows, seeds_dir=Path("/nonexistent"))
    >>> personas["ENFP"].system_prompt, personas["ENFP"].chats, notes
    ('A', 3, ['ENFP: 2 different system prompts in the training data; saved the most common (2 of 3 chats)'])
    """
    prompts: dict[str, Counter[str]] = {}
    chats: Counter[str] = Counter()
    for row in rows:
        mbti, messages = row.get("mbti"), row.get("messages")
        if not isinstance(mbti, str) or not isinstance(messages, list):
            continue
        chats[mbti] += 1
        first = messages[0] if messages else None
        if isinstance(first, dict) and first.get("role") == "system" and isinstance(first.get("content"), str):
            prompts.setdefault(mbti, Counter())[first["content"]] += 1
    shown = _profiles(seeds_dir)
    personas, notes = {}, []
    for mbti in sorted(prompts):
        (prompt, n), *others = prompts[mbti].most_common()
        if others:
            notes.append(f"{mbti}: {len(others) + 1} different system prompts in the training data; saved the most "
                         f"common ({n} of {chats[mbti]} chats)")
        nickname, summary = shown.get(mbti, (None, None))
        personas[mbti] = PersonaPrompt(mbti, prompt, nickname, summary, chats[mbti])
    return personas, notes


def _profiles(seeds_dir: Path | None) -> dict[str, tuple[str, str]]:
    from datagen.seeds import DEFAULT_SEEDS_DIR
    from datagen.seeds import load_personas as load_profiles

    profiles, _ = load_profiles(seeds_dir or DEFAULT_SEEDS_DIR)
    return {t: (p.nickname, p.summary) for t, p in profiles.items()}


def save_personas(folder: str | Path, personas: dict[str, PersonaPrompt], source: str = "") -> Path:
    path = Path(folder) / PERSONAS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": FORMAT, "source": source,
            "personas": {t: {k: v for k, v in asdict(p).items() if k != "mbti"} for t, p in personas.items()}}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path


def read_personas(folder: str | Path) -> dict[str, PersonaPrompt] | None:
    """The personas saved in `folder`, or None when it has no personas.json; a broken file is a UserError."""
    path = Path(folder) / PERSONAS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {t: PersonaPrompt(mbti=t, **{k: v for k, v in p.items() if k in PersonaPrompt.__dataclass_fields__})
                for t, p in data["personas"].items() if isinstance(p.get("system_prompt"), str)}
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"{path} is not a personas file written by training ({type(e).__name__}: {e}); retrain, or "
                        "delete it to fall back to seeds/") from None


def seed_personas(seeds_dir: Path | None = None) -> dict[str, PersonaPrompt]:
    """Prompts built from `seeds/personas/` as they are now (the fallback)."""
    from datagen.seeds import DEFAULT_SEEDS_DIR
    from datagen.seeds import load_personas as load_profiles

    profiles, _ = load_profiles(seeds_dir or DEFAULT_SEEDS_DIR)
    return {t: PersonaPrompt(t, p.system_prompt(), p.nickname, p.summary) for t, p in profiles.items()}


def load_personas(folder: str | Path, seeds_dir: Path | None = None,
                  note: Callable[[str], None] = print) -> dict[str, PersonaPrompt]:
    """What chat, eval and serve use: `folder/personas.json`, else `seeds/` now (said in one line)."""
    saved = read_personas(folder)
    if saved is not None:
        return saved
    fallback = seed_personas(seeds_dir)
    note(f"note: {Path(folder) / PERSONAS_FILE} not found (trained before personas were saved?); using the system "
         "prompts built from seeds/personas/ now, which may differ from what the model was trained on")
    return fallback


def check_type(mbti: str) -> str:
    """The type code upper-cased, or a UserError listing the 16."""
    from datagen.schema import MBTI_TYPES

    key = mbti.strip().upper()
    if key not in MBTI_TYPES:
        raise UserError(f"--mbti {mbti}: use one of the 16 types: {' '.join(MBTI_TYPES)}")
    return key


def persona_for(personas: dict[str, PersonaPrompt], mbti: str) -> PersonaPrompt:
    """One type's persona, or a UserError naming the types this checkpoint knows."""
    key = check_type(mbti)
    if key not in personas:
        have = " ".join(sorted(personas)) or "none"
        raise UserError(f"this checkpoint has no persona for {key} (it knows: {have}); train on data with {key} "
                        "chats, or pick one of those")
    return personas[key]

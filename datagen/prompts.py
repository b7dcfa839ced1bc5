"""The generate prompt: Korean template files rendered by a pure function, and the response contract.

Templates live in `datagen/prompts/*.txt` (`string.Template`, `${name}` fields, so the JSON
braces in them need no escaping) and are read once. `render_generation` turns a persona
profile, example dialogues and the requested items (topic, register, relation, exchanges) into the two chat
messages of one request; the same inputs always give the same text (tests pin it).

The model answers with exactly this shape, which the Batch API ingest and the test server
rely on too:

    {"dialogues": [{"topic": "...", "messages": [{"role": "user"|"assistant", "content": "..."}]}]}
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import NamedTuple, Sequence

from datagen.schema import Dialogue
from datagen.text import dialogue_register

PROMPTS_DIR = Path(__file__).resolve().parent / "prompts"
REGISTERS = ("존댓말", "반말")
RELATIONS: dict[str, tuple[str, ...]] = {
    "존댓말": ("처음 이야기하는 사람", "회사 동료", "동네에서 알게 된 사람"),
    "반말": ("친구", "동갑인 회사 동료", "학교 친구"),
}
"""Who the user is to the persona, drawn per dialogue to fit its register: 존댓말 between people who are not
close yet, 반말 between friends. (Profiles once presupposed a long friendship in every chat.)"""


class Item(NamedTuple):
    """One dialogue asked for in a request."""

    topic: str
    register: str
    relation: str
    exchanges: int
    """Exchanges to write: one user message and the assistant's reply each."""

_MESSAGE = {
    "type": "object",
    "properties": {"role": {"type": "string", "enum": ["user", "assistant"]}, "content": {"type": "string"}},
    "required": ["role", "content"],
    "additionalProperties": False,
}
_DIALOGUE = {
    "type": "object",
    "properties": {"topic": {"type": "string"}, "messages": {"type": "array", "items": _MESSAGE}},
    "required": ["topic", "messages"],
    "additionalProperties": False,
}
RESPONSE_SCHEMA: dict = {
    "name": "dialogues",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"dialogues": {"type": "array", "items": _DIALOGUE}},
        "required": ["dialogues"],
        "additionalProperties": False,
    },
}
"""`response_format.json_schema` of a generate request (OpenAI strict structured outputs)."""


@lru_cache(maxsize=None)
def load_template(name: str) -> Template:
    """`datagen/prompts/<name>.txt`, trailing newline removed."""
    return Template((PROMPTS_DIR / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n"))


def register_of(d: Dialogue) -> str | None:
    """The assistant's register: a seed's declared `meta.register`, else what the text shows."""
    declared = d.meta.get("register")
    if declared in REGISTERS:
        return declared
    return dialogue_register(d.turns("assistant"))[0]


def format_example(d: Dialogue) -> str:
    """One example dialogue in the response's own JSON shape, one message per line.

    >>> d = Dialogue.build("ISTJ", "이사", [{"role": "user", "content": "이사 가요"},
    ...                                      {"role": "assistant", "content": "언제요?"}])
    >>> print(format_example(d))
    {"topic": "이사", "messages": [
      {"role": "user", "content": "이사 가요"},
      {"role": "assistant", "content": "언제요?"}
    ]}
    """
    lines = [json.dumps({"role": m["role"], "content": m["content"]}, ensure_ascii=False) for m in d.messages]
    head = json.dumps(d.topic, ensure_ascii=False)
    return "{\"topic\": " + head + ", \"messages\": [\n  " + ",\n  ".join(lines) + "\n]}"


def render_examples(examples: Sequence[Dialogue]) -> str:
    blocks = []
    for i, d in enumerate(examples, 1):
        reg = register_of(d)
        blocks.append(f"예시 {i}" + (f" · 말투: {reg}" if reg else "") + "\n" + format_example(d))
    return "\n\n".join(blocks)


def render_items(items: Sequence[Item]) -> str:
    """The requested dialogues, one line each.

    >>> print(render_items([Item("이직 고민", "반말", "친구", 4)]))
    1. 주제: 이직 고민 / 말투: 반말 / 상대: 친구 / 주고받기 4번 (메시지 8개)
    """
    return "\n".join(f"{i}. 주제: {it.topic} / 말투: {it.register} / 상대: {it.relation} / "
                     f"주고받기 {it.exchanges}번 (메시지 {2 * it.exchanges}개)" for i, it in enumerate(items, 1))


def render_generation(profile: str, examples: Sequence[Dialogue], items: Sequence[Item]) -> list[dict[str, str]]:
    """The system and user messages of one generate request (pure: same inputs, same text).

    `profile` is the persona's Korean profile (no type code), `examples` the seed and
    previously generated dialogues to show, `items` one `Item` per dialogue asked for.
    """
    user = load_template("generate_user").substitute(
        count=len(items), profile=profile.strip(), examples=render_examples(examples), items=render_items(items))
    return [{"role": "system", "content": load_template("generate_system").substitute()},
            {"role": "user", "content": user}]

"""The record: one `Dialogue` for seeds, generated, curated and rejected data.

A dialogue is validated where it is built, so every stage downstream can trust it:

>>> d = Dialogue.build("ISTJ", "이직 고민", [
...     {"role": "user", "content": "이직할까 말까 고민돼요."},
...     {"role": "assistant", "content": "지금 회사에서 제일 불편한 점이 뭔지부터 적어 볼까요?"},
... ], source="seed")
>>> d.id
'ISTJ-63e0c8cc1753'

The id is the type plus a hash of the normalised messages (NFC, whitespace collapsed),
so the same dialogue always gets the same id, whichever stage wrote it.

JSONL helpers never stop on the first bad line: `read_jsonl` returns the good records
and a `LineError(path, line, rule, detail)` for every bad one, and reports a torn last
line (no trailing newline, unparsable: what a killed writer leaves) as `torn_line`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

MBTI_TYPES: tuple[str, ...] = (
    "ISTJ", "ISFJ", "INFJ", "INTJ",
    "ISTP", "ISFP", "INFP", "INTP",
    "ESTP", "ESFP", "ENFP", "ENTP",
    "ESTJ", "ESFJ", "ENFJ", "ENTJ",
)
ROLES = ("user", "assistant")
SOURCES = ("seed", "generated", "eval")  # eval: a chat a model wrote in `python -m train eval`
ID_HASH_CHARS = 12  # 48 bits: collision-free far beyond any dataset this tool makes

_WS = re.compile(r"\s+")


class RecordError(ValueError):
    """A record that breaks the schema; `rule` is a short stable name, `detail` says what."""

    def __init__(self, rule: str, detail: str):
        super().__init__(f"{rule}: {detail}")
        self.rule = rule
        self.detail = detail


def normalize_text(text: str) -> str:
    """NFC and collapsed whitespace: the form ids and exact-duplicate checks use."""
    return _WS.sub(" ", unicodedata.normalize("NFC", text)).strip()


def dialogue_id(mbti: str, messages: list[dict[str, str]]) -> str:
    """`TYPE-<12 hex>` from the normalised user/assistant messages (system messages ignored)."""
    body = [[m["role"], normalize_text(m["content"])] for m in messages if m["role"] != "system"]
    digest = hashlib.sha256(json.dumps(body, ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"{mbti}-{digest[:ID_HASH_CHARS]}"


def validate_messages(messages: Any) -> list[dict[str, str]]:
    """Return clean `[{role, content}]` or raise `RecordError` naming the first broken rule."""
    if not isinstance(messages, list) or not messages:
        raise RecordError("no_messages", "messages must be a non-empty list")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RecordError("bad_message", f"message {i} needs string 'role' and 'content'")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise RecordError("bad_role", f"message {i} has role {role!r}; use 'user' or 'assistant'")
        if not content.strip():
            raise RecordError("empty_message", f"message {i} ({role}) is empty")
        expected = ROLES[i % 2]
        if role != expected:
            if i == 0:
                raise RecordError("first_not_user", "the first message must be from 'user'")
            raise RecordError("not_alternating", f"message {i} is {role!r} after {clean[-1]['role']!r}; roles must alternate")
        clean.append({"role": role, "content": content})
    if clean[-1]["role"] != "assistant":
        raise RecordError("last_not_assistant", "the last message must be from 'assistant'")
    return clean


@dataclass(frozen=True)
class Dialogue:
    """One multi-turn chat. The persona is the assistant; the user is an ordinary person."""

    id: str
    """`TYPE-<12 hex>`; None when building computes it from the messages (see `build`)."""
    mbti: str
    topic: str
    messages: tuple[dict[str, str], ...]
    source: str = "generated"
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if self.mbti not in MBTI_TYPES:
            raise RecordError("unknown_mbti", f"{self.mbti!r} is not one of the 16 types: {' '.join(MBTI_TYPES)}")
        if not isinstance(self.topic, str) or not self.topic.strip():
            raise RecordError("empty_topic", "topic must be a non-empty string")
        if self.source not in SOURCES:
            raise RecordError("bad_source", f"source {self.source!r}; use one of {', '.join(SOURCES)}")
        if not isinstance(self.meta, dict):
            raise RecordError("bad_meta", "meta must be an object")
        # The one place messages are validated and hashed (generate and curate build every record).
        raw = list(self.messages) if isinstance(self.messages, tuple) else self.messages
        msgs = validate_messages(raw)
        object.__setattr__(self, "messages", tuple(msgs))
        expected = dialogue_id(self.mbti, msgs)
        if self.id is None:
            object.__setattr__(self, "id", expected)
        elif self.id != expected:
            raise RecordError("id_mismatch", f"id {self.id!r} does not match its messages; expected {expected!r}")

    @classmethod
    def build(cls, mbti: str, topic: str, messages: list[dict[str, str]], source: str = "generated",
              meta: dict[str, Any] | None = None) -> "Dialogue":
        """Build a record and compute its stable id."""
        return cls(id=None, mbti=mbti, topic=topic, messages=messages,  # type: ignore[arg-type]
                   source=source, meta=dict(meta or {}))

    @classmethod
    def from_dict(cls, obj: Any, fill_id: bool = False) -> "Dialogue":
        """Parse a JSON object; with `fill_id`, a missing id is computed instead of rejected."""
        if not isinstance(obj, dict):
            raise RecordError("not_object", "each line must be a JSON object")
        required = ["mbti", "topic", "messages"] + ([] if fill_id else ["id"])
        missing = [k for k in required if k not in obj]
        if missing == ["id"]:
            raise RecordError("missing_field", "missing id; `datagen seeds fmt` fills it in")
        if missing:
            raise RecordError("missing_field", f"missing {', '.join(missing)}")
        unknown = sorted(set(obj) - {"id", "mbti", "topic", "messages", "source", "meta"})
        if unknown:
            raise RecordError("unknown_field", f"unknown field(s) {', '.join(unknown)}")
        meta = obj.get("meta") or {}
        if not isinstance(meta, dict):
            raise RecordError("bad_meta", "meta must be an object")
        if not isinstance(obj["messages"], list):
            raise RecordError("no_messages", "messages must be a non-empty list")
        if fill_id and "id" not in obj:
            return cls.build(obj["mbti"], obj["topic"], obj["messages"], obj.get("source", "generated"), meta)
        if not isinstance(obj["id"], str):
            raise RecordError("bad_id", f"id must be a string like 'ISTJ-3f2a9c1e0b7d', not {obj['id']!r}")
        # __post_init__ validates the messages (once) and checks the id against them
        return cls(id=obj["id"], mbti=obj["mbti"], topic=obj["topic"], messages=tuple(obj["messages"]),
                   source=obj.get("source", "generated"), meta=dict(meta))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "mbti": self.mbti, "topic": self.topic, "messages": [dict(m) for m in self.messages],
                "source": self.source, "meta": self.meta}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    # -- views the checks and dedup share ---------------------------------------------------
    @property
    def exchanges(self) -> int:
        return len(self.messages) // 2

    def turns(self, role: str) -> list[str]:
        return [m["content"] for m in self.messages if m["role"] == role]

    @property
    def text(self) -> str:
        """The dialogue's text without role tags: what dedup and the Hangul share look at."""
        return "\n".join(m["content"] for m in self.messages)


@dataclass(frozen=True)
class LineError:
    """A bad line in a JSONL file. `str()` gives `file:line: rule: detail`."""

    path: str
    line: int
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{_display_path(self.path)}:{self.line}: {self.rule}: {self.detail}"


def _display_path(path: str) -> str:
    """Relative to the working directory when inside it: `seeds/dialogues/ISTJ.jsonl:3: ...`."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any | LineError]]:
    """Yield `(line_no, obj)` for each non-blank line, or `(line_no, LineError)` for bad JSON.

    A last line with no newline that does not parse is a write cut short (`torn_line`).
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.split(b"\n")
    ends_with_newline = raw.endswith(b"\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        last = i == len(lines)
        try:
            yield i, json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as e:
            yield i, LineError(str(path), i, "bad_encoding", f"not UTF-8 ({e.reason})")
        except json.JSONDecodeError as e:
            if last and not ends_with_newline:
                yield i, LineError(str(path), i, "torn_line", "last line is cut short (an interrupted write); it is ignored")
            else:
                yield i, LineError(str(path), i, "bad_json", f"{e.msg} at column {e.colno}")


def read_jsonl_numbered(path: str | Path, fill_id: bool = False) -> tuple[list[tuple[int, Dialogue]], list[LineError]]:
    """`(line_no, dialogue)` for every valid line and an error for every bad one (never stops early)."""
    records: list[tuple[int, Dialogue]] = []
    errors: list[LineError] = []
    for line_no, obj in iter_jsonl(path):
        if isinstance(obj, LineError):
            errors.append(obj)
            continue
        try:
            records.append((line_no, Dialogue.from_dict(obj, fill_id=fill_id)))
        except RecordError as e:
            errors.append(LineError(str(path), line_no, e.rule, e.detail))
    return records, errors


def read_jsonl(path: str | Path, fill_id: bool = False) -> tuple[list[Dialogue], list[LineError]]:
    """All valid dialogues of a file and an error for every bad line."""
    numbered, errors = read_jsonl_numbered(path, fill_id=fill_id)
    return [d for _, d in numbered], errors


def write_jsonl(path: str | Path, records: Iterable[Dialogue | dict[str, Any]]) -> int:
    """Write a whole file atomically (temp file + rename); returns the number of lines."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r.to_json() if isinstance(r, Dialogue) else json.dumps(r, ensure_ascii=False)) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


class JsonlAppender:
    """Append one JSON line at a time, flushed per line, so a crash loses at most the line in flight.

    On open, a last line without a trailing newline is completed if it parses and cut off if it does
    not (`repair_torn_tail`), so appends never glue onto half a record and no whole record is lost.
    """

    def __init__(self, path: str | Path, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_torn_tail(self.path)
        self._f = open(self.path, "a", encoding="utf-8")
        self._fsync = fsync

    def write(self, obj: Dialogue | dict[str, Any]) -> None:
        line = obj.to_json() if isinstance(obj, Dialogue) else json.dumps(obj, ensure_ascii=False)
        self._f.write(line + "\n")
        self._f.flush()
        if self._fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def repair_torn_tail(path: Path) -> str | None:
    """Make a JSONL file end on a newline, after a writer was killed mid-line.

    A last line without a newline that parses as JSON is a complete record whose newline was not
    written yet: it is kept and completed (`"completed"`). One that does not parse is cut off
    (`"dropped"`). None: the file ends on a newline (or is empty or absent).
    """
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return None
        f.seek(0)
        raw = f.read()
        cut = raw.rfind(b"\n") + 1  # 0 when the whole file is one unfinished line
        try:
            json.loads(raw[cut:].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            f.truncate(cut)
            return "dropped"
        f.write(b"\n")
        return "completed"

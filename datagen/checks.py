"""Dialogue rules shared by `datagen seeds check`, generation's acceptance and curation.

Each rule is a small function `rule(dialogue, cfg) -> Violation | None`; `RULES` lists them
in the order they are tried, and `first_violation` gives the one reason a record is rejected
for. The rule name is the reason that gets counted:

>>> from datagen.schema import Dialogue
>>> d = Dialogue.build("ENFP", "주말 계획", [
...     {"role": "user", "content": "주말에 뭐 해?"},
...     {"role": "assistant", "content": "저는 AI라서 주말이 없어요."}])
>>> first_violation(d, CheckConfig(min_exchanges=1, min_total_chars=0)).rule
'persona_break'
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

from datagen.errors import UserError
from datagen.schema import MBTI_TYPES, Dialogue
from datagen.text import dialogue_register, hangul_share


@dataclass(frozen=True)
class CheckConfig:
    """Thresholds of the dialogue rules (seeds, generation and curation use the same ones)."""

    min_exchanges: int = 3
    """Fewest user+assistant exchanges; shorter chats teach little multi-turn behaviour."""
    max_exchanges: int = 8
    """Most exchanges; longer ones drift and cost more per sample."""
    min_message_chars: int = 2
    """Shortest message; a one-character turn is almost always a generation glitch."""
    max_message_chars: int = 700
    """Longest single message; persona chat is chat, not essays."""
    min_total_chars: int = 80
    """Shortest whole dialogue."""
    max_total_chars: int = 5000
    """Longest whole dialogue (keeps a chat well inside a 2048-token training window)."""
    min_hangul_share: float = 0.9
    """Least share of letters that are Hangul (`[가-힣ㄱ-ㅎㅏ-ㅣ]`); catches English or Hanja drift."""
    max_latin_run: int = 4
    """A run of this many Latin words in one message counts as an English sentence."""
    max_register_minority: float = 0.15
    """Most share of assistant sentences in the other register (존댓말 vs 반말) before it counts as mixed."""
    max_dup_ngram_share: float = 0.25
    """Most share of repeated word 3-grams in the assistant's text (generation loops)."""
    near_dup_ngram: int = 3
    """Character n-gram size for near-duplicate Jaccard (3 keeps 존댓말/반말 pairs at ~0.7)."""
    near_dup_num_perm: int = 128
    """MinHash permutations of the near-duplicate signatures: the Jaccard estimate's standard error is
    ~sqrt(J(1-J)/num_perm), 0.04 at 128."""
    near_dup_bands: int = 32
    """LSH bands (rows per band = num_perm // bands). 32×4 (datasketch's own optimum for 0.4 at 128) makes a pair a
    candidate with p≈0.56 at Jaccard 0.4, 0.87 at 0.5 and 0.99 at 0.6, while an unrelated pair (J≈0.1) collides with
    p≈0.003; candidates are then checked against the threshold (bench/dedup.py: recall 0.999 on planted pairs)."""
    near_dup_threshold: float = 0.4
    """Jaccard of character n-grams at or above which two dialogues count as near-duplicates. Chosen on the
    labelled pairs in tests/test_curate.py: a light paraphrase of every sentence (particles, endings) sits at
    ~0.5, register switches at 0.65-0.8, while different dialogues sharing type, topic and first line stay
    under 0.2 (0.13 at most between any two hand-written seeds)."""
    banned_phrases: tuple[str, ...] = ("인공지능", "언어 모델", "언어모델", "챗봇", "어시스턴트", "AI", "GPT", "오픈AI")
    """Self-references that break the persona (matched in assistant turns; Latin ones as whole words)."""

    def __post_init__(self) -> None:
        p = []
        if not 1 <= self.min_exchanges <= self.max_exchanges:
            p.append(f"min_exchanges must be at least 1 and at most max_exchanges (got {self.min_exchanges}, "
                     f"{self.max_exchanges})")
        if not 0.0 < self.near_dup_threshold <= 1.0:
            p.append(f"near_dup_threshold must be in (0, 1] (got {self.near_dup_threshold})")
        if self.near_dup_ngram < 1 or self.near_dup_num_perm < 2:
            p.append("near_dup_ngram must be at least 1 and near_dup_num_perm at least 2")
        if not 1 <= self.near_dup_bands <= self.near_dup_num_perm:
            p.append(f"near_dup_bands must be between 1 and near_dup_num_perm ({self.near_dup_num_perm})")
        if p:
            raise UserError("rules: " + "; ".join(p))


@dataclass(frozen=True)
class Violation:
    rule: str
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


Rule = Callable[[Dialogue, CheckConfig], "Violation | None"]

# --- patterns ---------------------------------------------------------------------------------
_LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'’-]*")
_TYPE_LABEL = re.compile(r"(?<![A-Za-z])(" + "|".join(MBTI_TYPES) + r"|MBTI)(?![A-Za-z])", re.IGNORECASE)
_PERSONAL = {
    "mobile number": re.compile(r"(?<!\d)01[016789][-. ]?\d{3,4}[-. ]?\d{4}(?!\d)"),
    "landline number": re.compile(r"(?<!\d)0(?:2|[3-6][1-5])[-. )]\s?\d{3,4}[-. ]\d{4}(?!\d)"),
    "resident registration number": re.compile(r"(?<!\d)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])-?[1-4]\d{6}(?!\d)"),
    "email address": re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
    "card number": re.compile(r"(?<!\d)\d{4}[- ]\d{4}[- ]\d{4}[- ]\d{4}(?!\d)"),
}
_MARKUP = {
    "role tag": re.compile(r"(?m)^\s*(?:user|assistant|system|사용자|어시스턴트|상담자|AI|Q|A|질문|답변|응답)\s*[:：]", re.IGNORECASE),
    "markdown header": re.compile(r"(?m)^\s*#{1,6}\s"),
    "code fence": re.compile(r"```"),
    "JSON fragment": re.compile(r'"(?:role|content|messages|dialogues)"\s*:|^\s*[{\[]|[}\]]\s*$'),
    "HTML tag": re.compile(r"</?[A-Za-z][A-Za-z0-9]*\s*/?>"),
    "list numbering": re.compile(r"^\s*(?:\d{1,2}[.)]|[-*•])\s"),
}


# Chat-template control text: Llama-3 / ChatML / GPT `<|…|>` tokens (DeepSeek's fullwidth `<｜…｜>` too),
# Llama-2 / Mistral `[INST]`, `<<SYS>>`, `<s>`, `</s>`, Gemma's turn markers and `<bos>`-style tokens. Left in a
# message, a tokenizer that knows one encodes it as the real control token: a reply holding `<|eot_id|>`
# text teaches the model to stop mid-reply. (`### Instruction:` headers are already `markup`.)
_CONTROL = re.compile(r"<\|[^|<>\n]{1,64}\|>|<｜[^｜<>\n]{1,64}｜>|\[/?INST\]|<</?SYS>>|</?s>"
                      r"|<(?:start|end)_of_turn>|<(?:bos|eos|pad|unk|sep|cls|mask)>|\[(?:BOS|EOS|PAD|UNK|SEP|CLS|MASK)\]")
_CONTROL_CHARS = re.compile(r"[<\[]")

# Cheap first scans (one character class each) that let a rule skip a message its patterns cannot
# match; curate runs every rule on every record, and most Korean messages have no Latin letter,
# digit or '@'. Under IGNORECASE, re also matches İ ı ſ K (Kelvin) to Latin letters: kept in.
_ANY_LATIN = re.compile(r"[A-Za-z]")
_ANY_LATIN_FOLDED = re.compile(r"[A-Za-z\u0130\u0131\u017f\u212a]")
_ANY_DIGIT_OR_AT = re.compile(r"[\d@]")
_MARKUP_CHARS = re.compile(r"[:：#`\"<{}\[\]]")
_LIST_ONLY = (("list numbering", _MARKUP["list numbering"]),)


@lru_cache(maxsize=16)
def _banned_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    parts = [rf"(?<![A-Za-z]){re.escape(p)}(?![A-Za-z])" if p.isascii() else re.escape(p) for p in phrases]
    return re.compile("|".join(parts), re.IGNORECASE)


# --- rules ------------------------------------------------------------------------------------
def check_exchanges(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    if d.exchanges < cfg.min_exchanges:
        return Violation("too_few_exchanges", f"{d.exchanges} exchanges; at least {cfg.min_exchanges}")
    if d.exchanges > cfg.max_exchanges:
        return Violation("too_many_exchanges", f"{d.exchanges} exchanges; at most {cfg.max_exchanges}")
    return None


def check_length(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    for i, m in enumerate(d.messages):
        n = len(m["content"].strip())
        if n < cfg.min_message_chars:
            return Violation("too_short", f"message {i} has {n} characters; at least {cfg.min_message_chars}")
        if n > cfg.max_message_chars:
            return Violation("too_long", f"message {i} has {n} characters; at most {cfg.max_message_chars}")
    total = sum(len(m["content"]) for m in d.messages)
    if total < cfg.min_total_chars:
        return Violation("too_short", f"{total} characters in all; at least {cfg.min_total_chars}")
    if total > cfg.max_total_chars:
        return Violation("too_long", f"{total} characters in all; at most {cfg.max_total_chars}")
    return None


def check_hangul(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    share = hangul_share(d.text)
    if share < cfg.min_hangul_share:
        return Violation("low_hangul", f"Hangul is {share:.0%} of letters; at least {cfg.min_hangul_share:.0%}")
    return None


def check_english(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    for i, m in enumerate(d.messages):
        if not _ANY_LATIN.search(m["content"]):
            continue
        run = 0
        for token in m["content"].split():
            run = run + 1 if _LATIN_WORD.fullmatch(token.strip(".,!?;:\"'()")) else 0
            if run >= cfg.max_latin_run:
                return Violation("english_sentence", f"message {i} has {run}+ English words in a row")
    return None


def check_persona_break(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    pattern = _banned_pattern(cfg.banned_phrases)
    for i, m in enumerate(d.messages):
        if m["role"] == "assistant" and (hit := pattern.search(m["content"])):
            return Violation("persona_break", f"message {i} says {hit.group(0)!r}")
    return None


def check_type_label(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    for i, m in enumerate(d.messages):
        if m["role"] != "assistant" or not _ANY_LATIN_FOLDED.search(m["content"]):
            continue
        if hit := _TYPE_LABEL.search(m["content"]):
            return Violation("type_label", f"message {i} names a type label {hit.group(0)!r}")
    return None


def check_register(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    register, minority = dialogue_register(d.turns("assistant"))
    if register and minority > cfg.max_register_minority:
        return Violation("mixed_register", f"assistant mostly {register} but {minority:.0%} of sentences in the other register")
    declared = d.meta.get("register") if d.source == "seed" else None
    if declared and register and declared != register:
        return Violation("register_mismatch", f"meta.register is {declared} but the assistant speaks {register}")
    return None


def check_repetition(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    for role in ("user", "assistant"):
        seen: set[str] = set()
        for t in d.turns(role):
            key = " ".join(t.split())
            if key in seen:
                return Violation("repeated_turn", f"a {role} turn appears twice")
            seen.add(key)
    words = " ".join(d.turns("assistant")).split()
    n_grams = len(words) - 2
    if n_grams >= 10:
        grams = list(zip(words, words[1:], words[2:]))
        repeats = n_grams - len(set(grams))
        # A gram seen c >= 2 times adds c to `dup` and c - 1 to `repeats`, so dup <= 2 * repeats:
        # most dialogues are cleared without counting.
        if 2 * repeats / n_grams <= cfg.max_dup_ngram_share:
            return None
        counts = Counter(grams)
        dup = sum(c for c in counts.values() if c > 1)
        if dup / n_grams > cfg.max_dup_ngram_share:
            return Violation("repeated_ngram", f"{dup / n_grams:.0%} of assistant word 3-grams repeat")
    return None


def control_text(text: str) -> str | None:
    """The first chat-template control string written in `text` (`<|eot_id|>`, `[INST]`, `</s>`, ...), or None.

    >>> control_text("네 알겠어요<|eot_id|>"), control_text("<3 [중요]")
    ('<|eot_id|>', None)
    """
    if _CONTROL_CHARS.search(text) and (hit := _CONTROL.search(text)):
        return hit.group(0)
    return None


def check_control_token(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    for i, m in enumerate(d.messages):
        if (hit := control_text(m["content"])) is not None:
            return Violation("control_token", f"message {i} has chat-template control text {hit!r}")
    return None


def check_markup(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    for i, m in enumerate(d.messages):
        # Every markup pattern but list numbering needs one of these characters.
        patterns = _MARKUP.items() if _MARKUP_CHARS.search(m["content"]) else _LIST_ONLY
        for name, pattern in patterns:
            if pattern.search(m["content"]):
                return Violation("markup", f"message {i} has a {name}")
    return None


def check_personal_data(d: Dialogue, cfg: CheckConfig) -> Violation | None:
    for i, m in enumerate(d.messages):
        if not _ANY_DIGIT_OR_AT.search(m["content"]):
            continue
        for name, pattern in _PERSONAL.items():
            if pattern.search(m["content"]):
                return Violation("personal_data", f"message {i} has a {name}")
    return None


# Order matters only for which reason a record is counted under: the most specific first.
RULES: tuple[Rule, ...] = (
    check_exchanges, check_length, check_control_token, check_markup, check_persona_break, check_type_label, check_personal_data,
    check_hangul, check_english, check_register, check_repetition,
)


def violations(d: Dialogue, cfg: CheckConfig = CheckConfig()) -> list[Violation]:
    """Every rule the dialogue breaks, in rule order."""
    return [v for rule in RULES if (v := rule(d, cfg))]


def first_violation(d: Dialogue, cfg: CheckConfig = CheckConfig()) -> Violation | None:
    """The reason a record is rejected for (the first rule it breaks), or None."""
    for rule in RULES:
        if v := rule(d, cfg):
            return v
    return None

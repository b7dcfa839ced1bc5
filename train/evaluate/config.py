"""The evaluation's own config: one frozen dataclass, checked once before any work.

The training config (`train/configs/*.yaml` + `key=value`) says which checkpoint, base model,
dataset and chat template; this one says how to evaluate it. All problems are collected and
raised together as a `ConfigError` (one line each, each naming the fix) before anything is loaded:
`--limit 0`, an unknown condition, `reference` without a reference model, a negative cap or price, ...

>>> EvalConfig().run_conditions, EvalConfig(reference_model="gpt-4o-mini").run_conditions
(('fine_tuned', 'base'), ('fine_tuned', 'base', 'reference'))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datagen import runs
from datagen.llm import redact_url
from train.config import ConfigError

CONDITIONS = ("fine_tuned", "base", "reference")
"""fine_tuned: the base with the adapter (or the merged model); base: the same base and system prompt, adapter
disabled; reference: any OpenAI-compatible model prompted with the same system prompt."""
DEFAULT_OUT = str(runs.DEFAULT_OUT)
EVAL_DIR = "eval"  # evaluations live in <out>/eval/<name>/, beside runs/, dataset/ and checkpoints/


@dataclass(frozen=True)
class EvalConfig:
    """How to evaluate a checkpoint: what to replay, with which backends and judge, where to write."""

    # -- what ----------------------------------------------------------------------------------------
    name: str | None = None
    """Output folder `<out>/eval/<name>/`; None: the checkpoint's name (`demo` with --demo)."""
    out: str = DEFAULT_OUT
    """The outputs root, as for every stage (`--out`): this writes `<out>/eval/<name>/` (ignored by git)."""
    prompts: str | None = None
    """A .jsonl file of records (`mbti`, `messages`; a system message is ignored) to replay instead of the split."""
    split: str | None = None
    """Split of the training config's dataset to replay; None: its `eval_split` (`test`)."""
    limit_per_type: int | None = None
    """Replay only the first N held-out chats of each type (`--limit N`); None: all."""
    conditions: tuple[str, ...] | None = None
    """Which of fine_tuned, base, reference to run; None: fine_tuned and base, plus reference when a
    reference model is given."""

    # -- generation ------------------------------------------------------------------------------------
    base_url: str | None = None
    """Generate fine_tuned and base through this OpenAI-compatible server (vLLM with --enable-lora) instead of
    in-process transformers; None: in-process."""
    adapter_name: str | None = None
    """The LoRA's model name on that server (`--lora-modules NAME=ADAPTER`); None: the checkpoint's name."""
    served_base: str | None = None
    """The base model's name on that server; None: the training config's `model`."""
    reference_model: str | None = None
    """Model for the `reference` condition (e.g. the generator, gpt-4o-mini)."""
    reference_base_url: str | None = None
    """Its OpenAI-compatible server; None: $OPENAI_BASE_URL, else OpenAI."""
    reference_max_cost: float | None = None
    """USD cap on the reference model's spend, earlier runs of this folder included (the shared cost cap)."""
    reference_price_in: float | None = None
    """USD per 1M prompt tokens of the reference model when datagen/cost.py does not know it (0 for a local one)."""
    reference_price_out: float | None = None
    """USD per 1M completion tokens of the reference model (with reference_price_in)."""
    max_new_tokens: int | None = None
    """Longest reply per turn; None: the training config's `max_new_tokens`. A reply cut here counts as not stopped."""
    temperature: float = 0.0
    """0: greedy (the default: an evaluation should not depend on luck); > 0 samples, seeded by `seed`."""
    top_p: float = 1.0
    """Nucleus sampling when temperature > 0."""
    repetition_penalty: float = 1.0
    """1.0: the model as it is (chat uses the training config's 1.1); in-process only."""
    seed: int = 0
    """Seed of sampled generation (each in-process batch is seeded from it; servers get it as `seed`)."""
    batch_size: int = 8
    """In-process: chats generated together, left-padded (chats are sorted by prompt length first)."""
    concurrency: int = 16
    """Server backends: requests in flight (each chat's turns are sequential, chats run side by side)."""
    loss: bool = True
    """Loss and perplexity of fine_tuned and base on the replayed chats (in-process; null with --base-url)."""

    # -- judge -----------------------------------------------------------------------------------------
    judge: bool = True
    """False (`--no-judge`): every other metric; the judge's are null."""
    judge_model: str = "gpt-4o-mini"
    """The judge: any OpenAI-compatible model (datagen/judge.py: blind type guess + persona consistency)."""
    judge_base_url: str | None = None
    """Its server; None: $OPENAI_BASE_URL, else OpenAI."""
    judge_max_cost: float | None = None
    """USD cap on the judge's spend, earlier runs of this folder included (the shared cost cap)."""
    judge_price_in: float | None = None
    """USD per 1M prompt tokens of the judge when datagen/cost.py does not know its model (0 for a local one)."""
    judge_price_out: float | None = None
    """USD per 1M completion tokens of the judge (with judge_price_in)."""
    judge_concurrency: int = 16
    """Judge requests in flight."""
    judge_max_attempts: int = 4
    """Sends of one judge request on 5xx, timeouts and connection errors before it counts as failed."""
    seeds_dir: str | None = None
    """Persona profiles the judge checks consistency against; None: the repository's seeds/."""

    # -- report ----------------------------------------------------------------------------------------
    samples: int = 3
    """Sample exchanges per condition in report.md."""
    update_card: bool | None = None
    """The checkpoint's model card: None (default) takes these results unless the card holds a more thorough
    evaluation (more held-out chats, or judged where this one is not); True (`--card`) always; False (`--no-card`)
    never."""

    def problems(self) -> list[str]:
        p: list[str] = []
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            p.append(f"--name {self.name!r}: use a plain folder name like 'tiny-cpu'")
        if self.limit_per_type is not None and self.limit_per_type < 1:
            p.append(f"--limit {self.limit_per_type}: give at least 1 chat per type, or leave --limit out to use "
                     "every held-out chat")
        if self.conditions is not None:
            unknown = [c for c in self.conditions if c not in CONDITIONS]
            for c in unknown:
                p.append(f"--conditions: unknown condition {c!r}; use {', '.join(CONDITIONS)}")
            if not self.conditions:
                p.append(f"--conditions is empty; use some of {', '.join(CONDITIONS)}")
            if len(set(self.conditions)) != len(self.conditions):
                p.append("--conditions names a condition twice")
        if "reference" in self.run_conditions and not self.reference_model:
            p.append("the reference condition needs --reference-model (any OpenAI-compatible model, e.g. gpt-4o-mini)")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            p.append(f"--max-new-tokens {self.max_new_tokens}: must be at least 1")
        if self.temperature < 0:
            p.append(f"--temperature {self.temperature}: must be 0 (greedy) or more")
        if not 0 < self.top_p <= 1:
            p.append(f"top_p {self.top_p}: must be in (0, 1]")
        if self.repetition_penalty <= 0:
            p.append(f"repetition_penalty {self.repetition_penalty}: must be > 0 (1.0 = none)")
        for key in ("batch_size", "concurrency", "judge_concurrency", "judge_max_attempts"):
            if getattr(self, key) < 1:
                p.append(f"{key} {getattr(self, key)}: must be at least 1")
        if self.samples < 0:
            p.append(f"samples {self.samples}: must be 0 or more")
        for who in ("judge", "reference"):  # the two paid models: a cap, and a price where none is known
            cap, p_in, p_out = (getattr(self, f"{who}_{k}") for k in ("max_cost", "price_in", "price_out"))
            if cap is not None and cap < 0:
                p.append(f"--{who}-max-cost {cap}: must be 0 or more")
            if (p_in is None) != (p_out is None):
                p.append(f"give both --{who}-price-in and --{who}-price-out (USD per 1M tokens), or neither")
            for key, v in (("price_in", p_in), ("price_out", p_out)):
                if (v or 0) < 0:
                    p.append(f"--{who}-{key.replace('_', '-')} {v}: must be 0 or more")
        if not self.judge_model.strip():
            p.append("--judge-model is empty: name the judge model (e.g. gpt-4o-mini)")
        if self.prompts is not None and not Path(self.prompts).is_file():
            p.append(f"--prompts {self.prompts}: no such file; give a .jsonl of records (mbti, messages)")
        return p

    def __post_init__(self) -> None:
        if isinstance(self.conditions, list):
            object.__setattr__(self, "conditions", tuple(self.conditions))
        problems = self.problems()
        if problems:
            raise ConfigError(problems)

    def folder(self, default_name: str) -> Path:
        """`<out>/eval/<name>/`: where this evaluation writes."""
        return Path(self.out) / EVAL_DIR / (self.name or default_name)

    @property
    def run_conditions(self) -> tuple[str, ...]:
        """The conditions this run evaluates, in the fixed order fine_tuned, base, reference."""
        if self.conditions is not None:
            return tuple(c for c in CONDITIONS if c in self.conditions)
        return ("fine_tuned", "base") + (("reference",) if self.reference_model else ())

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as saved beside the results: URLs without credentials, never a key."""
        d = dataclasses.asdict(self)
        for key in ("base_url", "reference_base_url", "judge_base_url"):
            d[key] = redact_url(d[key])
        d["conditions"] = list(self.run_conditions)
        return d


def parse_conditions(text: str | None) -> tuple[str, ...] | None:
    """`--conditions fine_tuned,base` → ("fine_tuned", "base"); None stays None (the default set).

    >>> parse_conditions(" fine_tuned, reference ")
    ('fine_tuned', 'reference')
    """
    if text is None:
        return None
    return tuple(c.strip() for c in text.split(",") if c.strip())

"""The settings of `datagen generate`: one frozen dataclass, checked at construction."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datagen.checks import CheckConfig
from datagen.cost import Price, price_for
from datagen.errors import UserError
from datagen.llm import LLMConfig
from datagen.schema import MBTI_TYPES
from datagen.runs import DEFAULT_OUT
from datagen.seeds import DEFAULT_SEEDS_DIR

ACCEPTORS = ("auto", "inline", "process")


def default_run_name(model: str) -> str:
    """The run a command resumes when `--run` is not given: the model name, made path-safe.

    >>> default_run_name("meta-llama/Llama-3.1-8B-Instruct")
    'meta-llama-Llama-3.1-8B-Instruct'
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.") or "run"


@dataclass(frozen=True)
class GenerateConfig:
    """Everything `datagen generate` needs; checked at construction, all problems at once."""

    types: tuple[str, ...] = ("ISTJ",)
    """Types to grow; `--mbti all` gives all 16, sharing one concurrency budget."""
    count: int = 200
    """Accepted dialogues per type in the run, in all (earlier invocations count)."""
    run: str | None = None
    """Run name (a folder under out_dir/runs); None: `default_run_name(model)`, so a rerun resumes."""
    out_dir: Path = DEFAULT_OUT
    """Where runs live."""
    seeds_dir: Path = DEFAULT_SEEDS_DIR
    """personas/, topics.yaml and dialogues/."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """Model, server, concurrency and retry bounds."""
    seed: int = 0
    """Seeds every request's RNG (examples, topics, registers): the same state gives the same prompt."""
    seed_examples: int = 2
    """k: hand-written seed dialogues shown per request (self-instruct showed 6 short tasks; dialogues are long)."""
    generated_examples: int = 1
    """m: this run's accepted dialogues shown per request (seeds fill in until there are enough)."""
    per_request: int = 3
    """n: new dialogues asked for per request (one topic each; ~1k tokens each, so max_tokens must fit n)."""
    max_cost: float | None = None
    """USD this run may spend in all (stored responses count); None: no cap."""
    price: Price | None = None
    """USD per 1M tokens; None: looked up in datagen.cost.PRICES by model name."""
    max_requests_factor: float = 4.0
    """A type stops after this × the requests its count needs at full acceptance (+ 2): a model whose output is mostly rejected must not loop forever."""
    max_failures_in_a_row: int = 5
    """Requests failing in a row (after their own retries) that stop the run: the server is down or unreachable."""
    checks: CheckConfig = field(default_factory=CheckConfig)
    """The seed checker's rules, reused for acceptance (incl. the near-duplicate definition, datagen/dedup.py)."""
    acceptor: str = "auto"
    """Where candidates are checked: "inline" (in the process driving the HTTP client), "process" (one
    worker process, so the client keeps a core to itself) or "auto" (a process from --concurrency 32 up
    on a multi-core machine; one core cannot drive 300 requests/s and check their dialogues too)."""

    def __post_init__(self) -> None:
        problems = list(self.llm.problems())
        unknown = [t for t in self.types if t not in MBTI_TYPES]
        if unknown or not self.types:
            problems.append(f"unknown type {', '.join(unknown) or '(none)'}: use one of {' '.join(MBTI_TYPES)}, or all")
        if self.count < 1:
            problems.append(f"--count must be at least 1 (got {self.count})")
        if self.max_cost is not None and self.max_cost < 0:
            problems.append(f"--max-cost must be 0 or more USD (got {self.max_cost:g})")
        if self.per_request < 1:
            problems.append(f"--per-request must be at least 1 (got {self.per_request})")
        if self.seed_examples < 0 or self.generated_examples < 0:
            problems.append("--seed-examples and --generated-examples must be 0 or more")
        if self.run is not None and (not self.run.strip() or "/" in self.run or self.run in (".", "..")):
            problems.append(f"--run must be a plain folder name (got {self.run!r})")
        if self.acceptor not in ACCEPTORS:
            problems.append(f"acceptor must be one of {', '.join(ACCEPTORS)} (got {self.acceptor!r})")
        if self.price is not None and (self.price.input < 0 or self.price.output < 0):
            problems.append("--price-in and --price-out must be 0 or more")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def run_name(self) -> str:
        return self.run or default_run_name(self.llm.model)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / "runs" / self.run_name

    @property
    def model_price(self) -> Price | None:
        return self.price or price_for(self.llm.model)

    @property
    def accept_in_process(self) -> bool:
        """Whether acceptance runs in a worker process (see `acceptor`)."""
        if self.acceptor == "auto":
            return self.llm.concurrency >= 32 and (os.cpu_count() or 1) >= 2
        return self.acceptor == "process"

    def resolved(self) -> dict[str, Any]:
        """The config as written to config.json: plain JSON, URLs without credentials, never a key."""
        d = asdict(self)
        d["types"] = list(self.types)
        d["run"] = self.run_name
        d["out_dir"] = str(self.out_dir)
        d["seeds_dir"] = str(self.seeds_dir)
        d["llm"] = self.llm.resolved()
        d["checks"]["banned_phrases"] = list(self.checks.banned_phrases)
        d["price"] = self.model_price.to_dict() if self.model_price else None
        return d


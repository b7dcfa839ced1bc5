"""`datagen generate --dry-run`: what a run would send, its first prompt, tokens and dollars; offline."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from datagen.cost import BATCH_DISCOUNT, Price, TokenCounter, cost_usd, format_usd
from datagen.generate.config import GenerateConfig
from datagen.generate.planning import PlannedRequest, estimate_output_tokens, plan_request
from datagen.generate.state import open_states
from datagen.llm import Usage, redact_url, resolve_base_url


@dataclass
class TypePlan:
    mbti: str
    accepted: int
    to_go: int
    requests: int
    first: PlannedRequest | None
    prompt_tokens: int
    completion_tokens: int


@dataclass
class DryRunReport:
    run: str
    run_dir: Path
    model: str
    base_url: str | None
    plans: list[TypePlan]
    token_note: str
    price: Price | None

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.plans)

    @property
    def prompt_tokens(self) -> int:
        return sum(p.prompt_tokens for p in self.plans)

    @property
    def completion_tokens(self) -> int:
        return sum(p.completion_tokens for p in self.plans)

    @property
    def cost(self) -> float | None:
        if self.price is None:
            return None
        return cost_usd(Usage(self.prompt_tokens, self.completion_tokens), self.price)


def plan_run(cfg: GenerateConfig, counter: TokenCounter | None = None) -> DryRunReport:
    """What `generate` would send: per type the requests to go, the first prompt, tokens and dollars.

    Reads the seeds and the run folder (so a resumed run plans only what is left); sends and writes nothing.
    """
    counter = counter or TokenCounter(cfg.llm.model)
    states = open_states(cfg, cfg.count, cfg.types)
    plans = []
    try:
        for s in states:
            to_go = max(0, cfg.count - s.stats.accepted)
            n_req = math.ceil(to_go / cfg.per_request)
            first = plan_request(s.plan, s.take_index(), cfg) if n_req else None
            p_tok = counter.count_messages(first.body["messages"]) * n_req if first else 0
            c_tok = estimate_output_tokens(s.plan.seeds, cfg.per_request, counter) * n_req
            plans.append(TypePlan(s.mbti, s.stats.accepted, to_go, n_req, first, p_tok, c_tok))
    finally:
        for s in states:
            s.store.close()
    return DryRunReport(cfg.run_name, cfg.run_dir, cfg.llm.model, redact_url(resolve_base_url(cfg.llm.base_url)),
                        plans, counter.note, cfg.model_price)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def format_dry_run(report: DryRunReport, show_prompts: int = 1) -> str:
    """The dry run as text: the first prompt of the first `show_prompts` types, then the plan and estimates."""
    out = [f"dry run: nothing is sent. run {report.run} ({report.run_dir}), model {report.model}, "
           f"server {report.base_url or 'OpenAI (https://api.openai.com/v1)'}"]
    shown = 0
    for p in report.plans:
        if p.first is None or shown >= show_prompts:
            continue
        shown += 1
        out.append(f"--- first request for {p.mbti} (request {p.first.index}, hash {p.first.request_hash[:12]}) ---")
        for m in p.first.body["messages"]:
            out.append(f"[{m['role']}]")
            out.append(m["content"])
        out.append("--- end of prompt ---")
    for p in report.plans:
        out.append(f"{p.mbti}: {p.accepted} accepted, {p.to_go} to go → {_plural(p.requests, 'request')} "
                   f"(~{p.prompt_tokens:,} prompt + ~{p.completion_tokens:,} completion tokens)")
    out.append(f"planned: {_plural(report.requests, 'request')}, ~{report.prompt_tokens:,} prompt + "
               f"~{report.completion_tokens:,} completion tokens, if every dialogue is accepted (rejects add requests)")
    out.append(report.token_note)
    if report.price is None:
        out.append(f"cost: no price known for model {report.model} (a local server costs nothing per token); "
                   "pass --price-in/--price-out to estimate")
    else:
        out.append(f"cost: ~{format_usd(report.cost)} at ${report.price.input:g} / ${report.price.output:g} per 1M "
                   f"prompt / completion tokens (Batch API: ~{format_usd((report.cost or 0) * BATCH_DISCOUNT)})")
    return "\n".join(out)


"""The generate loop: keeps every type's requests flowing through one `LLMStep` until each has its count.

Workers (more than HTTP slots: a job also plans its prompt and awaits its verdicts, and meanwhile
another should hold the slot; the client's limiter caps requests in flight) take the type that
needs a request most, plan its next request from the freshest accepted examples, run it through
the step (cache, cost cap, one send, raw stored) and hand the stored line to the acceptor.
"""

from __future__ import annotations

import asyncio
import math
import os
from typing import Callable

from datagen.cost import Budget, BudgetExhausted, TokenCounter, format_usd
from datagen.errors import UserError
from datagen.generate.acceptance import AcceptorHandle
from datagen.generate.config import GenerateConfig
from datagen.generate.planning import plan_request
from datagen.generate.state import (RunFiles, RunLock, RunStats, TypeState, apply_verdicts, check_run_model,
                                    open_states, pool_spec, repair_run_files, replay_stored, run_spend)
from datagen.runs import append_config
from datagen.llm import LLMClient, LLMFatalError, resolve_base_url
from datagen.step import Call, LLMStep, StageStopped


def request_call(s: TypeState, cfg: GenerateConfig) -> Call:
    """The next request of a type as a `Call` (its raw line records what the prompt showed)."""
    p = plan_request(s.plan, s.take_index(), cfg)
    fields = {"mbti": p.mbti, "request_index": p.index, "examples": list(p.examples),
              "items": [list(x) for x in p.items]}
    return Call(p.body, fields, kind=f"generate:{p.mbti}", key=p.request_hash)


class Scheduler:
    """One generate invocation's loop over all its types (they share one concurrency budget and cost cap)."""

    def __init__(self, cfg: GenerateConfig, states: list[TypeState], files: RunFiles, stats: RunStats,
                 progress: Callable[[RunStats], None], step: LLMStep, acceptor: AcceptorHandle):
        self.cfg, self.states, self.files, self.stats = cfg, states, files, stats
        self.progress, self.step, self.acceptor = progress, step, acceptor
        self.cond = asyncio.Condition()
        self.fatal = ""

    def finished(self) -> bool:
        return bool(self.stats.stop_reason) or all(s.stats.done or s.stats.stopped for s in self.states)

    def take(self) -> TypeState | None:
        """The type that needs a request most (most dialogues still to come), or None if none may go."""
        best: tuple[TypeState, int] | None = None
        for s in self.states:
            if s.stats.done or s.stats.stopped:
                continue
            need = s.stats.target - s.stats.accepted - self.cfg.per_request * s.inflight  # type: ignore[operator]
            if need <= 0:
                continue
            if s.stats.requests + s.stats.cached + s.inflight >= s.requests_cap:
                if s.inflight == 0:
                    s.stats.stopped = (f"{s.stats.requests} requests gave {s.stats.new} acceptable dialogues; "
                                       "most output is rejected (see rejected.jsonl)")
                continue
            if best is None or need > best[1]:
                best = (s, need)
        if best is None:
            return None
        best[0].inflight += 1
        return best[0]

    async def run_job(self, s: TypeState) -> None:
        try:
            call = request_call(s, self.cfg)  # planned now: it shows the freshest accepted examples
            out = await self.step.run(call)
            if not out.sent:
                s.stats.cached += 1
            elif not s.stats.count_sent(out):
                return
            apply_verdicts(out.line, await self.acceptor.judge(out.line), s, self.files)
        except BudgetExhausted as e:
            self.stats.stop_reason = self.stats.stop_reason or str(e)
        except (StageStopped, LLMFatalError) as e:
            self.fatal = self.fatal or str(e)
            self.stats.stop_reason = self.stats.stop_reason or str(e)
        finally:
            s.inflight -= 1
            self.progress(self.stats)

    async def worker(self) -> None:
        while True:
            async with self.cond:
                while True:
                    job = None if self.finished() else self.take()
                    # nothing to take and nothing in flight whose outcome could change that: done
                    if job is not None or self.finished() or all(s.inflight == 0 for s in self.states):
                        break
                    await self.cond.wait()
            if job is None:
                return
            try:
                await self.run_job(job)
            finally:
                async with self.cond:
                    self.cond.notify_all()

    async def run(self) -> None:
        n = self.cfg.llm.concurrency + max(2, self.cfg.llm.concurrency // 4)
        await asyncio.gather(*(self.worker() for _ in range(n)))


def first_request_check(cfg: GenerateConfig, states: list[TypeState], budget: Budget) -> None:
    """A cap below one request's worst case can never send anything: say so, with the smallest cap that can."""
    if cfg.max_cost is None:
        return
    s = next((s for s in states if not s.stats.done), None)
    if s is None:
        return
    body = plan_request(s.plan, 0, cfg).body
    worst = budget.worst_case(body, f"generate:{s.mbti}")
    if worst > cfg.max_cost:
        need = math.ceil(worst * 1e4) / 1e4
        raise UserError(f"--max-cost {format_usd(cfg.max_cost)} is below what one request may cost: up to "
                        f"{format_usd(worst)} (~{budget.prompt_tokens(body):,} prompt tokens + max_tokens "
                        f"{cfg.llm.max_tokens:,} at ${cfg.model_price.input:g} / ${cfg.model_price.output:g} per 1M); "  # type: ignore[union-attr]
                        f"pass --max-cost {need:g} or more, or lower --max-tokens")


def generate(cfg: GenerateConfig, progress: Callable[[RunStats], None] | None = None,
             api_key: str | None = None) -> RunStats:
    """Grow each type of `cfg.types` to `cfg.count` accepted dialogues in the run; resumable.

    Stops early, cleanly, when `max_cost` would be exceeded (stats.stop_reason says so); raises
    `UserError` when the server cannot be used (key, URL, model, unreachable), after closing
    every file: what was accepted stays.
    """
    progress = progress or (lambda s: None)
    base_url = resolve_base_url(cfg.llm.base_url)
    if not (api_key or os.environ.get("OPENAI_API_KEY")) and not base_url:
        raise UserError("no API key and no server: set OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL / --base-url for "
                        "a local OpenAI-compatible server (vLLM, Ollama, llama.cpp); --dry-run and --batch-out work "
                        "offline without either")
    if cfg.max_cost is not None and cfg.model_price is None:
        raise UserError(f"no price known for model {cfg.llm.model}, so --max-cost cannot be enforced; pass "
                        "--price-in and --price-out (USD per 1M tokens; 0 for a local server)")
    check_run_model(cfg)
    with RunLock(cfg.run_dir):
        return _generate_locked(cfg, progress, api_key)


def _generate_locked(cfg: GenerateConfig, progress: Callable[[RunStats], None], api_key: str | None) -> RunStats:
    repaired = repair_run_files(cfg.run_dir)
    states = open_states(cfg, cfg.count, cfg.types)
    run_dir = cfg.run_dir
    budget = Budget(cfg.max_cost, cfg.model_price, TokenCounter(cfg.llm.model) if cfg.max_cost is not None else None,
                    spent_before=run_spend(run_dir, cfg.model_price, {s.mbti: s.store for s in states}))
    first_request_check(cfg, states, budget)
    append_config(run_dir, "generate", cfg.resolved())
    stats = RunStats(cfg.run_name, run_dir, {s.mbti: s.stats for s in states},
                     budget=budget, notices=repaired)
    files = RunFiles(run_dir)
    acceptor = AcceptorHandle(cfg, [pool_spec(s) for s in states], cfg.accept_in_process)
    fatal = ""
    try:
        async def main() -> str:
            try:
                if not all(s.stats.done for s in states):
                    acceptor.start_soon()
                for s in states:
                    await replay_stored(s, acceptor, files)
                progress(stats)
                if all(s.stats.done for s in states):
                    return ""
                async with LLMClient(cfg.llm, api_key=api_key, notice=stats.notices.append) as client:
                    by_type = {s.mbti: s.store for s in states}
                    step = LLMStep(client, lambda call: by_type[call.fields["mbti"]], budget,
                                   max_failures_in_a_row=cfg.max_failures_in_a_row)
                    loop = Scheduler(cfg, states, files, stats, progress, step, acceptor)
                    await loop.run()
                    return loop.fatal
            finally:
                await acceptor.aclose()

        fatal = asyncio.run(main())
    finally:
        files.close()
        for s in states:
            s.store.close()
        progress(stats)
    if fatal:
        kept = sum(s.stats.accepted for s in states)
        raise UserError(f"{fatal}; {kept} accepted dialogue(s) kept in {run_dir / 'generated'}; rerun the same "
                        "command to resume")
    return stats

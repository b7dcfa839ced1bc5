"""The OpenAI Batch API path: the same requests, half the price, no client running for hours.

`write_batch` plans the requests `datagen generate` would send (same prompts, same request
hashes) and writes them as a Batch API input file, one request per line:

    {"custom_id": "ISTJ-000000-3f2a9c1e0b7d5a41", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

It calls nothing. The plan (custom_id → type, request index, request hash, examples and
topics shown) is appended to `outputs/runs/<run>/batch_plan.jsonl` for the ingest.
Requests are planned from the pool as it is now: every request shows the same accepted
examples, so ingest one batch before writing the next.

`ingest_batch` feeds a Batch API output file (`{"custom_id", "response": {"status_code",
"body"}, "error"}` per line) through the same path as a live run: the LLM step (the result plays
the part of the server's answer: stored in raw/ with what it was billed at the Batch API's half
price) → accept. It is idempotent: a custom_id whose result is already stored is skipped. The
run's model is the one `--batch-out` recorded in config.jsonl (prices follow it).
"""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from datagen.cost import BATCH_DISCOUNT, Budget, TokenCounter, cost_usd
from datagen.errors import UserError
from datagen.generate import (AcceptorHandle, GenerateConfig, RunFiles, RunLock, TypeStats, append_config,
                              apply_verdicts, check_run_model, estimate_output_tokens, open_states, plan_request,
                              pool_spec)
from datagen.generate.state import repair_run_files
from datagen.llm import ChatResult, LLMConfig, Usage
from datagen.runs import generator_model
from datagen.schema import MBTI_TYPES, JsonlAppender, LineError, iter_jsonl, write_jsonl
from datagen.step import Call, LLMStep

BATCH_URL = "/v1/chat/completions"
MAX_BATCH_REQUESTS = 50_000
"""The Batch API's limit on requests per input file."""
_CUSTOM_ID = re.compile(r"^([A-Z]{4})-(\d+)-([0-9a-f]+)$")


@dataclass
class BatchWriteReport:
    path: Path
    plan_path: Path
    requests: dict[str, int]
    prompt_tokens: int
    completion_tokens: int
    cost: float | None
    """Estimated USD at Batch API prices (None: no price known)."""
    token_note: str


def write_batch(cfg: GenerateConfig, path: str | Path, counter: TokenCounter | None = None) -> BatchWriteReport:
    """Write the requests that bring each type to `cfg.count` as a Batch API input file; sends nothing."""
    counter = counter or TokenCounter(cfg.llm.model)
    check_run_model(cfg)
    with RunLock(cfg.run_dir):
        return _write_batch_locked(cfg, Path(path), counter)


def _write_batch_locked(cfg: GenerateConfig, path: Path, counter: TokenCounter) -> BatchWriteReport:
    states = open_states(cfg, cfg.count, cfg.types)
    lines: list[dict[str, Any]] = []
    plan: list[dict[str, Any]] = []
    requests: dict[str, int] = {}
    prompt_tokens = completion_tokens = 0
    try:
        for s in states:
            n = math.ceil(max(0, cfg.count - s.stats.accepted) / cfg.per_request)
            requests[s.mbti] = n
            out_tokens = estimate_output_tokens(s.plan.seeds, cfg.per_request, counter)
            for _ in range(n):
                p = plan_request(s.plan, s.take_index(), cfg)
                lines.append({"custom_id": p.custom_id, "method": "POST", "url": BATCH_URL, "body": p.body})
                plan.append({"custom_id": p.custom_id, "mbti": p.mbti, "request_index": p.index,
                             "request_hash": p.request_hash, "examples": list(p.examples),
                             "items": [list(x) for x in p.items]})
                prompt_tokens += counter.count_messages(p.body["messages"])
                completion_tokens += out_tokens
    finally:
        for s in states:
            s.store.close()
    if len(lines) > MAX_BATCH_REQUESTS:
        raise UserError(f"{len(lines)} requests exceed the Batch API's {MAX_BATCH_REQUESTS} per file; "
                        "lower --count or write one type at a time")
    write_jsonl(path, lines)
    append_config(cfg.run_dir, "batch-out", cfg.resolved())  # ingest-batch reads the run's model from here
    plan_path = cfg.run_dir / "batch_plan.jsonl"
    known = {obj.get("custom_id") for _, obj in iter_jsonl(plan_path)} if plan_path.exists() else set()
    with JsonlAppender(plan_path) as f:
        for entry in plan:
            if entry["custom_id"] not in known:
                f.write(entry)
    price = cfg.model_price
    cost = cost_usd(Usage(prompt_tokens, completion_tokens), price) * BATCH_DISCOUNT if price else None
    return BatchWriteReport(path, plan_path, requests, prompt_tokens, completion_tokens, cost, counter.note)


@dataclass
class IngestReport:
    stats: dict[str, TypeStats]
    lines: int = 0
    skipped: int = 0
    """Results already stored by an earlier ingest (idempotence)."""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Run files whose unfinished last line was completed or dropped before ingesting."""


def _load_plan(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / "batch_plan.jsonl"
    plan: dict[str, dict[str, Any]] = {}
    if path.exists():
        for _, obj in iter_jsonl(path):
            if isinstance(obj, dict) and isinstance(obj.get("custom_id"), str):
                plan.setdefault(obj["custom_id"], obj)
    return plan


def run_model(cfg: GenerateConfig) -> GenerateConfig:
    """`cfg` with the model the run was planned with (recorded by --batch-out or generate), when one was."""
    model = generator_model(cfg.run_dir)
    if model is None or model == cfg.llm.model:
        return cfg
    return replace(cfg, llm=replace(cfg.llm, model=model))


def ingest_batch(results: str | Path, cfg: GenerateConfig, model_given: bool = False) -> IngestReport:
    """Accept the dialogues of a Batch API output file into the run, exactly as a live run would.

    Without `model_given`, the run's own model (config.jsonl) replaces `cfg.llm.model`; a model given
    that differs from the run's is refused, as in `generate`.
    """
    results = Path(results)
    if not results.is_file():
        raise UserError(f"batch results file {results} does not exist")
    if model_given:
        check_run_model(cfg)
    else:
        cfg = run_model(cfg)
    plan = _load_plan(cfg.run_dir)
    report = IngestReport(stats={})
    entries: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
    for line_no, obj in iter_jsonl(results):
        report.lines += 1
        if isinstance(obj, LineError):
            report.problems.append(str(obj))
            continue
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        entry = plan.get(cid) if isinstance(cid, str) else None
        m = _CUSTOM_ID.match(cid) if isinstance(cid, str) else None
        mbti = entry["mbti"] if entry else (m.group(1) if m else None)
        if mbti not in MBTI_TYPES:
            report.problems.append(f"{results}:{line_no}: unknown_custom_id: {cid!r} is not a custom_id "
                                   "written by --batch-out (TYPE-INDEX-HASH)")
            continue
        entries.append((mbti, obj, entry))
    types = tuple(t for t in MBTI_TYPES if any(e[0] == t for e in entries))
    if not types:
        return report
    with RunLock(cfg.run_dir):
        return _ingest_locked(replace(cfg, types=types), types, entries, report)


class BatchAnswers:
    """Plays the server for the LLM step: the answer to a request is its line of the Batch API output."""

    def __init__(self, cfg: LLMConfig):
        self.cfg = cfg
        self.base_url = "the OpenAI Batch API"
        self.answers: dict[str, dict[str, Any]] = {}

    async def complete(self, body: dict[str, Any], key: str | None = None, cancelled: Any = None) -> ChatResult:
        obj = self.answers[key or ""]
        response = obj.get("response") if isinstance(obj.get("response"), dict) else {}
        completion = response.get("body")
        if response.get("status_code") == 200 and isinstance(completion, dict):
            return ChatResult(key or "", completion, None, "", 1, "json_schema", 0.0)
        detail = str(obj.get("error") or f"HTTP {response.get('status_code')}")[:300]
        return ChatResult(key or "", None, "batch_error", detail, 1, "json_schema", 0.0)


def _ingest_locked(cfg: GenerateConfig, types: tuple[str, ...], entries: list, report: IngestReport) -> IngestReport:
    report.notes += repair_run_files(cfg.run_dir)
    states = {s.mbti: s for s in open_states(cfg, None, types, need_persona=False)}
    report.stats = {t: s.stats for t, s in states.items()}
    append_config(cfg.run_dir, "ingest-batch", cfg.resolved())
    files = RunFiles(cfg.run_dir)
    acceptor = AcceptorHandle(cfg, [pool_spec(s) for s in states.values()], in_process=False)
    answers = BatchAnswers(cfg.llm)
    # Already paid: no cap. The step prices each result at the Batch API's discount and stores it.
    step = LLMStep(answers, lambda call: states[call.fields["mbti"]].store, Budget(None, cfg.model_price),  # type: ignore[arg-type]
                   max_failures_in_a_row=10**9, source="batch")

    async def run() -> None:
        for mbti, obj, entry in entries:
            s = states[mbti]
            cid = obj["custom_id"]
            key = entry["request_hash"] if entry else f"batch:{cid}"
            if s.store.known(key):
                report.skipped += 1
                continue
            m = _CUSTOM_ID.match(cid)
            index = entry["request_index"] if entry else (int(m.group(2)) if m else None)
            fields = {"mbti": mbti, "request_index": index, "custom_id": cid,
                      "examples": entry.get("examples", []) if entry else [],
                      "items": entry.get("items", []) if entry else []}
            answers.answers[key] = obj
            out = await step.run(Call({}, fields, kind=f"generate:{mbti}", key=key))
            if not s.stats.count_sent(out):  # a failed batch answer is stored with error "batch_error"
                continue
            apply_verdicts(out.line, acceptor.judge_now(out.line), s, files)

    try:
        asyncio.run(run())
    finally:
        files.close()
        for s in states.values():
            s.store.close()
    return report

"""The OpenAI Batch API path: the same requests, half the price, no client running for hours.

`write_batch` plans the requests `datagen generate` would send (same prompts, same request
hashes) and writes them as a Batch API input file, one request per line:

    {"custom_id": "ISTJ-000000-3f2a9c1e0b7d5a41", "method": "POST", "url": "/v1/chat/completions", "body": {...}}

It calls nothing. The plan (custom_id → type, request index, request hash, examples and
topics shown) is appended to `outputs/runs/<run>/batch_plan.jsonl` for the ingest.
Requests are planned from the pool as it is now: every request shows the same accepted
examples, so ingest one batch before writing the next.

`ingest_batch` feeds a Batch API output file (`{"custom_id", "response": {"status_code",
"body"}, "error"}` per line) through the same store → parse → check → accept path as a live
run. It is idempotent: a custom_id whose result is already stored is skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datagen.cost import BATCH_DISCOUNT, TokenCounter, cost_usd
from datagen.errors import UserError
from datagen.generate import (AcceptorHandle, GenerateConfig, RunFiles, RunLock, TypeStats, _check_run_model,
                              _open_states, apply_verdicts, estimate_output_tokens, plan_request, pool_spec)
from datagen.llm import Usage, read_completion
from datagen.schema import MBTI_TYPES, JsonlAppender, LineError, iter_jsonl, write_jsonl

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
    _check_run_model(cfg)
    with RunLock(cfg.run_dir):
        return _write_batch_locked(cfg, Path(path), counter)


def _write_batch_locked(cfg: GenerateConfig, path: Path, counter: TokenCounter) -> BatchWriteReport:
    states = _open_states(cfg, cfg.count, cfg.types)
    lines: list[dict[str, Any]] = []
    plan: list[dict[str, Any]] = []
    requests: dict[str, int] = {}
    prompt_tokens = completion_tokens = 0
    try:
        for s in states:
            n = math.ceil(max(0, cfg.count - s.stats.accepted) / cfg.per_request)
            requests[s.mbti] = n
            out_tokens = estimate_output_tokens(s.seeds, cfg.per_request, counter)
            for _ in range(n):
                p = plan_request(s, s.take_index(), cfg)
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


def _load_plan(run_dir: Path) -> dict[str, dict[str, Any]]:
    path = run_dir / "batch_plan.jsonl"
    plan: dict[str, dict[str, Any]] = {}
    if path.exists():
        for _, obj in iter_jsonl(path):
            if isinstance(obj, dict) and isinstance(obj.get("custom_id"), str):
                plan.setdefault(obj["custom_id"], obj)
    return plan


def ingest_batch(results: str | Path, cfg: GenerateConfig) -> IngestReport:
    """Accept the dialogues of a Batch API output file into the run, exactly as a live run would."""
    results = Path(results)
    if not results.is_file():
        raise UserError(f"batch results file {results} does not exist")
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


def _ingest_locked(cfg: GenerateConfig, types: tuple[str, ...], entries: list, report: IngestReport) -> IngestReport:
    states = {s.mbti: s for s in _open_states(cfg, None, types, need_persona=False)}
    report.stats = {t: s.stats for t, s in states.items()}
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    files = RunFiles(cfg.run_dir)
    acceptor = AcceptorHandle(cfg, [pool_spec(s) for s in states.values()], in_process=False)
    try:
        for mbti, obj, entry in entries:
            s = states[mbti]
            cid = obj["custom_id"]
            key = entry["request_hash"] if entry else f"batch:{cid}"
            if s.store.known(key):
                report.skipped += 1
                continue
            response = obj.get("response") if isinstance(obj.get("response"), dict) else {}
            body = response.get("body")
            ok = response.get("status_code") == 200 and isinstance(body, dict)
            m = _CUSTOM_ID.match(cid)
            index = entry["request_index"] if entry else (int(m.group(2)) if m else None)
            line = {"request_hash": key, "mbti": mbti, "request_index": index, "source": "batch", "custom_id": cid,
                    "examples": entry.get("examples", []) if entry else [],
                    "items": entry.get("items", []) if entry else [], "response_format": "json_schema",
                    "attempts": 1, "latency_s": 0.0, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "completion": body if ok else None, "error": None if ok else "batch_error",
                    "detail": "" if ok else str(obj.get("error") or f"HTTP {response.get('status_code')}")[:300]}
            s.store.add(line)
            s.stats.requests += 1
            if not ok:
                s.stats.failed["batch_error"] += 1
                continue
            usage = read_completion(body).usage
            s.stats.prompt_tokens += usage.prompt_tokens
            s.stats.completion_tokens += usage.completion_tokens
            s.stats.cost += cost_usd(usage, cfg.model_price) * BATCH_DISCOUNT
            apply_verdicts(line, acceptor.judge_now(line), s, files)
    finally:
        files.close()
        for s in states.values():
            s.store.close()
    return report

"""Acceptance of generated candidates: schema, the shared rules, exact and near duplicates.

`Acceptor.judge(line)` does no I/O: it returns a `Verdict` per candidate of one stored response
and updates its pools, so the same calls in the same order give the same verdicts, here or in the
worker process `AcceptorHandle` runs from --concurrency 32 up (one core cannot drive 300
requests/s and check their dialogues too; bench/RESULTS.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datagen.checks import CheckConfig, first_violation
from datagen.dedup import MinHashIndex
from datagen.generate.config import GenerateConfig
from datagen.llm import completion_failure, read_completion
from datagen.prompts import register_of
from datagen.schema import Dialogue, RecordError
from datagen.step import extract_json


def parse_dialogues(content: str) -> tuple[list[Any], tuple[str, str] | None]:
    """The `dialogues` list of a response text, or ([], (reason, detail)).

    Tolerates a ```json fence and text around the object (servers without structured output).

    >>> parse_dialogues('{"dialogues": [{"topic": "이사", "messages": []}]}')
    ([{'topic': '이사', 'messages': []}], None)
    >>> parse_dialogues('{"dialogues": [')[1][0]
    'bad_json'
    """
    try:
        obj = extract_json(content)
    except json.JSONDecodeError as e:
        return [], ("bad_json", f"{e.msg} at line {e.lineno} column {e.colno}")
    if not isinstance(obj, dict) or not isinstance(obj.get("dialogues"), list):
        return [], ("bad_shape", 'expected {"dialogues": [...]}')
    if not obj["dialogues"]:
        return [], ("no_dialogues", "the dialogues list is empty")
    return obj["dialogues"], None


SURPLUS = "surplus"


@dataclass
class Verdict:
    """What becomes of one candidate, or (candidate None) of a whole unusable response."""

    candidate: int | None
    reason: str | None
    """None: accepted; SURPLUS: left in raw/ because the count was reached; else why it was rejected."""
    detail: str = ""
    record: dict[str, Any] | None = None
    """The dialogue as a record: the accepted one, or a rejected one that could be built."""
    raw: Any = None
    """What the model wrote, when no record could be built."""


@dataclass
class TypePool:
    """One type's acceptance state: what is already there (seeds + accepted) and how many are wanted."""

    mbti: str
    target: int | None
    accepted: int
    ids: set[str]
    handled: set[tuple[str, int | None]]
    """(request hash, candidate) pairs already accepted or rejected: replaying a response skips them."""
    index: MinHashIndex


@dataclass
class PoolSpec:
    """Plain data an Acceptor is built from (it may be built in another process)."""

    mbti: str
    target: int | None
    seeds: list[dict[str, Any]]
    accepted: list[dict[str, Any]]
    handled: set[tuple[str, int | None]]


class Acceptor:
    """Decides every candidate: the record schema, the seed checker's rules, exact and near duplicates.

    No I/O: `judge(line)` returns a `Verdict` per candidate of a stored response and updates the
    pools, so the same calls in the same order give the same verdicts, here or in a worker process.
    """

    def __init__(self, checks: CheckConfig, run: str, model: str, pools: dict[str, TypePool]):
        self.checks = checks
        self.run = run
        self.model = model
        self.pools = pools

    @classmethod
    def build(cls, checks: CheckConfig, run: str, model: str, specs: list[PoolSpec]) -> "Acceptor":
        pools = {}
        for sp in specs:
            index = MinHashIndex(checks)
            records = {}
            for rec in sp.seeds + sp.accepted:
                d = Dialogue.from_dict(rec)
                records.setdefault(d.id, d)
            index.extend(records.items())  # signatures of the whole pool in one vectorised pass
            ids = set(records)
            handled = set(sp.handled) | {(r["meta"]["request_hash"], r["meta"].get("candidate")) for r in sp.accepted
                                         if isinstance(r.get("meta", {}).get("request_hash"), str)}
            pools[sp.mbti] = TypePool(sp.mbti, sp.target, len(sp.accepted), ids, handled, index)
        return cls(checks, run, model, pools)

    def judge(self, line: dict[str, Any]) -> list[Verdict]:
        """Verdicts for the not-yet-handled candidates of one stored response (idempotent)."""
        pool = self.pools[line["mbti"]]
        h = line["request_hash"]
        completion = line["completion"] if isinstance(line["completion"], dict) else {}
        c = read_completion(completion)
        failure = completion_failure(c)
        cands: list[Any] = []
        if failure is None:
            cands, failure = parse_dialogues(c.content or "")
        if failure is not None:
            if (h, None) in pool.handled:
                return []
            pool.handled.add((h, None))
            return [Verdict(None, failure[0], failure[1], raw=c.content)]
        items = [tuple(x) for x in line.get("items") or []]  # (topic, register[, relation, exchanges])
        requested = {it[0] for it in items}
        model = completion.get("model") if isinstance(completion.get("model"), str) else self.model
        out = []
        for j, cand in enumerate(cands):
            if (h, j) in pool.handled:
                continue
            if pool.target is not None and pool.accepted >= pool.target:
                out.append(Verdict(j, SURPLUS))  # not marked handled: a larger --count uses it later
                continue
            v = self._judge_one(pool, line, j, cand, items, requested, model, c.usage.to_dict())
            pool.handled.add((h, j))
            out.append(v)
        return out

    def _judge_one(self, pool: TypePool, line: dict[str, Any], j: int, cand: Any, items: list[tuple],
                   requested: set[str], model: str, usage: dict[str, int]) -> Verdict:
        if not isinstance(cand, dict) or not isinstance(cand.get("messages"), list):
            return Verdict(j, "bad_shape", "a dialogue needs a messages list", raw=cand)
        topic = cand.get("topic") if isinstance(cand.get("topic"), str) else ""
        if topic.strip() not in requested and j < len(items):
            topic = items[j][0]  # the model paraphrased the topic: keep the one asked for, so coverage counts right
        meta = {"model": model, "run": self.run, "request_hash": line["request_hash"], "candidate": j,
                "request_index": line.get("request_index"), "examples": line.get("examples", []), "usage": usage,
                "response_format": line.get("response_format")}
        if j < len(items):
            meta["requested_register"] = items[j][1]
            if len(items[j]) >= 4:
                meta["requested_relation"], meta["requested_exchanges"] = items[j][2], items[j][3]
        if line.get("custom_id"):
            meta["custom_id"] = line["custom_id"]
        try:
            d = Dialogue.build(pool.mbti, topic.strip(), cand["messages"], source="generated", meta=meta)
        except RecordError as e:
            return Verdict(j, e.rule, e.detail, raw=cand)
        v = first_violation(d, self.checks)
        if v is not None:
            return Verdict(j, v.rule, v.detail, record=d.to_dict())
        if d.id in pool.ids:
            return Verdict(j, "duplicate", f"same messages as {d.id}", record=d.to_dict())
        sig = pool.index.signature(d)
        hit = pool.index.query(sig)
        if hit is not None:
            return Verdict(j, "near_dup", f"character {self.checks.near_dup_ngram}-gram Jaccard ~{hit[1]:.2f} with {hit[0]}",
                           record=d.to_dict())
        reg = register_of(d)
        if reg:
            d.meta["register"] = reg  # like the seeds' meta.register: lets curation balance 존댓말 / 반말
        pool.index.insert(d.id, sig)
        pool.ids.add(d.id)
        pool.accepted += 1
        return Verdict(j, None, record=d.to_dict())


def _spec_to_json(sp: PoolSpec) -> dict[str, Any]:
    return {"mbti": sp.mbti, "target": sp.target, "seeds": sp.seeds, "accepted": sp.accepted,
            "handled": [list(k) for k in sp.handled]}


def _spec_from_json(o: dict[str, Any]) -> PoolSpec:
    return PoolSpec(o["mbti"], o["target"], o["seeds"], o["accepted"], {(h, c) for h, c in o["handled"]})


def serve_acceptor() -> None:
    """The acceptance worker: JSON lines on stdin (first the pools, then stored responses), verdicts on stdout.

    Run by `AcceptorHandle` as `python -c ...`; it exits when its stdin closes (the run ended or was killed).
    """
    stdin, out = sys.stdin.buffer, sys.stdout.buffer  # UTF-8 bytes whatever the locale
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol
    init = json.loads(stdin.readline())
    checks = CheckConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in init["checks"].items()})
    acceptor = Acceptor.build(checks, init["run"], init["model"], [_spec_from_json(o) for o in init["specs"]])
    out.write(b"ready\n")
    out.flush()
    for raw in stdin:
        verdicts = acceptor.judge(json.loads(raw))
        out.write(json.dumps([asdict(v) for v in verdicts], ensure_ascii=False).encode("utf-8") + b"\n")
        out.flush()


class AcceptorHandle:
    """The run's Acceptor, inline or in one worker subprocess; verdicts come back in arrival order either way.

    The worker (not a pool per candidate, as Alpaca had) gets the stored responses one at a time over
    a pipe, so duplicates are decided exactly as inline; it only moves the checking off the core that
    drives the HTTP client. JSON lines over stdin/stdout with asyncio streams: back-pressure, no
    threads or pickling in this process, and the worker exits by itself when this process dies.
    """

    def __init__(self, cfg: GenerateConfig, specs: list[PoolSpec], in_process: bool):
        self._cfg = cfg
        self._specs = specs
        self._in_process = in_process
        self._local = None if in_process else Acceptor.build(cfg.checks, cfg.run_name, cfg.llm.model, specs)
        self._proc: asyncio.subprocess.Process | None = None
        self._pending: deque[asyncio.Future[list[Verdict]]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._starting: asyncio.Future[None] | None = None

    def start_soon(self) -> None:
        """Start the worker in the background: its start-up (~1 s of imports) overlaps the first requests."""
        if self._in_process and self._starting is None:
            self._starting = asyncio.ensure_future(self._start())

    async def _ready(self) -> None:
        self.start_soon()
        await self._starting  # type: ignore[misc]

    async def _start(self) -> None:
        pkg_root = str(Path(__file__).resolve().parents[2])  # the folder holding the datagen package
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (pkg_root, os.environ.get("PYTHONPATH")) if x))
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from datagen.generate.acceptance import serve_acceptor; serve_acceptor()",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, limit=64 * 1024 * 1024)
        init = {"checks": asdict(self._cfg.checks), "run": self._cfg.run_name, "model": self._cfg.llm.model,
                "specs": [_spec_to_json(sp) for sp in self._specs]}
        self._proc.stdin.write((json.dumps(init, ensure_ascii=False) + "\n").encode("utf-8"))  # type: ignore[union-attr]
        await self._proc.stdin.drain()  # type: ignore[union-attr]
        if await self._proc.stdout.readline() != b"ready\n":  # type: ignore[union-attr]
            raise RuntimeError("the acceptance worker failed to start (its error is printed above)")
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        while True:
            raw = await self._proc.stdout.readline()
            if not raw:
                err = RuntimeError("the acceptance worker stopped (its error is printed above)")
                while self._pending:
                    self._pending.popleft().set_exception(err)
                return
            self._pending.popleft().set_result([Verdict(**v) for v in json.loads(raw)])

    async def judge(self, line: dict[str, Any]) -> list[Verdict]:
        if self._local is not None:
            return self._local.judge(line)
        await self._ready()
        fut: asyncio.Future[list[Verdict]] = asyncio.get_running_loop().create_future()
        self._pending.append(fut)
        self._proc.stdin.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))  # type: ignore[union-attr]
        await self._proc.stdin.drain()  # type: ignore[union-attr]
        return await fut

    def judge_now(self, line: dict[str, Any]) -> list[Verdict]:
        """Synchronous judging (batch ingest, dry tools): always inline."""
        assert self._local is not None, "judge_now needs an inline acceptor"
        return self._local.judge(line)

    async def aclose(self) -> None:
        if self._starting is not None:
            await asyncio.gather(self._starting, return_exceptions=True)
        if self._proc is not None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            await self._proc.wait()
            if self._reader is not None:
                await self._reader
            self._proc = None



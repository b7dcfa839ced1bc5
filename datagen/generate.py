"""`datagen generate`: self-instruct expansion of the seeds into Korean multi-turn chats.

The algorithm is self-instruct's (as in stanford_alpaca's `generate_instruction.py`): each
request shows the persona, k hand-written seed dialogues and m dialogues this run already
accepted, and asks for n new ones on topics drawn to cover `seeds/topics.yaml` evenly.
The shape is not Alpaca's: a pure prompt builder (`plan_request`), one client call
(`LLMClient.complete`), a pure parser (`parse_dialogues`) and an acceptance step that
reuses the seed checker's rules plus an online MinHash near-duplicate check. Acceptance
(`Acceptor.judge`) does no I/O and returns a `Verdict` per candidate; from --concurrency 32 up
it runs in one worker process fed in arrival order (same verdicts), so the process driving
the HTTP client keeps a core to itself (bench/RESULTS.md).

Everything a run writes lives in `outputs/runs/<run>/`:

    generated/<TYPE>.jsonl   accepted dialogues, appended and flushed one per line
    raw/<TYPE>.jsonl         every request's outcome: the response body as received (parse
                             failures too) or why there is none; it is the request cache
    rejected.jsonl           each rejected candidate (or unusable response) with its reason
    config.json              the resolved config of the last invocation (never a key)
    batch_plan.jsonl         requests written by --batch-out, for ingest-batch

Resume: rerunning the same command continues. A response is stored in raw/ before any of
its dialogues is accepted; on start, every stored response is replayed through the same
acceptance (candidates already accepted or rejected are skipped, by request hash and
position), so nothing stored is lost or duplicated and no stored request is sent again.
Request i of a type is planned from `random.Random(f"{seed}:{TYPE}:{i}")`; indices whose
response is stored are skipped.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from datagen.checks import CheckConfig, first_violation
from datagen.cost import BATCH_DISCOUNT, Price, TokenCounter, cost_usd, format_usd, price_for
from datagen.dedup import MinHashIndex
from datagen.errors import UserError
from datagen.llm import (ChatResult, LLMClient, LLMConfig, LLMFatalError, ResponseStore, Usage, completion_failure,
                         read_completion, redact_url, request_hash, resolve_base_url, uses_max_completion_tokens)
from datagen.prompts import REGISTERS, RESPONSE_SCHEMA, format_example, register_of, render_generation
from datagen.schema import MBTI_TYPES, Dialogue, JsonlAppender, RecordError, iter_jsonl, read_jsonl
from datagen.seeds import DEFAULT_SEEDS_DIR, Persona, load_personas, load_topics, seed_pool

# --- configuration ----------------------------------------------------------------------------

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
    out_dir: Path = Path("outputs")
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
    """The seed checker's rules, reused for acceptance (incl. the near-duplicate threshold)."""
    num_perm: int = 128
    """MinHash permutations of the near-duplicate index (estimate std ~0.04 at 128)."""
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
        d["llm"]["base_url"] = redact_url(resolve_base_url(self.llm.base_url))
        d["checks"]["banned_phrases"] = list(self.checks.banned_phrases)
        d["price"] = self.model_price.to_dict() if self.model_price else None
        return d


# --- run state --------------------------------------------------------------------------------


@dataclass
class TypeStats:
    """What the progress display and the summary show for one type."""

    mbti: str
    target: int | None
    accepted: int = 0
    """Accepted in the run, in all."""
    new: int = 0
    """Accepted by this invocation (including replayed stored responses)."""
    rejected: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    requests: int = 0
    """Requests sent by this invocation."""
    cached: int = 0
    """Stored responses replayed instead of sent."""
    surplus: int = 0
    """Valid-looking candidates left unread in raw/ because the count was reached (used if --count grows)."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    priced: bool = True
    """False when the model has no known price: cost is then unknown, not zero."""
    stopped: str = ""

    @property
    def done(self) -> bool:
        return self.target is not None and self.accepted >= self.target

    def summary(self) -> str:
        """`ISTJ: kept 200/230 (near_dup=12, bad_json=3) · 80 requests (2 failed) · 412,000 tokens · $0.2300`."""
        seen = self.new + sum(self.rejected.values())
        reasons = ", ".join(f"{k}={v}" for k, v in self.rejected.most_common())
        target = f" · {self.accepted}/{self.target} in the run" if self.target is not None else f" · {self.accepted} in the run"
        req = f"{self.requests} requests"
        extra = [f"{sum(self.failed.values())} failed ({', '.join(f'{k}={v}' for k, v in self.failed.most_common())})"
                 if self.failed else "", f"{self.cached} replayed from raw/" if self.cached else "",
                 f"{self.surplus} surplus kept in raw/" if self.surplus else ""]
        extra_s = "; ".join(x for x in extra if x)
        line = (f"{self.mbti}: kept {self.new}/{seen}" + (f" ({reasons})" if reasons else "") + target
                + f" · {req}" + (f" ({extra_s})" if extra_s else "")
                + f" · {self.prompt_tokens + self.completion_tokens:,} tokens · "
                + (format_usd(self.cost) if self.priced else "$? (no price for this model)"))
        return line + (f" · stopped: {self.stopped}" if self.stopped else "")


@dataclass
class RunStats:
    run: str
    run_dir: Path
    types: dict[str, TypeStats]
    spent_before: float = 0.0
    """USD of responses stored by earlier invocations (counts against --max-cost)."""
    notices: list[str] = field(default_factory=list)
    stop_reason: str = ""
    started: float = field(default_factory=time.monotonic)

    @property
    def spent(self) -> float:
        return self.spent_before + sum(t.cost for t in self.types.values())

    @property
    def priced(self) -> bool:
        return all(t.priced for t in self.types.values())


@dataclass
class TypeState:
    """One type's planning side while a run is going: what prompts show, the request cache, the stats.

    (What counts as a duplicate lives in the `Acceptor`, which may run in another process.)
    """

    mbti: str
    persona: Persona | None
    seeds: list[Dialogue]
    topics: list[str]
    accepted: list[Dialogue | dict[str, Any]]
    """Accepted records in order, as loaded (Dialogue) or as the acceptor returned them (dict)."""
    rejected_keys: set[tuple[str, int | None]]
    store: ResponseStore
    stats: TypeStats
    next_index: int = 0
    inflight: int = 0
    requests_cap: int = 0
    stored_indices: set[int] = field(default_factory=set)
    _topic_perms: dict[int, list[str]] = field(default_factory=dict)

    def take_index(self) -> int:
        while self.next_index in self.stored_indices:
            self.next_index += 1
        i = self.next_index
        self.next_index += 1
        return i

    def topic(self, slot: int, seed: int) -> str:
        """Topic of the slot-th dialogue asked for: each topic once per pass, passes reshuffled."""
        n = len(self.topics)
        epoch = slot // n
        if epoch not in self._topic_perms:
            self._topic_perms[epoch] = random.Random(f"{seed}:{self.mbti}:topics:{epoch}").sample(self.topics, n)
        return self._topic_perms[epoch][slot % n]


# --- planning (pure given the state) ----------------------------------------------------------


@dataclass(frozen=True)
class PlannedRequest:
    mbti: str
    index: int
    body: dict[str, Any]
    request_hash: str
    examples: tuple[str, ...]
    items: tuple[tuple[str, str], ...]

    @property
    def custom_id(self) -> str:
        """The Batch API id: type, request index and the start of the request hash."""
        return f"{self.mbti}-{self.index:06d}-{self.request_hash[:16]}"


def request_body(messages: list[dict[str, str]], llm: LLMConfig) -> dict[str, Any]:
    """A chat-completions body asking for the response contract as strict structured output."""
    body: dict[str, Any] = {"model": llm.model, "messages": messages, "temperature": llm.temperature}
    body["max_completion_tokens" if uses_max_completion_tokens(llm.model) else "max_tokens"] = llm.max_tokens
    if llm.structured_output != "none":
        body["response_format"] = ({"type": "json_schema", "json_schema": RESPONSE_SCHEMA}
                                   if llm.structured_output == "json_schema" else {"type": "json_object"})
    return body


def plan_request(state: TypeState, index: int, cfg: GenerateConfig) -> PlannedRequest:
    """Request `index` of a type: examples, topics and registers from its own RNG, prompt rendered."""
    rng = random.Random(f"{cfg.seed}:{state.mbti}:{index}")
    gen = [d if isinstance(d, Dialogue) else Dialogue.from_dict(d)
           for d in rng.sample(state.accepted, min(cfg.generated_examples, len(state.accepted)))]
    n_seed = min(len(state.seeds), cfg.seed_examples + cfg.generated_examples - len(gen))
    examples = rng.sample(state.seeds, n_seed) + gen
    first = rng.randrange(2)  # registers alternate within a request, so each type gets both evenly
    items = tuple((state.topic(index * cfg.per_request + j, cfg.seed), REGISTERS[(first + j) % 2])
                  for j in range(cfg.per_request))
    profile = state.persona.profile_text() if state.persona else ""
    body = request_body(render_generation(profile, examples, items), cfg.llm)
    return PlannedRequest(state.mbti, index, body, request_hash(body), tuple(d.id for d in examples), items)


# --- parsing (pure) ---------------------------------------------------------------------------

_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$")


def parse_dialogues(content: str) -> tuple[list[Any], tuple[str, str] | None]:
    """The `dialogues` list of a response text, or ([], (reason, detail)).

    Tolerates a ```json fence and text around the object (servers without structured output).

    >>> parse_dialogues('{"dialogues": [{"topic": "이사", "messages": []}]}')
    ([{'topic': '이사', 'messages': []}], None)
    >>> parse_dialogues('{"dialogues": [')[1][0]
    'bad_json'
    """
    text = _FENCE.sub("", content.strip())
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        start, end = text.find("{"), text.rfind("}")
        try:
            if start < 0 or end <= start:
                raise e
            obj = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            return [], ("bad_json", f"{e.msg} at line {e.lineno} column {e.colno}")
    if not isinstance(obj, dict) or not isinstance(obj.get("dialogues"), list):
        return [], ("bad_shape", 'expected {"dialogues": [...]}')
    if not obj["dialogues"]:
        return [], ("no_dialogues", "the dialogues list is empty")
    return obj["dialogues"], None


# --- acceptance (writes) ----------------------------------------------------------------------


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
    def build(cls, checks: CheckConfig, run: str, model: str, specs: list[PoolSpec], num_perm: int = 128) -> "Acceptor":
        pools = {}
        for sp in specs:
            index = MinHashIndex.from_config(checks, num_perm=num_perm)
            ids: set[str] = set()
            for rec in sp.seeds + sp.accepted:
                d = Dialogue.from_dict(rec)
                if d.id not in ids:
                    index.insert(d.id, d)
                    ids.add(d.id)
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
        items = [tuple(x) for x in line.get("items") or []]
        requested = {t for t, _ in items}
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
    acceptor = Acceptor.build(checks, init["run"], init["model"], [_spec_from_json(o) for o in init["specs"]],
                              init["num_perm"])
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
        self._local = None if in_process else Acceptor.build(cfg.checks, cfg.run_name, cfg.llm.model, specs, cfg.num_perm)
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
        pkg_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(x for x in (pkg_root, os.environ.get("PYTHONPATH")) if x))
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from datagen.generate import serve_acceptor; serve_acceptor()",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, limit=64 * 1024 * 1024)
        init = {"checks": asdict(self._cfg.checks), "run": self._cfg.run_name, "model": self._cfg.llm.model,
                "num_perm": self._cfg.num_perm, "specs": [_spec_to_json(sp) for sp in self._specs]}
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


# --- writing verdicts -------------------------------------------------------------------------


class RunFiles:
    """The run's append-only outputs, opened once (each open cuts a torn last line)."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self._generated: dict[str, JsonlAppender] = {}
        self._rejected: JsonlAppender | None = None

    def accept(self, mbti: str, record: dict[str, Any]) -> None:
        if mbti not in self._generated:
            self._generated[mbti] = JsonlAppender(self.run_dir / "generated" / f"{mbti}.jsonl")
        self._generated[mbti].write(record)

    def reject(self, line: dict[str, Any]) -> None:
        if self._rejected is None:
            self._rejected = JsonlAppender(self.run_dir / "rejected.jsonl")
        self._rejected.write(line)

    def close(self) -> None:
        for f in self._generated.values():
            f.close()
        if self._rejected:
            self._rejected.close()


def apply_verdicts(line: dict[str, Any], verdicts: list[Verdict], state: TypeState, files: RunFiles) -> None:
    """Write each verdict (accepted record, or reject with its reason) and count it."""
    st = state.stats
    for v in verdicts:
        if v.reason is None:
            files.accept(state.mbti, v.record)  # type: ignore[arg-type]
            state.accepted.append(v.record)  # type: ignore[arg-type]
            st.accepted += 1
            st.new += 1
        elif v.reason == SURPLUS:
            st.surplus += 1
        else:
            payload = {"record": v.record} if v.record is not None else {"raw": v.raw}
            files.reject({"mbti": state.mbti, "reason": v.reason, "detail": v.detail,
                          "request_hash": line["request_hash"], "candidate": v.candidate,
                          "custom_id": line.get("custom_id"), **payload})
            st.rejected[v.reason] += 1


# --- loading a run ----------------------------------------------------------------------------


def _persona_and_seeds(cfg: GenerateConfig, need_persona: bool = True) -> tuple[dict[str, Persona], dict[str, list[Dialogue]], list[str]]:
    seeds_dir = Path(cfg.seeds_dir)
    if not seeds_dir.is_dir():
        raise UserError(f"seeds folder {seeds_dir} does not exist; pass --seeds DIR")
    personas, _ = load_personas(seeds_dir)
    topics, _ = load_topics(seeds_dir)
    pool = seed_pool(seeds_dir, types=cfg.types)
    missing_p = [t for t in cfg.types if t not in personas]
    missing_s = [t for t in cfg.types if not pool.get(t)]
    problems = []
    if need_persona and missing_p:
        problems.append(f"no valid persona profile for {', '.join(missing_p)} in {seeds_dir / 'personas'}")
    if need_persona and missing_s:
        problems.append(f"no valid seed dialogues for {', '.join(missing_s)} in {seeds_dir / 'dialogues'}")
    if not topics:
        problems.append(f"no topics in {seeds_dir / 'topics.yaml'}")
    if problems:
        raise UserError("; ".join(problems) + "; run `datagen seeds check` to see what is wrong")
    return personas, pool, topics


def _rejected_keys(run_dir: Path) -> dict[str, set[tuple[str, int | None]]]:
    path = run_dir / "rejected.jsonl"
    keys: dict[str, set[tuple[str, int | None]]] = {}
    if path.exists():
        for _, obj in iter_jsonl(path):
            if isinstance(obj, dict) and isinstance(obj.get("request_hash"), str):
                keys.setdefault(obj.get("mbti", ""), set()).add((obj["request_hash"], obj.get("candidate")))
    return keys


def load_state(cfg: GenerateConfig, mbti: str, persona: Persona | None, seeds: list[Dialogue], topics: list[str],
               rejected: set[tuple[str, int | None]], target: int | None) -> TypeState:
    """A type's planning state from disk: seeds, what the run accepted, stored responses."""
    run_dir = cfg.run_dir
    accepted: list[Dialogue | dict[str, Any]] = []
    gen_path = run_dir / "generated" / f"{mbti}.jsonl"
    if gen_path.exists():
        records, errors = read_jsonl(gen_path)
        bad = [e for e in errors if e.rule != "torn_line"]  # a torn tail is what a kill leaves; the appender cuts it
        if bad:
            raise UserError(f"{bad[0]} ({len(bad)} bad line(s) in {gen_path}; fix or remove them, then rerun)")
        accepted = [d for d in records if d.mbti == mbti]
    store = ResponseStore(run_dir / "raw" / f"{mbti}.jsonl")
    stored = {ln["request_index"] for ln in store.lines()
              if ln.get("completion") is not None and isinstance(ln.get("request_index"), int)}
    stats = TypeStats(mbti, target, accepted=len(accepted), priced=cfg.model_price is not None)
    return TypeState(mbti, persona, list(seeds), topics, accepted, set(rejected), store, stats, stored_indices=stored)


def pool_spec(state: TypeState) -> PoolSpec:
    return PoolSpec(state.mbti, state.stats.target, [d.to_dict() for d in state.seeds],
                    [d.to_dict() if isinstance(d, Dialogue) else d for d in state.accepted], set(state.rejected_keys))


async def replay_stored(state: TypeState, acceptor: AcceptorHandle, files: RunFiles) -> None:
    """Run every stored response through acceptance again; only unhandled candidates do anything.

    This is what makes a kill harmless: a response stored just before the kill has its
    dialogues accepted now, without sending anything.
    """
    for line in list(state.store.lines()):
        if line.get("completion") is not None:
            apply_verdicts(line, await acceptor.judge(line), state, files)


def _stored_spend(run_dir: Path, price: Price | None) -> float:
    total = 0.0
    for path in sorted((run_dir / "raw").glob("*.jsonl")) if (run_dir / "raw").is_dir() else []:
        for _, obj in iter_jsonl(path):
            if isinstance(obj, dict) and isinstance(obj.get("completion"), dict):
                total += cost_usd(read_completion(obj["completion"]).usage, price)
    return total


def _raw_line(p: PlannedRequest, res: ChatResult, source: str = "api") -> dict[str, Any]:
    return {"request_hash": p.request_hash, "mbti": p.mbti, "request_index": p.index, "source": source,
            "examples": list(p.examples), "items": [list(x) for x in p.items], "response_format": res.response_format,
            "attempts": res.attempts, "latency_s": round(res.latency_s, 3),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "completion": res.completion, "error": res.error, "detail": res.detail}


# --- the run ----------------------------------------------------------------------------------


@dataclass
class _Shared:
    reserved: float = 0.0
    est_cost: float | None = None
    fails_in_a_row: int = 0
    last_failure: str = ""
    fatal: str = ""
    costed: int = 0
    cost_sum: float = 0.0


def _requests_cap(cfg: GenerateConfig, to_go: int) -> int:
    return int(math.ceil(to_go / cfg.per_request * cfg.max_requests_factor)) + 2


def estimate_output_tokens(seeds: list[Dialogue], per_request: int, counter: TokenCounter) -> int:
    """Completion tokens of one request: n × an average seed dialogue in the response's JSON shape."""
    if not seeds:
        return per_request * 1000
    avg = sum(counter.count(format_example(d)) for d in seeds) / len(seeds)
    return int(per_request * avg) + 20


async def _run(cfg: GenerateConfig, states: list[TypeState], files: RunFiles, stats: RunStats,
               progress: Callable[[RunStats], None], client: LLMClient, acceptor: AcceptorHandle) -> None:
    shared = _Shared()
    price = cfg.model_price
    cond = asyncio.Condition()

    def finished() -> bool:
        return bool(stats.stop_reason) or all(s.stats.done or s.stats.stopped for s in states)

    def est_cost() -> float:
        if cfg.max_cost is None:
            return 0.0
        return shared.cost_sum / shared.costed if shared.costed else (shared.est_cost or 0.0)

    def take() -> tuple[TypeState, float] | None:
        """The type that needs a request most, with the cost reserved for it; None if none may go."""
        best = None
        for s in states:
            if s.stats.done or s.stats.stopped:
                continue
            need = s.stats.target - s.stats.accepted - cfg.per_request * s.inflight  # type: ignore[operator]
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
        est = est_cost()
        if cfg.max_cost is not None:
            if stats.spent + shared.reserved + est > cfg.max_cost:
                # With requests in flight, wait: their real cost may leave room. With none, it never will.
                if all(x.inflight == 0 for x in states) and not stats.stop_reason:
                    stats.stop_reason = (f"--max-cost {format_usd(cfg.max_cost)} would be exceeded by another request "
                                         f"(spent {format_usd(stats.spent)}, ~{format_usd(est)} per request)")
                return None
            shared.reserved += est
        s = best[0]
        s.inflight += 1
        return s, est

    async def run_job(s: TypeState, reserved: float) -> None:
        try:
            p = plan_request(s, s.take_index(), cfg)  # built now, so it shows the freshest accepted examples
            line = s.store.get(p.request_hash)
            if line is not None:
                s.stats.cached += 1
            else:
                res = await client.complete(p.body, key=p.request_hash)
                line = _raw_line(p, res)
                s.store.add(line)  # stored before anything is accepted: a kill here loses nothing
                s.stats.requests += 1
                if res.completion is None:
                    s.stats.failed[res.error or "failed"] += 1
                    shared.fails_in_a_row += 1
                    shared.last_failure = f"{res.error}: {res.detail}"
                    if shared.fails_in_a_row >= cfg.max_failures_in_a_row and not stats.stop_reason:
                        where = redact_url(client.base_url) or "OpenAI"
                        stats.stop_reason = (f"{shared.fails_in_a_row} requests in a row failed at {where} after "
                                             f"{cfg.llm.max_attempts} attempt(s) each (last: {shared.last_failure})")
                        shared.fatal = stats.stop_reason
                    return
                shared.fails_in_a_row = 0
                usage = read_completion(res.completion).usage
                spent = cost_usd(usage, price)
                s.stats.prompt_tokens += usage.prompt_tokens
                s.stats.completion_tokens += usage.completion_tokens
                s.stats.cost += spent
                shared.costed += 1
                shared.cost_sum += spent
            s.stored_indices.add(p.index)
            apply_verdicts(line, await acceptor.judge(line), s, files)
        except LLMFatalError as e:
            if not shared.fatal:
                shared.fatal = str(e)
                stats.stop_reason = str(e)
        finally:
            s.inflight -= 1
            shared.reserved -= reserved
            progress(stats)

    async def worker() -> None:
        while True:
            async with cond:
                while True:
                    job = take()
                    # nothing to take and nothing in flight whose outcome could change that: done
                    if job is not None or finished() or all(s.inflight == 0 for s in states):
                        break
                    await cond.wait()
            if job is None:
                return
            try:
                await run_job(*job)
            finally:
                async with cond:
                    cond.notify_all()

    if cfg.max_cost is not None:
        counter = TokenCounter(cfg.llm.model)
        first = next((s for s in states if not s.stats.done), None)
        if first is not None:
            p = plan_request(first, 0, cfg)
            usage_in = counter.count_messages(p.body["messages"])
            usage_out = estimate_output_tokens(first.seeds, cfg.per_request, counter)
            shared.est_cost = cost_usd(Usage(usage_in, usage_out), price)
    # More jobs than HTTP slots: a job also plans its prompt and awaits its verdicts, and meanwhile
    # another job should hold the slot. The client's AdaptiveLimiter is what caps requests in flight.
    await asyncio.gather(*(worker() for _ in range(cfg.llm.concurrency + max(2, cfg.llm.concurrency // 4))))
    if shared.fatal:
        raise LLMFatalError(shared.fatal)


def _open_states(cfg: GenerateConfig, target: int | None, types: tuple[str, ...], need_persona: bool = True) -> list[TypeState]:
    personas, pool, topics = _persona_and_seeds(cfg, need_persona)
    rejected = _rejected_keys(cfg.run_dir)
    states = []
    for t in types:
        st = load_state(cfg, t, personas.get(t), pool.get(t, []), topics, rejected.get(t, set()), target)
        st.requests_cap = _requests_cap(cfg, max(0, (target or 0) - st.stats.accepted))
        states.append(st)
    return states


class RunLock:
    """An advisory lock on the run folder: two processes appending to one run would interleave records.

    `flock` is released by the kernel when the holder dies, so a killed run never leaves it stuck.
    """

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self._f: Any = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock, as before
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._f.close()
            self._f = None
            raise UserError(f"run {self.path.parent.name!r} is being written by another datagen process; wait for it, "
                            "or pass --run NEW") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._f is not None:
            self._f.close()  # closing drops the lock


def _check_run_model(cfg: GenerateConfig) -> None:
    path = cfg.run_dir / "config.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    old_model = (old.get("llm") or {}).get("model")
    if old_model and old_model != cfg.llm.model:
        raise UserError(f"run {cfg.run_name!r} was generated with model {old_model}, not {cfg.llm.model}; pass "
                        f"--model {old_model} to continue it, or --run NEW for a separate run")


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
    _check_run_model(cfg)
    with RunLock(cfg.run_dir):
        return _generate_locked(cfg, progress, api_key)


def _generate_locked(cfg: GenerateConfig, progress: Callable[[RunStats], None], api_key: str | None) -> RunStats:
    states = _open_states(cfg, cfg.count, cfg.types)
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.resolved(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    stats = RunStats(cfg.run_name, run_dir, {s.mbti: s.stats for s in states},
                     spent_before=_stored_spend(run_dir, cfg.model_price))
    files = RunFiles(run_dir)
    acceptor = AcceptorHandle(cfg, [pool_spec(s) for s in states], cfg.accept_in_process)
    try:
        async def main() -> None:
            try:
                if not all(s.stats.done for s in states):
                    acceptor.start_soon()
                for s in states:
                    await replay_stored(s, acceptor, files)
                progress(stats)
                if all(s.stats.done for s in states):
                    return
                async with LLMClient(cfg.llm, api_key=api_key, notice=stats.notices.append) as client:
                    await _run(cfg, states, files, stats, progress, client, acceptor)
            finally:
                await acceptor.aclose()

        try:
            asyncio.run(main())
        except LLMFatalError as e:
            kept = sum(s.stats.accepted for s in states)
            raise UserError(f"{e}; {kept} accepted dialogue(s) kept in {run_dir / 'generated'}; rerun the same "
                            "command to resume") from None
        return stats
    finally:
        files.close()
        for s in states:
            s.store.close()
        progress(stats)


# --- dry run ----------------------------------------------------------------------------------


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
    states = _open_states(cfg, cfg.count, cfg.types)
    plans = []
    try:
        for s in states:
            to_go = max(0, cfg.count - s.stats.accepted)
            n_req = math.ceil(to_go / cfg.per_request)
            first = plan_request(s, s.take_index(), cfg) if n_req else None
            p_tok = counter.count_messages(first.body["messages"]) * n_req if first else 0
            c_tok = estimate_output_tokens(s.seeds, cfg.per_request, counter) * n_req
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


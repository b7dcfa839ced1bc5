"""A generate run on disk: its files, its lock, its per-type state and stats, and resuming it.

Everything a run writes lives in `outputs/runs/<run>/` (see `datagen.generate`). Resume: a
response is stored in raw/ before any of its dialogues is accepted; on start every stored
response is replayed through the same acceptance (candidates already accepted or rejected are
skipped by request hash and position), so nothing stored is lost or duplicated and no stored
request is sent again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datagen.cost import format_usd, stored_spend
from datagen.errors import UserError
from datagen.generate.acceptance import SURPLUS, AcceptorHandle, PoolSpec, Verdict
from datagen.generate.config import GenerateConfig
from datagen.generate.planning import TypePlan, requests_cap
from datagen.llm import ResponseStore, read_completion
from datagen.runs import generator_model
from datagen.schema import Dialogue, JsonlAppender, iter_jsonl, read_jsonl, repair_torn_tail
from datagen.seeds import Persona, load_personas, load_topics, seed_pool

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

    def count_sent(self, out: Any) -> bool:
        """Count a request this invocation sent (an `Outcome`): its usage and cost, or its failure.
        Returns whether it was answered."""
        self.requests += 1
        if not out.answered:
            self.failed[out.line.get("error") or "failed"] += 1
            return False
        usage = read_completion(out.line["completion"]).usage
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.cost += out.cost
        return True

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
    notices: list[str] = field(default_factory=list)
    stop_reason: str = ""
    budget: Any = None
    """The invocation's `datagen.cost.Budget` (spent, reserved and left for the live display)."""

    @property
    def spent_before(self) -> float:
        """USD of responses stored by earlier invocations (counts against --max-cost)."""
        return self.budget.spent_before

    @property
    def spent(self) -> float:
        return self.spent_before + sum(t.cost for t in self.types.values())

    @property
    def priced(self) -> bool:
        return all(t.priced for t in self.types.values())


@dataclass
class TypeState:
    """One type's side of a running generate: what its prompts draw from, its request cache, its stats.

    (What counts as a duplicate lives in the `Acceptor`, which may run in another process.)
    """

    plan: TypePlan
    rejected_keys: set[tuple[str, int | None]]
    store: ResponseStore
    stats: TypeStats
    next_index: int = 0
    inflight: int = 0
    requests_cap: int = 0
    stored_indices: set[int] = field(default_factory=set)

    @property
    def mbti(self) -> str:
        return self.plan.mbti

    def take_index(self) -> int:
        """The next request index whose response is not stored yet."""
        while self.next_index in self.stored_indices:
            self.next_index += 1
        i = self.next_index
        self.next_index += 1
        return i


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
            state.plan.accepted.append(v.record)  # type: ignore[arg-type]
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


def persona_and_seeds(cfg: GenerateConfig, need_persona: bool = True) -> tuple[dict[str, Persona], dict[str, list[Dialogue]], list[str]]:
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


def rejected_keys(run_dir: Path) -> dict[str, set[tuple[str, int | None]]]:
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
    return TypeState(TypePlan(mbti, persona, list(seeds), topics, accepted), set(rejected), store, stats,
                     stored_indices=stored)


def pool_spec(state: TypeState) -> PoolSpec:
    return PoolSpec(state.mbti, state.stats.target, [d.to_dict() for d in state.plan.seeds],
                    [d.to_dict() if isinstance(d, Dialogue) else d for d in state.plan.accepted], set(state.rejected_keys))


async def replay_stored(state: TypeState, acceptor: AcceptorHandle, files: RunFiles) -> None:
    """Run every stored response through acceptance again; only unhandled candidates do anything.

    This is what makes a kill harmless: a response stored just before the kill has its
    dialogues accepted now, without sending anything.
    """
    for line in list(state.store.lines()):
        if line.get("completion") is not None:
            apply_verdicts(line, await acceptor.judge(line), state, files)


def repair_run_files(run_dir: Path) -> list[str]:
    """End every JSONL file of the run on a newline before appending (`repair_torn_tail`): a complete last
    line is kept, a torn one is dropped; returns one note per file changed, for the user."""
    notes = []
    for path in sorted(run_dir.rglob("*.jsonl")) if run_dir.is_dir() else []:
        what = repair_torn_tail(path)
        rel = path.relative_to(run_dir)
        if what == "dropped":
            notes.append(f"{rel}: dropped a torn last line left by an interrupted write (it did not parse)")
        elif what == "completed":
            notes.append(f"{rel}: the last line was complete but had no newline; kept it and added the newline")
    return notes


def open_states(cfg: GenerateConfig, target: int | None, types: tuple[str, ...], need_persona: bool = True) -> list[TypeState]:
    personas, pool, topics = persona_and_seeds(cfg, need_persona)
    rejected = rejected_keys(cfg.run_dir)
    states = []
    for t in types:
        st = load_state(cfg, t, personas.get(t), pool.get(t, []), topics, rejected.get(t, set()), target)
        st.requests_cap = requests_cap(cfg, max(0, (target or 0) - st.stats.accepted))
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


def check_run_model(cfg: GenerateConfig) -> None:
    """A run is generated by one model: continuing it with another is refused, naming both."""
    old_model = generator_model(cfg.run_dir)
    if old_model and old_model != cfg.llm.model:
        raise UserError(f"run {cfg.run_name!r} was generated with model {old_model}, not {cfg.llm.model}; pass "
                        f"--model {old_model} to continue it, or --run NEW for a separate run")


def run_spend(run_dir: Path, price: Any, stores: dict[str, ResponseStore] | None = None) -> float:
    """USD the run's stored responses were billed (raw/*.jsonl), each at the price stored with it."""
    raw, stores = run_dir / "raw", stores or {}
    lines = (obj for path in sorted(raw.glob("*.jsonl")) if raw.is_dir()
             for obj in (stores[path.stem].lines() if path.stem in stores else (o for _, o in iter_jsonl(path))))
    return stored_spend(lines, price)


def spend_line(spent: float, reserved: float, left: float | None) -> str:
    """`spent $0.0123 · reserved $0.0040 · left $0.0837` for the live display."""
    out = f"spent {format_usd(spent)} · reserved {format_usd(reserved)}"
    return out + (f" · left {format_usd(left)}" if left is not None else "")

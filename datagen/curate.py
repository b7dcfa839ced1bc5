"""`datagen curate`: one pass over a whole run: exact and near-duplicate removal across all
types and against the seeds, the shared quality rules, and (with `--judge`) an LLM persona judge.

```
outputs/runs/<run>/generated/<TYPE>.jsonl ──┐
seeds/dialogues/<TYPE>.jsonl (reference) ───┴─► read ─► inspect ─► exact dedup ─► near dedup ─► judge ─► write
                                                       (schema, rules,                                   curated.jsonl
                                                        keys; parallel)                                  curated_rejected.jsonl
                                                                                                         report.json
```

Each step is a generator over `Item`s (one per input line); a step that rejects an item sets
its `reason` (a rule name such as `too_short`, `near_dup`, `persona`) and passes it on, and
later steps skip it. The rules are `datagen.checks` (the ones `datagen seeds check` and
generation use), so a record is judged the same way at every stage.

Seeds are the dedup reference: they go first, so a generated copy of a seed is dropped and
the seed is kept (publish adds seeds with `--include-seeds`); among generated records the
first in file order (types in `MBTI_TYPES` order, lines in append order) is kept.

Rejects go to `curated_rejected.jsonl` (generate's own `rejected.jsonl` sits in the same
folder and is left alone), one `{"reason", "detail", "file", "line", "record"}` object per
line (`record` is null and `raw` holds the line when it did not parse). Nothing in the run's
input files is modified, and the same inputs give byte-identical outputs.

Near duplicates: `datagen.dedup`, the one definition generation and the seed check use too
(MinHash over character n-grams of the dialogue text, banded LSH for candidates, then the
MinHash estimate of Jaccard against the threshold), computed here in batch. Character n-grams, not words: the 존댓말 and 반말
renderings of one utterance share almost no word 5-grams but ~0.7 of their character 3-grams.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
from datasketch import LeanMinHash, MinHashLSH

from datagen.checks import CheckConfig, first_violation
from datagen.dedup import SCHEME, SEED, band_keys, dialogue_text, near_duplicates, rows_per_band, signatures
from datagen.errors import UserError
from datagen.naturalness import summarise, unnatural
from datagen.runs import DEFAULT_OUT, append_config
from datagen.schema import MBTI_TYPES, Dialogue, RecordError
from datagen.seeds import DEFAULT_SEEDS_DIR

if TYPE_CHECKING:
    from datagen.judge import Judge

CURATED_FILE = "curated.jsonl"
REJECTED_FILE = "curated_rejected.jsonl"  # generate writes its own rejected.jsonl in the same folder
REPORT_FILE = "report.json"

# Reasons that are not rule names from datagen.checks.
EXACT_DUP, NEAR_DUP, PERSONA, JUDGE_FAILED = "exact_dup", "near_dup", "persona", "judge_failed"
SCHEMA, BAD_JSON, TORN_LINE = "schema", "bad_json", "torn_line"


@dataclass(frozen=True)
class CurateConfig:
    """Everything `datagen curate` decides with; saved into report.json as the resolved config."""

    rules: CheckConfig = field(default_factory=CheckConfig)
    """The per-dialogue rules, shared with seeds check and generation. Its `near_dup_*` settings also define a
    near-duplicate here (one definition for every stage: datagen/dedup.py)."""
    lsh_index: str = "sorted"
    """`sorted`: candidate pairs from sorting each band's keys in numpy (measured ~20x faster than
    datasketch's MinHashLSH at 100k records, see bench/dedup.py); `datasketch`: query-then-insert
    into MinHashLSH, the reference. Both give the same result."""
    workers: int = 0
    """Processes for the per-record work (parse, schema, rules, MinHash); 0 = one per CPU core, 1 = in-process."""
    parallel_min_lines: int = 5_000
    """Inputs shorter than this run in-process (forking workers costs ~0.1 s; 5,000 lines take ~1.3 s on one core)."""
    chunk_lines: int = 500
    """Lines per worker task (MinHash is vectorised over a chunk)."""
    max_listed_bad_lines: int = 50
    """Bad input lines listed by `file:line: rule: detail` in report.json (all are counted)."""
    naturalness: bool = True
    """Count the soft naturalness patterns of each record (datagen/naturalness.py; ~75 µs a record on one core)."""

    def __post_init__(self) -> None:
        problems = []
        if self.lsh_index not in ("sorted", "datasketch"):
            problems.append(f"lsh_index {self.lsh_index!r}: use 'sorted' or 'datasketch'")
        if self.workers < 0 or self.chunk_lines < 1:
            problems.append("workers must be >= 0 and chunk_lines >= 1")
        if problems:
            raise UserError("curate config: " + "; ".join(problems))


# --- items ------------------------------------------------------------------------------------


@dataclass
class Item:
    """One input line on its way through the stage; `reason` is set by the step that rejects it."""

    origin: str
    """`generated` (a run record, counted and written) or `seed` (dedup reference only)."""
    path: str
    line: int
    mbti: str
    """The record's type; for a line that did not parse, the file's type (or `?`)."""
    id: str = ""
    record_json: str | None = None
    """The validated record as canonical JSON (None when the line did not parse); `record` parses it."""
    raw: str | None = None
    """The line as read, kept only when it did not parse (so the reject file shows it)."""
    reason: str | None = None
    detail: str = ""
    exact_key: bytes = b""
    signature: bytes = b""
    """MinHash values, uint32 little-endian (bytes: items cross process boundaries cheaply)."""
    band_keys: bytes = b""
    """One uint64 LSH key per band."""
    dup_of: "Item | None" = None
    """For a duplicate: the kept item (seed or earlier record) it duplicates."""
    judge: dict[str, Any] | None = None
    """The judge's verdict (scores, guessed type), written into the record's `meta.judge`."""
    unnatural: tuple[str, ...] = ()
    """Patterns of the soft naturalness check hit by its assistant turns (`meta.unnatural`; counted, not rejected)."""

    @cached_property
    def record(self) -> Dialogue | None:
        return Dialogue.from_dict(json.loads(self.record_json)) if self.record_json is not None else None

    def set_record(self, d: Dialogue) -> None:
        self.id, self.mbti, self.record_json = d.id, d.mbti, d.to_json()
        self.__dict__["record"] = d  # the cached_property's slot

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("record", None)  # rebuilt from record_json on demand: pickling a Dialogue costs 5x its JSON
        return state

    @property
    def kept(self) -> bool:
        return self.reason is None

    def reject(self, reason: str, detail: str) -> None:
        self.reason, self.detail = reason, detail

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class _Line:
    origin: str
    path: str
    line: int
    data: bytes
    torn_if_bad: bool
    """The last line of a file without a trailing newline: unparsable means cut short, not broken."""


# --- reading ----------------------------------------------------------------------------------


def run_inputs(run_dir: Path) -> list[Path]:
    """`generated/*.jsonl` of a run: the 16 types in `MBTI_TYPES` order, then any other names sorted."""
    files = [p for p in (run_dir / "generated").glob("*.jsonl") if p.is_file()]
    order = {t: i for i, t in enumerate(MBTI_TYPES)}
    return sorted(files, key=lambda p: (order.get(p.stem, len(order)), p.name))


def seed_inputs(seeds_dir: Path) -> list[Path]:
    return [p for t in MBTI_TYPES if (p := seeds_dir / "dialogues" / f"{t}.jsonl").is_file()]


def _file_lines(path: Path, origin: str, shown: str) -> Iterator[_Line]:
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    for i, data in enumerate(lines, 1):
        if data.strip():
            yield _Line(origin, shown, i, data, i == len(lines) and not raw.endswith(b"\n"))


def read_lines(run_dir: Path, seeds_dir: Path) -> Iterator[_Line]:
    """Seeds first (the reference that wins a tie), then the run's generated files."""
    for p in seed_inputs(seeds_dir):
        yield from _file_lines(p, "seed", f"{seeds_dir.name}/dialogues/{p.name}")
    for p in run_inputs(run_dir):
        yield from _file_lines(p, "generated", str(p.relative_to(run_dir)))


# --- per-record work (pure; runs in worker processes) -----------------------------------------


def _parse(ln: _Line) -> Item:
    stem = Path(ln.path).stem
    item = Item(ln.origin, ln.path, ln.line, stem if stem in MBTI_TYPES else "?")
    # Same rules and wording as schema.iter_jsonl / read_jsonl_numbered, on one line.
    try:
        obj = json.loads(ln.data.decode("utf-8"))
    except UnicodeDecodeError as e:
        item.raw = ln.data.decode("utf-8", "replace")
        item.reject(BAD_JSON, f"not UTF-8 ({e.reason})")
        return item
    except json.JSONDecodeError as e:
        item.raw = ln.data.decode("utf-8", "replace")
        if ln.torn_if_bad:
            item.reject(TORN_LINE, "last line is cut short (an interrupted write); it is ignored")
        else:
            item.reject(BAD_JSON, f"{e.msg} at column {e.colno}")
        return item
    try:
        item.set_record(Dialogue.from_dict(obj))
    except RecordError as e:
        item.raw = ln.data.decode("utf-8")
        item.reject(SCHEMA, f"{e.rule}: {e.detail}")
    except (TypeError, ValueError) as e:  # e.g. a `meta` that is not an object: dict() of it raises these
        item.raw = ln.data.decode("utf-8")
        item.reject(SCHEMA, f"bad_field: {e}")
    return item


def inspect_lines(lines: list[_Line], cfg: CurateConfig) -> list[Item]:
    """Parse, validate and apply the rules to a chunk of lines; key the records that pass for dedup."""
    items = [_parse(ln) for ln in lines]
    passing = []
    for it in items:
        if it.record_json is None:
            continue
        if (v := first_violation(it.record, cfg.rules)) is not None:
            it.reject(v.rule, v.detail)
        else:
            passing.append(it)
            if cfg.naturalness:
                it.unnatural = tuple(h.pattern for h in unnatural(it.record))
    add_dedup_keys(passing, cfg)
    return items


def add_dedup_keys(items: list[Item], cfg: CurateConfig) -> None:
    """Set each item's exact key, MinHash signature and LSH band keys (vectorised over the list)."""
    if not items:
        return
    normalised = [dialogue_text(it.record) for it in items]
    sigs = signatures(normalised, cfg.rules)
    keys = band_keys(sigs, cfg.rules.near_dup_bands, rows_per_band(cfg.rules))
    for it, text, sig, k in zip(items, normalised, sigs, keys):
        it.exact_key, it.signature, it.band_keys = _digest(text), sig.tobytes(), k.tobytes()


def _digest(normalised: str) -> bytes:
    return hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()


# --- pipeline steps -----------------------------------------------------------------------------


def inspect_all(lines: Iterable[_Line], cfg: CurateConfig, total: int) -> Iterator[Item]:
    """`inspect_lines` over all lines, in order; in worker processes when the input is large."""
    chunks = _chunks(lines, cfg.chunk_lines)
    workers = cfg.workers or os.cpu_count() or 1
    if workers == 1 or total < cfg.parallel_min_lines:
        for chunk in chunks:
            yield from inspect_lines(chunk, cfg)
        return
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ctx.Pool(workers) as pool:
        for items in pool.imap(_inspect_task, ((chunk, cfg) for chunk in chunks)):
            yield from items


def _inspect_task(task: tuple[list[_Line], CurateConfig]) -> list[Item]:
    return inspect_lines(*task)


def _chunks(lines: Iterable[_Line], size: int) -> Iterator[list[_Line]]:
    chunk: list[_Line] = []
    for ln in lines:
        chunk.append(ln)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def drop_exact_duplicates(items: Iterable[Item]) -> Iterator[Item]:
    """Reject a record whose normalised text was seen before (a seed, else an earlier record)."""
    first: dict[bytes, Item] = {}
    for it in items:
        if it.kept:
            if (seen := first.get(it.exact_key)) is not None:
                it.reject(EXACT_DUP, f"same normalised text as {_describe(seen)}")
                it.dup_of = seen
            else:
                first[it.exact_key] = it
        yield it


def drop_near_duplicates(items: Iterable[Item], cfg: CurateConfig) -> Iterator[Item]:
    """Reject a record whose estimated character n-gram Jaccard with a kept earlier one (a seed
    first) reaches `rules.near_dup_threshold`; the best such match (earliest on a tie) is named.

    Same decisions as querying, then inserting each kept record into an LSH index in stream
    order (the `datasketch` setting does exactly that with MinHashLSH), computed in batch: the
    candidate pairs come from sorting each band's keys, so the whole step is a few numpy sorts.
    """
    items = list(items)
    live = [it for it in items if it.kept]
    if cfg.lsh_index == "datasketch":
        decisions = _near_dups_datasketch(live, cfg)
    else:
        decisions = _near_dups_sorted(live, cfg)
    for j, (i, score) in decisions.items():
        it, best = live[j], live[i]
        it.reject(NEAR_DUP, f"character {cfg.rules.near_dup_ngram}-gram Jaccard ≈{score:.2f} with {_describe(best)}")
        it.dup_of = best
    yield from items


def _describe(it: Item) -> str:
    kind = "seed" if it.origin == "seed" else "record"
    return f"{kind} {it.id or '?'} ({it.where()})"


def _signature_matrix(items: list[Item], num_perm: int) -> np.ndarray:
    return np.frombuffer(b"".join(it.signature for it in items), dtype=np.uint32).reshape(len(items), num_perm)


def _near_dups_sorted(live: list[Item], cfg: CurateConfig) -> dict[int, tuple[int, float]]:
    """{index of a rejected item: (index of the kept item it matches, estimated Jaccard)}."""
    rules = cfg.rules
    keys = np.frombuffer(b"".join(it.band_keys for it in live), dtype=np.uint64).reshape(len(live), rules.near_dup_bands)
    return near_duplicates(_signature_matrix(live, rules.near_dup_num_perm), keys, rules.near_dup_threshold)


def _near_dups_datasketch(live: list[Item], cfg: CurateConfig) -> dict[int, tuple[int, float]]:
    """The reference: query, then insert each kept item into datasketch's MinHashLSH, in order."""
    rules = cfg.rules
    lsh = MinHashLSH(num_perm=rules.near_dup_num_perm, params=(rules.near_dup_bands, rows_per_band(rules)))
    sigs = _signature_matrix(live, rules.near_dup_num_perm)
    rejected: dict[int, tuple[int, float]] = {}
    for j in range(len(live)):
        m = LeanMinHash(seed=SEED, hashvalues=sigs[j], scheme=SCHEME)
        cands = sorted(lsh.query(m))
        if cands:
            scores = (sigs[cands] == sigs[j]).mean(axis=1)
            best = int(np.argmax(scores))  # the earliest on a tie
            if scores[best] >= cfg.rules.near_dup_threshold:
                rejected[j] = (cands[best], float(scores[best]))
                continue
        lsh.insert(j, m, check_duplication=False)
    return rejected


# --- the stage ----------------------------------------------------------------------------------


@dataclass
class CurateReport:
    """What curate did: counts per reason and per type, dedup and judge numbers. `to_json()` is report.json."""

    run: str
    total: int
    kept: int
    reasons: Counter[str]
    by_type: dict[str, Counter[str]]
    """type → {"total", "kept", reason: count, ...} over the run's records."""
    dedup: dict[str, Any]
    seeds: dict[str, int]
    bad_lines: list[str]
    judge: dict[str, Any] | None
    config: dict[str, Any]
    files: dict[str, str]
    naturalness: dict[str, Any] = field(default_factory=dict)
    """The soft naturalness check over the kept records (`datagen.naturalness.summarise`)."""

    def summary(self) -> str:
        """`kept 812/1000 (too_short=97, persona_break=55, near_dup=36)`: reasons by count, then name."""
        parts = ", ".join(f"{r}={n}" for r, n in _ordered(self.reasons))
        return f"kept {self.kept}/{self.total}" + (f" ({parts})" if parts else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run, "summary": self.summary(), "total": self.total, "kept": self.kept,
            "rejected": dict(_ordered(self.reasons)),
            "dedup": self.dedup,
            "judge": self.judge,
            "naturalness": self.naturalness,
            "by_type": {t: dict(c) for t, c in self.by_type.items()},
            "seeds": self.seeds,
            "bad_lines": self.bad_lines,
            "files": self.files,
            "config": self.config,
        }

    def table(self) -> "Any":
        """A rich Table, type × reason, with a total row."""
        from rich.table import Table

        reasons = [r for r, _ in _ordered(self.reasons)]
        t = Table(title=f"curate · run {self.run} · records per type and reject reason", title_justify="left")
        t.add_column("type")
        for col in ["total", "kept", *reasons]:
            t.add_column(col, justify="right")
        for mbti, c in self.by_type.items():
            t.add_row(mbti, str(c["total"]), str(c["kept"]), *[str(c.get(r, 0) or "") for r in reasons])
        t.add_row("all", str(self.total), str(self.kept), *[str(self.reasons[r]) for r in reasons], style="bold")
        return t


    def judge_table(self) -> "Any":
        """A rich Table of the judge's agreement with the claimed type, per type and per axis."""
        from rich.table import Table

        j = self.judge or {}
        t = Table(title=f"judge · {j.get('model', '')} · blind guess vs claimed type, mean scores 1-5",
                  title_justify="left")
        cols = ["judged", "type", "E/I", "S/N", "T/F", "J/P", "persona", "natural", "engaging"]
        t.add_column("type")
        for col in cols:
            t.add_column(col if col != "type" else "exact", justify="right")

        def row(a: dict[str, Any]) -> list[str]:
            if not a.get("judged"):
                return ["0"] + [""] * (len(cols) - 1)
            return ([str(a["judged"]), f"{a['type']:.0%}"] + [f"{a['axes'][ax]:.0%}" for ax in ("E/I", "S/N", "T/F", "J/P")]
                    + [f"{a['mean'][s]:.1f}" for s in ("persona", "naturalness", "engagement")])

        for mbti, a in (j.get("by_type") or {}).items():
            t.add_row(mbti, *row(a))
        t.add_row("all", *row(j.get("agreement") or {}), style="bold")
        return t


def _ordered(counts: Counter[str]) -> list[tuple[str, int]]:
    return sorted(((r, n) for r, n in counts.items() if n), key=lambda rn: (-rn[1], rn[0]))


def find_run(out: Path, run: str) -> Path:
    """`<out>/runs/<run>`, or a UserError naming the runs that do exist."""
    runs = Path(out) / "runs"
    run_dir = runs / run
    if not run or "/" in run or run in (".", ".."):
        raise UserError(f"--run {run!r} is not a run name; pass the folder name under {runs}")
    if not run_dir.is_dir():
        have = sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
        hint = f"runs there: {', '.join(have)}" if have else "there are no runs yet; start one with `datagen generate`"
        raise UserError(f"no run {run!r} in {runs} ({hint})")
    if not any(p.read_bytes().strip() for p in run_inputs(run_dir)):
        raise UserError(f"run {run!r} has no generated records ({run_dir / 'generated'}/*.jsonl); "
                        f"run `datagen generate --run {run}` first")
    return run_dir


def curate(run: str, out: Path = DEFAULT_OUT, cfg: CurateConfig = CurateConfig(),
           seeds_dir: Path = DEFAULT_SEEDS_DIR, judge: "Judge | None" = None) -> CurateReport:
    """Curate `<out>/runs/<run>`: read, dedup, filter, judge (when given), write; return the report.

    `judge` (`datagen.judge.Judge`) judges the records still kept; `judge_items` turns its verdicts
    into `persona` / `judge_failed` rejects. Raises UserError on a missing or empty run.
    """
    run_dir = find_run(out, run)
    seeds_dir = Path(seeds_dir)
    if not (seeds_dir / "dialogues").is_dir():
        raise UserError(f"seeds folder {seeds_dir} has no dialogues/; pass --seeds DIR (the dedup reference)")
    total_lines = sum(p.read_bytes().count(b"\n") + 1 for p in run_inputs(run_dir))
    append_config(run_dir, "curate", {**_jsonable(asdict(cfg)), "seeds_dir": str(seeds_dir),
                                      "judge": judge.resolved() if judge is not None else None})

    items: Iterable[Item] = inspect_all(read_lines(run_dir, seeds_dir), cfg, total_lines)
    items = drop_exact_duplicates(items)
    items = drop_near_duplicates(items, cfg)
    items = list(items)
    judge_stats = judge_items([it for it in items if it.origin == "generated"], judge, seeds_dir) if judge else None

    report = build_report(run, items, cfg, judge_stats)
    write_outputs(run_dir, items, report)
    return report


def judge_items(items: list[Item], judge: "Judge", seeds_dir: Path) -> dict[str, Any]:
    """Judge the kept items; reject with `persona` (under a threshold) or `judge_failed`; the report section."""
    from datagen.judge import seed_profiles, summary

    todo = [it for it in items if it.kept]
    records = [it.record for it in todo]
    judgements = judge.judge(records, seed_profiles({d.mbti for d in records}, seeds_dir))
    for it, j in zip(todo, judgements):
        if j.verdict is None:
            it.reject(JUDGE_FAILED, j.problem)
            continue
        it.judge = j.verdict.to_meta(judge.cfg.llm.model)
        if problems := j.verdict.problems(judge.cfg):
            it.reject(PERSONA, "; ".join(problems))
    return summary(judgements, judge.cfg)


def build_report(run: str, items: list[Item], cfg: CurateConfig, judge_stats: dict[str, Any] | None) -> CurateReport:
    gen = [it for it in items if it.origin == "generated"]
    seeds = [it for it in items if it.origin == "seed"]
    reasons: Counter[str] = Counter(it.reason for it in gen if it.reason)
    by_type: dict[str, Counter[str]] = {}
    for t in [*MBTI_TYPES, "?"]:
        group = [it for it in gen if it.mbti == t]
        if group:
            c: Counter[str] = Counter(total=len(group), kept=sum(it.kept for it in group))
            c.update(it.reason for it in group if it.reason)
            by_type[t] = c
    dups = [it for it in gen if it.reason in (EXACT_DUP, NEAR_DUP)]
    dedup = {
        "exact_dup": reasons[EXACT_DUP], "near_dup": reasons[NEAR_DUP],
        "of_a_seed": sum(it.dup_of.origin == "seed" for it in dups if it.dup_of),
        "across_types": sum(it.dup_of.mbti != it.mbti for it in dups if it.dup_of),
        "method": (f"MinHash LSH over character {cfg.rules.near_dup_ngram}-grams, Jaccard ≥ "
                   f"{cfg.rules.near_dup_threshold}, {cfg.rules.near_dup_num_perm} permutations, "
                   f"{cfg.rules.near_dup_bands} bands × {rows_per_band(cfg.rules)} rows"),
    }
    bad = [it for it in gen + seeds if it.reason in (SCHEMA, BAD_JSON, TORN_LINE)]
    return CurateReport(
        run=run, total=len(gen), kept=sum(it.kept for it in gen), reasons=reasons, by_type=by_type, dedup=dedup,
        seeds={"read": len(seeds), "reference": sum(it.kept for it in seeds),
               **{f"not_reference_{r}": n for r, n in _ordered(Counter(it.reason for it in seeds if it.reason))}},
        bad_lines=[f"{it.where()}: {it.reason}: {it.detail}" for it in bad[:cfg.max_listed_bad_lines]],
        judge=judge_stats, config=_jsonable(asdict(cfg)),
        naturalness=summarise((it.mbti, it.unnatural) for it in gen if it.kept) if cfg.naturalness else {},
        files={"curated": CURATED_FILE, "rejected": REJECTED_FILE, "report": REPORT_FILE},
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def write_outputs(run_dir: Path, items: list[Item], report: CurateReport) -> None:
    """curated.jsonl, curated_rejected.jsonl and report.json, each written atomically."""
    kept, rejected = [], []
    for it in items:
        if it.origin != "generated":
            continue
        if it.kept:
            kept.append(_record_json(it))
        else:
            rejected.append(_reject_json(it))
    _write_lines(run_dir / CURATED_FILE, kept)
    _write_lines(run_dir / REJECTED_FILE, rejected)
    _write_text(run_dir / REPORT_FILE, json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n")


def _record_json(it: Item) -> str:
    assert it.record_json is not None
    if it.judge is None and not it.unnatural:
        return it.record_json
    obj = json.loads(it.record_json)
    extra = {"judge": it.judge} if it.judge is not None else {}
    if it.unnatural:
        extra["unnatural"] = list(it.unnatural)
    obj["meta"] = {**obj["meta"], **extra}
    return json.dumps(obj, ensure_ascii=False)


def _reject_json(it: Item) -> str:
    head = json.dumps({"reason": it.reason, "detail": it.detail, "file": it.path, "line": it.line},
                      ensure_ascii=False)[:-1]
    if it.record_json is not None:
        return f"{head}, \"record\": {_record_json(it)}}}"
    return f"{head}, \"record\": null, \"raw\": {json.dumps(it.raw, ensure_ascii=False)}}}"


def _write_lines(path: Path, lines: list[str]) -> None:
    _write_text(path, "".join(line + "\n" for line in lines))


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)

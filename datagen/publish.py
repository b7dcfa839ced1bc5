"""`datagen publish`: a run's `curated.jsonl` → a Hub-layout dataset folder, optionally uploaded.

```
outputs/dataset/<run>/
  README.md                              dataset card: YAML header + body (datagen/card.py)
  data/train-00000-of-00001.parquet      one shard per `rows_per_shard` rows
  data/test-00000-of-00001.parquet
  plots/type_counts.png  plots/exchanges.png  plots/lengths.png
```

`datasets.load_dataset("<folder>")` and `load_dataset("user/name")` read it the same way:
the card's `configs` name the Parquet files of each split.

Each published record is the curated `Dialogue` with the persona's Korean system message
(`Persona.system_prompt()`) put first in `messages`, and `meta` cut down to a fixed set of
string fields (generator model, run, register): no usage blobs, no judge transcripts, never
secrets. The test split takes about `test_share` of every type (stratified, seeded).

Failure modes: every input problem is found before anything is written; the folder is built
in a temporary sibling and renamed into place, so a failure leaves nothing half-written.
Building is deterministic (no dates, no random state outside `seed`), so re-running an
interrupted upload writes identical bytes and huggingface_hub skips what already arrived.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import huggingface_hub  # lazy module: importing it costs nothing until an attribute is used

from datagen import card
from datagen.errors import UserError
from datagen.runs import DEFAULT_OUT, append_config, run_history
from datagen.schema import MBTI_TYPES, Dialogue, read_jsonl
from datagen.seeds import DEFAULT_SEEDS_DIR, Persona, load_personas, seed_pool

CURATED_FILE = "curated.jsonl"
FOLDER_ENTRIES = frozenset({"README.md", "data", "plots"})  # everything a dataset folder holds

# License ids the Hub knows in card metadata (it flags a README that names another; `other` + a LICENSE file otherwise).
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0
cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0
cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0
cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl
gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc lppl-1.3c ms-pl mpl-2.0 odc-by odbl openrail++ osl-3.0
postgresql ofl-1.1 ncsa unlicense zlib pddl llama2 llama3 llama3.1 llama3.2 llama3.3 gemma other unknown
""".split())


@dataclass(frozen=True)
class PublishConfig:
    """Settings of `datagen publish`; problems are collected and raised once, before any work."""

    run: str
    """The run to publish: reads `<out>/runs/<run>/curated.jsonl` (and `config.jsonl`, `report.json` if present)."""
    out: Path = DEFAULT_OUT
    """The outputs root, as for every stage: runs under `<out>/runs`, datasets under `<out>/dataset`."""
    dataset_dir: Path | None = None
    """The dataset folder to write; default `<out>/dataset/<run>`. Replaced whole on success."""
    seeds_dir: Path = DEFAULT_SEEDS_DIR
    """Personas (for the system message) and, with `include_seeds`, the hand-written dialogues."""
    include_seeds: bool = False
    """Also publish the hand-written seed dialogues of the run's types (`source: seed`); ids already in the run are not repeated."""
    test_share: float = 0.05
    """Share of each type that goes to `test`; 0 publishes `train` only. Each type needs ≥ 1 test and ≥ 1 train record."""
    seed: int = 0
    """Seed of the per-type shuffle that picks the test records: the same seed gives the same split."""
    license: str = "cc-by-nc-4.0"
    """Hub license id for the card. Non-commercial by default, as for Alpaca-style data: text written by a
    hosted LLM may carry the provider's terms. Pass e.g. `apache-2.0` when your generator's terms allow it."""
    repo_id: str | None = None
    """`user/name` of a Hub dataset repo to upload to (created if missing); None writes the folder only."""
    private: bool = False
    """Create the Hub repo private (and make an existing one private)."""
    pretty_name: str = "Korean MBTI Persona Chat"
    """Title of the card."""
    meta_keys: tuple[str, ...] = ("model", "run", "register")
    """The `meta` fields kept, as strings; everything else in a record's meta (usage, judge output) is dropped."""
    rows_per_shard: int = 50_000
    """Rows per Parquet file: 50k chats is ~15 MB (measured ~0.3 KB per chat), small files the viewer reads fast."""
    upload_attempts: int = 3
    """Tries of the upload on network errors and 5xx/429 answers; a rerun resumes where the last try stopped."""
    retry_wait_s: float = 5.0
    """Wait before the second try; doubled before each later one."""

    def __post_init__(self) -> None:
        problems = []
        if not self.run or self.run in (".", "..") or "/" in self.run or os.sep in self.run:
            problems.append(f"--run {self.run!r} must be a run folder name under {self.out / 'runs'}")
        if not 0 <= self.test_share <= 0.5:
            problems.append(f"--test-share {self.test_share} must be between 0 and 0.5 (e.g. 0.05)")
        if self.license not in HUB_LICENSES:
            problems.append(f"--license {self.license!r} is not a Hub license id; use e.g. cc-by-nc-4.0, "
                            "cc-by-4.0, apache-2.0, mit or other")
        if self.repo_id is not None:
            problem = repo_id_problem(self.repo_id)
            if problem:
                problems.append(problem)
        if self.rows_per_shard < 1 or self.upload_attempts < 1:
            problems.append("rows_per_shard and upload_attempts must be at least 1")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def run_dir(self) -> Path:
        return Path(self.out) / "runs" / self.run

    @property
    def folder(self) -> Path:
        """The dataset folder this writes."""
        return Path(self.dataset_dir) if self.dataset_dir is not None else Path(self.out) / "dataset" / self.run


@dataclass(frozen=True)
class PublishResult:
    folder: Path
    counts: dict[str, dict[str, int]]
    """Rows per split per type."""
    skipped: int = 0
    """Bad or duplicate lines of curated.jsonl left out."""
    seeds_added: int = 0
    url: str | None = None
    """The Hub page, when uploaded."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    def summary(self) -> str:
        """`wrote outputs/dataset/r1: train 950, test 50 (16 types, +176 seeds, skipped 2 lines)`."""
        sizes = ", ".join(f"{s} {sum(c.values())}" for s, c in self.counts.items())
        types = len({t for c in self.counts.values() for t in c})
        extra = "".join([f", +{self.seeds_added} seeds" if self.seeds_added else "",
                         f", skipped {self.skipped} lines" if self.skipped else ""])
        line = f"wrote {self.folder}: {sizes} ({types} type{'s' if types != 1 else ''}{extra})"
        return line + (f"\nuploaded to {self.url}" if self.url else "")


def repo_id_problem(repo_id: str) -> str | None:
    """None for a valid `user/name`, else what is wrong.

    >>> repo_id_problem("me/mbti-chat-ko") is None
    True
    >>> repo_id_problem("mbti-chat-ko")
    "--repo-id 'mbti-chat-ko' must be USER/NAME (e.g. me/mbti-chat-ko)"
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if repo_id.count("/") != 1:  # the card's load snippet needs the namespace too
        return f"--repo-id {repo_id!r} must be USER/NAME (e.g. me/mbti-chat-ko)"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        return f"--repo-id {repo_id!r} is not a valid Hub repo id ({e})"
    return None


# --- records --------------------------------------------------------------------------------------------


def load_run_records(cfg: PublishConfig) -> tuple[list[Dialogue], int, int]:
    """The run's curated records (+ seeds): `(records, skipped_lines, seeds_added)`. Raises UserError."""
    path = cfg.run_dir / CURATED_FILE
    if not cfg.run_dir.is_dir():
        raise UserError(f"no run {cfg.run!r} in {cfg.out / 'runs'}; run `datagen generate` and `datagen curate` first")
    if not path.is_file():
        raise UserError(f"{path} not found; run `datagen curate --run {cfg.run}` first")
    records, errors = read_jsonl(path)
    if not records:
        why = f"{len(errors)} bad line(s), first: {errors[0]}" if errors else "the file is empty"
        raise UserError(f"{path} has no valid records ({why}); nothing to publish")
    unique = list({d.id: d for d in reversed(records)}.values())[::-1]  # first occurrence wins
    skipped = len(errors) + len(records) - len(unique)
    added = 0
    if cfg.include_seeds:
        seen = {d.id for d in unique}
        types = tuple(t for t in MBTI_TYPES if any(d.mbti == t for d in unique))
        for dialogues in seed_pool(cfg.seeds_dir, types=types).values():
            new = [d for d in dialogues if d.id not in seen]
            unique += new
            seen.update(d.id for d in new)
            added += len(new)
    return unique, skipped, added


def load_needed_personas(records: list[Dialogue], seeds_dir: Path) -> dict[str, Persona]:
    """Personas of the types present; a missing or broken one is a UserError naming the file."""
    types = tuple(t for t in MBTI_TYPES if any(d.mbti == t for d in records))
    personas, problems = load_personas(seeds_dir, types=types)
    if problems:
        shown = "; ".join(str(p) for p in problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise UserError(f"the system message needs a valid persona for every published type: {shown} "
                        "(see `datagen seeds check`)")
    return personas


def compact_meta(d: Dialogue, run: str, keys: tuple[str, ...]) -> dict[str, str | None]:
    """The fixed `meta` of a published row: `keys` as strings or None; generated rows default `run` to the run."""
    out: dict[str, str | None] = {}
    for k in keys:
        v = d.meta.get(k)
        out[k] = str(v) if isinstance(v, (str, int, float, bool)) else None
    if "run" in out and out["run"] is None and d.source == "generated":
        out["run"] = run
    return out


def to_row(d: Dialogue, persona: Persona, run: str, meta_keys: tuple[str, ...]) -> dict[str, Any]:
    """A published row: the persona's system message first, then the dialogue."""
    return {"id": d.id, "mbti": d.mbti, "topic": d.topic,
            "messages": [{"role": "system", "content": persona.system_prompt()}, *(dict(m) for m in d.messages)],
            "source": d.source, "meta": compact_meta(d, run, meta_keys)}


def held_out(n: int, share: float) -> int:
    """Test records for a type of `n` records: `n * share`, rounded half up.

    >>> held_out(100, 0.05), held_out(30, 0.05), held_out(10, 0.05), held_out(9, 0.05)
    (5, 2, 1, 0)
    """
    return math.floor(n * share + 0.5 + 1e-9)


def min_records(share: float) -> int:
    """Fewest records a type needs for one test and one train record.

    >>> min_records(0.05), min_records(0.2), min_records(0.5)
    (10, 3, 2)
    """
    n = 2
    while held_out(n, share) < 1 or held_out(n, share) >= n:
        n += 1
    return n


def stratified_split(records: list[Dialogue], share: float, seed: int) -> dict[str, list[Dialogue]]:
    """`{"train": [...], "test": [...]}` with `held_out(n, share)` of every type in test.

    Each type is shuffled with its own `random.Random(f"{seed}:{TYPE}")` after sorting by id, so
    a type's split depends only on its own records and the seed. Rows come out in a seeded
    shuffle, so the Hub viewer shows a mix of types. `share == 0` gives `train` only.
    """
    by_type: dict[str, list[Dialogue]] = {}
    for d in records:
        by_type.setdefault(d.mbti, []).append(d)
    if share == 0:
        splits = {"train": sorted(records, key=lambda d: d.id)}
    else:
        need = min_records(share)
        short = [f"{t} has {len(by_type[t])}" for t in MBTI_TYPES if t in by_type and len(by_type[t]) < need]
        if short:
            raise UserError(f"too few records for a {share:g} test split: {', '.join(short)}; each type needs at "
                            f"least {need}. Grow the run, pass a larger --test-share, or --test-share 0 for no test split")
        splits = {"train": [], "test": []}
        for t in MBTI_TYPES:
            group = sorted(by_type.get(t, []), key=lambda d: d.id)
            random.Random(f"{seed}:{t}").shuffle(group)
            k = held_out(len(group), share)
            splits["test"] += group[:k]
            splits["train"] += group[k:]
    for name, rows in splits.items():
        rows.sort(key=lambda d: d.id)
        random.Random(f"{seed}:{name}").shuffle(rows)
    return splits


# --- the folder -----------------------------------------------------------------------------------------


def features(meta_keys: tuple[str, ...]) -> Any:
    from datasets import Features, List, Value

    return Features({
        "id": Value("string"), "mbti": Value("string"), "topic": Value("string"),
        "messages": List({"role": Value("string"), "content": Value("string")}),
        "source": Value("string"), "meta": {k: Value("string") for k in meta_keys},
    })


def write_data(folder: Path, rows: dict[str, list[dict[str, Any]]], cfg: PublishConfig) -> dict[str, Any]:
    """Parquet shards under `folder/data/`; returns the card's `dataset_info` block (features, split sizes)."""
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetInfo, SplitDict, SplitInfo

    feats = features(cfg.meta_keys)
    info = DatasetInfo(features=feats, splits=SplitDict(), download_size=0, dataset_size=0)
    (folder / "data").mkdir(parents=True)
    for name, split_rows in rows.items():
        ds = Dataset.from_list(split_rows, features=feats)
        table = ds.data.table  # carries the `huggingface` schema metadata, so readers get these exact features
        shards = max(1, math.ceil(len(ds) / cfg.rows_per_shard))
        for i in range(shards):
            path = folder / "data" / f"{name}-{i:05d}-of-{shards:05d}.parquet"
            pq.write_table(table.slice(i * cfg.rows_per_shard, cfg.rows_per_shard), path)
            info.download_size += path.stat().st_size
        info.splits.add(SplitInfo(name=name, num_bytes=ds.data.nbytes, num_examples=len(ds)))
        info.dataset_size += ds.data.nbytes
    return info._to_yaml_dict()  # the same block push_to_hub writes into a card


def replace_folder(build: Callable[[Path], None], dest: Path) -> None:
    """Run `build(tmp)` on an empty temporary sibling of `dest`, then swap it in; on failure remove it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it 0700; the published folder gets normal permissions
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    try:
        build(tmp)
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not dest.exists():
            old.rename(dest)  # put the previous release back
        raise
    shutil.rmtree(old, ignore_errors=True)


# --- the stage ------------------------------------------------------------------------------------------


def check_out_dir(out: Path) -> None:
    """The folder is replaced whole, so it must be absent, empty or one this stage wrote (never `--dataset-dir outputs`)."""
    if out.exists() and (not out.is_dir() or not {p.name for p in out.iterdir()} <= FOLDER_ENTRIES):
        raise UserError(f"--dataset-dir {out} exists and is not a dataset folder written by `datagen publish` "
                        f"(it would be replaced whole); pick a new folder")


def generation_config_of(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The run's last generate config (config.jsonl; config.json for older runs), for the card."""
    configs = [h["config"] for h in run_history(run_dir) if h.get("command") in ("generate", "batch-out")]
    if configs:
        return configs[-1], None
    return card.read_json_if_present(run_dir / "config.json")


def resolved(cfg: PublishConfig) -> dict[str, Any]:
    """The config as recorded in the run's config.jsonl: plain JSON."""
    d = asdict(cfg)
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def publish(cfg: PublishConfig) -> PublishResult:
    """Build `cfg.folder` from the run (all checks first), then upload it when `cfg.repo_id` is set."""
    check_out_dir(cfg.folder)
    records, skipped, seeds_added = load_run_records(cfg)
    personas = load_needed_personas(records, cfg.seeds_dir)
    splits = stratified_split(records, cfg.test_share, cfg.seed)
    rows = {name: [to_row(d, personas[d.mbti], cfg.run, cfg.meta_keys) for d in recs] for name, recs in splits.items()}
    generation_config, note_cfg = generation_config_of(cfg.run_dir)
    report, note_report = card.read_json_if_present(cfg.run_dir / "report.json")
    notes = tuple(n for n in (note_cfg, note_report) if n)
    if skipped:
        notes += (f"{skipped} bad or duplicate line(s) of {CURATED_FILE} were left out",)
    seed_counts = {t: len(v) for t, v in seed_pool(cfg.seeds_dir).items() if v}

    def build(tmp: Path) -> None:
        inputs = card.CardInputs(
            run=cfg.run, pretty_name=cfg.pretty_name, license=cfg.license, repo_id=cfg.repo_id, splits=rows,
            personas=personas, seed_counts=seed_counts, test_share=cfg.test_share, split_seed=cfg.seed,
            dataset_info=write_data(tmp, rows, cfg), generation_config=generation_config,
            curation_report=report, notes=notes)
        card.write_plots(rows, tmp)
        (tmp / "README.md").write_text(card.render_card(inputs), encoding="utf-8")

    folder = cfg.folder
    replace_folder(build, folder)
    append_config(cfg.run_dir, "publish", resolved(cfg))
    counts = {name: dict(Counter(r["mbti"] for r in split)) for name, split in rows.items()}
    url = upload(folder, cfg) if cfg.repo_id else None
    return PublishResult(folder=folder, counts=counts, skipped=skipped, seeds_added=seeds_added, url=url, notes=notes)


# --- the Hub --------------------------------------------------------------------------------------------


def _retryable_errors() -> tuple[type[BaseException], ...]:
    """Network failures of whichever HTTP client this huggingface_hub uses (httpx-style or requests)."""
    from huggingface_hub import errors

    http_error = getattr(errors, "HTTPError", None)  # the client's base HTTP error (transport errors included)
    return (OSError,) + ((http_error,) if isinstance(http_error, type) else ())


def _status(e: BaseException) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def upload(folder: Path, cfg: PublishConfig) -> str:
    """Create the dataset repo if needed and upload `folder` (`upload_to_hub`); returns the dataset's URL.

    `delete_patterns` drops remote data shards and plots this release no longer has.
    """
    assert cfg.repo_id is not None
    return upload_to_hub(folder, cfg.repo_id, repo_type="dataset", private=cfg.private,
                         commit_message=f"datagen publish --run {cfg.run}",
                         keep=f"the dataset folder is kept at {folder}; rerun the same command to upload it",
                         attempts=cfg.upload_attempts, retry_wait_s=cfg.retry_wait_s,
                         delete_patterns=["data/*", "plots/*"])


def upload_to_hub(folder: Path, repo_id: str, *, repo_type: str, private: bool, commit_message: str, keep: str,
                  attempts: int = 3, retry_wait_s: float = 5.0, delete_patterns: list[str] | None = None,
                  ignore_patterns: list[str] | None = None) -> str:
    """Create the Hub repo if needed and upload `folder`; bounded retries on network errors and 5xx/429.

    Shared by `datagen publish` (datasets) and `python -m train push` (models). The token comes from
    `HF_TOKEN` or the stored login (`hf auth login`); it is never printed. Every failure is one
    `UserError` ending with `keep` (what is kept locally, and that a rerun uploads it); an interrupted
    upload resumes, since huggingface_hub skips files that already arrived. Returns the repo's URL.
    """
    from huggingface_hub import constants as hub_constants

    if hub_constants.HF_HUB_OFFLINE:
        raise UserError(f"HF_HUB_OFFLINE is set, so nothing can be uploaded; {keep}")
    token = huggingface_hub.get_token()
    if not token:
        raise UserError(f"no Hugging Face token: set HF_TOKEN or run `hf auth login`; {keep}")
    api = huggingface_hub.HfApi(token=token)
    retryable = _retryable_errors()
    wait = retry_wait_s
    extra: dict[str, Any] = {}
    if delete_patterns:
        extra["delete_patterns"] = delete_patterns
    if ignore_patterns:
        extra["ignore_patterns"] = ignore_patterns
    for attempt in range(1, attempts + 1):
        try:
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
            if private:  # create_repo ignores `private` for a repo that already exists
                api.update_repo_settings(repo_id, repo_type=repo_type, private=True)
            api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                              commit_message=commit_message, **extra)
            return f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
        except retryable as e:
            status = _status(e)
            if status in (401, 403):
                raise UserError(f"the Hub refused the upload to {repo_id} (HTTP {status}): check that the token "
                                f"can write to that namespace; {keep}") from None
            if status is not None and status < 500 and status != 429:
                raise UserError(f"the Hub rejected the upload to {repo_id} (HTTP {status}: {_first_line(e)}); {keep}") from None
            if attempt == attempts:
                raise UserError(f"upload to {repo_id} failed after {attempt} tries ({type(e).__name__}: "
                                f"{_first_line(e)}); {keep}; it resumes where it stopped") from None
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else "no details"

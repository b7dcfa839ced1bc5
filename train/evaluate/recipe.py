"""The evaluation recipe, top to bottom: checks → held-out chats → replay per condition → loss → judge →
results.json → report.md → model card.

Every problem a user can fix (no checkpoint, no test split, no judge, a bad condition) is raised before
any model is loaded or any request is sent. Everything it produces is kept when a later step fails:
chats go to `chats.jsonl` as they finish, judge answers to `judge/raw.jsonl`, losses to `loss.json`, so
rerunning the same command only does what is missing (a rerun with everything done loads no model and
sends nothing).

    outputs/eval/<name>/
      results.json      the numbers (train/evaluate/metrics.py), written first
      report.md         tables side by side, confusion PNGs under plots/, sample exchanges
      chats.jsonl       every generated chat, a `Dialogue` with source "eval", condition in meta
      judge/raw.jsonl   every judge answer as received (the judge's cache)
      generate/raw.jsonl  server answers when a condition runs on an OpenAI-compatible server
      loss.json         per-chat losses; eval_config.json  the resolved settings (no keys)
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from datagen.cost import BudgetExhausted, Price, price_for
from datagen.errors import UserError
from datagen.llm import LLMFatalError, redact_url
from datagen.schema import Dialogue, write_jsonl
from train.config import TrainConfig, resolve_device
from train.evaluate import metrics
from train.evaluate.config import EvalConfig
from train.evaluate.heldout import HeldOut, load_held_out
from train.evaluate.loss import chat_losses
from train.evaluate.replay import (
    CHAT_CACHE,
    CHATS_FILE,
    ChatStore,
    GenSettings,
    Turn,
    eval_record,
    replay_local,
    run_endpoint,
    settings_key,
)
from train.evaluate.report import write_report

RESULTS_FILE = "results.json"
CONFIG_FILE = "eval_config.json"
LOSS_FILE = "loss.json"
JUDGE_CACHE = Path("judge") / "raw.jsonl"
GENERATE_CACHE = Path("generate") / "raw.jsonl"
LOSS_CONDITIONS = ("fine_tuned", "base")
# Files whose bytes decide what a checkpoint says (weights, tokenizer and template, persona prompts).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
CHECKPOINT_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin", *TOKENIZER_FILES,
                    "personas.json")


@dataclass
class EvalOutcome:
    """Where the evaluation wrote, its results, and what this invocation did (for logs and tests)."""

    folder: Path
    results: dict[str, Any]
    generated_turns: dict[str, int] = field(default_factory=dict)
    """Turns generated now per condition (0: every chat came from chats.jsonl)."""
    judge_sent: int = 0
    """Judge requests sent now (0: every answer came from the judge's cache)."""
    model_loaded: bool = False


# --- fingerprints: what makes a stored chat stale --------------------------------------------------------------


def _digest_files(folder: Path, names: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in names:
        path = folder / name
        if path.is_file():
            h.update(name.encode())
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


def _weights_digest(folder: Path, names: tuple[str, ...]) -> str:
    """The small files `names` whole; the weights (GBs, maybe sharded) by the names, sizes and first and last
    MiB of every `*.safetensors`: reading them whole would take minutes on every evaluation."""
    h = hashlib.sha256(_digest_files(folder, names).encode())
    for path in sorted(folder.glob("*.safetensors")):
        size = path.stat().st_size
        h.update(f"{path.name}:{size}".encode())
        with open(path, "rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read())
    return h.hexdigest()[:16]


def base_identity(cfg: TrainConfig) -> dict[str, Any]:
    local = Path(cfg.model)
    return {"model": cfg.model, "load_in_4bit": cfg.load_in_4bit, "quant_type": cfg.quant_type,
            "double_quant": cfg.double_quant, "compute_dtype": cfg.compute_dtype, "attn": cfg.attn_implementation,
            "config": _weights_digest(local, ("config.json",)) if local.is_dir() else None}


def require_checkpoint(cfg: TrainConfig, demo: bool = False) -> None:
    if not (cfg.has_adapter or cfg.has_merged):
        make = ("`make demo` (python -m train demo) trains it" if demo else
                "train one with `python -m train train --config <config>` (make train), or set name=/output_dir= "
                "to the checkpoint you trained")
        raise UserError(f"no checkpoint to evaluate in {cfg.checkpoint_dir} (no adapter_config.json, no merged/); {make}")


# --- the model in memory --------------------------------------------------------------------------------------


class LocalModel:
    """The checkpoint in memory, loaded on first use. With an adapter: one model, `base` runs with the adapter
    disabled. With only a merged model: the merged model for `fine_tuned`, and the base (4-bit if so trained)
    loaded in its place for `base`; one of the two in memory at a time."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None]):
        self.cfg = cfg
        self.log = log
        self._loaded: tuple[str, Any, Any, Any] | None = None  # (which, model, tokenizer, tokens)
        self.loaded_once = False

    def _get(self, which: str) -> tuple[Any, Any, Any]:
        """`checkpoint` (base + adapter, or merged) or `base` (merged-only checkpoints): (model, tokenizer, tokens)."""
        if self._loaded is not None and self._loaded[0] == which:
            return self._loaded[1:]
        from train.chat import load_chat_model
        from train.model import load_base_model, load_tokenizer

        self.free()
        if which == "checkpoint":
            use = "adapter" if self.cfg.has_adapter else "merged"
            self.log(f"loading {self.cfg.model} + adapter {self.cfg.checkpoint_dir} ..." if use == "adapter"
                     else f"loading merged model {self.cfg.merged_dir} ...")
            model, tokenizer, tokens, _ = load_chat_model(self.cfg, use)
        else:
            self.log(f"loading the base {self.cfg.model} ...")
            tokenizer, tokens = load_tokenizer(self.cfg, source=self.cfg.merged_dir)  # the tokenizer it was trained with
            model = load_base_model(self.cfg, resolve_device(self.cfg), quantized=self.cfg.load_in_4bit).eval()
        self._loaded = (which, model, tokenizer, tokens)
        self.loaded_once = True
        return model, tokenizer, tokens

    @contextmanager
    def condition(self, name: str) -> Iterator[tuple[Any, Any, Any]]:
        """(model, tokenizer, tokens) as `name` runs: `base` without the adapter."""
        if name == "fine_tuned":
            yield self._get("checkpoint")
        elif self.cfg.has_adapter:
            model, tokenizer, tokens = self._get("checkpoint")
            with model.disable_adapter():  # peft: the same modules with LoRA off; nothing is copied
                yield model, tokenizer, tokens
        else:
            yield self._get("base")

    def free(self, collect: bool = True) -> None:
        """Drop the model; `collect` also gives its memory back now (a full gc pass costs ~0.5 s)."""
        if self._loaded is not None:
            self._loaded = None
            if not collect:
                return
            import gc

            gc.collect()  # one model's memory back before the next comes in (GBs on a GPU)
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass


# --- steps ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How one condition runs: where (None = in-process), which model name, and its settings key."""

    condition: str
    key: str
    model: str
    """What the chats' meta and the report call the model."""
    server_model: str | None = None
    base_url: str | None = None

    @property
    def local(self) -> bool:
        return self.server_model is None


def gen_settings(cfg: TrainConfig, ecfg: EvalConfig) -> GenSettings:
    return GenSettings(max_new_tokens=ecfg.max_new_tokens or cfg.max_new_tokens, temperature=ecfg.temperature,
                       top_p=ecfg.top_p, repetition_penalty=ecfg.repetition_penalty, seed=ecfg.seed)


def plans(cfg: TrainConfig, ecfg: EvalConfig, systems: dict[str, str], gen: GenSettings) -> dict[str, Plan]:
    sys_digest = hashlib.sha256(json.dumps(systems, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
    ckpt = (_digest_files(cfg.checkpoint_dir, CHECKPOINT_FILES) if cfg.has_adapter
            else _weights_digest(cfg.merged_dir, ("config.json",) + CHECKPOINT_FILES))
    common = {"gen": gen.__dict__, "systems": sys_digest}
    local: dict[str, Any] = {}  # the in-process conditions' base and tokenizer digests, read once
    out: dict[str, Plan] = {}
    for c in ecfg.run_conditions:
        if c == "reference":
            url = ecfg.reference_base_url or os.environ.get("OPENAI_BASE_URL") or None
            ident = {"condition": c, "server": redact_url(url), "model": ecfg.reference_model, **common}
            out[c] = Plan(c, settings_key(ident), f"{ecfg.reference_model} at {redact_url(url) or 'OpenAI'}",
                          ecfg.reference_model, url)
        elif ecfg.base_url:
            name = (ecfg.adapter_name or cfg.name) if c == "fine_tuned" else (ecfg.served_base or cfg.model)
            ident = {"condition": c, "server": redact_url(ecfg.base_url), "model": name, **common,
                     "checkpoint": ckpt if c == "fine_tuned" else None}
            out[c] = Plan(c, settings_key(ident), f"{name} at {redact_url(ecfg.base_url)}", name, ecfg.base_url)
        else:
            local = local or {"base": base_identity(cfg), "tokenizer": _digest_files(
                cfg.checkpoint_dir if cfg.has_adapter else cfg.merged_dir, TOKENIZER_FILES)}
            ident = {"condition": c, "server": None, **local, **common, "checkpoint": ckpt if c == "fine_tuned" else None}
            model = (f"{cfg.model} + adapter {cfg.checkpoint_dir}" if cfg.has_adapter else f"{cfg.merged_dir}") \
                if c == "fine_tuned" else f"{cfg.model}, adapter disabled"
            out[c] = Plan(c, settings_key(ident), model)
    return out


def model_price(ecfg: EvalConfig, who: str) -> Price | None:
    """The price of the judge or reference model: --WHO-price-in/out, else datagen/cost.py's table (None: unknown)."""
    p_in, p_out = getattr(ecfg, f"{who}_price_in"), getattr(ecfg, f"{who}_price_out")
    return Price(p_in, p_out) if p_in is not None else price_for(getattr(ecfg, f"{who}_model") or "")


def check_servers(ecfg: EvalConfig) -> None:
    """A server condition or the judge with nowhere to send requests: one line, before any work."""
    has_key = bool(os.environ.get("OPENAI_API_KEY"))
    env_url = os.environ.get("OPENAI_BASE_URL")
    if "reference" in ecfg.run_conditions and not (ecfg.reference_base_url or env_url or has_key):
        raise UserError(f"the reference condition needs a server for {ecfg.reference_model}: set OPENAI_API_KEY "
                        "(OpenAI), or --reference-base-url / OPENAI_BASE_URL (vLLM, Ollama, llama.cpp)")
    if "reference" in ecfg.run_conditions and ecfg.reference_max_cost is not None and model_price(ecfg, "reference") is None:
        raise UserError(f"no price known for reference model {ecfg.reference_model}, so --reference-max-cost cannot "
                        "be enforced; pass --reference-price-in and --reference-price-out (USD per 1M tokens; 0 for a "
                        "local server)")
    if ecfg.judge and not (ecfg.judge_base_url or env_url or has_key):
        raise UserError("the judge needs a model: set OPENAI_API_KEY (OpenAI), or --judge-base-url / OPENAI_BASE_URL "
                        "for a local OpenAI-compatible server; or pass --no-judge for the other metrics")


def make_judge(ecfg: EvalConfig, folder: Path, log: Callable[[str], None]):
    from dataclasses import replace

    from datagen.judge import Judge, JudgeConfig

    price = model_price(ecfg, "judge")
    # The judge's own defaults (temperature 0, 600 tokens), on the model and server asked for.
    llm = replace(JudgeConfig().llm, model=ecfg.judge_model, base_url=ecfg.judge_base_url,
                  concurrency=ecfg.judge_concurrency, max_attempts=ecfg.judge_max_attempts)

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            log(f"  judged {done}/{total}")

    return Judge(JudgeConfig(llm=llm), folder / JUDGE_CACHE, progress=progress, max_cost=ecfg.judge_max_cost,
                 price=price, cap_flag="--judge-max-cost")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def replay(c: str, p: Plan, ecfg: EvalConfig, folder: Path, held: HeldOut, systems: dict[str, str],
           gen: GenSettings, local: LocalModel, store: ChatStore, log: Callable[[str], None]) -> int:
    """Every missing chat of condition `c`, appended to chats.jsonl as it finishes; returns the turns generated."""
    todo = [d for d in held.chats if store.get(c, d.id, p.key) is None]
    log(f"{c}: {p.model}: {len(held.chats) - len(todo)} of {len(held.chats)} chats already in {CHAT_CACHE}"
        + (f", replaying {len(todo)}" if todo else ""))
    if not todo:
        return 0
    count = {"turns": 0}

    def done(d: Dialogue, turns: list[Turn]) -> None:
        store.add(eval_record(d, turns, c, p.key, p.model))
        count["turns"] += len(turns)

    if p.local:
        with local.condition(c) as (model, tokenizer, tokens):
            return replay_local(model, tokenizer, tokens, todo, systems, gen, ecfg.batch_size, done)
    from datagen.step import StageStopped

    kept = f"finished chats are kept in {folder / CHAT_CACHE}; rerun the same command to continue"
    cap = ({"max_cost": ecfg.reference_max_cost, "price": model_price(ecfg, "reference"), "cap_flag": "--reference-max-cost"}
           if c == "reference" else {})
    try:
        failed = run_endpoint(p.server_model or "", p.base_url, c, todo, systems, gen, done,
                                 folder / GENERATE_CACHE, ecfg.concurrency, **cap)
    except (StageStopped, LLMFatalError) as e:
        raise UserError(f"{c}: generation stopped: {e}; {kept}") from None
    except BudgetExhausted as e:
        raise UserError(f"{c}: generation stopped: {e}; {kept} with a higher --reference-max-cost") from None
    if failed:
        raise UserError(f"{c}: {len(failed)} chat(s) got no answer from {redact_url(p.base_url) or 'OpenAI'} "
                        f"for some turn; {kept}")
    return count["turns"]


def losses(c: str, p: Plan, cfg: TrainConfig, held: HeldOut, systems: dict[str, str], folder: Path,
           local: LocalModel, log: Callable[[str], None]) -> dict[str, Any]:
    """Held-out id → [nll, tokens] under condition `c` (in-process only), cached in loss.json by settings."""
    cache = _read_json(folder / LOSS_FILE) or {}
    key = settings_key({"chats": p.key, "max_seq_len": cfg.max_seq_len})
    have = cache.get(c, {}).get("chats", {}) if cache.get(c, {}).get("key") == key else {}
    todo = [d for d in held.chats if d.id not in have]
    if todo:
        log(f"{c}: loss on {len(todo)} held-out chat(s)")
        with local.condition(c) as (model, tokenizer, tokens):
            have = {**have, **chat_losses(model, tokenizer, tokens, todo, systems, cfg.max_seq_len)}
        cache[c] = {"key": key, "chats": have}
        _write_json(folder / LOSS_FILE, cache)
    return have


def judge_all(judge, chats: dict[str, list[Dialogue]], profiles: dict[str, str], folder: Path,
              log: Callable[[str], None]) -> dict[str, list[Any]]:
    """Verdicts per condition, aligned with its chats (None where the judge gave no usable answer)."""
    records = [d for cs in chats.values() for d in cs]
    log(f"judging {len(records)} chats with {judge.cfg.llm.model} (2 requests each; answers cached in "
        f"{folder / JUDGE_CACHE})")
    try:
        judgements = judge.judge(records, profiles)
    except UserError as e:
        raise UserError(f"the judge could not finish; the {len(records)} generated chats are kept in "
                        f"{folder / CHAT_CACHE}: rerun the same command to judge the rest (no chat is generated again, "
                        f"judge answers so far are cached), or pass --no-judge. The judge said: {e}") from None
    failed = [j for j in judgements if j.verdict is None]
    if failed:
        log(f"  {len(failed)} chat(s) without a usable judge answer (counted as not judged; first: {failed[0].problem})")
    out: dict[str, list[Any]] = {}
    i = 0
    for c, cs in chats.items():
        out[c] = [j.verdict for j in judgements[i:i + len(cs)]]
        i += len(cs)
    return out


# --- the recipe -----------------------------------------------------------------------------------------------


def evaluate(cfg: TrainConfig, ecfg: EvalConfig, demo: bool = False, log: Callable[[str], None] = print,
             config_ref: str | None = None) -> EvalOutcome:
    """Evaluate the checkpoint of `cfg` as `ecfg` says; returns where the results are.

    `config_ref` is how the card tells a reader to load this checkpoint (`--config PATH key=value ...`).
    """
    from train.chat import checkpoint_personas

    # 1. everything a user can fix, before any model or request
    require_checkpoint(cfg, demo)
    check_servers(ecfg)
    name = ecfg.name or ("demo" if demo else cfg.name)
    folder = ecfg.folder(name)
    personas = checkpoint_personas(cfg, note=log)
    systems = {t: p.system_prompt for t, p in personas.items()}
    held = load_held_out(cfg, set(personas), ecfg.prompts, ecfg.split, ecfg.limit_per_type)
    for note in held.notes:
        log(f"note: {note}")
    judge = profiles = None
    if ecfg.judge:
        from datagen.judge import seed_profiles
        from datagen.seeds import DEFAULT_SEEDS_DIR

        judge = make_judge(ecfg, folder, log)
        profiles = seed_profiles(held.types, Path(ecfg.seeds_dir) if ecfg.seeds_dir else DEFAULT_SEEDS_DIR)
    gen = gen_settings(cfg, ecfg)
    plan = plans(cfg, ecfg, systems, gen)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / CONFIG_FILE, {"eval": ecfg.to_dict(), "name": name, "checkpoint": str(cfg.checkpoint_dir),
                                       "train_config": _train_summary(cfg), "settings": {c: p.key for c, p in plan.items()}})
    log(f"eval {name}: {len(held.chats)} held-out chats of {len(held.types)} type(s) from {held.source}; "
        f"conditions {', '.join(plan)}; writing to {folder}")

    # 2. replay each condition, every finished chat kept; 3. its loss while its model is in memory
    local = LocalModel(cfg, log)
    store = ChatStore(folder / CHAT_CACHE)
    generated: dict[str, int] = {}
    loss: dict[str, dict[str, Any]] = {}
    try:
        for c, p in plan.items():
            generated[c] = replay(c, p, ecfg, folder, held, systems, gen, local, store, log)
            if ecfg.loss and c in LOSS_CONDITIONS and p.local:
                loss[c] = losses(c, p, cfg, held, systems, folder, local, log)
        chats = {c: [store.get(c, d.id, p.key) for d in held.chats] for c, p in plan.items()}
        write_jsonl(folder / CHATS_FILE, [d for cs in chats.values() for d in cs])  # this run's chats, in order
    finally:
        store.close()
    local.free(collect=False)  # nothing else is loaded after this; the judge only needs the network

    # 4. judge (resumable: its cache answers everything already asked)
    verdicts = judge_all(judge, chats, profiles or {}, folder, log) if judge is not None else {}
    judge_sent = judge.stats["sent"] if judge is not None else 0

    # 5. results.json first, then the report and the card from it
    notes = list(held.notes)
    if cfg.tiny_random_init:
        notes.append(f"{cfg.model} is a tiny randomly initialised model (the demo's): the numbers show the machinery "
                     "working, not what a trained model says")
    if ecfg.loss and any(c in plan and not plan[c].local for c in LOSS_CONDITIONS):
        notes.append("loss and perplexity need the model in-process; with --base-url they are not computed")
    conditions = {c: metrics.condition_results(chats[c], verdicts.get(c), loss.get(c)) for c in plan}
    setup = {"checkpoint": str(cfg.checkpoint_dir), "base_model": cfg.model, "held_out": held.source,
             "backend": (f"OpenAI-compatible server {redact_url(ecfg.base_url)}" if ecfg.base_url
                         else f"in-process transformers on {resolve_device(cfg)}, batches of {ecfg.batch_size}, "
                              "left-padded"),
             "generation": {**gen.__dict__}, "models": {c: p.model for c, p in plan.items()},
             "judge_base_url": redact_url(ecfg.judge_base_url or os.environ.get("OPENAI_BASE_URL")) if judge else None,
             "settings": {c: p.key for c, p in plan.items()}}
    held_block = metrics.condition_results(held.chats, None, None)
    res = metrics.results(name, ecfg.judge_model if judge is not None else None, ecfg.limit_per_type, conditions,
                          held_block, setup, notes)
    _write_json(folder / RESULTS_FILE, res)
    report = write_report(folder, res, chats, ecfg.samples)
    from train.card import CARD_FILE, card_keeps, write_model_card

    kept = card_keeps(cfg.checkpoint_dir, res) if ecfg.update_card is None else None
    if ecfg.update_card is False or kept is not None:
        why = ("--no-card" if kept is None else f"it holds a more thorough evaluation ({kept[0]} held-out chats"
               + (", judged" if kept[1] else "") + "); --card puts these results in it")
        card_note = f"model card {cfg.checkpoint_dir / CARD_FILE} left as it was ({why})"
    else:
        card_note = f"model card {write_model_card(cfg, res, config_path=config_ref)}"
    log(summary_line(res))
    log(f"wrote {folder / RESULTS_FILE}, {report}, {folder / CHATS_FILE}; {card_note}")
    return EvalOutcome(folder, res, generated, judge_sent, local.loaded_once)


def summary_line(res: dict[str, Any]) -> str:
    """One line per condition: full-type accuracy, persona score, stop rate."""
    from train.evaluate.report import fmt

    parts = []
    for c, b in res["conditions"].items():
        parts.append(f"{c}: full type {fmt(b['full_type'], 'pct')}, persona {fmt(b['scores']['persona'], 'f2')}, "
                     f"rules pass {fmt(b['rules_pass'], 'pct')}, stop rate {fmt(b['stop_rate'], 'pct')}, "
                     f"loss {fmt(b['loss'], 'f3')}")
    return "; ".join(parts)


def _train_summary(cfg: TrainConfig) -> dict[str, Any]:
    keys = ("name", "model", "dataset", "chat_template", "load_in_4bit", "lora_r", "lora_alpha", "max_seq_len",
            "max_new_tokens")
    return {k: getattr(cfg, k) for k in keys}

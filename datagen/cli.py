"""The `datagen` command. Thin: parse options, build the stage's config, call one library function.

Mistakes a user can fix raise `UserError` in the library; `main()` prints them as one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from datagen.errors import UserError
from datagen.runs import DEFAULT_OUT
from datagen.seeds import DEFAULT_SEEDS_DIR

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Grow a Korean MBTI persona chat dataset: seeds → generate → curate → publish.")
seeds_app = typer.Typer(no_args_is_help=True, help="Check and format the hand-written seeds.")
app.add_typer(seeds_app, name="seeds")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

SeedsDir = typer.Option(DEFAULT_SEEDS_DIR, "--seeds", help="The seeds folder (personas/, topics.yaml, dialogues/).")
Out = typer.Option(DEFAULT_OUT, "--out", help="The outputs root, the same for every stage: runs in OUT/runs, datasets "
                   "in OUT/dataset, checkpoints and evals beside them.")
Set = typer.Option([], "--set", metavar="KEY=VALUE", help="Override any field of the stage's config (dotted into nested "
                   "ones, e.g. checks.near_dup_threshold=0.5); repeat for more. Unknown keys name the closest valid ones.")


def _with_sets(cfg, sets: list[str], prefix: str = ""):
    """`cfg` with the `--set` overrides whose key starts with `prefix` (the prefix stripped)."""
    from datagen.overrides import apply_overrides

    mine = [s[len(prefix):] for s in sets if s.startswith(prefix)] if prefix else sets
    return apply_overrides(cfg, mine) if mine else cfg


@seeds_app.command("check")
def seeds_check(seeds: Path = SeedsDir, sets: list[str] = Set) -> None:
    """Validate every seed file; print a table per type; exit 1 listing every problem."""
    from datagen.seed_check import SeedCheckConfig, check_seeds

    cfg = _with_sets(SeedCheckConfig(), sets)
    if not seeds.is_dir():
        raise UserError(f"seeds folder {seeds} does not exist; pass --seeds DIR")
    report = check_seeds(seeds, cfg)
    table = Table(title=f"seeds: {report.personas}/16 personas, {report.topics} topics")
    for col in ("type", "dialogues", "avg exchanges", "exchanges (kinds)", "존댓말", "반말", "topics", "unnatural",
                "problems"):
        table.add_column(col, justify="right" if col != "type" else "left")
    for st in report.stats.values():
        table.add_row(st.mbti, str(st.dialogues), f"{st.avg_exchanges:.1f}", st.spread(), str(st.polite), str(st.casual),
                      str(st.topics), str(st.unnatural), str(st.problems))
    total = sum(st.dialogues for st in report.stats.values())
    table.add_row("all", str(total), "", "", "", "", "", str(len(report.soft)), str(len(report.problems)), style="bold")
    console.print(table)
    for s in report.soft:
        print(s)
    if total:
        print(f"naturalness (soft, counted, not problems): {len(report.soft)} hit(s) in {total} dialogues, "
              f"{len(report.soft) / total:.2f} per dialogue (datagen/naturalness.py; seeds/STYLE.md says how to fix)")
    for p in report.problems:
        print(p)
    if not report.ok:
        print(f"{len(report.problems)} problem(s) in {seeds}", file=sys.stderr)
        raise typer.Exit(1)
    print(f"ok: {total} seed dialogues in {seeds}")


@seeds_app.command("fmt")
def seeds_fmt(seeds: Path = SeedsDir,
              only: Optional[str] = typer.Option(None, "--only", help="Only these types' files, e.g. ISTJ,ENFP.")) -> None:
    """Fill in missing ids (and fix stale ones) after you add or edit seed dialogues."""
    from datagen.seed_check import format_seeds

    types = tuple(t.strip().upper() for t in only.split(",") if t.strip()) if only else None
    changed, problems = format_seeds(seeds, types)
    for p in problems:
        print(p)
    print(f"{changed} id(s) written")
    if problems:
        raise typer.Exit(1)


# --- stage commands are added below, one function each ------------------------------------------


def _generate_config(mbti: str, count: int, run: Optional[str], out: Path, model: str, base_url: Optional[str],
                     concurrency: int, max_cost: Optional[float], seed: int, seeds: Path, per_request: int,
                     seed_examples: int, generated_examples: int, temperature: float, max_tokens: int,
                     timeout: float, max_attempts: int, backoff: float, response_format: str,
                     price_in: Optional[float], price_out: Optional[float], sets: list[str]):
    from datagen.generate import GenerateConfig
    from datagen.llm import LLMConfig
    from datagen.schema import MBTI_TYPES

    key = mbti.strip().upper()
    types = MBTI_TYPES if key == "ALL" else tuple(dict.fromkeys(t.strip() for t in key.split(",") if t.strip()))
    price = _price(price_in, price_out)
    llm = LLMConfig(model=model, base_url=base_url, concurrency=concurrency, temperature=temperature,
                    max_tokens=max_tokens, timeout_s=timeout, max_attempts=max_attempts, backoff_base_s=backoff,
                    structured_output=response_format)
    cfg = GenerateConfig(types=types, count=count, run=run, out_dir=out, seeds_dir=seeds, llm=llm, seed=seed,
                         seed_examples=seed_examples, generated_examples=generated_examples,
                         per_request=per_request, max_cost=max_cost, price=price)
    return _with_sets(cfg, sets)


def _progress_table(stats) -> Table:
    from datagen.cost import format_usd
    from datagen.generate.state import spend_line

    b = stats.budget
    money = spend_line(stats.spent, b.reserved, b.left) if stats.priced and b is not None else (
        f"spent {format_usd(stats.spent)}" if stats.priced else "spent ?")
    table = Table(title=f"generate · run {stats.run} · {money}")
    for col in ("type", "accepted", "rejected", "requests", "tokens", "$"):
        table.add_column(col, justify="left" if col in ("type", "rejected") else "right")
    for st in stats.types.values():
        rejected = ", ".join(f"{k} {v}" for k, v in st.rejected.most_common(4)) or "-"
        failed = sum(st.failed.values())
        table.add_row(st.mbti, f"{st.accepted}/{st.target}", rejected,
                      f"{st.requests}" + (f" ({failed} failed)" if failed else ""),
                      f"{st.prompt_tokens + st.completion_tokens:,}", format_usd(st.cost) if st.priced else "?")
    return table


@app.command("generate")
def generate_cmd(
    mbti: str = typer.Option("ISTJ", "--mbti", help="A type (ISTJ), several (ISTJ,ENFP) or all (the 16 share one concurrency budget)."),
    count: int = typer.Option(200, "--count", help="Accepted dialogues per type in the run, in all (earlier invocations count)."),
    run: Optional[str] = typer.Option(None, "--run", help="Run name (outputs/runs/RUN). Default: the model name, so rerunning the same command resumes."),
    out: Path = Out,
    model: str = typer.Option("gpt-4o-mini", "--model", help="Model name as the server knows it."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible server URL ending in /v1. Default: $OPENAI_BASE_URL, else OpenAI."),
    concurrency: int = typer.Option(16, "--concurrency", help="Most requests in flight; halves on 429 and grows back."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="USD this run may spend in all; stops cleanly before it would be exceeded."),
    seed: int = typer.Option(0, "--seed", help="Seed of every request's choice of examples, topics and registers."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the first prompt, the planned requests, tokens and $; send nothing (no key needed)."),
    batch_out: Optional[Path] = typer.Option(None, "--batch-out", help="Write the planned requests as an OpenAI Batch API input file; send nothing (no key needed)."),
    per_request: int = typer.Option(3, "--per-request", help="New dialogues asked for per request."),
    seed_examples: int = typer.Option(2, "--seed-examples", help="Hand-written seed dialogues shown per request."),
    generated_examples: int = typer.Option(1, "--generated-examples", help="Already accepted dialogues shown per request."),
    temperature: float = typer.Option(1.0, "--temperature"),
    max_tokens: int = typer.Option(6000, "--max-tokens", help="Most completion tokens per request."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds before one send times out."),
    max_attempts: int = typer.Option(4, "--max-attempts", help="Most sends of one request on 5xx / timeout / connection errors."),
    backoff: float = typer.Option(1.0, "--backoff", help="First retry wait in seconds; doubles per retry, with jitter."),
    response_format: str = typer.Option("json_schema", "--response-format", help="json_schema, json_object or none (falls back by itself when a server rejects one)."),
    price_in: Optional[float] = typer.Option(None, "--price-in", help="USD per 1M prompt tokens (overrides the built-in table)."),
    price_out: Optional[float] = typer.Option(None, "--price-out", help="USD per 1M completion tokens."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live per-type table (on a terminal)."),
    seeds: Path = SeedsDir,
    sets: list[str] = Set,
) -> None:
    """Grow each type to COUNT accepted dialogues with any OpenAI-compatible LLM (self-instruct); resumable.

    Needs OPENAI_API_KEY (OpenAI) or OPENAI_BASE_URL / --base-url (vLLM, Ollama, llama.cpp);
    --dry-run and --batch-out work offline without either.
    """
    cfg = _generate_config(mbti, count, run, out, model, base_url, concurrency, max_cost, seed, seeds, per_request,
                           seed_examples, generated_examples, temperature, max_tokens, timeout, max_attempts,
                           backoff, response_format, price_in, price_out, sets)
    if dry_run:
        from datagen.generate import format_dry_run, plan_run

        print(format_dry_run(plan_run(cfg)))
        return
    if batch_out is not None:
        from datagen.batch import write_batch
        from datagen.cost import format_usd

        rep = write_batch(cfg, batch_out)
        total = sum(rep.requests.values())
        print(f"wrote {total} requests to {rep.path} ({', '.join(f'{t} {n}' for t, n in rep.requests.items())}); "
              f"plan kept in {rep.plan_path}")
        print(f"~{rep.prompt_tokens:,} prompt + ~{rep.completion_tokens:,} completion tokens; "
              + (f"~{format_usd(rep.cost)} at Batch API prices" if rep.cost is not None else f"no price known for {model}"))
        print(rep.token_note)
        print(f"submit it with the OpenAI Batch API, then: datagen ingest-batch RESULTS.jsonl --run {cfg.run_name}")
        return

    from datagen.generate import generate

    live = None
    if progress and err_console.is_terminal:
        from rich.live import Live

        holder: dict = {}
        live = Live(console=err_console, refresh_per_second=4,
                    get_renderable=lambda: _progress_table(holder["s"]) if "s" in holder else Table())
        live.start()
        on_progress = lambda s: holder.__setitem__("s", s)  # noqa: E731
    else:
        on_progress = None
    try:
        stats = generate(cfg, progress=on_progress)
    finally:
        if live is not None:
            live.stop()
    for note in stats.notices:
        print(f"note: {note}")
    for st in stats.types.values():
        print(st.summary())
    from datagen.cost import format_usd

    spent = f"spent {format_usd(stats.spent)} in all" if stats.priced else "no price known for this model"
    print(f"run {stats.run}: {sum(s.accepted for s in stats.types.values())} accepted in {stats.run_dir / 'generated'}; "
          f"{spent}")
    if stats.stop_reason:
        print(f"stopped: {stats.stop_reason}; rerun with a higher --max-cost to continue")


@app.command("ingest-batch")
def ingest_batch_cmd(
    results: Path = typer.Argument(..., help="A Batch API output file (JSONL)."),
    run: Optional[str] = typer.Option(None, "--run", help="The run the batch was written for (default: the model name)."),
    out: Path = Out,
    model: Optional[str] = typer.Option(None, "--model", help="Model of the batch; default: the one --batch-out recorded in the run (names the default run when --run is not given)."),
    seeds: Path = SeedsDir,
    sets: list[str] = Set,
) -> None:
    """Feed a Batch API output file through the same parse → check → accept path; safe to repeat."""
    from datagen.batch import ingest_batch
    from datagen.generate import GenerateConfig
    from datagen.llm import LLMConfig

    llm = LLMConfig(model=model) if model else LLMConfig()
    cfg = _with_sets(GenerateConfig(run=run, out_dir=out, seeds_dir=seeds, llm=llm), sets)
    rep = ingest_batch(results, cfg, model_given=model is not None)
    for note in rep.notes:
        print(f"note: {note}")
    for p in rep.problems:
        print(p)
    for st in rep.stats.values():
        print(st.summary())
    print(f"{rep.lines} result lines: {rep.lines - rep.skipped - len(rep.problems)} ingested, "
          f"{rep.skipped} already ingested, {len(rep.problems)} unreadable")


@app.command("publish")
def publish_cmd(
    run: str = typer.Option(..., "--run", help="The run to publish: OUT/runs/RUN/curated.jsonl."),
    out: Path = Out,
    dataset_dir: Optional[Path] = typer.Option(None, "--dataset-dir", help="Dataset folder to write (default: OUT/dataset/RUN)."),
    include_seeds: bool = typer.Option(False, "--include-seeds", help="Also publish the hand-written seeds of the run's types."),
    test_share: float = typer.Option(0.05, "--test-share", help="Share of each type in the test split (0 = train only)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the stratified split."),
    license: str = typer.Option("cc-by-nc-4.0", "--license", help="Hub license id for the dataset card."),
    repo_id: Optional[str] = typer.Option(None, "--repo-id", help="Upload to this Hub dataset repo (USER/NAME)."),
    private: bool = typer.Option(False, "--private", help="Make the Hub repo private."),
    seeds: Path = SeedsDir,
    sets: list[str] = Set,
) -> None:
    """Write a Hub-ready dataset folder (card, Parquet splits, plots) from a curated run; upload it with --repo-id."""
    from datagen.publish import PublishConfig, publish

    cfg = _with_sets(PublishConfig(run=run, out=out, dataset_dir=dataset_dir, seeds_dir=seeds, include_seeds=include_seeds,
                                   test_share=test_share, seed=seed, license=license, repo_id=repo_id, private=private),
                     sets)
    print(publish(cfg).summary())


@app.command("curate")
def curate_cmd(
    run: str = typer.Option(..., "--run", help="The run to curate: OUT/runs/RUN/generated/*.jsonl."),
    out: Path = Out,
    judge: bool = typer.Option(False, "--judge/--no-judge", help="Also ask an LLM judge for persona fidelity (off by default; costs requests)."),
    model: str = typer.Option("gpt-4o-mini", "--model", help="Judge model name as the server knows it."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="Judge server URL ending in /v1. Default: $OPENAI_BASE_URL, else OpenAI."),
    concurrency: int = typer.Option(16, "--concurrency", help="Most judge requests in flight."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="USD the judge may spend on this run in all (earlier invocations count); a hard cap."),
    price_in: Optional[float] = typer.Option(None, "--price-in", help="Judge USD per 1M prompt tokens (overrides the built-in table)."),
    price_out: Optional[float] = typer.Option(None, "--price-out", help="Judge USD per 1M completion tokens."),
    workers: int = typer.Option(0, "--workers", help="Processes for the rules and MinHash (0 = one per CPU core)."),
    seeds: Path = SeedsDir,
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a CurateConfig field (e.g. "
                                   "rules.max_register_minority=0.2), or a JudgeConfig one with judge. in front "
                                   "(judge.min_persona=4); repeat for more."),
) -> None:
    """Dedup (exact + MinHash LSH, across types and against the seeds), quality rules, optional judge.

    Writes curated.jsonl, curated_rejected.jsonl (each reject with its reason) and report.json
    in the run folder; the run's generated files are only read.
    """
    from datagen.curate import CurateConfig, curate, find_run

    cfg = _with_sets(CurateConfig(workers=workers), [x for x in sets if not x.startswith("judge.")])
    judge_obj, bar = None, None
    if judge:
        from rich.progress import Progress

        from datagen.judge import CACHE_FILE as JUDGE_CACHE
        from datagen.judge import Judge, JudgeConfig
        from datagen.llm import LLMConfig

        jcfg = _with_sets(JudgeConfig(llm=LLMConfig(model=model, base_url=base_url, concurrency=concurrency,
                                                    temperature=0.0, max_tokens=600)), sets, "judge.")
        if err_console.is_terminal:
            bar = Progress(console=err_console, transient=True)
            task = bar.add_task("judge", total=None)
        on_progress = (lambda done, total: bar.update(task, completed=done, total=total)) if bar else None
        run_dir = find_run(out, run)
        judge_obj = Judge(jcfg, run_dir / JUDGE_CACHE, progress=on_progress, max_cost=max_cost,
                          price=_price(price_in, price_out))
        if _generator_model(run_dir) == model:
            print(f"warning: the judge model {model} also generated this run, and models tend to rate their own "
                  "writing higher; pass --model with another model for an independent read", file=sys.stderr)
    if bar:
        bar.start()
    try:
        report = curate(run, out, cfg, seeds, judge=judge_obj)
    finally:
        if bar:
            bar.stop()
    console.print(report.table())
    if report.judge:
        console.print(report.judge_table())
        print(f"judge: {report.judge['requests']} requests, {judge_obj.stats['sent']} sent now, "
              f"{judge_obj.stats['cached']} answered from the run's cache")
    for line in report.bad_lines[:5]:
        print(f"bad line: {line}")
    nat = report.naturalness
    if nat.get("records"):
        top = ", ".join(f"{k}={v}" for k, v in list(nat["by_pattern"].items())[:5])
        print(f"naturalness (soft, counted, not rejected): {nat['hits']} hit(s) in {nat['records_with_hits']} of "
              f"{nat['records']} kept records, {nat['hits_per_record']:.2f} per record" + (f" ({top})" if top else ""))
    print(report.summary())
    print(f"wrote {out / 'runs' / run}/{{{', '.join(report.files.values())}}}")


def _price(price_in: Optional[float], price_out: Optional[float]):
    from datagen.cost import Price

    if (price_in is None) != (price_out is None):
        raise UserError("pass both --price-in and --price-out (USD per 1M prompt / completion tokens)")
    return Price(price_in, price_out) if price_in is not None and price_out is not None else None


def _generator_model(run_dir: Path) -> Optional[str]:
    from datagen.runs import generator_model

    return generator_model(run_dir)


def main() -> None:
    try:
        app()
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()

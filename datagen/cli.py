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
from datagen.seeds import DEFAULT_SEEDS_DIR

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Grow a Korean MBTI persona chat dataset: seeds → generate → curate → publish.")
seeds_app = typer.Typer(no_args_is_help=True, help="Check and format the hand-written seeds.")
app.add_typer(seeds_app, name="seeds")
console = Console()
err_console = Console(stderr=True)

SeedsDir = typer.Option(DEFAULT_SEEDS_DIR, "--seeds", help="The seeds folder (personas/, topics.yaml, dialogues/).")


@seeds_app.command("check")
def seeds_check(seeds: Path = SeedsDir) -> None:
    """Validate every seed file; print a table per type; exit 1 listing every problem."""
    from datagen.seed_check import check_seeds

    if not seeds.is_dir():
        raise UserError(f"seeds folder {seeds} does not exist; pass --seeds DIR")
    report = check_seeds(seeds)
    table = Table(title=f"seeds: {report.personas}/16 personas, {report.topics} topics")
    for col in ("type", "dialogues", "avg exchanges", "존댓말", "반말", "topics", "problems"):
        table.add_column(col, justify="right" if col != "type" else "left")
    for st in report.stats.values():
        table.add_row(st.mbti, str(st.dialogues), f"{st.avg_exchanges:.1f}", str(st.polite), str(st.casual),
                      str(st.topics), str(st.problems))
    total = sum(st.dialogues for st in report.stats.values())
    table.add_row("all", str(total), "", "", "", "", str(len(report.problems)), style="bold")
    console.print(table)
    for p in report.problems:
        print(p)
    if not report.ok:
        print(f"{len(report.problems)} problem(s) in {seeds}", file=sys.stderr)
        raise typer.Exit(1)
    print(f"ok: {total} seed dialogues in {seeds}")


@seeds_app.command("fmt")
def seeds_fmt(seeds: Path = SeedsDir) -> None:
    """Fill in missing ids (and fix stale ones) after you add or edit seed dialogues."""
    from datagen.seed_check import format_seeds

    changed, problems = format_seeds(seeds)
    for p in problems:
        print(p)
    print(f"{changed} id(s) written")
    if problems:
        raise typer.Exit(1)


# --- stage commands are added below, one function each ------------------------------------------


def main() -> None:
    try:
        app()
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()

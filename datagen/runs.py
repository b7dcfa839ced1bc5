"""A run folder's invocation history: `config.jsonl`, one line per stage invocation on the run.

Every stage that works on a run (generate, --batch-out, ingest-batch, curate, publish) appends its
resolved config (never a key): what made the run is readable afterwards, and a later stage can
ask which model generated it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from datagen.schema import JsonlAppender, iter_jsonl

CONFIG_HISTORY = "config.jsonl"


DEFAULT_OUT = Path("outputs")
"""The outputs root every stage shares (`--out`): runs in OUT/runs, datasets in OUT/dataset, ..."""


def run_history(run_dir: Path) -> list[dict[str, Any]]:
    """Every invocation recorded on the run, oldest first: a run made before config.jsonl existed has its
    generate config in config.json, which comes first (also once a later stage has started config.jsonl)."""
    history: list[dict[str, Any]] = []
    old = run_dir / "config.json"
    try:
        config = json.loads(old.read_text(encoding="utf-8")) if old.exists() else None
    except (OSError, ValueError):  # unreadable: publish's card says so; the history goes on without it
        config = None
    if isinstance(config, dict):
        history.append({"command": "generate", "config": config})
    path = run_dir / CONFIG_HISTORY
    if path.exists():
        history += [obj for _, obj in iter_jsonl(path) if isinstance(obj, dict) and isinstance(obj.get("config"), dict)]
    return history


def generator_model(run_dir: Path) -> str | None:
    """The model that generated the run: the last one generate, --batch-out or ingest-batch recorded."""
    models = [h["config"].get("llm", {}).get("model") for h in run_history(run_dir)
              if h.get("command") in ("generate", "ingest-batch", "batch-out")]
    return next((m for m in reversed(models) if m), None)


def append_config(run_dir: Path, command: str, config: dict[str, Any]) -> None:
    """Record one invocation (its resolved config, never a key) at the end of the run's config.jsonl."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with JsonlAppender(run_dir / CONFIG_HISTORY) as f:
        f.write({"command": command, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "config": config})

"""`datagen generate`: self-instruct expansion of the seeds into Korean multi-turn chats.

The algorithm is self-instruct's (as in stanford_alpaca's `generate_instruction.py`): each
request shows the persona, k hand-written seed dialogues and m dialogues this run already
accepted, and asks for n new ones on topics drawn to cover `seeds/topics.yaml` evenly.
The shape is not Alpaca's; one module per concern:

    config.py      GenerateConfig: every knob, checked at construction
    planning.py    pure: request i of a type → examples, topics, registers, the request body
    acceptance.py  pure: a stored response → a Verdict per candidate (schema, shared rules,
                   exact and near duplicates); inline or in one worker process
    state.py       the run on disk: files, lock, per-type state and stats, resume, config history
    loop.py        the loop: plan → `datagen.step.LLMStep` (cache, cost cap, send, raw kept) → accept
    dryrun.py      what a run would send, offline

Everything a run writes lives in `outputs/runs/<run>/`:

    generated/<TYPE>.jsonl   accepted dialogues, appended and flushed one per line
    raw/<TYPE>.jsonl         every request's outcome: the response body as received (parse
                             failures too) and what it was billed, or why there is none; it is
                             the request cache
    rejected.jsonl           each rejected candidate (or unusable response) with its reason
    config.jsonl             one line per invocation: its resolved config (never a key)
    batch_plan.jsonl         requests written by --batch-out, for ingest-batch

Resume: rerunning the same command continues (see state.py); no stored request is sent again.
"""

from datagen.generate.acceptance import Acceptor, AcceptorHandle, Verdict, parse_dialogues
from datagen.generate.config import ACCEPTORS, GenerateConfig, default_run_name
from datagen.generate.dryrun import DryRunReport, format_dry_run, plan_run
from datagen.generate.loop import generate
from datagen.generate.planning import PlannedRequest, estimate_output_tokens, plan_request, request_body
from datagen.generate.state import (RunFiles, RunLock, RunStats, TypeState, TypeStats, apply_verdicts, check_run_model,
                                    open_states, pool_spec)
from datagen.runs import CONFIG_HISTORY, append_config, run_history

__all__ = [
    "ACCEPTORS", "CONFIG_HISTORY", "Acceptor", "AcceptorHandle", "DryRunReport", "GenerateConfig", "PlannedRequest",
    "RunFiles", "RunLock", "RunStats", "TypeState", "TypeStats", "Verdict", "append_config", "apply_verdicts",
    "check_run_model", "default_run_name", "estimate_output_tokens", "format_dry_run", "generate", "open_states",
    "parse_dialogues", "plan_request", "plan_run", "pool_spec", "request_body", "run_history",
]

"""`python -m train eval`: does the fine-tuned model talk like its type? Persona fidelity, side by side with
the base model (and optionally any reference model), in a results file, a report and the model card.

    python -m train eval --config train/configs/bllossom-8b.yaml --judge-model gpt-4o-mini
    python -m train eval --demo --judge-base-url http://127.0.0.1:8000/v1 --judge-model test-model

The recipe (train/evaluate/recipe.py) reads top to bottom; its parts:

| module | does |
| --- | --- |
| `config` | `EvalConfig`: what to replay, backends, judge, output (checked once, before any work) |
| `heldout` | the held-out chats: the dataset's test split or `--prompts FILE`, `--limit N` per type |
| `replay` | the model writes every assistant turn: in-process batched generation or an OpenAI-compatible server; `chats.jsonl` |
| `loss` | loss and perplexity with the training labels |
| `metrics` | the numbers of results.json (pure) |
| `report` | report.md and the confusion-matrix PNGs, from results.json |
"""

from train.evaluate.config import CONDITIONS, EvalConfig
from train.evaluate.recipe import EvalOutcome, evaluate

__all__ = ["CONDITIONS", "EvalConfig", "EvalOutcome", "evaluate"]

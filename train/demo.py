"""`make demo`: the whole path on a CPU in about a minute, with no key, no GPU and no download.

seeds/ → a small dataset in the published shape → a tiny random Llama (built here) trained with
the real QLoRA path (NF4 4-bit base + LoRA, tiny-cpu.yaml) → one streamed reply for two personas
through the chat code. The model is tiny and random, so the replies are noise: the demo shows the
machinery working, not what a trained 8B model says.

Everything it writes goes under outputs/demo/ (replaced on each run) and outputs/models/.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

from datagen.errors import UserError

DEMO_DIR = Path("outputs/demo")
DEMO_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny-cpu.yaml"  # shipped in the wheel too
DEMO_PERSONAS = ("ENFP", "ISTJ")  # shown when their profiles exist; otherwise the first two that do
DEMO_QUESTION = "요즘 일이 너무 많아서 지쳤어요. 이번 주말에는 어떻게 쉬면 좋을까요?"
TEST_SHARE = 0.15  # held-out share per type, for the eval loss; 0.15 keeps one chat per type even with 4 seeds


def build_demo_dataset(out_dir: Path, seed: int = 0, seeds_dir: Path | None = None) -> tuple[Path, int, list[str]]:
    """Write the demo dataset to `out_dir` through `datagen publish`; returns (path, chats, types covered).

    The seeds are hand-curated by definition, so they stand in for a curated run named `demo`
    (`<out_dir>/../runs/demo/curated.jsonl`), and `datagen.publish.publish` builds the folder from it:
    the demo trains on exactly the shape `datagen publish` writes (system message first, stratified split).
    """
    from datagen.publish import PublishConfig, publish
    from datagen.schema import write_jsonl
    from datagen.seeds import DEFAULT_SEEDS_DIR, seed_pool

    seeds_dir = Path(seeds_dir or DEFAULT_SEEDS_DIR)
    records = [d for dialogues in seed_pool(seeds_dir).values() for d in dialogues]
    if not records:
        raise UserError(f"no seed dialogues under {seeds_dir} (the demo builds its data from them); "
                        "`datagen seeds check` lists what is missing, `datagen seeds fmt` fills in ids")
    runs_dir = out_dir.parent / "runs"
    write_jsonl(runs_dir / "demo" / "curated.jsonl", records)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # the demo's own folder, replaced on each run
    result = publish(PublishConfig(run="demo", out=out_dir.parent, dataset_dir=out_dir, seeds_dir=seeds_dir,
                                   test_share=TEST_SHARE, seed=seed, pretty_name="MBTI persona chat demo (seeds only)"))
    n = sum(sum(per_type.values()) for per_type in result.counts.values())
    types = sorted({t for per_type in result.counts.values() for t in per_type})
    return out_dir, n, types


def demo_config(overrides: list[str] | None = None):
    """The config `make demo` trains with (tiny-cpu.yaml, data and checkpoint under outputs/demo/); eval and
    serve's `--demo` load the same, so they find the demo's checkpoint."""
    from train.config import load_config

    return load_config(DEMO_CONFIG, [f"dataset={DEMO_DIR / 'dataset'}", f"output_dir={DEMO_DIR / 'checkpoints'}",
                                     *(overrides or [])])


def pick_personas(available: list[str]) -> list[str]:
    chosen = [t for t in DEMO_PERSONAS if t in available]
    return (chosen + [t for t in available if t not in chosen])[:2]


def run_demo(overrides: list[str] | None = None, out: Callable[..., None] = print, seeds_dir: Path | None = None) -> None:
    """Seeds → dataset → one minute of CPU QLoRA on a tiny random model → two persona replies."""
    from train.chat import checkpoint_personas, generate_reply, load_chat_model
    from train.finetune import finetune

    import datasets

    datasets.disable_progress_bars()  # the demo's own lines say what happens; the trainer keeps its bar
    started = time.time()
    out("demo: seeds -> small dataset -> QLoRA on a tiny RANDOM Llama on the CPU (about a minute) -> two replies")
    out("      A tiny random model says nothing sensible: this shows the pipeline running end to end, not quality.\n")
    # The config is checked first: a bad override fails before anything is written.
    cfg = demo_config(overrides)
    path, n, types = build_demo_dataset(DEMO_DIR / "dataset", seed=cfg.seed, seeds_dir=seeds_dir)
    out(f"1. dataset: {n} seed chats of {len(types)} type(s) ({' '.join(types)}) with persona system prompts, through `datagen publish` -> {path}")
    if (DEMO_DIR / "checkpoints").exists():
        shutil.rmtree(DEMO_DIR / "checkpoints")  # a fresh run each time, never a resume
    limit = f" or {cfg.time_limit_minutes:g} minute(s), whichever comes first" if cfg.time_limit_minutes else ""
    out(f"2. training {DEMO_CONFIG.name}: base {cfg.model} (4-bit NF4), LoRA r={cfg.lora_r}, "
        f"{cfg.max_steps} steps{limit}")
    result = finetune(cfg, log=lambda line: out("   " + line))
    out("3. replies through the chat code path (streamed, stopping at the end-of-turn token):")
    from transformers import set_seed

    model, tokenizer, tokens, _ = load_chat_model(cfg, use="adapter")
    personas = checkpoint_personas(cfg, note=out)  # the prompts it was trained with (personas.json)
    for mbti in pick_personas([t for t in types if t in personas]):
        set_seed(cfg.seed)
        messages = [{"role": "system", "content": personas[mbti].system_prompt},
                    {"role": "user", "content": DEMO_QUESTION}]
        out(f"\n   [{mbti}] 나: {DEMO_QUESTION}")
        out(f"   [{mbti}] 답: ", end="", flush=True)
        reply = generate_reply(model, tokenizer, tokens, messages, cfg, on_text=lambda t: out(t, end="", flush=True))
        ending = "stopped at end-of-turn" if reply.stopped else f"cut at max_new_tokens={cfg.max_new_tokens}"
        out(f"\n   ({reply.new_tokens} tokens, {ending})")
    loss = result.metrics.get("eval_loss", result.metrics.get("train_loss"))
    out(f"\ndone in {time.time() - started:.0f}s. Loss {loss:.2f} on a random {len(tokenizer)}-token model: the "
        "replies above are noise, as expected.")
    out("For a real model on a GPU: make train CONFIG=train/configs/bllossom-8b.yaml "
        "ARGS=\"dataset=outputs/dataset/R\", then make chat MBTI=ENFP.")

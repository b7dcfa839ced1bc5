"""Training preprocessing speed: chats/s to render, tokenise, mask (and pack) a split, and a cache hit.

    python bench/preprocess.py               # 10k chats (the seeds with persona prompts, repeated)
    python bench/preprocess.py --chats 50000

Rows of the table:
- before, 1 process: what `train.data` did before: two template renderings per assistant turn
  (`assistant_spans`) and one tokeniser call per chat, in a Python loop over the chats;
- `encode_split`, 1 process: one rendering per chat (`fast_spans`), one tokeniser call per batch
  of 256 (the tokenizer's Rust threads may use more than one core), via `datasets.map`;
- `encode_split`, N processes: the same in `preprocess_workers` processes;
- `build_datasets` cold / warm: the whole step the trainer runs (encode + pack + save the cache),
  then the same call again, loaded from the cache;
- floor: only the tokenizer's own work on the already rendered texts, which every row above includes.

The tokenizer is the tiny byte-level BPE trained on our own Korean text (train/tiny.py) with the
Llama-3 chat template: no download. (A 128k-vocabulary Llama-3 tokenizer spends fewer tokens per
Korean syllable, so its absolute numbers differ; the ratio between the rows is what this measures.)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def chats_of(n: int) -> list[list[dict[str, str]]]:
    from datagen.seeds import load_personas, seed_pool

    personas, _ = load_personas()
    base = [[{"role": "system", "content": personas[d.mbti].system_prompt()}, *(dict(m) for m in d.messages)]
            for ds in seed_pool().values() for d in ds]
    return [base[i % len(base)] for i in range(n)]


def reference_encode(tok, chats, eot_id: int, max_len: int):
    """The encoder as it was before the cache: a Python loop over the chats, each rendered twice per
    assistant turn (`encode_chat(fast=False)`, the reference path) and tokenised alone."""
    from datasets import Dataset

    from train.data import encode_chat

    rows: dict[str, list] = {"input_ids": [], "labels": []}
    for chat in chats:
        enc = encode_chat(tok, chat, eot_id, max_len, fast=False)
        if not isinstance(enc, str):
            rows["input_ids"].append(enc.input_ids)
            rows["labels"].append(enc.labels)
    return Dataset.from_dict(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chats", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import datasets
    from datasets import Dataset, DatasetDict

    from train.config import TrainConfig
    from train.data import build_datasets, encode_split, prepare_tokenizer
    from train.tiny import SAMPLE_TEXTS, seed_texts, train_tiny_tokenizer

    datasets.disable_progress_bars()
    tok = train_tiny_tokenizer(seed_texts() + SAMPLE_TEXTS)
    cfg = TrainConfig(model="unused", optim="adamw_torch", max_seq_len=2048)
    tokens = prepare_tokenizer(tok, cfg)
    chats = chats_of(args.chats)
    rows = Dataset.from_list([{"mbti": "ISTJ", "messages": c} for c in chats])
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {args.chats:,} chats, "
          f"tiny BPE tokenizer (vocab {len(tok)}), Llama-3 template, max_seq_len {cfg.max_seq_len}\n")
    results = []
    t = time.perf_counter()
    reference_encode(tok, chats, tokens.eot_id, cfg.max_seq_len)
    results.append(("before: 2 renderings per turn, 1 tokenizer call per chat, 1 process", time.perf_counter() - t))
    t = time.perf_counter()
    _, stats = encode_split(rows, tok, tokens.eot_id, cfg.max_seq_len, workers=1)
    results.append(("`encode_split`: 1 rendering per chat, 1 tokenizer call per batch, 1 process",
                    time.perf_counter() - t))
    t = time.perf_counter()
    encode_split(rows, tok, tokens.eot_id, cfg.max_seq_len, workers=args.workers)
    results.append((f"`encode_split`, {args.workers} processes", time.perf_counter() - t))
    with tempfile.TemporaryDirectory() as tmp:
        DatasetDict({"train": rows}).save_to_disk(f"{tmp}/data")
        run = TrainConfig(model="unused", optim="adamw_torch", dataset=f"{tmp}/data", output_dir=f"{tmp}/ck",
                          preprocess_workers=args.workers)
        t = time.perf_counter()
        build_datasets(run, tok, tokens)
        results.append((f"`build_datasets` cold: encode + pack + cache, {args.workers} processes",
                        time.perf_counter() - t))
        t = time.perf_counter()
        build_datasets(run, tok, tokens)
        results.append(("`build_datasets` warm: loaded from the cache", time.perf_counter() - t))
    from train.data import render

    texts = [render(tok, c) for c in chats]
    t = time.perf_counter()
    tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    results.append(("floor: the Rust tokenizer alone on the rendered texts (one batch call, all cores)",
                    time.perf_counter() - t))
    base = results[0][1]
    print("| step | seconds | chats/s | vs before |")
    print("| --- | ---: | ---: | ---: |")
    for name, secs in results:
        print(f"| {name} | {secs:.1f} | {args.chats / secs:,.0f} | {base / secs:.1f}x |")
    print(f"\n{stats.summary('train')}")


if __name__ == "__main__":
    main()

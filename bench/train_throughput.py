"""QLoRA training throughput: tokens/s, peak memory and MFU, packed vs unpacked. Prints a Markdown table.

The model is built from a config with random weights (no download; random weights cost the same
time and memory as real ones), saved once, and loaded through the trainer's own code path:
`train.model.load_base_model` (NF4 4-bit, double quantisation) + `train.model.add_lora`. The data
are the seed chats with their persona system prompts, tokenised by the tiny BPE tokenizer and
encoded by `train.data.encode_chats` (the real loss mask); the same chats, in the same order, go
through both variants:

* packed:   best-fit-decreasing rows of `--seq` tokens, padding-free batches, positions reset per chat
* unpacked: the same number of chats per step, right-padded to the longest in the batch

Each variant runs in its own process, so the peak memory is its own (CUDA: max allocated;
CPU: peak RSS of the process, weights and Python included). tokens/s is the median step of a run;
on the CPU the variants run 3 times, alternating, and the best run of each is kept, because a
shared machine's busy spells otherwise decide the comparison.

MFU counts the FLOPs a QLoRA step needs: 2N forward + 2N backward through the frozen base (no weight
gradients), 6 per LoRA parameter, and causal attention per chat (3 x 2·L·d·n² for n tokens).
Activation recomputation is not counted (it is hardware work, not model work). The 6N convention
of full fine-tuning would print 1.5x higher; that column is shown too. Peak: the GPU's dense bf16
TFLOPS from a table (or `--peak-tflops`); on the CPU, the measured rate of a large matmul in the
compute dtype, so CPU "MFU" reads "share of what this CPU's matmul reaches".

    python bench/train_throughput.py                                      # CPU, tiny shape (~1-2 minutes)
    python bench/train_throughput.py --shape llama3-8b --device cuda --seq 2048   # one GPU, ~5 minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    # the tiny test/demo model (train/tiny.py)
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2),
    # Llama-3-8B (Bllossom-8B and Open-Ko-8B share it; Bllossom's vocabulary is the same 128256)
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                      num_key_value_heads=8, vocab_size=128256),
}
CONFIG_FOR = {"tiny": "train/configs/tiny-cpu.yaml", "llama3-8b": "train/configs/bllossom-8b.yaml"}
# Dense bf16 tensor-core peaks (no sparsity), TFLOPS; matched against torch.cuda.get_device_name().
GPU_PEAK_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 989.0,
                   "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0}


# -- model and data ------------------------------------------------------------------------------

def build_random_model(shape: str, tokenizer, out: Path, device: str) -> Path:
    """Save a random model of `shape` (bf16) with the tiny tokenizer; init on `device` for speed."""
    import torch
    from transformers import LlamaForCausalLM

    from train.tiny import tiny_llama_config

    dims = dict(SHAPES[shape])
    vocab = dims.pop("vocab_size", len(tokenizer))
    config = tiny_llama_config(vocab, **dims)
    config.max_position_embeddings = 8192
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with torch.device(device):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    del model
    return out


def bench_chats(tokenizer, eot_id: int, seq: int, n: int):
    """`n` encoded chats: the seed dialogues with persona system prompts (sample chats if no seeds), repeated."""
    from datagen.seeds import load_personas, load_seed_dialogues
    from train.data import encode_chats
    from train.tiny import SAMPLE_CHATS

    personas, _ = load_personas()
    found, _ = load_seed_dialogues(fill_id=True)
    chats = [[{"role": "system", "content": personas[t].system_prompt()}] + [dict(m) for m in d.messages]
             for t, pairs in found.items() if t in personas for _, d in pairs] or SAMPLE_CHATS
    chats = (chats * (n // len(chats) + 1))[:n]
    ds, _ = encode_chats(tokenizer, chats, eot_id, seq)
    return ds


def batches(ds, packed: bool, seq: int, rows: int, collator):
    """Lists of feature dicts. Packed: `rows` BFD rows per step; unpacked: as many chats per step, padded."""
    from train.data import pack

    if packed:
        p = pack(ds, seq)
        items = [p[i] for i in range(len(p))]
        per_step = rows
    else:
        items = [ds[i] for i in range(len(ds))]
        chats_per_row = len(ds) / len(pack(ds, seq))
        per_step = max(1, round(rows * chats_per_row))
    return [collator(items[i:i + per_step]) for i in range(0, len(items) - per_step + 1, per_step)]


# -- FLOPs -----------------------------------------------------------------------------------------

def matmul_params(config) -> int:
    """Parameters that do a matmul per token: every decoder linear layer and the output head."""
    d, L = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (d // config.num_attention_heads)
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * config.intermediate_size
    return L * per_layer + config.vocab_size * d


def step_flops(config, lora_params: int, chat_lengths: list[int]) -> tuple[float, float]:
    """(QLoRA model FLOPs, 6N-convention FLOPs) for one step over chats of these lengths."""
    tokens = sum(chat_lengths)
    n = matmul_params(config)
    attn = 3 * sum(2 * config.num_hidden_layers * config.hidden_size * x * x for x in chat_lengths)
    qlora = 4 * n * tokens + 6 * lora_params * tokens + attn
    return qlora, 6 * n * tokens + 6 * lora_params * tokens + attn


def cpu_matmul_tflops(dtype_name: str) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(2048, 2048, dtype=dtype)
    b = torch.randn(2048, 2048, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(10):  # the best of ten: the peak this CPU reaches when nothing else runs
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 2048 ** 3 / best / 1e12


def gpu_peak_tflops() -> tuple[float | None, str]:
    import torch

    name = torch.cuda.get_device_name()
    for key, tflops in GPU_PEAK_TFLOPS.items():
        if key in name:
            return tflops, name
    return None, name


# -- one variant, in its own process ---------------------------------------------------------------

def run_variant(args) -> dict:
    import torch

    from train.config import load_config
    from train.data import make_collator
    from train.model import add_lora, load_base_model, load_tokenizer

    cfg = load_config(ROOT / CONFIG_FOR[args.shape], [f"model={args.model_dir}", f"max_seq_len={args.seq}",
                                                      "tiny_random_init=false", f"attn_implementation={args.attn}"])
    cfg = dataclasses.replace(cfg, device=args.device)
    if args.device == "cpu":
        cfg = dataclasses.replace(cfg, optim="adamw_torch", bf16=False)
    tok, tokens = load_tokenizer(cfg)
    ds = bench_chats(tok, tokens.eot_id, args.seq, args.chats)
    packed = args.variant == "packed"
    steps = batches(ds, packed, args.seq, args.rows, make_collator(tokens, packing=packed))
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    model = add_lora(load_base_model(cfg, args.device, quantized=True), cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    lora_params = sum(p.numel() for p in params)
    if cfg.optim == "paged_adamw_8bit":
        import bitsandbytes as bnb

        opt = bnb.optim.PagedAdamW8bit(params, lr=cfg.learning_rate)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.learning_rate)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=cfg.bf16)

    def one(batch):
        batch = {k: v.to(args.device) if hasattr(v, "to") else v for k, v in batch.items()}
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    for b in steps[:args.warmup]:
        one(b)
    sync()
    timed = steps[args.warmup:args.warmup + args.steps]
    real = padded = 0
    rates = []  # per step: (tokens/s, QLoRA FLOP/s, 6N FLOP/s)
    for b in timed:
        pos = b.get("position_ids")
        if pos is not None:  # packed: chat lengths from the position resets
            starts = (pos[0] == 0).nonzero().flatten().tolist() + [pos.shape[1]]
            lengths = [e - s for s, e in zip(starts, starts[1:])]
        else:
            lengths = b["attention_mask"].sum(1).tolist()
        real += sum(lengths)
        padded += b["input_ids"].numel()
        q, c = step_flops(model.config, lora_params, lengths)
        t = time.perf_counter()
        one(b)
        sync()
        dt = time.perf_counter() - t
        rates.append((sum(lengths) / dt, q / dt, c / dt))
    # The median step: a shared machine's occasional stalls do not move it (the mean is printed too).
    median = sorted(rates)[len(rates) // 2]
    if args.device == "cuda":
        peak_gib = torch.cuda.max_memory_allocated() / 2**30
    else:
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 2**30  # Linux reports KiB
    return {"variant": args.variant, "steps": len(timed), "tokens": real, "padding": 1 - real / padded,
            "tokens_per_s": median[0], "mean_tokens_per_s": sum(r[0] for r in rates) / len(rates),
            "peak_gib": peak_gib, "tflops": median[1] / 1e12, "tflops_6n": median[2] / 1e12,
            "compute_dtype": cfg.compute_dtype, "checkpointing": cfg.gradient_checkpointing,
            "attn": cfg.attn_implementation, "lora_params": lora_params}


# -- driver ----------------------------------------------------------------------------------------

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--seq", type=int, default=2048, help="packed row length / longest chat")
    p.add_argument("--rows", type=int, default=None,
                   help="packed rows per step (default: the config's batch_size, 1: one row of --seq tokens)")
    p.add_argument("--attn", default=None, help="attention implementation (default: flash_attention_2 on a GPU "
                   "when flash-attn is installed, else sdpa)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 12 on CPU, 10 on GPU)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--chats", type=int, default=None, help="chats to draw batches from")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's peak, overriding the table")
    p.add_argument("--repeats", type=int, default=None,
                   help="runs per variant, alternating packed/unpacked; the best is kept (default 3 on CPU, 1 on GPU)")
    p.add_argument("--keep-model", metavar="DIR", help="build the random model in DIR and keep it (or reuse the one "
                   "there): bench/gpu_check.sh trains, merges and chats with the same model afterwards")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON (bench/gpu_check.sh reads it)")
    p.add_argument("--variant", choices=("packed", "unpacked"), help=argparse.SUPPRESS)  # internal: one run
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    import logging
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.rows is None:
        from train.config import load_config

        args.rows = load_config(ROOT / CONFIG_FOR[args.shape]).batch_size
    if args.attn is None:
        import importlib.util

        flash = args.device == "cuda" and importlib.util.find_spec("flash_attn") is not None
        args.attn = "flash_attention_2" if flash else "sdpa"
    args.steps = args.steps or (12 if args.device == "cpu" else 10)
    args.chats = args.chats or (args.rows * (args.steps + args.warmup) * 6)
    if args.variant:
        print(json.dumps(run_variant(args)))
        return

    import torch

    from train.tiny import SAMPLE_TEXTS, seed_texts, train_tiny_tokenizer

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but no CUDA GPU is visible")
    tok = train_tiny_tokenizer(seed_texts() + SAMPLE_TEXTS)
    cpu_peak = cpu_matmul_tflops("float32") if args.device == "cpu" else None  # again at the end; the best is kept
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        kept = Path(args.keep_model) if args.keep_model else None
        if kept is not None and (kept / "config.json").is_file():
            model_dir = kept
        else:
            model_dir = build_random_model(args.shape, tok, kept or Path(tmp) / args.shape, args.device)
        print(f"built a random {args.shape} model in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        best: dict[str, dict] = {}
        repeats = args.repeats or (3 if args.device == "cpu" else 1)
        for _ in range(repeats):  # alternating, so a busy spell on a shared machine hits both variants alike
            for variant in ("packed", "unpacked"):
                cmd = [sys.executable, __file__, "--shape", args.shape, "--device", args.device, "--seq", str(args.seq),
                       "--rows", str(args.rows), "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--chats", str(args.chats), "--attn", args.attn, "--variant", variant,
                       "--model-dir", str(model_dir)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.exit(f"{variant} run failed:\n{proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                if variant not in best or r["tokens_per_s"] > best[variant]["tokens_per_s"]:
                    r["peak_gib"] = max(r["peak_gib"], best.get(variant, r)["peak_gib"])
                    best[variant] = r
        results = [best["packed"], best["unpacked"]]
    if args.device == "cuda":
        peak, where = gpu_peak_tflops()
        peak = args.peak_tflops or peak
        peak_note = f"{where}, {peak:.0f} TFLOPS dense bf16" if peak else f"{where} (peak unknown: --peak-tflops)"
    else:
        dtype = results[0]["compute_dtype"]
        peak = args.peak_tflops or max(cpu_matmul_tflops(dtype), cpu_peak if dtype == "float32" else 0.0)
        peak_note = (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
                     f"measured {results[0]['compute_dtype']} matmul peak {peak * 1000:.0f} GFLOPS")
    r0 = results[0]
    print(f"\nshape {args.shape}, seq {args.seq}, {args.rows} packed rows/step, NF4 4-bit base "
          f"(compute {r0['compute_dtype']}), LoRA {r0['lora_params']:,} params, "
          f"checkpointing {'on' if r0['checkpointing'] else 'off'}, attention {r0['attn']}, {args.steps} timed steps, "
          f"best of {repeats} runs; "
          f"{peak_note}\n")
    print("| batching | padding | tokens/s (median step) | tokens/s (mean) | peak GiB | MFU | MFU (6N convention) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        mfu = f"{r['tflops'] / peak:.1%}" if peak else "n/a"
        mfu6 = f"{r['tflops_6n'] / peak:.1%}" if peak else "n/a"
        print(f"| {r['variant']} | {r['padding']:.1%} | {r['tokens_per_s']:,.0f} | {r['mean_tokens_per_s']:,.0f} "
              f"| {r['peak_gib']:.2f} | {mfu} | {mfu6} |")
    speedup = results[0]["tokens_per_s"] / results[1]["tokens_per_s"]
    print(f"\npacked / unpacked tokens/s: {speedup:.2f}x")
    if args.json:
        for r in results:
            r["mfu"] = r["tflops"] / peak if peak else None
        Path(args.json).write_text(json.dumps({"peak_tflops": peak, "results": results}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()

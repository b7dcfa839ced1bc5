"""The GPU path end to end on a random Llama-3-8B-shaped model, in a few minutes: one summary table.

Run it through `bench/gpu_check.sh` (it checks the Python packages first). Steps, each timed:

1. the training benchmark (`bench/train_throughput.py`), packed and unpacked, seq 2048: builds the
   random 8B-shaped model once (bf16, the tiny tokenizer) and keeps it for the steps below;
2. `python -m train train` with the default config (`bllossom-8b.yaml`: NF4 4-bit base, paged 8-bit
   AdamW, gradient checkpointing, bf16) for a few optimizer steps on the demo's seed dataset, with an
   evaluation and a save;
3. `python -m train merge` into the bf16 base;
4. one chat reply through `python -m train chat` (streamed, stopping at end-of-turn or max_new_tokens).

Random weights cost the same time and memory as real ones and need no download. `--cpu-smoke` runs the
same steps on the tiny shape on the CPU (a minute or two), to check the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(name: str, cmd: list[str], rows: list[tuple[str, str, str]], env: dict[str, str], timeout: int,
        stdin: str | None = None) -> str:
    """Run one step; add `(step, seconds, outcome)` to the table; return its output."""
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, input=stdin, cwd=ROOT)
        out, ok = proc.stdout + proc.stderr, proc.returncode == 0
    except subprocess.TimeoutExpired as e:
        out, ok = f"{e.stdout or ''}{e.stderr or ''}\ntimed out after {timeout} s", False
    secs = time.perf_counter() - t
    rows.append((name, f"{secs:.0f}", "ok" if ok else "FAILED"))
    print(f"--- {name}: {'ok' if ok else 'FAILED'} in {secs:.0f} s", flush=True)
    if not ok:
        print(out[-4000:], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu-smoke", action="store_true", help="the same steps on the tiny shape on the CPU")
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps of the training run")
    ap.add_argument("--out", default=None, help="keep everything here (default: a temporary folder)")
    args = ap.parse_args()
    shape, device = ("tiny", "cpu") if args.cpu_smoke else ("llama3-8b", "cuda")
    config = "tiny-cpu" if args.cpu_smoke else "bllossom-8b"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(x for x in (str(ROOT), os.environ.get("PYTHONPATH")) if x))
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        model, bench_json = work / f"random-{shape}", work / "throughput.json"
        py = sys.executable
        run("benchmark: packed + unpacked, seq 2048 (builds the model)",
            [py, "bench/train_throughput.py", "--shape", shape, "--device", device, "--seq", "2048",
             "--steps", "4" if args.cpu_smoke else "8", "--repeats", "1", "--keep-model", str(model),
             "--json", str(bench_json)], rows, env, 420)
        # the demo's dataset: the seeds through `datagen publish` (persona system prompts, train/test split)
        data = work / "dataset"
        run("dataset: seeds -> datagen publish", [py, "-c", (
            "import sys; from pathlib import Path; from train.demo import build_demo_dataset; "
            f"print(build_demo_dataset(Path({str(data)!r})))")], rows, env, 120)
        common = [f"model={model}", f"dataset={data}", f"output_dir={work / 'checkpoints'}", "name=gpu-check",
                  "tiny_random_init=false"]
        train_out = run(f"train: {args.steps} optimizer steps, eval, save (config {config})",
                        [py, "-m", "train", "train", "--config", config, *common, f"max_steps={args.steps}",
                         "logging_steps=1", f"eval_steps={max(1, args.steps // 2)}", f"save_steps={args.steps}",
                         "grad_accum=2", "time_limit_minutes=null"], rows, env, 600)
        run("merge into the bf16 base", [py, "-m", "train", "merge", "--config", config, *common], rows, env, 300)
        chat_out = run("chat: one streamed reply (ENFP)", [py, "-m", "train", "chat", "--config", config, "--mbti",
                                                          "ENFP", *common, "max_new_tokens=32"],
                       rows, env, 300, stdin="요즘 일이 너무 많아서 지쳤어요.\n/exit\n")
        bench = json.loads(bench_json.read_text()) if bench_json.is_file() else {"results": []}
    print(f"\n## GPU check: {shape} on {device}, {time.perf_counter() - started:.0f} s in all\n")
    print("| step | seconds | outcome |")
    print("| --- | ---: | --- |")
    for name, secs, ok in rows:
        print(f"| {name} | {secs} | {ok} |")
    print("\n| batching | tokens/s | peak GiB | MFU |")
    print("| --- | ---: | ---: | ---: |")
    for r in bench["results"]:
        mfu = f"{r['mfu']:.1%}" if r.get("mfu") else "n/a"
        print(f"| {r['variant']} | {r['tokens_per_s']:,.0f} | {r['peak_gib']:.1f} | {mfu} |")
    loss = re.findall(r"train loss ([0-9.]+)(?:, eval loss ([0-9.]+))?", train_out)
    if loss:
        print(f"\ntraining: train loss {loss[-1][0]}" + (f", eval loss {loss[-1][1]}" if loss[-1][1] else ""))
    if "ENFP> " not in chat_out:
        print("chat: no reply")
    else:
        print("chat: a reply, " + ("cut at max_new_tokens" if "(cut at max_new_tokens" in chat_out
                                   else "stopped at end-of-turn"))
    sys.exit(0 if all(ok == "ok" for _, _, ok in rows) else 1)


if __name__ == "__main__":
    main()

"""`make serve-vllm`: the exact `vllm serve` command that serves a config's base model with its adapter.

    python -m serve.vllm --config train/configs/bllossom-8b.yaml [key=value ...] [--port 8001] [--print-only]

prints, then runs (when vllm is installed here):

    vllm serve MLP-KTLim/llama-3-Korean-Bllossom-8B --enable-lora \\
        --lora-modules bllossom-8b-mbti=/abs/outputs/checkpoints/bllossom-8b-mbti --max-lora-rank 16 \\
        --tokenizer /abs/outputs/checkpoints/bllossom-8b-mbti --dtype bfloat16 --host 127.0.0.1 --port 8001

and the line that puts the persona server in front of it (`python -m serve ... --upstream URL`). The
LoRA module is named after the checkpoint, which is the model name `python -m serve --upstream` asks
for by default. `--tokenizer` is the checkpoint's own tokenizer: it carries the chat template the
adapter was trained with (plain-ko for base models without one), so vLLM renders prompts the same way.
Without vllm installed (it needs a CUDA GPU) it only prints, and says so.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

from datagen.errors import UserError
from train.card import lora_rank_bound
from train.cli import DEFAULT_CONFIG, guarded
from train.config import TrainConfig

DEFAULT_PORT = 8001  # beside the persona server's 8000


def vllm_command(cfg: TrainConfig, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> list[str]:
    adapter = cfg.checkpoint_dir.resolve()
    model = str(Path(cfg.model).resolve()) if Path(cfg.model).exists() else cfg.model
    return ["vllm", "serve", model, "--enable-lora", "--lora-modules", f"{cfg.name}={adapter}",
            "--max-lora-rank", str(lora_rank_bound(cfg.lora_r)), "--tokenizer", str(adapter),
            "--dtype", cfg.merge_dtype, "--host", host, "--port", str(port)]


def main(argv: list[str] | None = None, out=print) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.vllm", description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG, help="training config of the checkpoint")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (keys: train/config.py)")
    p.add_argument("--host", default="127.0.0.1", help="where vLLM binds (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"vLLM's port (default {DEFAULT_PORT})")
    p.add_argument("--print-only", action="store_true", help="print the commands, run nothing")
    args = p.parse_intermixed_args(argv)
    return guarded(lambda: run(args, out))


def run(args: argparse.Namespace, out=print) -> None:
    """Print the commands; then hand this process to vLLM when it is installed here and the adapter exists."""
    from train.config import load_config

    cfg = load_config(args.config, args.overrides)
    cmd = vllm_command(cfg, args.host, args.port)
    out(shlex.join(cmd))
    upstream = f"http://{'127.0.0.1' if args.host in ('0.0.0.0', '::') else args.host}:{args.port}/v1"
    overrides = "".join(f" {shlex.quote(o)}" for o in args.overrides)
    out(f"then, for the page and the persona API: python -m serve --config {shlex.quote(args.config)}"
        f"{overrides} --upstream {upstream}")
    if not cfg.has_adapter:
        out(f"note: no adapter in {cfg.checkpoint_dir} yet; `make train CONFIG={args.config}` makes it")
    if args.print_only:
        return
    if shutil.which("vllm") is None:
        out("vllm is not installed here (it needs a CUDA GPU: pip install vllm); run the command above where it is")
        return
    if not cfg.has_adapter:
        raise UserError(f"no adapter in {cfg.checkpoint_dir}: train first (make train CONFIG={args.config})")
    sys.stdout.flush()
    os.execvp(cmd[0], cmd)  # vLLM takes over this process: Ctrl-C and exit codes are its own


if __name__ == "__main__":
    sys.exit(main())

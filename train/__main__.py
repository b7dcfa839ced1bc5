"""`python -m train {train,merge,chat,demo}`: parse arguments, build the config, call one library function.

    python -m train train --config train/configs/bllossom-8b.yaml dataset=outputs/dataset/R lora_r=32
    python -m train merge --config train/configs/bllossom-8b.yaml
    python -m train chat  --config train/configs/bllossom-8b.yaml --mbti ENFP
    python -m train demo

`key=value` pairs override the YAML file, typed against `train.config.TrainConfig`. Mistakes a
user can fix are printed as one `error:` line each (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from datagen.errors import UserError

DEFAULT_CONFIG = "train/configs/bllossom-8b.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description="QLoRA fine-tuning on the MBTI persona dataset.")
    sub = p.add_subparsers(dest="command", required=True)
    overrides_help = "config overrides, e.g. lora_r=32 dataset=outputs/dataset/R (keys: train/config.py)"

    t = sub.add_parser("train", help="fine-tune a LoRA adapter on the dataset (4-bit base)")
    m = sub.add_parser("merge", help="merge the adapter into the bf16 base (never the 4-bit one)")
    c = sub.add_parser("chat", help="chat as one persona, streaming, until /exit")
    for s in (t, m, c):
        s.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
        s.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    c.add_argument("--mbti", required=True, help="one of the 16 types, e.g. ENFP")
    which = c.add_mutually_exclusive_group()
    which.add_argument("--adapter", dest="use", action="store_const", const="adapter",
                       help="base + adapter even when a merged model exists")
    which.add_argument("--merged", dest="use", action="store_const", const="merged", help="the merged model only")
    c.set_defaults(use="auto")
    d = sub.add_parser("demo", help="seeds -> tiny dataset -> a minute of CPU QLoRA on a tiny random model -> 2 replies")
    d.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for train/configs/tiny-cpu.yaml")
    return p


def run(args: argparse.Namespace) -> None:
    from train.config import load_config

    if args.command == "demo":
        from train.demo import run_demo

        run_demo(args.overrides)
        return
    cfg = load_config(args.config, args.overrides)
    if args.command == "train":
        from train.finetune import finetune

        finetune(cfg)
    elif args.command == "merge":
        from train.merge import merge

        merge(cfg)
    elif args.command == "chat":
        from train.chat import chat_loop

        chat_loop(cfg, args.mbti, use=args.use)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # bitsandbytes logs a warning at import on AVX512-BF16 CPUs about an optional kernels package.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # peft 0.21 still calls this transformers 5 deprecated alias on every wrap; nothing for a user to do.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        run(args)
    except UserError as e:
        problems = getattr(e, "problems", None) or str(e).splitlines() or [type(e).__name__]
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

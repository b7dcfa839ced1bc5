"""`python -m train {train,merge,chat,demo,eval,push}`: parse arguments, build the config, call one library function.

    python -m train train --config train/configs/bllossom-8b.yaml dataset=outputs/dataset/R lora_r=32
    python -m train merge --config train/configs/bllossom-8b.yaml
    python -m train chat  --config train/configs/bllossom-8b.yaml --mbti ENFP
    python -m train demo
    python -m train eval  --config train/configs/bllossom-8b.yaml --judge-model gpt-4o-mini --limit 5
    python -m train push  --config train/configs/bllossom-8b.yaml --repo-id you/bllossom-8b-mbti

`--out OUT` is the outputs root, as for every datagen command (checkpoints in OUT/checkpoints), and
`--run R` trains on the dataset `datagen publish --run R --out OUT` wrote (OUT/dataset/R).
`key=value` pairs override the YAML file, typed against `train.config.TrainConfig`. Mistakes a
user can fix are printed as one `error:` line each (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datagen.runs import DEFAULT_OUT
from train.cli import DEFAULT_CONFIG, add_use_args, guarded



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
        _out_and_run(s)
    c.add_argument("--mbti", required=True, help="one of the 16 types, e.g. ENFP")
    add_use_args(c)
    d = sub.add_parser("demo", help="seeds -> tiny dataset -> a minute of CPU QLoRA on a tiny random model -> 2 replies")
    d.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for train/configs/tiny-cpu.yaml")
    _eval_parser(sub, overrides_help)
    u = sub.add_parser("push", help="upload the adapter, tokenizer, personas and model card to the Hugging Face Hub")
    u.add_argument("--config", default=None, help=f"YAML config (default {DEFAULT_CONFIG})")
    u.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    u.add_argument("--demo", action="store_true", help="push the checkpoint `make demo` trained (ignores --config)")
    u.add_argument("--repo-id", required=True, help="USER/NAME of the model repo (created if missing)")
    u.add_argument("--private", action="store_true", help="create the repo private (and make an existing one private)")
    u.add_argument("--dataset-id", help="USER/NAME of the dataset on the Hub, for the card (default: the config's "
                                        "dataset when it is a Hub id)")
    u.add_argument("--license", help="license id for the card (default: the dataset card's, else other)")
    _out_and_run(u)
    return p


def _out_and_run(s: argparse.ArgumentParser) -> None:
    s.add_argument("--out", default=None, help="the outputs root, as for every stage: checkpoints in OUT/checkpoints "
                   "(sets output_dir), datasets in OUT/dataset")
    s.add_argument("--run", default=None, help="train on the dataset `datagen publish --run RUN` wrote: "
                   "OUT/dataset/RUN (sets dataset)")


def out_overrides(args: argparse.Namespace) -> list[str]:
    """`--out`/`--run` as config overrides, placed before the user's own key=value ones (which win).

    >>> out_overrides(argparse.Namespace(out="runs", run="r1", overrides=[]))
    ['output_dir=runs/checkpoints', 'dataset=runs/dataset/r1']
    """
    out = []
    if getattr(args, "out", None) is not None:
        out.append(f"output_dir={Path(args.out) / 'checkpoints'}")
    if getattr(args, "run", None) is not None:
        out.append(f"dataset={Path(args.out or DEFAULT_OUT) / 'dataset' / args.run}")
    return out


def _eval_parser(sub, overrides_help: str) -> None:
    e = sub.add_parser("eval", help="persona fidelity of the fine-tuned model vs the base model: results, report, card")
    e.add_argument("--config", default=None, help=f"YAML config of the checkpoint (default {DEFAULT_CONFIG})")
    e.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)
    e.add_argument("--demo", action="store_true",
                   help="evaluate the checkpoint `make demo` trained, on its dataset, into outputs/eval/demo/ "
                        "(ignores --config)")
    e.add_argument("--prompts", metavar="FILE", help="a .jsonl of records (mbti, messages) to replay instead of the test split")
    e.add_argument("--split", help="dataset split to replay (default: the config's eval_split, test)")
    e.add_argument("--limit", type=int, dest="limit_per_type", metavar="N", help="at most N held-out chats per type")
    e.add_argument("--conditions", metavar="LIST", help="comma-separated: fine_tuned,base,reference (default: fine_tuned,base, "
                                        "+reference with --reference-model)")
    e.add_argument("--name", help="output folder OUT/eval/NAME (default: the checkpoint's name)")
    e.add_argument("--out", default=None, help="the outputs root, as for every stage: writes OUT/eval/NAME/ (default "
                   "outputs); the checkpoint is read from OUT/checkpoints when given")
    e.add_argument("--run", default=None, help="replay the test split of OUT/dataset/RUN (sets dataset)")
    g = e.add_argument_group("generation")
    g.add_argument("--base-url", metavar="URL", help="generate fine_tuned and base on this OpenAI-compatible server (vLLM: "
                                      "vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER) instead of in-process")
    g.add_argument("--adapter-name", metavar="NAME", help="the adapter's model name on that server (default: the checkpoint's name)")
    g.add_argument("--served-base", metavar="NAME", help="the base model's name on that server (default: the config's model)")
    g.add_argument("--reference-model", metavar="MODEL", help="a reference model prompted with the same system prompts")
    g.add_argument("--reference-base-url", metavar="URL", help="its server (default: $OPENAI_BASE_URL, else OpenAI)")
    g.add_argument("--reference-max-cost", type=float, metavar="USD",
                   help="USD cap on the reference model's spend (this folder's earlier runs count)")
    g.add_argument("--reference-price-in", type=float, metavar="USD",
                   help="USD per 1M prompt tokens, for a reference model without a known price")
    g.add_argument("--reference-price-out", type=float, metavar="USD",
                   help="USD per 1M completion tokens (with --reference-price-in)")
    g.add_argument("--max-new-tokens", type=int, metavar="N", help="longest reply per turn (default: the config's max_new_tokens)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples with --seed")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling when --temperature > 0")
    g.add_argument("--seed", type=int, default=0, help="seed of sampled generation")
    g.add_argument("--batch-size", type=int, default=8, help="in-process: chats generated together (left-padded)")
    g.add_argument("--concurrency", type=int, default=16, help="server backends: requests in flight")
    g.add_argument("--no-loss", dest="loss", action="store_false", help="skip loss and perplexity")
    j = e.add_argument_group("judge")
    j.add_argument("--judge-model", default="gpt-4o-mini", metavar="MODEL", help="any OpenAI-compatible model (default gpt-4o-mini)")
    j.add_argument("--judge-base-url", metavar="URL", help="its server (default: $OPENAI_BASE_URL, else OpenAI)")
    j.add_argument("--judge-max-cost", type=float, metavar="USD", help="USD cap on the judge's spend (this folder's earlier runs count)")
    j.add_argument("--judge-price-in", type=float, metavar="USD", help="USD per 1M prompt tokens, for a judge without a known price")
    j.add_argument("--judge-price-out", type=float, metavar="USD", help="USD per 1M completion tokens (with --judge-price-in)")
    j.add_argument("--judge-concurrency", type=int, default=16, help="judge requests in flight")
    j.add_argument("--no-judge", dest="judge", action="store_false", help="every other metric; the judge's are null")
    e.add_argument("--card", dest="update_card", action=argparse.BooleanOptionalAction, default=None,
                   help="--card: put these results in the checkpoint's model card; --no-card: leave the card alone "
                        "(default: only when no more thorough evaluation is in it)")


def _checkpoint_config(args: argparse.Namespace):
    """The training config of the checkpoint: --demo's, else --config (default bllossom-8b) + overrides."""
    from train.config import load_config

    if args.demo:
        from train.demo import DEMO_CONFIG, DEMO_DIR, demo_config

        return demo_config(args.overrides), f"train/configs/{DEMO_CONFIG.name} output_dir={DEMO_DIR / 'checkpoints'}"
    path = args.config or DEFAULT_CONFIG
    overrides = out_overrides(args) + list(args.overrides)
    return load_config(path, overrides), " ".join([path, *overrides])


def run(args: argparse.Namespace) -> None:
    from train.config import load_config

    if args.command == "demo":
        from train.demo import run_demo

        run_demo(args.overrides)
        return
    if args.command == "eval":
        from train.evaluate import EvalConfig, evaluate
        from train.evaluate.config import parse_conditions

        # every eval option is named after its EvalConfig field (--conditions is parsed first)
        fields = {k: v for k, v in vars(args).items() if k in EvalConfig.__dataclass_fields__ and k != "conditions"}
        fields["out"] = args.out or str(DEFAULT_OUT)
        ecfg = EvalConfig(conditions=parse_conditions(args.conditions), **fields)
        cfg, ref = _checkpoint_config(args)  # both configs are checked before anything is loaded
        evaluate(cfg, ecfg, demo=args.demo, config_ref=ref)
        return
    if args.command == "push":
        from train.push import push

        cfg, ref = _checkpoint_config(args)
        push(cfg, args.repo_id, private=args.private, dataset_id=args.dataset_id, license=args.license, config_path=ref)
        return
    cfg = load_config(args.config, out_overrides(args) + list(args.overrides))
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
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

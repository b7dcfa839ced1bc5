"""What `python -m train` and `python -m serve` share around their work: quiet library warnings, and a
mistake a user can fix printed as one `error:` line per problem (exit 2), never a traceback."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Callable

from datagen.errors import UserError

DEFAULT_CONFIG = "train/configs/bllossom-8b.yaml"
"""The training config commands use when none is given (train, chat, eval, push, serve, serve.vllm)."""
USES = ("auto", "adapter", "merged")
"""Which form of a checkpoint chat and serve load: the merged model when there is one, else base + adapter."""


def add_use_args(p) -> None:
    """`--adapter` / `--merged` (default: auto) on an argparse parser, as chat and serve take them."""
    which = p.add_mutually_exclusive_group()
    which.add_argument("--adapter", dest="use", action="store_const", const="adapter",
                       help="base + adapter even when a merged model exists")
    which.add_argument("--merged", dest="use", action="store_const", const="merged", help="the merged model only")
    p.set_defaults(use="auto")


def guarded(run: Callable[[], None]) -> int:
    """Run a command; return its exit code (0, 2 for a UserError, 130 for Ctrl-C)."""
    # bitsandbytes logs a warning at import on AVX512-BF16 CPUs about an optional kernels package.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    # peft 0.21 still calls this transformers 5 deprecated alias on every wrap; nothing for a user to do.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        run()
    except UserError as e:
        problems = getattr(e, "problems", None) or str(e).splitlines() or [type(e).__name__]
        for line in problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0

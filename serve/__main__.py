"""`python -m serve`: parse arguments, build the configs, call `serve.server.serve`.

    python -m serve --demo                                         # the model `make demo` trained, on the CPU
    python -m serve --config train/configs/bllossom-8b.yaml        # the checkpoint that config trains
    python -m serve --config C --upstream http://127.0.0.1:8001/v1 # in front of vLLM (`make serve-vllm`)
    python -m serve --config C key=value ... --port 8080 --api-key KEY

`key=value` pairs override the training config (train/config.py), as for `python -m train`: e.g.
`temperature=0.5 max_new_tokens=200` change the defaults a request does not set. Mistakes a user can
fix are one `error:` line each (exit 2), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys

from datagen.errors import UserError
from train.cli import DEFAULT_CONFIG, add_use_args, guarded



def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serve",
                                description="The 16 personas behind an OpenAI-compatible API, with a web chat page.")
    p.add_argument("--config", help=f"training config of the checkpoint to serve (default {DEFAULT_CONFIG})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides (keys: train/config.py)")
    p.add_argument("--demo", action="store_true", help="serve the checkpoint `make demo` trained (tiny, CPU)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("SERVE_API_KEY"),
                   help="require `Authorization: Bearer KEY` on /v1 (default: $SERVE_API_KEY, else no key)")
    p.add_argument("--upstream", metavar="URL", help="forward to this OpenAI-compatible server (e.g. vLLM at "
                   "http://127.0.0.1:8001/v1) instead of loading the model here")
    p.add_argument("--upstream-model", metavar="NAME", help="the model name the upstream serves (default: the checkpoint name, as "
                   "`make serve-vllm` registers it)")
    p.add_argument("--upstream-api-key", metavar="KEY", default=os.environ.get("UPSTREAM_API_KEY"),
                   help="key for the upstream (default: $UPSTREAM_API_KEY)")
    add_use_args(p)
    p.add_argument("--max-queue", type=int, default=32, help="requests that may wait for the model (default 32); "
                   "one more gets 503")
    p.add_argument("--max-context", type=int, help="longest prompt + max_tokens (default: the model's)")
    p.add_argument("--stream-interval", type=float, default=0.01, metavar="SECONDS",
                   help="tokens that come faster than this go out in one chunk (default 0.01; 0: every token alone)")
    return p


def run(args: argparse.Namespace) -> None:
    from serve.config import ServeConfig
    from serve.server import serve
    from train.config import load_config

    if args.demo:
        if args.config:
            raise UserError("--demo serves the demo's own config (train/configs/tiny-cpu.yaml under outputs/demo/); "
                            "leave out --config")
        from train.demo import demo_config

        cfg = demo_config(args.overrides)
    else:
        cfg = load_config(args.config or DEFAULT_CONFIG, args.overrides)
    scfg = ServeConfig(host=args.host, port=args.port, api_key=args.api_key, upstream=args.upstream,
                       upstream_model=args.upstream_model, upstream_api_key=args.upstream_api_key, use=args.use,
                       max_queue=args.max_queue, max_context=args.max_context,
                       stream_interval_s=args.stream_interval)
    serve(cfg, scfg, demo=args.demo, make=f"make train CONFIG={args.config or DEFAULT_CONFIG}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_intermixed_args(argv)
    return guarded(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())

"""Put it together: the checkpoint's personas, a backend, the app, and uvicorn.

    build_app(train_cfg, ServeConfig(...), demo=False)   # FastAPI app, backend loaded
    serve(train_cfg, ServeConfig(...))                    # ... and serve it until Ctrl-C

Before any model is loaded, a missing checkpoint is one line naming the command that makes one.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

from datagen.errors import UserError
from datagen.llm import redact_url
from serve.config import ServeConfig
from serve.protocol import persona_id
from train.config import TrainConfig
from train.personas import PersonaPrompt


def checkpoint_problem(cfg: TrainConfig, use: str, make: str) -> str | None:
    """Why the in-process backend cannot start (no adapter / merged model), naming `make`, the command that fixes it."""
    if use == "merged" and not cfg.has_merged:
        return f"no merged model in {cfg.merged_dir}: run `make merge` first (or serve the adapter: leave out --merged)"
    if use == "adapter" and not cfg.has_adapter:
        return f"no adapter in {cfg.checkpoint_dir}: run `{make}` first"
    if not (cfg.has_adapter or cfg.has_merged):
        return f"no checkpoint in {cfg.checkpoint_dir}: run `{make}` first to make one"
    return None


def load_personas(cfg: TrainConfig, note: Callable[[str], None] = print) -> dict[str, PersonaPrompt]:
    """The checkpoint's personas (personas.json), in the project's order of the 16 types."""
    from datagen.schema import MBTI_TYPES
    from train.chat import checkpoint_personas

    found = checkpoint_personas(cfg, note=note)
    ordered = {t: found[t] for t in MBTI_TYPES if t in found}
    if not ordered:
        raise UserError(f"the checkpoint {cfg.checkpoint_dir} knows no persona (personas.json is empty); retrain it "
                        "on data with persona system prompts")
    return ordered


def build_app(cfg: TrainConfig, scfg: ServeConfig, make: str = "make train", note: Callable[[str], None] = print):
    """The app with its backend: in-process (the checkpoint's model) or forwarding to `scfg.upstream`.
    `make` is the command that makes the checkpoint, named when there is none."""
    from serve.app import create_app

    if scfg.upstream is None:
        problem = checkpoint_problem(cfg, scfg.use, make)
        if problem:
            raise UserError(problem)
    personas = load_personas(cfg, note)
    if scfg.upstream is not None:
        from serve.upstream import UpstreamBackend

        backend = UpstreamBackend(scfg.upstream, scfg.upstream_model or cfg.name, scfg.upstream_api_key,
                                  scfg.upstream_timeout_s)
    else:
        from serve.local import LocalBackend

        backend = LocalBackend.from_config(cfg, scfg.use, max_queue=scfg.max_queue, max_context=scfg.max_context,
                                           stream_interval_s=scfg.stream_interval_s)
    return create_app(backend, personas, scfg)


def serve(cfg: TrainConfig, scfg: ServeConfig, demo: bool = False, make: str = "make train",
          out: Callable[[str], None] = print) -> None:
    """Serve the page and the API until interrupted."""
    import uvicorn

    app = build_app(cfg, scfg, "make demo" if demo else make, note=out)
    personas = app.state.personas
    base = f"http://{scfg.host}:{scfg.port}"
    out(f"serving {len(personas)} personas ({' '.join(personas)}) with {app.state.backend.description}")
    if demo:
        out("  the demo model is tiny and random: its replies are noise; the page and the API are the real ones")
    out(f"  page: {base}/")
    key = "; every request needs the API key (Authorization: Bearer ...)" if scfg.api_key else ""
    out(f"  API:  {base}/v1 (OpenAI-compatible; models {persona_id(next(iter(personas)))} … "
        f"{persona_id(list(personas)[-1])}){key}")
    if scfg.host not in ("127.0.0.1", "localhost", "::1") and not scfg.api_key:
        out(f"  note: bound to {scfg.host} without --api-key: anyone who can reach this machine can use the model")
    if scfg.upstream:
        out(f"  forwarding to {redact_url(scfg.upstream)} as model {app.state.backend.model!r}")
    uvicorn.run(app, host=scfg.host, port=scfg.port, log_level="info", timeout_graceful_shutdown=5)


class BackgroundServer:
    """The app under uvicorn on 127.0.0.1 in a thread: a real HTTP server for tests and benchmarks.

        with BackgroundServer(app) as server:
            httpx.get(server.url + "/v1/models")
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                 access_log: bool = False):
        import uvicorn

        # log_config=None: leave logging as the caller set it up (pytest's capture, the benchmark's quiet)
        self.config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                                     log_config=None, timeout_graceful_shutdown=5)
        if access_log:  # an earlier Config(access_log=False) in this process switched propagation off for good
            logging.getLogger("uvicorn.access").propagate = True
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="serve-http", daemon=True)
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def __enter__(self) -> "BackgroundServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

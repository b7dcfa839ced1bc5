"""The server's own settings: one frozen dataclass, a docstring per field.

The model, its checkpoint and the sampling defaults (temperature, top_p, max_new_tokens,
repetition_penalty) come from the training config (`train/configs/*.yaml`, `key=value`
overrides), exactly as `python -m train chat` reads them; this holds what only the server needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from datagen.errors import UserError
from datagen.llm import redact_url
from train.cli import USES



@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"
    """Address to bind. The default is reachable from this machine only; 0.0.0.0 opens it to the network."""
    port: int = 8000
    """TCP port for the page and the API."""
    api_key: str | None = field(default=None, repr=False)
    """When set, every /v1 request needs `Authorization: Bearer <key>`. Never printed or logged."""
    upstream: str | None = None
    """Base URL of an OpenAI-compatible server (ending in /v1) to forward to, e.g. vLLM; None: generate in-process."""
    upstream_model: str | None = None
    """The model name the upstream serves; None: the checkpoint name (what `make serve-vllm` names the LoRA module)."""
    upstream_api_key: str | None = field(default=None, repr=False)
    """Key the upstream wants (vLLM's --api-key); never printed or logged."""
    upstream_timeout_s: float = 600.0
    """Longest wait for one upstream answer (a long reply from a busy server can take minutes)."""
    use: str = "auto"
    """In-process model: `auto` (the merged model if there is one, else base + adapter), `adapter` or `merged`."""
    max_queue: int = 32
    """Requests that may wait while one generates (in-process); one more gets 503 with Retry-After."""
    max_context: int | None = None
    """Longest prompt + max_tokens accepted (in-process); None: the model's max_position_embeddings."""
    stream_interval_s: float = 0.01
    """Shortest time between two streamed chunks of one reply (in-process): tokens that come faster go out
    together. 10 ms is invisible to a reader and only ever joins tokens of a fast model (the CPU demo makes
    one every ~2.5 ms), whose SSE and HTTP per token would otherwise take ~0.2 ms of event-loop CPU each
    (bench/RESULTS.md); an 8B model on a GPU (20-30 ms a token) still streams every token alone. 0: always alone."""

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"--port {self.port}: use a TCP port between 1 and 65535 (0 picks a free one)")
        if self.use not in USES:
            problems.append(f"use={self.use!r}: pick one of {', '.join(USES)}")
        if self.max_queue < 1:
            problems.append(f"--max-queue {self.max_queue}: must be 1 or more (requests waiting beside the one "
                            "generating)")
        if self.max_context is not None and self.max_context < 16:
            problems.append(f"--max-context {self.max_context}: too small to hold one chat turn")
        if self.upstream is not None and not self.upstream.startswith(("http://", "https://")):
            problems.append(f"--upstream {redact_url(self.upstream)}: give a URL like http://127.0.0.1:8001/v1")
        if not 0 <= self.stream_interval_s <= 1:
            problems.append(f"--stream-interval {self.stream_interval_s}: use seconds between 0 and 1 (e.g. 0.01)")
        if self.api_key is not None and not self.api_key.strip():
            problems.append("--api-key is empty: give a key, or leave the option out to serve without one")
        if problems:
            raise UserError("\n".join(problems))

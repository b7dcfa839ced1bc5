"""The in-process backend: one model in memory, one generation at a time on a worker thread.

    backend = LocalBackend.from_config(cfg, use="auto", max_queue=32)   # the merged model, or base + adapter
    body = await backend.complete(request)                              # a chat.completion dict
    events = await backend.open_stream(request)                         # SSE strings, "data: [DONE]" last

Why one at a time: a transformers model in eager mode has no continuous batching, and running two
`generate` calls at once on one model would only split the same cores (and the same KV memory) between
them. Requests therefore wait in a bounded queue (`max_queue`; one more gets 503 with Retry-After) and
each gets the whole model in turn, so no reply is ever interleaved with another. At scale, put vLLM
behind `--upstream` instead: it batches.

The event loop never runs the model: it tokenises the prompt, checks it against the context, queues a
`Job` and then only moves text. The worker thread generates with a streamer that hands each new piece of
text to the loop (`call_soon_threadsafe`), and a stopping criterion that checks the job's cancel flag at
every token, so a client that goes away (or a `stop` string that appears) ends that generation at once.
`seed` seeds torch's generator inside the worker just before that job's `generate`: one job runs at a
time there, so the same seed gives the same reply.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from datagen.checks import control_text
from serve import protocol as P
from serve.protocol import APIError, ChatRequest
from train.config import TrainConfig
from train.data import ChatTokens, render

RETRY_AFTER_S = 1
"""Told to clients that get 503: the demo model answers in about a second; a big one's queue moves every few."""


@dataclass
class Job:
    """One admitted request: its prompt, how to sample, and the channel its text comes back on."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float
    top_p: float
    repetition_penalty: float
    seed: int | None
    stop: tuple[str, ...]
    min_tokens: int
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    interval: float = 0.0
    """Shortest time between two deliveries of text to the loop (seconds); 0: every piece as it comes."""
    _pending: list[tuple] = field(default_factory=list)
    _scheduled: bool = False
    _last: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def emit(self, event: tuple) -> None:
        """Called from the worker thread: hand an event to the request's coroutine on the loop.

        One wake-up of the loop carries everything that arrived since the last one, text pieces joined.
        Text that comes sooner than `interval` after the last delivery waits for the next token (or the
        end), so a fast model sends a few tokens per chunk instead of paying HTTP and a thread switch for
        each; the first piece and the end always go at once.
        """
        with self._lock:
            self._pending.append(event)
            if self._scheduled:  # a delivery is on its way; it takes this one too
                return
            now = time.monotonic()
            if event[0] == "text" and now - self._last < self.interval:
                return
            self._scheduled, self._last = True, now
        self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            events, self._pending, self._scheduled = self._pending, [], False
        text = "".join(e[1] for e in events if e[0] == "text")
        if text:
            self.events.put_nowait(("text", text))
        for e in events:
            if e[0] != "text":
                self.events.put_nowait(e)


@dataclass(frozen=True)
class Finished:
    """What happened to a job, kept for the tests: how it ended and how many tokens it made."""

    finish_reason: str      # stop | length | cancelled | error
    completion_tokens: int


class _TextStream:
    """transformers' streamer interface (put/end), turning new token ids into new text for one job.

    The whole reply is re-decoded at each token (a few microseconds for a reply of hundreds of
    tokens) so that byte-level BPE pieces of one Hangul syllable (3 UTF-8 bytes, often 2 tokens)
    come out as one character: text ending in U+FFFD is held back until the rest arrives. Text that
    could still become a `stop` string is held back too; when one appears, the reply ends before it.
    """

    def __init__(self, job: Job, tokenizer, stop_ids: tuple[int, ...], lock: threading.Lock):
        self.job = job
        self.tokenizer = tokenizer
        self.stop_ids = set(stop_ids)
        self.lock = lock
        self.ids: list[int] = []
        self.tokens = 0
        self.sent = 0
        self.prompt_seen = False
        self.hit_stop_token = False
        self.hit_stop_string = False
        self.hold = max((len(s) for s in job.stop), default=1) - 1

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() hands the prompt over first
            self.prompt_seen = True
            return
        if self.hit_stop_string:
            return
        for t in value.reshape(-1).tolist():
            self.tokens += 1
            if t in self.stop_ids:
                self.hit_stop_token = True
            else:
                self.ids.append(t)
        self._flush(final=False)

    def end(self) -> None:
        if not self.hit_stop_string:
            self._flush(final=True)

    def _flush(self, final: bool) -> None:
        with self.lock:  # the fast tokenizer is not safe to use from two threads at once
            text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        if not final and text.endswith("\ufffd"):
            return
        for s in self.job.stop:
            at = text.find(s, max(0, self.sent - len(s) + 1))
            if at >= 0:
                self.hit_stop_string = True
                self.job.cancel.set()  # the criterion below ends generate() after this token
                self._send(text[:at])
                return
        self._send(text if final else text[:max(self.sent, len(text) - self.hold)])

    def _send(self, upto: str) -> None:
        if len(upto) > self.sent:
            self.job.emit(("text", upto[self.sent:]))
            self.sent = len(upto)


def _stopping_criteria(cancel: threading.Event):
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Cancelled(StoppingCriteria):
        """Stop at the next token once the job is cancelled (client gone, or a stop string reached)."""

        def __call__(self, input_ids, scores, **kwargs):
            return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Cancelled()])


class LocalBackend:
    """A transformers model behind the chat API: a queue in front, one worker thread behind.

    `stream_interval_s` > 0 joins the text of tokens that come faster than that into one chunk
    (`python -m serve` uses 10 ms, ServeConfig); 0 streams every piece alone.
    """

    kind = "local"

    def __init__(self, model, tokenizer, tokens: ChatTokens, defaults: TrainConfig, max_queue: int = 32,
                 max_context: int | None = None, stream_interval_s: float = 0.0, description: str = ""):
        self.model = model
        self.tokenizer = tokenizer
        self.tokens = tokens
        self.defaults = defaults
        self.max_queue = max_queue
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.max_context = max_context or positions or defaults.max_seq_len
        self.stream_interval_s = stream_interval_s
        self.description = description
        self.finished: deque[Finished] = deque(maxlen=256)
        self.running: Job | None = None
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._tokenizer_lock = threading.Lock()
        self._control = self._control_texts(tokenizer)
        self._worker = threading.Thread(target=self._work, name="serve-generate", daemon=True)
        self._worker.start()

    @classmethod
    def from_config(cls, cfg: TrainConfig, use: str = "auto", max_queue: int = 32, max_context: int | None = None,
                    stream_interval_s: float = 0.0) -> "LocalBackend":
        from train.chat import load_chat_model

        model, tokenizer, tokens, what = load_chat_model(cfg, use)
        return cls(model, tokenizer, tokens, cfg, max_queue=max_queue, max_context=max_context,
                   stream_interval_s=stream_interval_s, description=what)

    # -- admission (on the event loop) ---------------------------------------------------------
    @staticmethod
    def _control_texts(tokenizer) -> tuple[str, ...]:
        """This tokenizer's special tokens that `protocol.conversation` does not already refuse (typed inside a
        message, the model would read them as control): none for Llama-3's `<|…|>` family, so usually empty."""
        specials = {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
        specials |= set(getattr(tokenizer, "all_special_tokens", []))
        return tuple(sorted(s for s in specials if s and control_text(s) is None))

    def _check(self, req: ChatRequest) -> None:
        if req.unsupported:
            raise P.bad_request(f"{', '.join(req.unsupported)}: not supported by this server's in-process model "
                                "(one reply, text only, repetition_penalty instead of presence/frequency penalties); "
                                "leave it out, or serve through vLLM with --upstream", param=req.unsupported[0])
        # req.messages is [persona prompt + the client's system texts, the client's turns...]
        for i, m in enumerate(req.messages):
            for s in self._control:
                if s in m["content"]:
                    where = "a system message" if i == 0 else f"messages[{i - 1 + req.n_system}].content"
                    raise P.bad_request(f"{where} contains the chat-template control text {s!r}, which the model "
                                        "would read as a turn boundary; remove it",
                                        param="messages" if i == 0 else where, code="control_text")

    def _prompt_ids(self, req: ChatRequest) -> list[int]:
        with self._tokenizer_lock:
            prompt = render(self.tokenizer, req.messages, add_generation_prompt=True)
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def _admit(self, req: ChatRequest) -> tuple[Job, int]:
        self._check(req)
        ids = self._prompt_ids(req)
        room = self.max_context - len(ids)
        wanted = req.max_tokens if req.max_tokens is not None else self.defaults.max_new_tokens
        if req.max_tokens is None:
            wanted = min(wanted, room)
        if room < 1 or len(ids) + wanted > self.max_context:
            raise P.bad_request(
                f"This model's maximum context length is {self.max_context} tokens. However, you requested "
                f"{len(ids) + max(wanted, 1)} tokens ({len(ids)} in the messages, {max(wanted, 1)} in the completion). "
                "Please reduce the length of the messages or completion.", param="messages",
                code="context_length_exceeded")
        if self.waiting >= self.max_queue:
            raise APIError(503, f"The server is busy: {self.waiting} requests are already waiting for the model. "
                                "Retry shortly.", type="server_error", code="server_busy",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        d = self.defaults
        job = Job(prompt_ids=ids, max_tokens=wanted,
                  temperature=d.temperature if req.temperature is None else req.temperature,
                  top_p=d.top_p if req.top_p is None else req.top_p,
                  repetition_penalty=d.repetition_penalty if req.repetition_penalty is None else req.repetition_penalty,
                  seed=req.seed, stop=req.stop, min_tokens=wanted if req.ignore_eos else min(req.min_tokens, wanted),
                  loop=asyncio.get_running_loop(), interval=self.stream_interval_s)
        self._jobs.put(job)
        return job, len(ids)

    # -- the API ---------------------------------------------------------------------------------
    async def complete(self, req: ChatRequest) -> dict[str, Any]:
        job, prompt_tokens = self._admit(req)
        created, cid = P.now(), P.completion_id()
        parts: list[str] = []
        try:
            async for kind, *rest in self._events(job):
                if kind == "text":
                    parts.append(rest[0])
                else:
                    finish, n = rest
                    return P.completion(cid, created, req.model, "".join(parts), finish, P.usage(prompt_tokens, n))
        finally:
            job.cancel.set()  # the client went away (the task was cancelled) or we are done: stop generating
        raise AssertionError("unreachable: the worker always ends a job with a finish event")

    async def open_stream(self, req: ChatRequest) -> AsyncIterator[str]:
        """Admit now (so a full queue or an over-long prompt is an HTTP error, not a broken stream), stream later."""
        job, prompt_tokens = self._admit(req)
        return self._sse(req, job, prompt_tokens)

    async def _sse(self, req: ChatRequest, job: Job, prompt_tokens: int) -> AsyncIterator[str]:
        created, cid, model, u = P.now(), P.completion_id(), req.model, req.include_usage
        try:
            # The role first, at once: the client knows it was accepted while it waits its turn.
            yield P.sse(P.chunk(cid, created, model, {"role": "assistant", "content": ""}, with_usage=u))
            async for kind, *rest in self._events(job):
                if kind == "text":
                    yield P.sse(P.chunk(cid, created, model, {"content": rest[0]}, with_usage=u))
                else:
                    finish, n = rest
                    yield P.sse(P.chunk(cid, created, model, {}, finish, with_usage=u))
                    if u:
                        yield P.sse(P.usage_chunk(cid, created, model, P.usage(prompt_tokens, n)))
            yield P.SSE_DONE
        except APIError as e:  # the model failed mid-reply: say so in the stream, as vLLM does
            yield P.sse(e.body())
            yield P.SSE_DONE
        finally:
            job.cancel.set()  # a disconnect cancels this generator: stop the model at its next token

    async def _events(self, job: Job) -> AsyncIterator[tuple]:
        """("text", piece)... then ("finish", reason, completion_tokens); a failure raises a 500 APIError."""
        while True:
            event = await job.events.get()
            if event[0] == "error":
                raise APIError(500, f"generation failed: {event[1]}", type="server_error")
            yield event
            if event[0] == "finish":
                return

    @property
    def waiting(self) -> int:
        """Jobs queued behind the running one whose clients are still there. A job whose client left stays in
        the queue until the worker skips it, but holds no place: `max_queue` counts live requests only.
        (Read under the queue's own lock: `queue.Queue` keeps its items in `.queue`, guarded by `.mutex`.)"""
        with self._jobs.mutex:
            return sum(1 for job in self._jobs.queue if job is not None and not job.cancel.is_set())

    def health(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.description, "waiting": self.waiting,
                "running": self.running is not None, "max_queue": self.max_queue, "max_context": self.max_context}

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        self._jobs.put(None)
        if self.running is not None:
            self.running.cancel.set()
        self._worker.join(timeout=30)

    # -- the worker thread ----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancel.is_set():  # its client left while it waited
                self.finished.append(Finished("cancelled", 0))
                job.emit(("finish", "cancelled", 0))
                continue
            self.running = job
            try:
                self._generate(job)
            except Exception as e:  # a model error must not take the worker (and so the server) down
                self.finished.append(Finished("error", 0))
                job.emit(("error", f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
            finally:
                self.running = None

    def _generate(self, job: Job) -> None:
        import torch

        from train.chat import generation_kwargs

        stream = _TextStream(job, self.tokenizer, self.tokens.stop_ids, self._tokenizer_lock)
        kwargs = generation_kwargs(self.tokens, job.max_tokens, job.temperature, job.top_p, job.repetition_penalty,
                                   min_new_tokens=job.min_tokens)
        device = getattr(self.model, "device", "cpu")
        ids = torch.tensor([job.prompt_ids], device=device)
        if job.seed is not None:
            torch.manual_seed(job.seed)  # only this thread generates, so the seed alone decides the sample
        with torch.no_grad():
            self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=stream,
                                stopping_criteria=_stopping_criteria(job.cancel), **kwargs)
        if stream.hit_stop_string or stream.hit_stop_token:
            finish = "stop"
        elif job.cancel.is_set():
            finish = "cancelled"
        else:
            finish = "length"
        self.finished.append(Finished(finish, stream.tokens))
        job.emit(("finish", finish, stream.tokens))

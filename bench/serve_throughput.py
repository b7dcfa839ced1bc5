"""Serving overhead on the demo model: time to first token and tokens/s, direct `generate` vs through the server.

    make demo                              # once: the checkpoint this measures
    python bench/serve_throughput.py       # ~5 minutes on 2 cores (--repeat 10); prints a Markdown table

For 1 and 8 concurrent streams of `--tokens` tokens each (ignore_eos, so every reply has exactly that
many), the same persona prompt, sampling settings and seeds:

- **direct**: this process loads the checkpoint (base + adapter, as `python -m serve --demo --adapter`
  does) and calls `model.generate` on a worker thread (as the server does) with a streamer that only
  notes the time of each token; 8 "concurrent" streams run back to back, which is what one model
  without batching does with 8 requests.
- **through the server**: `python -m serve --demo --adapter` in its own process, and 8 clients sent at
  once; it queues them and generates one at a time. Two clients: the `openai` SDK (AsyncOpenAI,
  streaming), and a lean one (asyncio streams, json.loads per event), because on 2 cores the client's
  own CPU (the SDK builds pydantic objects per chunk) competes with the server it measures. Times are
  the client's: from sending to its first content chunk, and to its last.
- **direct, batched** (reference only): one `generate` call over the 8 prompts at once, what a server
  with batching (vLLM behind `--upstream`) gains on top.

TTFT is from the start of the round (all 8 sent at once) to a stream's first token, so at 8 streams it
includes the wait in the queue; per-stream tokens/s is (tokens - 1) / (last - first token); aggregate is
all tokens / wall time. Overhead = 1 - server aggregate / direct aggregate. The last column is the CPU
time of the process that runs the model per token (this one for direct rounds, the server's for server
rounds: the model, the streamer, HTTP and SSE), median over rounds. Each row is the best of `--repeat`
rounds (median beside it), direct and server rounds alternating: other jobs on a shared machine only
ever slow a round down. Torch runs 1 CPU thread in both (`--threads`), see main().
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from datagen.errors import UserError  # noqa: E402

QUESTION = "요즘 일이 너무 많아서 지쳤어요. 이번 주말에는 어떻게 쉬면 좋을까요?"
PERSONA = "ENFP"


@dataclass
class Round:
    """One round of `streams` replies: per stream (first token s, last token s, tokens), all from the round's start;
    the CPU seconds the model's process spent (this one for direct, the server's for server rounds)."""

    streams: list[tuple[float, float, int]]
    wall: float
    cpu: float = 0.0

    @property
    def cpu_ms_per_token(self) -> float:
        return self.cpu * 1000 / sum(n for _, _, n in self.streams)

    @property
    def aggregate(self) -> float:
        return sum(n for _, _, n in self.streams) / self.wall

    @property
    def ttft(self) -> list[float]:
        return [first for first, _, _ in self.streams]

    @property
    def per_stream(self) -> float:
        return statistics.mean((n - 1) / (last - first) for first, last, n in self.streams if last > first)


# -- direct -------------------------------------------------------------------------------------

class TokenClock:
    """A transformers streamer that only notes when tokens arrive (the prompt comes first and is skipped)."""

    def __init__(self, t0: float):
        self.t0, self.times, self.prompt_seen = t0, [], False

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.times.append(time.perf_counter() - self.t0)

    def end(self) -> None:
        pass


def load_direct(cfg):
    from train.chat import load_chat_model
    from train.data import render
    from serve.server import load_personas

    model, tokenizer, tokens, _ = load_chat_model(cfg, "adapter")
    persona = load_personas(cfg, note=lambda _: None)[PERSONA]
    messages = [{"role": "system", "content": persona.system_prompt}, {"role": "user", "content": QUESTION}]
    ids = tokenizer(render(tokenizer, messages, add_generation_prompt=True), add_special_tokens=False,
                    return_tensors="pt")["input_ids"]
    return model, tokens, ids


def direct_round(model, tokens, ids, cfg, streams: int, n: int, batched: bool = False) -> Round:
    """The same sampling as serve/local.py: temperature and top_p from the config, no top-k, ignore_eos."""
    import torch

    from train.chat import generation_kwargs

    kwargs = generation_kwargs(tokens, n, cfg.temperature, cfg.top_p, cfg.repetition_penalty, min_new_tokens=n)
    t0, c0 = time.perf_counter(), time.process_time()
    out = []
    with torch.no_grad():
        if batched:
            batch = ids.repeat(streams, 1)
            clock = TokenClock(t0)  # a streamer gets each step's tokens of the whole batch at once
            torch.manual_seed(0)
            model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), streamer=clock, **kwargs)
            out = [(clock.times[0], clock.times[-1], len(clock.times))] * streams
        else:
            for seed in range(streams):
                clock = TokenClock(t0)
                torch.manual_seed(seed)
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=clock, **kwargs)
                out.append((clock.times[0], clock.times[-1], len(clock.times)))
    return Round(out, time.perf_counter() - t0, time.process_time() - c0)


# -- server -------------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(pid: int, run) -> Round:
    """Run a server round, charging it the server process's CPU time."""
    c0 = cpu_seconds(pid)
    r = run()
    r.cpu = cpu_seconds(pid) - c0
    return r


def start_server(port: int) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "serve", "--demo", "--adapter", "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server did not start: {proc.stderr.read().decode()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not answer /health in 120 s")


async def server_round(client, streams: int, n: int) -> Round:
    async def one(seed: int, t0: float) -> tuple[float, float, int]:
        first = last = None
        count = 0
        stream = await client.chat.completions.create(
            model=f"mbti-{PERSONA.lower()}", messages=[{"role": "user", "content": QUESTION}], stream=True, seed=seed,
            max_tokens=n, stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                last = time.perf_counter() - t0
                first = first if first is not None else last
            if chunk.usage is not None:
                count = chunk.usage.completion_tokens
        assert count == n, f"expected {n} tokens, the server made {count}"
        return first, last, count

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(seed, t0) for seed in range(streams)))
    return Round(list(results), time.perf_counter() - t0)


async def raw_round(port: int, streams: int, n: int) -> Round:
    """The same requests from a lean client: asyncio streams and json.loads per event (the SDK builds pydantic
    objects per chunk, which on a 2-core box takes CPU from the server it measures)."""
    import json

    body = {"model": f"mbti-{PERSONA.lower()}", "messages": [{"role": "user", "content": QUESTION}], "stream": True,
            "max_tokens": n, "ignore_eos": True, "stream_options": {"include_usage": True}}

    async def one(seed: int, t0: float) -> tuple[float, float, int]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        data = json.dumps({**body, "seed": seed}).encode()
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(data), data))
        await writer.drain()
        first = last = None
        count, buf, done = 0, b"", False
        while not done:
            piece = await reader.read(65536)
            if not piece:
                break
            buf += piece
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                start = event.find(b"data: ")
                if start < 0:
                    continue
                payload = event[start + 6:].split(b"\r\n", 1)[0]  # chunked framing may trail the line
                if payload == b"[DONE]":
                    done = True
                    break
                obj = json.loads(payload)
                if obj.get("choices") and obj["choices"][0]["delta"].get("content"):
                    last = time.perf_counter() - t0
                    first = first if first is not None else last
                if obj.get("usage"):
                    count = obj["usage"]["completion_tokens"]
        writer.close()
        assert count == n, f"expected {n} tokens, the server made {count}"
        return first, last, count

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(seed, t0) for seed in range(streams)))
    return Round(list(results), time.perf_counter() - t0)


# -- the table ----------------------------------------------------------------------------------

def row(label: str, streams: int, rounds: list[Round], base: float | None) -> str:
    best = max(rounds, key=lambda r: r.aggregate)
    med = statistics.median(r.aggregate for r in rounds)
    ttft = sorted(best.ttft)
    vs = "" if base is None else f"{1 - best.aggregate / base:+.1%}"
    cpu = statistics.median(r.cpu_ms_per_token for r in rounds)
    return (f"| {label} | {streams} | {statistics.median(ttft) * 1000:.0f} | {ttft[-1] * 1000:.0f} | "
            f"{best.per_stream:.1f} | {best.aggregate:.1f} ({med:.1f}) | {vs} | {cpu:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=64, help="tokens per reply (default 64)")
    p.add_argument("--repeat", type=int, default=3, help="rounds per row; the best is shown (default 3)")
    p.add_argument("--port", type=int, default=8791)
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads for the model, direct and in the server alike (default 1: see below)")
    args = p.parse_args()
    # One OpenMP thread by default: on 2 cores shared with the client (and, here, other sessions' jobs), two
    # spinning OpenMP threads stall whenever anything else takes a core, and the numbers swing by 2-10x.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the server process
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

    import torch
    from openai import AsyncOpenAI

    from serve.server import checkpoint_problem
    from train.demo import demo_config

    torch.set_num_threads(args.threads)
    cfg = demo_config()
    problem = checkpoint_problem(cfg, "adapter", "make demo")
    if problem:
        raise SystemExit(f"error: {problem}")
    try:
        model, tokens, ids = load_direct(cfg)
    except UserError as e:
        raise SystemExit(f"error: {e}")
    n = args.tokens
    print(f"demo model {cfg.model} + adapter {cfg.checkpoint_dir}; prompt {ids.shape[1]} tokens, {n} tokens per reply, "
          f"temperature {cfg.temperature}, top_p {cfg.top_p}; torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads; {os.cpu_count()} cores ({platform.machine()}); load average before {os.getloadavg()[0]:.1f}",
          flush=True)
    proc = start_server(args.port)
    # The direct rounds run on one worker thread, as the server's generation does: on this shared 2-core box,
    # generate() from the main thread with torch's 2 OpenMP threads ran 10-30x slower than from a worker thread
    # whenever other jobs held a core (and as fast when none did), which would flatter the server.
    worker = ThreadPoolExecutor(1, thread_name_prefix="direct")

    def direct(streams: int, batched: bool = False) -> Round:
        return worker.submit(direct_round, model, tokens, ids, cfg, streams, n, batched).result()

    loop = asyncio.new_event_loop()  # one loop for every round: the client's connections belong to it
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{args.port}/v1", api_key="unused", max_retries=0, timeout=600)
    results: dict[tuple[str, int], list[Round]] = {}
    try:
        worker.submit(direct_round, model, tokens, ids, cfg, 1, 8).result()  # warm-up: first calls cost extra
        loop.run_until_complete(server_round(client, 1, 8))
        for r in range(args.repeat):
            for streams in (1, 8):                             # alternate, so a busy spell hits both modes alike
                results.setdefault(("direct", streams), []).append(direct(streams))
                results.setdefault(("server", streams), []).append(
                    measured(proc.pid, lambda: loop.run_until_complete(server_round(client, streams, n))))
                results.setdefault(("raw", streams), []).append(
                    measured(proc.pid, lambda: loop.run_until_complete(raw_round(args.port, streams, n))))
            results.setdefault(("batched", 8), []).append(direct(8, batched=True))
            print(f"round {r + 1}/{args.repeat} done", file=sys.stderr, flush=True)
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        worker.shutdown()
        proc.terminate()
        proc.wait(30)

    print()
    print("| mode | streams | TTFT p50 ms | TTFT max ms | per-stream tokens/s | aggregate tokens/s (median) | "
          "server overhead | model process CPU ms/token |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for streams in (1, 8):
        base = max(r.aggregate for r in results[("direct", streams)])
        print(row("direct `generate`", streams, results[("direct", streams)], None))
        print(row("through the server, `openai` SDK client", streams, results[("server", streams)], base))
        print(row("through the server, lean client (asyncio + json)", streams, results[("raw", streams)], base))
    print(row("direct, one batched `generate` (reference: what batching adds)", 8, results[("batched", 8)], None))
    print(f"\nload average after {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Replay: for every held-out chat, its user turns are sent again and the model writes every assistant turn.

The persona's system prompt is the one the checkpoint was trained with; the model's own earlier replies
stay in the context, as in a real chat. Two backends, one result shape (`Turn`: text, whether it ended
on end-of-turn, tokens):

- **in-process** (`replay_local`): transformers `generate`, batched with left padding (chats sorted by
  prompt length so a batch pads little), greedy by default or sampled with a seed, stopping at the
  end-of-turn token; a reply that reaches `max_new_tokens` first is marked not stopped. `fine_tuned`
  and `base` share one model in memory: `base` runs inside peft's `disable_adapter()`.
- **any OpenAI-compatible server** (`replay_endpoint`): vLLM serving the base with the LoRA
  (`vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER`), or the `reference` model. Every
  request goes through the project's one LLM step (datagen/step.py), so answers are stored by request
  hash and a rerun never re-sends; finish_reason `stop` vs `length` gives the stop rate.

Finished chats are `Dialogue` records (`source: "eval"`, condition and per-turn facts in `meta`),
appended to `chats.jsonl` one per line as each finishes (`ChatStore`): a rerun skips every chat already
there for the same condition, held-out chat and settings (`settings_key`), even after a kill.
"""

from __future__ import annotations

import asyncio
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from datagen.cost import Price
from datagen.schema import Dialogue, JsonlAppender, read_jsonl

CHATS_FILE = "chats.jsonl"
CHAT_CACHE = "cache/chats.jsonl"
"""Every chat ever generated in this folder (append-only, keyed by condition, held-out chat and settings):
a smaller or different run never throws away what an earlier one generated. chats.jsonl is this run's."""
EMPTY_REPLY = "(빈 답)"
"""Stands in for a reply with no text (the model ended its turn at once): a record cannot hold an empty turn.
The real reply (empty) is what stays in the model's context; `meta.turns[i].chars` is 0."""
SEED_STRIDE = 100_003  # a prime: turn k, batch b is seeded with seed + k * stride + b, all distinct


@dataclass(frozen=True)
class GenSettings:
    """How replies are generated (the parts that change what a model says)."""

    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int = 0

    @property
    def sample(self) -> bool:
        return self.temperature > 0


@dataclass(frozen=True)
class Turn:
    """One generated assistant turn."""

    text: str
    stopped: bool
    """True when the reply ended on the end-of-turn token (finish_reason `stop`), False when cut at max_new_tokens."""
    new_tokens: int | None = None
    """Tokens generated, the stop token included (None when a server did not say)."""


def settings_key(identity: dict[str, Any]) -> str:
    """A short hash of everything that changes a condition's replies (model files, prompts, settings).

    >>> settings_key({"model": "m", "temperature": 0.0}) == settings_key({"temperature": 0.0, "model": "m"})
    True
    """
    from datagen.llm import request_hash  # the project's one canonical-JSON hash

    return request_hash(identity)[:12]


def eval_record(held: Dialogue, turns: list[Turn], condition: str, key: str, model: str) -> Dialogue:
    """The generated chat as a record: the held-out user turns with the model's replies."""
    messages: list[dict[str, str]] = []
    for user, t in zip(held.turns("user"), turns):
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": t.text.strip() or EMPTY_REPLY}]
    meta = {"condition": condition, "held_out": held.id, "settings": key, "model": model,
            "turns": [{"stopped": t.stopped, "new_tokens": t.new_tokens, "chars": len(t.text.strip())} for t in turns]}
    return Dialogue.build(held.mbti, held.topic, messages, source="eval", meta=meta)


def replies(d: Dialogue) -> list[str]:
    """The assistant's replies as generated ("" for an empty one; held-out records: their own turns)."""
    turns = d.meta.get("turns") if d.source == "eval" else None
    texts = d.turns("assistant")
    if not isinstance(turns, list):
        return texts
    return ["" if isinstance(t, dict) and t.get("chars") == 0 else x for x, t in zip(texts, turns)]


class ChatStore:
    """`chats.jsonl`: generated chats, one per line, appended and flushed as each finishes.

    Indexed by (condition, held-out id, settings key); a torn last line (a kill mid-write) is dropped.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._by_key: dict[tuple[str, str, str], Dialogue] = {}
        if self.path.exists():
            records, _ = read_jsonl(self.path)  # a bad or torn line is a chat to generate again, nothing more
            for d in records:
                if d.source == "eval":
                    self._by_key[self._key(d)] = d
        self._out: JsonlAppender | None = None

    @staticmethod
    def _key(d: Dialogue) -> tuple[str, str, str]:
        m = d.meta
        return (str(m.get("condition")), str(m.get("held_out")), str(m.get("settings")))

    def get(self, condition: str, held_out: str, key: str) -> Dialogue | None:
        return self._by_key.get((condition, held_out, key))

    def add(self, d: Dialogue) -> None:
        if self._out is None:
            self._out = JsonlAppender(self.path)
        self._out.write(d)
        self._by_key[self._key(d)] = d

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None



GROUP_BATCHES = 4
"""Batches of chats replayed to the end before the next ones start (resume granularity vs batch fill)."""


# --- in-process --------------------------------------------------------------------------------------------


@contextmanager
def seeded(seed: int, device) -> Iterator[None]:
    """Seed torch for one sampled batch without touching the caller's random state."""
    import torch

    devices = [device.index or 0] if getattr(device, "type", "cpu") == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def generate_batch(model, tokenizer, tokens, prompts: list[str], gen: GenSettings, seed: int = 0) -> list[Turn]:
    """One reply per rendered prompt, generated together with left padding; each stops at end-of-turn.

    A finished row is filled with the pad token (never the end-of-turn token) while the others go on,
    so a row's reply is everything before its first stop token.
    """
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only: new tokens must follow each prompt directly
    try:
        enc = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt").to(model.device)
    finally:
        tokenizer.padding_side = side
    from train.chat import generation_kwargs

    stop_ids = list(tokens.stop_ids)
    kwargs = generation_kwargs(tokens, gen.max_new_tokens, gen.temperature, gen.top_p, gen.repetition_penalty)
    with torch.no_grad(), seeded(seed, model.device):
        out = model.generate(**enc, **kwargs)
    turns = []
    for row in out[:, enc["input_ids"].shape[1]:].tolist():
        stop = next((j for j, t in enumerate(row) if t in stop_ids), None)
        ids = row if stop is None else row[:stop]
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        turns.append(Turn(text, stop is not None, len(row) if stop is None else stop + 1))
    return turns


def replay_local(model, tokenizer, tokens, chats: list[Dialogue], systems: dict[str, str], gen: GenSettings,
                 batch_size: int, done: Callable[[Dialogue, list[Turn]], None]) -> int:
    """Replay `chats` turn by turn, `batch_size` chats at a time; `done(chat, turns)` as each finishes.

    Within a group of `GROUP_BATCHES` batches, turn k of every chat is generated before turn k+1 of any,
    so a batch holds prompts of similar length. Returns the number of turns generated.
    """
    from train.data import render

    generated = 0
    # Groups of a few batches run all their turns before the next group starts, so finished chats reach
    # the disk all along the run: a kill loses at most one group's work.
    group = batch_size * GROUP_BATCHES
    for g in range(0, len(chats), group):
        part = chats[g:g + group]
        users = [d.turns("user") for d in part]
        history = [[{"role": "system", "content": systems[d.mbti]}] for d in part]
        turns: list[list[Turn]] = [[] for _ in part]
        for k in range(max((len(u) for u in users), default=0)):
            active = [i for i, u in enumerate(users) if len(u) > k]
            for i in active:
                history[i].append({"role": "user", "content": users[i][k]})
            prompts = {i: render(tokenizer, history[i], add_generation_prompt=True) for i in active}
            active.sort(key=lambda i: len(prompts[i]))
            for b in range(0, len(active), batch_size):
                batch = active[b:b + batch_size]
                out = generate_batch(model, tokenizer, tokens, [prompts[i] for i in batch], gen,
                                     seed=gen.seed + k * SEED_STRIDE + g + b)
                for i, t in zip(batch, out):
                    turns[i].append(t)
                    history[i].append({"role": "assistant", "content": t.text})
                    generated += 1
                    if len(turns[i]) == len(users[i]):
                        done(part[i], turns[i])
    return generated


# --- OpenAI-compatible servers -------------------------------------------------------------------------------


def turn_body(messages: list[dict[str, str]], model: str, gen: GenSettings) -> dict[str, Any]:
    """The chat-completions body for one turn (the LLM step's request; its hash is the cache key)."""
    from datagen.llm import LLMConfig, chat_body, uses_max_completion_tokens

    body = chat_body(messages, LLMConfig(model=model, temperature=gen.temperature, max_tokens=gen.max_new_tokens))
    if gen.sample:
        body["seed"] = gen.seed
        if not uses_max_completion_tokens(model):  # OpenAI's reasoning models take only the default top_p
            body["top_p"] = gen.top_p
    return body


def turn_of(line: dict[str, Any]) -> Turn | None:
    """A stored raw line as a Turn; None when the server gave no answer at all.

    `length` is a reply cut at max_tokens (kept, not stopped); a refusal is kept as what was said.
    """
    from datagen.llm import read_completion

    if line.get("completion") is None:
        return None
    c = read_completion(line["completion"])
    text = c.content if c.content is not None else (c.refusal or "")
    return Turn(text.strip(), c.finish_reason == "stop", c.usage.completion_tokens or None)


async def replay_endpoint(step, model: str, condition: str, chats: list[Dialogue], systems: dict[str, str],
                          gen: GenSettings, done: Callable[[Dialogue, list[Turn]], None]) -> list[str]:
    """Replay `chats` through `step` (an `LLMStep` on the server), chats side by side, turns in order.

    Returns the ids of held-out chats that got no answer for some turn (after the client's retries);
    raises what the step raises when the stage must stop (StageStopped, LLMFatalError).
    """
    from datagen.step import Call, gather_all

    failed: list[str] = []

    async def one(d: Dialogue) -> None:
        messages = [{"role": "system", "content": systems[d.mbti]}]
        turns: list[Turn] = []
        for k, user in enumerate(d.turns("user")):
            messages.append({"role": "user", "content": user})
            call = Call(turn_body(list(messages), model, gen), {"condition": condition, "held_out": d.id, "turn": k},
                        f"eval:{condition}")
            out = await step.run(call)
            t = turn_of(out.line)
            if t is None:
                failed.append(d.id)
                return
            turns.append(t)
            messages.append({"role": "assistant", "content": t.text})
        done(d, turns)

    await gather_all(one(d) for d in chats)
    return failed


def run_endpoint(model: str, base_url: str | None, condition: str, chats: list[Dialogue], systems: dict[str, str],
                 gen: GenSettings, done: Callable[[Dialogue, list[Turn]], None], store_path: Path,
                 concurrency: int, max_cost: float | None = None, price: Price | None = None,
                 cap_flag: str = "--max-cost") -> list[str]:
    """`replay_endpoint` with its own client and store; returns the ids of chats that got no answer.

    With `max_cost`, the shared hard cap (datagen/cost.py `Budget`): each request's worst case is reserved
    before it is sent, and what this condition's earlier requests in the store were billed counts.
    Raises `BudgetExhausted` when no further request fits (every answer so far is stored).
    """
    from datagen.cost import Budget, TokenCounter, stored_spend
    from datagen.llm import LLMClient, LLMConfig, ResponseStore
    from datagen.step import LLMStep

    store = ResponseStore(store_path)
    llm = LLMConfig(model=model, base_url=base_url, concurrency=concurrency)  # the bodies come from turn_body
    before = stored_spend((ln for ln in store.lines() if ln.get("condition") == condition), price)
    budget = Budget(max_cost, price, TokenCounter(model) if max_cost is not None else None, spent_before=before,
                    flag=cap_flag)

    async def main() -> list[str]:
        async with LLMClient(llm) as client:
            step: LLMStep = LLMStep(client, lambda call: store, budget, what=f"{condition} requests")
            return await replay_endpoint(step, model, condition, chats, systems, gen, done)

    try:
        return asyncio.run(main())
    finally:
        store.close()

"""Planning a generate request: which examples, topics and registers request i of a type shows.

Pure given a type's state: request i is drawn from `random.Random(f"{seed}:{TYPE}:{i}")`, so the
same state gives the same prompt and the same request hash (the cache and the Batch API plan rely
on it). Topics cycle through `seeds/topics.yaml`, each once per pass, passes reshuffled.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from datagen.cost import TokenCounter
from datagen.generate.config import GenerateConfig
from datagen.llm import LLMConfig, chat_body, request_hash
from datagen.prompts import REGISTERS, RELATIONS, RESPONSE_SCHEMA, Item, format_example, render_generation
from datagen.schema import Dialogue
from datagen.seeds import Persona


@dataclass
class TypePlan:
    """What one type's prompts draw from: persona, seeds, topics and the run's accepted dialogues."""

    mbti: str
    persona: Persona | None
    seeds: list[Dialogue]
    topics: list[str]
    accepted: list[Dialogue | dict[str, Any]]
    """Accepted records in order, as loaded (Dialogue) or as the acceptor returned them (dict)."""
    _topic_perms: dict[int, list[str]] = field(default_factory=dict)

    def topic(self, slot: int, seed: int) -> str:
        """Topic of the slot-th dialogue asked for: each topic once per pass, passes reshuffled."""
        n = len(self.topics)
        epoch = slot // n
        if epoch not in self._topic_perms:
            self._topic_perms[epoch] = random.Random(f"{seed}:{self.mbti}:topics:{epoch}").sample(self.topics, n)
        return self._topic_perms[epoch][slot % n]


@dataclass(frozen=True)
class PlannedRequest:
    mbti: str
    index: int
    body: dict[str, Any]
    request_hash: str
    examples: tuple[str, ...]
    items: tuple[Item, ...]

    @property
    def custom_id(self) -> str:
        """The Batch API id: type, request index and the start of the request hash."""
        return f"{self.mbti}-{self.index:06d}-{self.request_hash[:16]}"

def request_body(messages: list[dict[str, str]], llm: LLMConfig) -> dict[str, Any]:
    """A chat-completions body asking for the response contract as strict structured output."""
    return chat_body(messages, llm, RESPONSE_SCHEMA)


def exchange_choices(seeds: list[Dialogue], cfg: GenerateConfig) -> list[int]:
    """Exchange counts a dialogue may be asked for: the type's seeds' own counts (so the data keep the seeds'
    spread, 3 to 8), within the rules' bounds; every allowed count when there are no seeds."""
    lo, hi = cfg.checks.min_exchanges, cfg.checks.max_exchanges
    counts = sorted(min(hi, max(lo, d.exchanges)) for d in seeds)
    return counts or list(range(lo, hi + 1))


def plan_request(state: TypePlan, index: int, cfg: GenerateConfig) -> PlannedRequest:
    """Request `index` of a type from its own RNG: topics, registers, relations and lengths of the dialogues
    asked for, then examples whose topics differ from those (so no example shows how a requested topic
    goes), the prompt rendered."""
    rng = random.Random(f"{cfg.seed}:{state.mbti}:{index}")
    first = rng.randrange(2)  # registers alternate within a request, so each type gets both evenly
    lengths = exchange_choices(state.seeds, cfg)
    items = []
    for j in range(cfg.per_request):
        register = REGISTERS[(first + j) % 2]
        items.append(Item(state.topic(index * cfg.per_request + j, cfg.seed), register,
                          rng.choice(RELATIONS[register]), rng.choice(lengths)))
    asked = {it.topic for it in items}
    accepted = [d for d in state.accepted if (d.topic if isinstance(d, Dialogue) else d.get("topic")) not in asked]
    gen = [d if isinstance(d, Dialogue) else Dialogue.from_dict(d)
           for d in rng.sample(accepted, min(cfg.generated_examples, len(accepted)))]
    seeds = [d for d in state.seeds if d.topic not in asked]
    n_seed = min(len(seeds), cfg.seed_examples + cfg.generated_examples - len(gen))
    examples = rng.sample(seeds, n_seed) + gen
    profile = state.persona.profile_text() if state.persona else ""
    body = request_body(render_generation(profile, examples, items), cfg.llm)
    return PlannedRequest(state.mbti, index, body, request_hash(body), tuple(d.id for d in examples), tuple(items))


def requests_cap(cfg: GenerateConfig, to_go: int) -> int:
    """Most requests a type may send for `to_go` dialogues: a model whose output is mostly rejected must stop."""
    return int(math.ceil(to_go / cfg.per_request * cfg.max_requests_factor)) + 2


def estimate_output_tokens(seeds: list[Dialogue], per_request: int, counter: TokenCounter) -> int:
    """Completion tokens of one request: n × an average seed dialogue in the response's JSON shape."""
    if not seeds:
        return per_request * 1000
    avg = sum(counter.count(format_example(d)) for d in seeds) / len(seeds)
    return int(per_request * avg) + 20

"""One helper per idiom, shared by the test files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from datagen.checks import CheckConfig, first_violation
from datagen.schema import Dialogue
from datagen.seed_check import format_seeds

GOOD_MESSAGES = [
    {"role": "user", "content": "요즘 이직할까 말까 계속 고민돼요. 회사가 싫은 건 아닌데 뭔가 정체된 느낌이라서요."},
    {"role": "assistant", "content": "정체됐다고 느끼신 게 언제부터였어요? 시점을 먼저 짚어 보면 원인이 보일 때가 많거든요."},
    {"role": "user", "content": "작년 연말 평가 끝나고부터요. 열심히 했는데 평가가 그냥 그랬어요."},
    {"role": "assistant", "content": "그럼 회사 자체보다 평가 방식이 걸리는 걸 수도 있겠네요. 평가 기준을 직접 물어본 적은 있으세요?"},
    {"role": "user", "content": "아뇨, 괜히 불만 있는 사람처럼 보일까 봐 못 물어봤어요."},
    {"role": "assistant", "content": "물어보는 건 불만이 아니라 확인이에요. 기준을 알고 나서 떠나도 늦지 않아요."},
]


def make_dialogue(**overrides: Any) -> Dialogue:
    """A valid 3-exchange 존댓말 ISTJ dialogue; override any field (messages, mbti, topic, source, meta)."""
    fields = {"mbti": "ISTJ", "topic": "이직 고민", "messages": GOOD_MESSAGES, "source": "seed", "meta": {}}
    fields.update(overrides)
    return Dialogue.build(fields["mbti"], fields["topic"], fields["messages"], fields["source"], fields["meta"])


def with_assistant(text: str, index: int = 1, messages: list[dict[str, str]] | None = None) -> list[dict[str, str]]:
    """GOOD_MESSAGES with message `index` replaced by `text`."""
    msgs = [dict(m) for m in (messages or GOOD_MESSAGES)]
    msgs[index]["content"] = text
    return msgs


def assert_rejected(d: Dialogue, rule: str, cfg: CheckConfig = CheckConfig()) -> None:
    v = first_violation(d, cfg)
    assert v is not None and v.rule == rule, f"expected {rule}, got {v}"


def assert_kept(d: Dialogue, cfg: CheckConfig = CheckConfig()) -> None:
    v = first_violation(d, cfg)
    assert v is None, f"expected no violation, got {v}"


# A small persona profile with every required key, for seeds folders built in tests.
PERSONA = {
    "nickname": "꼼꼼한 기록가", "summary": "차분하게 사실부터 확인하는 대화 상대.",
    "functions": {"dominant": "내향 감각 (Si)", "auxiliary": "외향 사고 (Te)"},
    "traits": ["약속을 지킨다.", "사실을 먼저 본다.", "차분하다.", "계획을 세운다.", "책임감이 강하다."],
    "speaking_style": {"tone": "차분하다.", "sentence_habits": "결론부터 말한다.", "expressions": {"존댓말": ["일단 정리해 보면요"], "반말": ["일단 정리해 보면"]},
                       "length": "두세 문장."},
    "reactions": {"worry": "구체적으로 묻는다.", "conflict": "사실을 정리한다.", "good_news": "담백하게 축하한다.",
                  "plan_change": "대안을 세운다."},
    "avoids": ["과장"], "sample_lines": ["일단 순서대로 정리해 볼까요?"],
}


SEED_TOPICS = ("이직 고민", "이사", "발표 준비", "자격증 공부")


def write_seeds(root: Path, dialogues: dict[str, list[dict]], personas=("ISTJ", "ENFP"), topics=SEED_TOPICS) -> Path:
    """A seeds folder: a PERSONA profile per type, topics.yaml, and the given dialogue rows (ids filled in)."""
    (root / "personas").mkdir(parents=True, exist_ok=True)
    (root / "dialogues").mkdir(parents=True, exist_ok=True)
    for t in personas:
        (root / "personas" / f"{t}.yaml").write_text(yaml.safe_dump({"mbti": t} | PERSONA, allow_unicode=True), "utf-8")
    (root / "topics.yaml").write_text(yaml.safe_dump({"topics": list(topics)}, allow_unicode=True), "utf-8")
    for t, rows in dialogues.items():
        (root / "dialogues" / f"{t}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    format_seeds(root)
    return root


# -- models for the chat and serve tests ---------------------------------------------------------

def scripted_chat_model(reply: str, system: str, max_new_tokens: int = 30):
    """A real Llama whose greedy next token is a fixed function of the current token: (model, tok, tokens, messages, reply_ids).

    With every o_proj and down_proj zeroed, the last hidden state is the current token's own
    embedding; lm_head rows then map token -> next token. The chain after the generation prompt
    is `reply`'s tokens, then <|eot_id|>, then more text: only stopping at end-of-turn ends it early.
    Every prompt ends with the same generation prompt, so every chat gets `reply`.
    """
    import torch
    from transformers import LlamaForCausalLM

    from train.config import TrainConfig
    from train.data import prepare_tokenizer, render
    from train.tiny import SAMPLE_TEXTS, tiny_llama_config, train_tiny_tokenizer

    tok = train_tiny_tokenizer(SAMPLE_TEXTS + [reply] * 50)  # the reply's words become whole tokens
    cfg = TrainConfig(model="unused", dataset="unused", optim="adamw_torch", temperature=0.0,
                      max_new_tokens=max_new_tokens)
    tokens = prepare_tokenizer(tok, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(tiny_llama_config(len(tok)))
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "안녕하세요"}]
    prompt = tok(render(tok, messages, add_generation_prompt=True), add_special_tokens=False)["input_ids"]
    reply_ids = tok(reply, add_special_tokens=False)["input_ids"]
    chain = [prompt[-1], *reply_ids, tokens.eot_id]
    chain += [i for i in range(300, 400) if i not in chain][:3]  # what would follow if it did not stop
    assert len(set(chain)) == len(chain), "a chain token repeats; pick another reply"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.normal_(0, 1)
        model.lm_head.weight.zero_()
        for cur, nxt in zip(chain, chain[1:]):
            model.lm_head.weight[nxt] = emb[cur] * 10
    return model.eval(), tok, tokens, messages, reply_ids


def build_tiny_checkpoint(root: Path, **overrides: Any):
    """A checkpoint as training leaves it, in seconds: a tiny random Llama, an untrained LoRA adapter on its
    4-bit base, the tokenizer, and personas.json for every type in seeds/. Returns its TrainConfig."""
    from train.config import TrainConfig
    from train.model import add_lora, load_base_model
    from train.personas import save_personas, seed_personas
    from train.tiny import SAMPLE_TEXTS, build_tiny_model, train_tiny_tokenizer

    tok = train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400)
    cfg = TrainConfig(**{"model": str(build_tiny_model(root / "tiny", tokenizer=tok)), "dataset": "unused",
                         "output_dir": str(root / "checkpoints"), "name": "tiny", "device": "cpu",
                         "optim": "adamw_torch", "bf16": False, "compute_dtype": "float32",
                         "gradient_checkpointing": False, "merge_dtype": "float32", "max_new_tokens": 16,
                         **overrides})
    add_lora(load_base_model(cfg, "cpu", quantized=True), cfg).save_pretrained(str(cfg.checkpoint_dir))
    tok.save_pretrained(str(cfg.checkpoint_dir))
    save_personas(cfg.checkpoint_dir, seed_personas(), source="tests")
    return cfg


# -- HTTP, for the serve tests ------------------------------------------------------------------

def http_json(base_url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
              raw: bytes | None = None, timeout: float = 60) -> tuple[int, dict[str, str], Any]:
    """One request with the standard library: (status, lower-cased headers, the JSON body or the text)."""
    import http.client
    from urllib.parse import urlsplit

    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    data = raw if raw is not None else (None if body is None else json.dumps(body, ensure_ascii=False).encode())
    conn.request(method, path, body=data, headers={"content-type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    text = resp.read().decode("utf-8")
    conn.close()
    try:
        obj = json.loads(text)
    except ValueError:
        obj = text
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, obj


def sse_payloads(text: str) -> list[Any]:
    """A server-sent event stream → each event's data: parsed JSON, or the string "[DONE]".
    Fails on anything that is not a `data:` line or the blank line after it."""
    events = []
    assert text.endswith("\n\n"), "a stream ends with a blank line"
    for block in text[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, f"not one data line: {block!r}"
        payload = block[len("data: "):]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events

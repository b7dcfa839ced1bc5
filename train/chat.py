"""Chat with the fine-tuned model as one persona: streaming, stops at the end-of-turn token.

    python -m train chat --config train/configs/bllossom-8b.yaml --mbti ENFP

The persona's system prompt is the one the model was trained with (`personas.json` in the checkpoint,
train/personas.py); a checkpoint without it falls back to `seeds/personas/` with a one-line note.
The model is the merged one when `merge` has been run (else the 4-bit base plus the adapter);
`--adapter` / `--merged` choose. Type `/reset` to start over, `/exit` (or Ctrl-D) to quit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from datagen.errors import UserError
from train.config import TrainConfig, check_runtime, resolve_device
from train.data import ChatTokens, render
from train.merge import require_adapter
from train.model import ModelSourceError, load_base_model, load_tokenizer, prepare_model_source
from train.cli import USES
from train.personas import PersonaPrompt, check_type, load_personas, persona_for, read_personas



def checkpoint_personas(cfg: TrainConfig, note: Callable[[str], None] = print) -> dict[str, PersonaPrompt]:
    """The persona prompts the checkpoint was trained with (adapter folder, else merged/), else seeds/ with a note."""
    for folder in (cfg.checkpoint_dir, cfg.merged_dir):
        saved = read_personas(folder)
        if saved is not None:
            return saved
    return load_personas(cfg.checkpoint_dir, note=note)


def load_chat_model(cfg: TrainConfig, use: str = "auto"):
    """(model, tokenizer, tokens, description): the merged model, or the base (4-bit if so trained) + adapter."""
    if use not in USES:
        raise UserError(f"use={use!r}: pick one of {', '.join(USES)}")
    check_runtime(cfg, for_training=False)
    device = resolve_device(cfg)
    merged = cfg.merged_dir
    if use == "merged" and not cfg.has_merged:
        raise ModelSourceError(f"no merged model in {merged}; run `python -m train merge --config ...` first")
    if use == "merged" or (use == "auto" and cfg.has_merged):
        tokenizer, tokens = load_tokenizer(cfg, source=merged)
        model = load_base_model(cfg, device, quantized=False, dtype=cfg.merge_dtype, source=merged)
        what = f"merged model {merged}"
    else:
        from peft import PeftModel

        adapter = require_adapter(cfg)
        prepare_model_source(cfg)
        tokenizer, tokens = load_tokenizer(cfg, source=adapter)
        base = load_base_model(cfg, device, quantized=cfg.load_in_4bit)
        model = PeftModel.from_pretrained(base, str(adapter))
        what = f"{cfg.model} + adapter {adapter}"
    model.eval()
    return model, tokenizer, tokens, what


@dataclass(frozen=True)
class Reply:
    text: str
    stopped: bool     # True when generation ended on the end-of-turn (or eos) token
    new_tokens: int   # tokens generated, the stop token included


def _streamer(tokenizer, on_text: Callable[[str], None]):
    from transformers import TextStreamer

    class CallbackStreamer(TextStreamer):
        """TextStreamer that hands each finished piece of text to `on_text` instead of printing it."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                on_text(text)

    return CallbackStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def generation_kwargs(tokens: ChatTokens, max_new_tokens: int, temperature: float, top_p: float,
                      repetition_penalty: float, min_new_tokens: int | None = None) -> dict[str, Any]:
    """`model.generate` settings shared by chat, eval and serve: stop at any end-of-turn id; greedy at
    temperature 0, else nucleus sampling with top-k off (as vLLM and the OpenAI API sample), so the
    in-process paths and a vLLM server draw from the same distribution."""
    kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, eos_token_id=list(tokens.stop_ids),
                                  pad_token_id=tokens.pad_id, do_sample=temperature > 0,
                                  repetition_penalty=repetition_penalty, use_cache=True, top_k=None)
    if min_new_tokens:
        kwargs["min_new_tokens"] = min_new_tokens
    if temperature > 0:
        kwargs.update(temperature=temperature, top_p=top_p)
    else:
        kwargs.update(temperature=None, top_p=None)  # silence "flags ignored when greedy" warnings
    return kwargs


def generate_reply(model, tokenizer, tokens: ChatTokens, messages: list[dict[str, str]], cfg: TrainConfig,
                   on_text: Callable[[str], None] | None = None) -> Reply:
    """One assistant turn for `messages` (system, user, ... , user), streamed to `on_text` as it comes."""
    import torch

    prompt = render(tokenizer, messages, add_generation_prompt=True)
    enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
    kwargs = generation_kwargs(tokens, cfg.max_new_tokens, cfg.temperature, cfg.top_p, cfg.repetition_penalty)
    if on_text is not None:
        kwargs["streamer"] = _streamer(tokenizer, on_text)
    with torch.no_grad():
        out = model.generate(**enc, **kwargs)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    stopped = bool(new) and new[-1] in tokens.stop_ids
    text = tokenizer.decode(new[:-1] if stopped else new, skip_special_tokens=True)
    return Reply(text=text.strip(), stopped=stopped, new_tokens=len(new))


def chat_loop(cfg: TrainConfig, mbti: str, use: str = "auto", input_fn: Callable[[str], str] = input,
              out: Callable[..., None] = print) -> None:
    """Interactive chat in the terminal; history kept until /reset."""
    check_type(mbti)  # a typo fails in a second
    if not cfg.checkpoint_dir.is_dir():  # merged/ lives inside it
        require_adapter(cfg)  # says which command makes one
    system = persona_for(checkpoint_personas(cfg, note=out), mbti).system_prompt  # before loading the model
    model, tokenizer, tokens, what = load_chat_model(cfg, use)
    out(f"{mbti.upper()} persona, {what}. /reset starts over, /exit quits.")
    history = [{"role": "system", "content": system}]
    while True:
        try:
            line = input_fn("나> ").strip()
        except (EOFError, KeyboardInterrupt):
            out()
            return
        if line in ("/exit", "/quit"):
            return
        if line == "/reset":
            history = history[:1]
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        out(f"{mbti.upper()}> ", end="", flush=True)
        reply = generate_reply(model, tokenizer, tokens, history, cfg, on_text=lambda t: out(t, end="", flush=True))
        out()
        if not reply.stopped:
            out(f"(cut at max_new_tokens={cfg.max_new_tokens})")
        history.append({"role": "assistant", "content": reply.text})

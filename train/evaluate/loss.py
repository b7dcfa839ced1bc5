"""Loss and perplexity of a model on the held-out chats, with the training labels.

Each chat is rendered with the checkpoint's persona system prompt and encoded by `train.data.encode_chat`,
so exactly the tokens training learns are scored: every assistant reply and its end-of-turn token (the
user turns and the system prompt are context). A chat's loss is summed over those tokens; a condition's
loss is the token-weighted mean over chats (per type likewise) and its perplexity `exp(loss)`.
"""

from __future__ import annotations

import math
from typing import Any

from datagen.schema import Dialogue


def chat_nll(model, tokenizer, tokens, messages: list[dict[str, str]], max_seq_len: int) -> tuple[float, int] | None:
    """(summed negative log-likelihood, scored tokens) of one chat; None when training would drop it too."""
    import torch

    from train.data import IGNORE, encode_chat

    enc = encode_chat(tokenizer, messages, tokens.eot_id, max_seq_len)
    if isinstance(enc, str):
        return None
    ids = torch.tensor([enc.input_ids], device=model.device)
    labels = torch.tensor(enc.labels[1:], device=model.device)  # token t is predicted at position t-1
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
    keep = labels != IGNORE
    nll = torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum")
    return float(nll), int(keep.sum())


def chat_losses(model, tokenizer, tokens, chats: list[Dialogue], systems: dict[str, str],
                max_seq_len: int) -> dict[str, list[float] | None]:
    """Held-out id → [nll, tokens] (None for a chat the training encoder drops), one forward pass each.

    One chat per pass keeps memory flat: a 128k-token vocabulary makes the logits of a long chat ~1 GB.
    """
    out: dict[str, list[float] | None] = {}
    for d in chats:
        messages = [{"role": "system", "content": systems[d.mbti]}, *(dict(m) for m in d.messages)]
        r = chat_nll(model, tokenizer, tokens, messages, max_seq_len)
        out[d.id] = None if r is None else [r[0], r[1]]
    return out


def aggregate(values: list[Any]) -> tuple[float | None, float | None]:
    """(loss, perplexity) from [nll, tokens] pairs (None entries skipped); (None, None) when nothing was scored.

    >>> loss, ppl = aggregate([[2.0, 2], [4.0, 2], None])
    >>> loss, round(ppl, 4)
    (1.5, 4.4817)
    """
    pairs = [v for v in values if v]
    n = sum(v[1] for v in pairs)
    if not n:
        return None, None
    loss = sum(v[0] for v in pairs) / n
    return loss, math.exp(min(loss, 700.0))  # exp overflows past ~709

"""Chat templates we ship, for tokenizers that have none or whose own does not fit.

`chat_template: null` in a config uses the tokenizer's own template (Bllossom ships the Llama-3
one). A name below picks one of these; any other value is read as a path to a .jinja file.

The trainer works with any template that (a) renders earlier turns the same whether or not later
turns follow, and (b) ends each assistant turn with one end-of-turn token; `train.data` checks
both at start-up and says which one failed.
"""

from __future__ import annotations

# Meta's Llama-3 Instruct template (as in Meta-Llama-3-8B-Instruct and Bllossom): every turn is
# `<|start_header_id|>ROLE<|end_header_id|>\n\nCONTENT<|eot_id|>`, the first one after the bos.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# For base models whose chat tokens were never trained (beomi/Llama-3-Open-Ko-8B: its
# `<|eot_id|>` and header rows are untouched by pretraining, and LoRA does not train embeddings)
# and for models without a template (nlpai-lab/KULLM-Polyglot-Ko-12.8B). Plain Korean role
# headers in the style of KULLM's `### 명령어:` / `### 응답:` prompts; each assistant turn ends
# with the tokenizer's eos, a token the base model has seen at every document end, so it learns
# to stop there. A bos is written first unless the tokenizer has none or uses eos as bos.
#
#     {system}\n\n### 사용자:\n{user}\n\n### 어시스턴트:\n{assistant}<eos>\n\n### 사용자:\n...
PLAIN_KO = (
    "{{ bos_token if bos_token and bos_token != eos_token else '' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] | trim + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### 사용자:\n' + message['content'] | trim + '\n\n' }}"
    "{% else %}{{ '### 어시스턴트:\n' + message['content'] | trim + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### 어시스턴트:\n' }}{% endif %}"
)

BUILTIN_TEMPLATES: dict[str, str] = {"llama3": LLAMA3, "plain-ko": PLAIN_KO}

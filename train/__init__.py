"""QLoRA fine-tuning of a Korean LLM on the MBTI persona chat dataset.

The recipe (train/finetune.py), one small named step each:

    config (config.py, configs/*.yaml) → tokenizer (chat template, end-of-turn, pad; data.py)
    → dataset (assistant-only labels over every turn, packing; data.py) → 4-bit NF4 model
    → LoRA on every linear layer but lm_head (model.py) → transformers Trainer → save

Commands (the Makefile wraps them):

    python -m train demo                                           # no key, no GPU: ~1 minute on a CPU
    python -m train train --config train/configs/bllossom-8b.yaml dataset=outputs/dataset/R
    python -m train merge --config train/configs/bllossom-8b.yaml  # → outputs/checkpoints/<name>/merged/
    python -m train chat  --config train/configs/bllossom-8b.yaml --mbti ENFP

Training writes the adapter, tokenizer, `train_config.yaml` (resolved) and `metrics.json` to
`outputs/checkpoints/<name>/`; rerunning with the same name resumes from the newest trainer
checkpoint in `trainer/`. `merge` folds the adapter into the bf16 base (never the 4-bit one).
`chat` streams replies with the persona's system prompt and stops at the end-of-turn token; it
uses the merged model when there is one (`--adapter` / `--merged` to choose).

Configs: `bllossom-8b.yaml` (default, MLP-KTLim/llama-3-Korean-Bllossom-8B, its Llama-3 template),
`open-ko-8b.yaml` (beomi/Llama-3-Open-Ko-8B, a base model: plain-ko template),
`kullm-12.8b.yaml` (nlpai-lab/KULLM-Polyglot-Ko-12.8B, no template of its own: plain-ko),
`tiny-cpu.yaml` (a tiny random Llama for tests and the demo). Any key can be overridden:
`key=value` after the command, typed against `TrainConfig`.

Several GPUs:

    accelerate launch -m train train --config train/configs/bllossom-8b.yaml       # DDP: a 4-bit copy per GPU
    accelerate launch --config_file train/accelerate/fsdp_qlora.yaml -m train train \\
        --config train/configs/kullm-12.8b.yaml quant_storage_dtype=bfloat16 gradient_checkpointing=false

FSDP shards the 4-bit base across GPUs; it needs `quant_storage_dtype=bfloat16` (checked at start).
Under DDP each process loads the model on its own GPU (LOCAL_RANK); the global batch is
GPUs x batch_size x grad_accum rows.

Offline: a Hub model is read from the Hugging Face cache (HF_HOME, default ~/.cache/huggingface);
`HF_HUB_OFFLINE=1` never touches the network; `model=/path/to/folder` uses a local copy.
"""

"""Merge the LoRA adapter into the unquantised base: `outputs/checkpoints/<name>/merged/`.

Always into a bf16 (or fp16/fp32) base loaded fresh from `model`, never into the 4-bit one the
adapter was trained on: folding the update into NF4 weights would re-quantise it and lose most of
what was learned. The result is a plain transformers model any server (vLLM, TGI, llama.cpp after
conversion) can load; its generation config stops at the end-of-turn token.

    python -m train merge --config train/configs/bllossom-8b.yaml
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from train.config import TrainConfig, check_runtime, resolve_device
from train.model import ModelSourceError, load_base_model, load_tokenizer, prepare_model_source
from train.personas import PERSONAS_FILE


def require_adapter(cfg: TrainConfig) -> Path:
    adapter = cfg.checkpoint_dir
    if not cfg.has_adapter:
        raise ModelSourceError(f"no adapter in {adapter}; train first (python -m train train --config ...) or set "
                               "name=/output_dir= to the checkpoint you trained")
    return adapter


def merge(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Load the base in `merge_dtype`, apply the adapter, fold it in, save model + tokenizer."""
    from peft import PeftModel

    check_runtime(cfg, for_training=False)
    adapter = require_adapter(cfg)
    prepare_model_source(cfg)
    tokenizer, tokens = load_tokenizer(cfg, source=adapter)
    base = load_base_model(cfg, resolve_device(cfg), quantized=False, dtype=cfg.merge_dtype)
    model = PeftModel.from_pretrained(base, str(adapter))
    merged = model.merge_and_unload()
    merged.config.use_cache = True  # training turned it off; inference wants it
    merged.generation_config.eos_token_id = list(tokens.stop_ids)
    merged.generation_config.pad_token_id = tokens.pad_id
    out = cfg.merged_dir
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    for name in ("train_config.yaml", PERSONAS_FILE):  # the merged folder is self-contained
        if (adapter / name).is_file():
            shutil.copy(adapter / name, out / name)
    log(f"merged {adapter} into the {cfg.merge_dtype} base {cfg.model}: {out}")
    return out

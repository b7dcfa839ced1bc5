"""Loading the tokenizer and the model: 4-bit NF4 base (QLoRA) or bf16 base, LoRA on all linear layers.

A model that cannot be found is reported in one line, before anything is downloaded or built,
saying where we looked (the local folder or the Hugging Face cache under HF_HOME) and what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from datagen.errors import UserError
from train.config import TrainConfig
from train.data import ChatTokens, prepare_tokenizer


class ModelSourceError(UserError):
    """The base model is neither a local folder nor reachable (Hub or cache)."""


def torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "uint8": torch.uint8}[name]


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "") or os.environ.get("TRANSFORMERS_OFFLINE", "")
    return bool(constants.HF_HUB_OFFLINE) or env.strip().lower() in ("1", "true", "yes", "on")


def _looks_local(model: str) -> bool:
    """A Hub id is `name` or `owner/name`; anything else (./x, /x, a/b/c) can only be a folder."""
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or os.sep != "/" and os.sep in model


def check_model_source(model: str) -> None:
    """Raise `ModelSourceError` (one line: where we looked, what to do) unless `model` can be loaded."""
    from huggingface_hub import constants, try_to_load_from_cache

    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model folder {path} has no config.json; point model= at a folder written by "
                                   "save_pretrained (or a Hub id)")
        return
    if _looks_local(model):
        raise ModelSourceError(f"model folder {path} does not exist; set model= to a local folder or a Hub id "
                               "such as MLP-KTLim/llama-3-Korean-Bllossom-8B")
    cache = constants.HF_HUB_CACHE
    if isinstance(try_to_load_from_cache(model, "config.json", cache_dir=cache), str):
        return
    if _offline():
        raise ModelSourceError(f"model {model} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE is set; "
                               f"download it once where there is network (`hf download {model}`), point HF_HOME at "
                               "the cache that holds it, or set model=/path/to/local/folder")
    problem = _hub_problem(model)
    if problem:
        raise ModelSourceError(f"cannot load model {model}: it is not in the Hugging Face cache ({cache}) and "
                               f"{problem}; download it once with `hf download {model}`, point HF_HOME at a cache "
                               "that holds it, or set model=/path/to/local/folder")


def _hub_problem(model: str) -> str | None:
    """None when the Hub serves `model`'s config.json; else why not. One request, no retries: a
    machine without network learns it in a second, not after huggingface_hub's ~25 s of back-off."""
    import logging

    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers, http_backoff

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # it logs the failed request itself; our one line says it better
    try:
        r = http_backoff("HEAD", hf_hub_url(model, "config.json"), max_retries=0, headers=build_hf_headers(),
                         timeout=10)
    except Exception as e:  # connection, DNS, proxy, TLS: the transport's own exception types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return f"the Hub is unreachable ({first[:120]})"
    finally:
        hub_log.setLevel(level)
    if r.status_code in (401, 403):
        return "the Hub refused it (a gated or private model: accept its license on its page and set HF_TOKEN)"
    if r.status_code == 404:
        return "the Hub has no such model (check the id)"
    if r.status_code >= 400:
        return f"the Hub answered HTTP {r.status_code}"
    return None


def prepare_model_source(cfg: TrainConfig) -> None:
    """Build the tiny random model when the config asks for it, else check that the model is reachable."""
    if cfg.tiny_random_init and not Path(cfg.model).exists():
        from train.tiny import build_tiny_model

        build_tiny_model(cfg.model, seed=cfg.seed)
    check_model_source(cfg.model)


def load_tokenizer(cfg: TrainConfig, source: str | Path | None = None) -> tuple[object, ChatTokens]:
    """The tokenizer of `source` (default: the base model) with chat template, end-of-turn and pad resolved."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source or cfg.model))
    except OSError as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise ModelSourceError(f"cannot load the tokenizer of {source or cfg.model}: {first}") from None
    return tokenizer, prepare_tokenizer(tokenizer, cfg)


def quantization_config(cfg: TrainConfig):
    """NF4 with double quantisation and bf16 compute: the QLoRA recipe (Dettmers et al., 2023)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant_type,
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(cfg.compute_dtype),
        bnb_4bit_quant_storage=torch_dtype(cfg.quant_storage_dtype),
    )


def device_map(device: str):
    """One whole model per process: the CPU, this process's GPU under DDP, or None under FSDP (it shards)."""
    if device == "cpu":
        return {"": "cpu"}
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true"):
        return None
    return {"": int(os.environ.get("LOCAL_RANK", "0"))}


def load_base_model(cfg: TrainConfig, device: str, quantized: bool, dtype: str | None = None,
                    source: str | Path | None = None):
    """The base model: 4-bit NF4 for training and adapter chat, unquantised `dtype` for merging."""
    from transformers import AutoModelForCausalLM

    kwargs = dict(dtype=torch_dtype(dtype or cfg.compute_dtype), attn_implementation=cfg.attn_implementation,
                  device_map=device_map(device))
    if quantized:
        kwargs["quantization_config"] = quantization_config(cfg)
    try:
        return AutoModelForCausalLM.from_pretrained(str(source or cfg.model), **kwargs)
    except OSError as e:
        raise ModelSourceError(f"cannot load model {source or cfg.model}: {str(e).splitlines()[0]}") from None


def keep_4bit_layers_trainable_on_cpu(model) -> int:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference during evaluation.

    bitsandbytes 0.50 repacks a Linear4bit's weight into an AVX512-BF16 inference layout the first
    time it runs in eval mode on such a CPU, and never back; later training forwards then go through
    a kernel without autograd, and the gradient through every frozen 4-bit layer is silently lost
    (we measured LoRA gradients off by ~80% after one `evaluate()`). Returns the layers changed.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def add_lora(model, cfg: TrainConfig):
    """Freeze the base, prepare a k-bit base for training, and wrap it with LoRA adapters."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    sharded = cfg.quant_storage_dtype != "uint8"  # FSDP-QLoRA: every param must stay in one float dtype
    if quantized and not sharded:
        # Freezes the base and upcasts norms/embeddings to fp32 for stable training. Checkpointing is
        # switched on below instead: peft would use the reentrant variant, which needs input grads.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if quantized:
        keep_4bit_layers_trainable_on_cpu(model)
    if cfg.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5
            enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # With a KV cache the model ignores the per-chat position-id resets of packed rows and lets
    # attention cross chat boundaries (transformers only builds the block mask without a cache).
    model.config.use_cache = False
    targets = "all-linear" if cfg.lora_target_modules == "all-linear" else [
        m.strip() for m in cfg.lora_target_modules.split(",")]
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")  # peft's all-linear leaves out lm_head
    return get_peft_model(model, lora)

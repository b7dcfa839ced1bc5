"""The training config: one frozen dataclass, mirrored one to one by `train/configs/*.yaml`.

Every field has a default and a docstring (the string under it). A YAML file sets some or
all fields; `key=value` overrides on the command line win over the file:

>>> cfg = load_config("train/configs/tiny-cpu.yaml", ["lora_r=4", "learning_rate=1e-3"])
>>> cfg.lora_r, cfg.learning_rate
(4, 0.001)

All problems (unknown keys, values of the wrong type, values out of range) are collected and
raised once as a `ConfigError`, each naming the fix, before any model or data is touched.
`check_runtime` adds the problems that depend on the machine (a GPU-only setting without a GPU).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from datagen.errors import UserError
from datagen.overrides import coerce, parse_overrides
from train.templates import BUILTIN_TEMPLATES

DTYPES = ("bfloat16", "float16", "float32")
DEVICES = ("auto", "cpu", "cuda")
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2", "flash_attention_3")


class ConfigError(UserError):
    """One or more config problems; `problems` holds one line each, each naming the fix."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one fine-tuning run needs. The YAML files in train/configs/ mirror these fields."""

    # -- run ------------------------------------------------------------------------------------
    name: str = "bllossom-8b-mbti"
    """Checkpoint name: adapter, tokenizer and resolved config go to `<output_dir>/<name>/`."""
    output_dir: str = "outputs/checkpoints"
    """Folder holding one sub-folder per checkpoint name (outputs/ is ignored by git)."""
    seed: int = 42
    """Seed for LoRA init, data order and dropout: the same config and data give the same adapter."""
    device: str = "auto"
    """`auto` (CUDA if present, else CPU), `cpu` or `cuda`."""

    # -- model and tokenizer ---------------------------------------------------------------------
    model: str = "MLP-KTLim/llama-3-Korean-Bllossom-8B"
    """Base model: a Hugging Face Hub id (downloaded once into the HF_HOME cache) or a local folder."""
    tiny_random_init: bool = False
    """If `model` is a folder that does not exist, build a tiny random Llama there (tests and demo; no download)."""
    chat_template: str | None = None
    """None: the tokenizer's own; `llama3` or `plain-ko` (train/templates.py); or a path to a .jinja file."""
    eot_token: str | None = None
    """The token that ends an assistant turn; None: read off the chat template (`<|eot_id|>` for Llama-3)."""
    pad_token: str | None = None
    """Padding token; None: picked automatically and never the end-of-turn token, so stopping is learned."""
    attn_implementation: str = "sdpa"
    """`sdpa` (any device), `eager`, or `flash_attention_2` (GPU and the flash-attn package)."""

    # -- 4-bit base (QLoRA) ----------------------------------------------------------------------
    load_in_4bit: bool = True
    """Load the frozen base in 4 bits (QLoRA). False: a bf16 base under the LoRA (about 4x the memory)."""
    quant_type: str = "nf4"
    """4-bit data type: `nf4` (QLoRA paper: best for normally distributed weights) or `fp4`."""
    double_quant: bool = True
    """Quantise the quantisation constants too: about 0.4 bit/param saved (0.5 GB on an 8B model)."""
    compute_dtype: str = "bfloat16"
    """Dtype the 4-bit weights are dequantised to for each matmul."""
    quant_storage_dtype: str = "uint8"
    """Storage dtype of the packed 4-bit weights; `bfloat16` for FSDP (it shards only float tensors)."""

    # -- LoRA ------------------------------------------------------------------------------------
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scale numerator: the update is scaled by alpha / r."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_target_modules: str = "all-linear"
    """`all-linear`: every linear layer except the output head (QLoRA paper); or comma-separated names."""

    # -- data ------------------------------------------------------------------------------------
    dataset: str = "outputs/dataset/mbti-ko"
    """A `datagen publish` folder, a `save_to_disk` folder, a .jsonl/.parquet file, or a Hub dataset id."""
    train_split: str = "train"
    """Split to train on."""
    eval_split: str = "test"
    """Split to evaluate on; evaluation is skipped (and said so) when the dataset lacks it."""
    max_seq_len: int = 2048
    """Longest sample in tokens; longer chats are cut after the last whole assistant turn that fits."""
    packing: bool = True
    """Pack chats into rows of max_seq_len (best-fit decreasing) and train padding-free, position ids reset per chat."""
    max_train_samples: int | None = None
    """Use only the first N training chats (smoke runs); None: all."""
    preprocess_workers: int = 0
    """Processes that encode the chats (datasets.map); 0: one per CPU core (small splits use fewer)."""
    data_cache_dir: str | None = None
    """Where encoded splits are cached by a fingerprint of data + tokenizer + template + length (a restart or a
    second GPU process loads them); None: `<output_dir>/../cache/encoded` (outputs/cache/encoded)."""

    # -- training --------------------------------------------------------------------------------
    epochs: float = 3.0
    """Passes over the training set (ignored when max_steps > 0)."""
    max_steps: int = -1
    """Stop after this many optimiser steps; -1: run `epochs`."""
    time_limit_minutes: float | None = None
    """Stop (and save) after this many minutes of training even before max_steps; None: no limit."""
    batch_size: int = 1
    """Rows per device per micro-step (a packed row holds several chats; padding-free rows are flattened into one)."""
    grad_accum: int = 16
    """Steps of gradient accumulation per optimiser step."""
    learning_rate: float = 2e-4
    """Peak learning rate (QLoRA paper: 2e-4 for 7B-13B models)."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule after warmup (a transformers SchedulerType)."""
    warmup_ratio: float = 0.03
    """Share of all steps spent warming up linearly from 0."""
    weight_decay: float = 0.0
    """AdamW weight decay on the LoRA weights."""
    max_grad_norm: float = 0.3
    """Gradient clipping (QLoRA paper: 0.3)."""
    optim: str = "paged_adamw_8bit"
    """Optimiser (transformers OptimizerNames). `paged_*` and `*_8bit` need a GPU; `adamw_torch` runs anywhere."""
    bf16: bool = True
    """bf16 mixed precision for activations; needs a GPU or a CPU with bf16 (AVX512-BF16 / AMX)."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: much less memory for about 30% more compute."""
    logging_steps: int = 10
    """Log the training loss every N optimiser steps."""
    eval_steps: int = 100
    """Evaluate on the eval split every N optimiser steps (and at the end)."""
    save_steps: int = 200
    """Write a resumable trainer checkpoint every N optimiser steps."""
    save_total_limit: int = 2
    """Keep only the newest N trainer checkpoints."""
    report_to: str = "none"
    """Experiment tracker (`none`, `tensorboard`, `wandb`, ...)."""

    # -- merge and chat --------------------------------------------------------------------------
    merge_dtype: str = "bfloat16"
    """Dtype of the base the adapter is merged into (never the 4-bit base: merging there loses quality)."""
    max_new_tokens: int = 256
    """Longest reply `chat` generates; replies normally end earlier, at the end-of-turn token."""
    temperature: float = 0.7
    """Sampling temperature for `chat`; 0 means greedy."""
    top_p: float = 0.9
    """Nucleus sampling for `chat`."""
    repetition_penalty: float = 1.1
    """Penalty on repeated tokens in `chat` (1.0 = none)."""

    def __post_init__(self) -> None:
        problems = _value_problems(self)
        if problems:
            raise ConfigError(problems)

    # -- derived paths -----------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        """Where the adapter, tokenizer and resolved config are saved."""
        return Path(self.output_dir) / self.name

    @property
    def data_cache_path(self) -> Path:
        """Where encoded splits are cached (see `data_cache_dir`)."""
        if self.data_cache_dir is not None:
            return Path(self.data_cache_dir)
        return Path(self.output_dir).parent / "cache" / "encoded"

    @property
    def merged_dir(self) -> Path:
        """Where `merge` writes the full bf16 model."""
        return self.checkpoint_dir / "merged"

    @property
    def has_adapter(self) -> bool:
        """Whether training left an adapter in `checkpoint_dir` (what chat, eval, merge and serve look for)."""
        return (self.checkpoint_dir / "adapter_config.json").is_file()

    @property
    def has_merged(self) -> bool:
        """Whether `merge` left a full model in `merged_dir`."""
        return (self.merged_dir / "config.json").is_file()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def field_docs() -> dict[str, str]:
    """The docstring under each field, read from the source: `{"lora_r": "LoRA rank.", ...}`."""
    tree = ast.parse(inspect.getsource(TrainConfig))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:]):
        if isinstance(prev, ast.AnnAssign) and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            docs[prev.target.id] = " ".join(str(node.value.value).split())  # type: ignore[attr-defined]
    return docs


def valid_keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


# -- value checks ------------------------------------------------------------------------------

def _value_problems(c: TrainConfig) -> list[str]:
    """Range and choice checks; one line per problem, each saying what to set."""
    p: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            p.append(msg)

    need(bool(c.name) and "/" not in c.name and c.name not in (".", ".."),
         f"name={c.name!r}: use a plain folder name like 'bllossom-8b-mbti'")
    need(bool(c.model), "model is empty: set a Hub id (MLP-KTLim/llama-3-Korean-Bllossom-8B) or a local folder")
    need(bool(c.dataset), "dataset is empty: set a `datagen publish` folder or a Hub dataset id")
    need(c.device in DEVICES, f"device={c.device!r}: use one of {', '.join(DEVICES)}")
    need(c.attn_implementation in ATTN_IMPLEMENTATIONS,
         f"attn_implementation={c.attn_implementation!r}: use one of {', '.join(ATTN_IMPLEMENTATIONS)}")
    need(c.quant_type in ("nf4", "fp4"), f"quant_type={c.quant_type!r}: use nf4 or fp4")
    for key in ("compute_dtype", "merge_dtype"):
        need(getattr(c, key) in DTYPES, f"{key}={getattr(c, key)!r}: use one of {', '.join(DTYPES)}")
    need(c.quant_storage_dtype in DTYPES + ("uint8",),
         f"quant_storage_dtype={c.quant_storage_dtype!r}: use uint8 (single GPU, DDP) or bfloat16 (FSDP)")
    if c.chat_template is not None and c.chat_template not in BUILTIN_TEMPLATES:
        need(Path(c.chat_template).is_file(),
             f"chat_template={c.chat_template!r}: not a built-in ({', '.join(BUILTIN_TEMPLATES)}) and no such "
             "file; give a .jinja path or null for the tokenizer's own")
    for key in ("lora_r", "lora_alpha", "max_seq_len", "batch_size", "grad_accum", "logging_steps",
                "eval_steps", "save_steps", "save_total_limit", "max_new_tokens"):
        need(getattr(c, key) > 0, f"{key}={getattr(c, key)}: must be a positive integer")
    need(c.max_seq_len >= 16, f"max_seq_len={c.max_seq_len}: too short to hold one chat turn; use 512 or more")
    need(0 <= c.lora_dropout < 1, f"lora_dropout={c.lora_dropout}: must be in [0, 1)")
    need(0 <= c.warmup_ratio < 1, f"warmup_ratio={c.warmup_ratio}: must be in [0, 1)")
    need(c.learning_rate > 0, f"learning_rate={c.learning_rate}: must be > 0")
    need(c.weight_decay >= 0 and c.max_grad_norm > 0, "weight_decay must be >= 0 and max_grad_norm > 0")
    need(c.max_steps > 0 or c.epochs > 0, "set epochs > 0 or max_steps > 0")
    need(c.time_limit_minutes is None or c.time_limit_minutes > 0,
         f"time_limit_minutes={c.time_limit_minutes}: must be positive or null")
    need(c.preprocess_workers >= 0, f"preprocess_workers={c.preprocess_workers}: 0 (one per core) or more")
    need(c.max_train_samples is None or c.max_train_samples > 0,
         f"max_train_samples={c.max_train_samples}: must be positive or null")
    need(c.temperature >= 0 and 0 < c.top_p <= 1 and c.repetition_penalty > 0,
         "temperature must be >= 0, top_p in (0, 1], repetition_penalty > 0")
    if c.lora_target_modules != "all-linear":
        need(all(m.strip() for m in c.lora_target_modules.split(",")),
             f"lora_target_modules={c.lora_target_modules!r}: 'all-linear' or comma-separated module names")
    p.extend(_name_problems(c))
    return p


def _name_problems(c: TrainConfig) -> list[str]:
    """Optimiser and scheduler names, checked against the installed transformers (imported lazily)."""
    try:
        from transformers import SchedulerType
        from transformers.training_args import OptimizerNames
    except ImportError:  # the train extra is not installed; the recipe will say so when it starts
        return []
    p = []
    optims = [o.value for o in OptimizerNames]
    if c.optim not in optims:
        close = difflib.get_close_matches(c.optim, optims, n=3)
        p.append(f"optim={c.optim!r} is not a transformers optimiser; try {', '.join(close or ['adamw_torch'])}")
    schedulers = [s.value for s in SchedulerType]
    if c.lr_scheduler not in schedulers:
        p.append(f"lr_scheduler={c.lr_scheduler!r}: use one of {', '.join(schedulers)}")
    return p


# -- loading and overrides ---------------------------------------------------------------------

def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _unknown_key_problem(key: str, where: str) -> str:
    keys = valid_keys()
    close = difflib.get_close_matches(key, keys, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown config key '{key}' in {where}{hint}; valid keys: {', '.join(keys)}"


def build_config(values: dict[str, Any], where: str = "config") -> TrainConfig:
    """A config from a flat dict; every problem is collected and raised once as `ConfigError`."""
    types_ = _field_types()
    problems = []
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key not in types_:
            problems.append(_unknown_key_problem(key, where))
            continue
        try:
            clean[key] = coerce(key, value, types_[key])
        except ValueError as e:
            problems.append(str(e))
    try:  # range checks run on the well-typed values even when others failed, so all come out at once
        cfg = TrainConfig(**clean)
    except ConfigError as e:
        problems.extend(e.problems)
    if problems:
        raise ConfigError(problems)
    return cfg


SHIPPED_CONFIGS = Path(__file__).resolve().parent / "configs"


def config_path(path: str | Path) -> Path:
    """The config file a `--config` names: the path as given when it exists, else the shipped config of
    that file name (`train/configs/bllossom-8b.yaml`, `bllossom-8b.yaml` and `bllossom-8b` all find it when
    the package is installed and the command runs outside the repository)."""
    given = Path(path)
    if given.is_file():
        return given
    name = given.name if given.suffix == ".yaml" else f"{given.name}.yaml"
    shipped = SHIPPED_CONFIGS / name
    return shipped if shipped.is_file() else given


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = config_path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in SHIPPED_CONFIGS.glob("*.yaml"))
        raise ConfigError([f"config file {path} does not exist; the shipped ones are in train/configs/: "
                           f"{', '.join(shipped)}"])
    try:
        obj = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError([f"{path}{line}: not valid YAML ({getattr(e, 'problem', e)})"]) from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ConfigError([f"{path}: expected a mapping of config keys (key: value per line)"])
    return obj


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """YAML file (optional) + `key=value` overrides → a checked `TrainConfig`."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    if path is not None:
        try:
            file_values = read_yaml(path)
        except ConfigError as e:
            problems.extend(e.problems)
            file_values = {}
        for key in file_values:
            if key not in _field_types():
                problems.append(_unknown_key_problem(key, str(path)))
        values.update({k: v for k, v in file_values.items() if k in _field_types()})
    over, over_problems = parse_overrides(overrides or [])
    problems.extend(over_problems)
    for key in over:
        if key not in _field_types():
            problems.append(_unknown_key_problem(key, "the command line"))
    values.update({k: v for k, v in over.items() if k in _field_types()})
    try:
        cfg = build_config(values, where=str(path or "config"))
    except ConfigError as e:
        raise ConfigError(problems + e.problems) from None
    if problems:
        raise ConfigError(problems)
    return cfg


def save_config(cfg: TrainConfig, path: str | Path, extra: dict[str, Any] | None = None) -> None:
    """The resolved config as YAML beside a checkpoint (no secrets live in the config)."""
    data = cfg.to_dict()
    text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
    if extra:
        text += "# resolved at training time\n" + yaml.safe_dump(extra, allow_unicode=True, sort_keys=False)
    Path(path).write_text(text, encoding="utf-8")


# -- machine checks ----------------------------------------------------------------------------

def cpu_has_bf16() -> bool:
    """True where bf16 matmuls run natively on this CPU (AVX512-BF16, AMX, or ARM with bf16)."""
    import platform

    import torch

    if platform.machine().lower() in ("arm64", "aarch64"):
        return True
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_device(cfg: TrainConfig) -> str:
    import torch

    if cfg.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.device


def check_runtime(cfg: TrainConfig, for_training: bool = True) -> None:
    """Settings this machine cannot run (GPU-only ones without a GPU), each with the fix, raised once."""
    import torch

    has_cuda = torch.cuda.is_available()
    problems = []
    if cfg.device == "cuda" and not has_cuda:
        problems.append("device=cuda but no CUDA GPU is visible; set device=cpu (or auto)")
    on_cpu = resolve_device(cfg) == "cpu"
    if on_cpu:
        if for_training and (cfg.optim.startswith("paged_") or "8bit" in cfg.optim or "bnb" in cfg.optim):
            problems.append(f"optim={cfg.optim} needs a CUDA GPU (bitsandbytes paged/8-bit optimiser); "
                            "on the CPU set optim=adamw_torch")
        if not cpu_has_bf16():
            if for_training and cfg.bf16:
                problems.append("bf16=true needs a GPU or a CPU with bf16 support (AVX512-BF16/AMX), which this "
                                "one lacks; set bf16=false")
            if cfg.load_in_4bit and cfg.compute_dtype == "bfloat16":
                problems.append("compute_dtype=bfloat16 needs a GPU or a CPU with bf16 support, which this one "
                                "lacks; set compute_dtype=float32")
        if cfg.attn_implementation.startswith("flash_attention"):
            problems.append(f"attn_implementation={cfg.attn_implementation} needs a CUDA GPU; set "
                            "attn_implementation=sdpa")
    elif cfg.attn_implementation.startswith("flash_attention"):
        import importlib.util

        pkg = "flash_attn" if cfg.attn_implementation == "flash_attention_2" else "flash_attn_interface"
        if importlib.util.find_spec(pkg) is None:
            problems.append(f"attn_implementation={cfg.attn_implementation} needs the {pkg} package; "
                            "pip install flash-attn --no-build-isolation, or set attn_implementation=sdpa")
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes", "on")
    if fsdp and cfg.load_in_4bit and cfg.quant_storage_dtype != "bfloat16":
        problems.append("FSDP + QLoRA shards only float tensors: set quant_storage_dtype=bfloat16 "
                        "(see train/accelerate/fsdp_qlora.yaml)")
    if problems:
        raise ConfigError(problems)

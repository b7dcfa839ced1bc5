"""The QLoRA recipe, top to bottom: config → tokenizer → dataset → 4-bit model → LoRA → train → save.

Every problem a user can fix (config, machine, model source, dataset) is raised before the model
is loaded. The libraries do the rest: transformers' `Trainer` (cosine schedule with warmup,
paged 8-bit AdamW, evaluation, checkpoints, DDP/FSDP under `accelerate launch`), peft (k-bit
preparation, LoRA), TRL (best-fit-decreasing packing, padding-free collation); only the loss mask
is ours (train/data.py says why).

    python -m train train --config train/configs/bllossom-8b.yaml dataset=outputs/dataset/R
    accelerate launch -m train train --config ...            # DDP on every visible GPU

Output in `outputs/checkpoints/<name>/`: the LoRA adapter, the tokenizer (with its chat template and
pad token), `personas.json` (the system prompts trained on, train/personas.py), `train_config.yaml`
(resolved) and `metrics.json`; resumable trainer checkpoints in
`trainer/`. A rerun with the same name resumes from the newest of those.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from train.config import TrainConfig, check_runtime, resolve_device, save_config
from train.data import ChatTokens, PreparedData, build_datasets, make_collator
from train.model import add_lora, load_base_model, load_tokenizer, prepare_model_source
from train.personas import save_personas


@dataclass
class FinetuneResult:
    checkpoint_dir: Path
    log_history: list[dict[str, Any]]  # the trainer's log: loss per logging step, eval loss
    metrics: dict[str, Any]
    model: Any = None                  # the trained PeftModel, still in memory


def training_arguments(cfg: TrainConfig, device: str, has_eval: bool):
    """The config as transformers `TrainingArguments` (one place, so the mapping is easy to read)."""
    from transformers import TrainingArguments

    params = inspect.signature(TrainingArguments.__init__).parameters
    # transformers 5 takes a warmup ratio as a float warmup_steps; 4.x had warmup_ratio.
    warmup = {"warmup_ratio": cfg.warmup_ratio} if "warmup_ratio" in params else {"warmup_steps": cfg.warmup_ratio}
    return TrainingArguments(
        output_dir=str(cfg.checkpoint_dir / "trainer"),
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        optim=cfg.optim,
        bf16=cfg.bf16,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        data_seed=cfg.seed,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        use_cpu=device == "cpu",
        remove_unused_columns=False,      # the collator needs `seq_lengths`, which forward() does not take
        ddp_find_unused_parameters=False,  # frozen base + checkpointing: DDP must not look for unused params
        **warmup,
    )


def time_limit(minutes: float):
    """A callback that ends training (cleanly: the adapter is still saved) after `minutes`."""
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.deadline = time.time() + minutes * 60

        def on_step_end(self, args, state, control, **kwargs):
            if time.time() >= self.deadline:
                control.should_training_stop = True

    return TimeLimit()


def make_trainer(cfg: TrainConfig, model, tokenizer, tokens: ChatTokens, data: PreparedData, device: str):
    from transformers import Trainer

    return Trainer(
        model=model,
        args=training_arguments(cfg, device, data.eval is not None),
        train_dataset=data.train,
        eval_dataset=data.eval,
        data_collator=make_collator(tokens, cfg.packing),
        processing_class=tokenizer,
        callbacks=[time_limit(cfg.time_limit_minutes)] if cfg.time_limit_minutes else None,
    )


def last_trainer_checkpoint(cfg: TrainConfig) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    folder = cfg.checkpoint_dir / "trainer"
    return get_last_checkpoint(str(folder)) if folder.is_dir() else None


def save_checkpoint(cfg: TrainConfig, trainer, tokenizer, tokens: ChatTokens, metrics: dict[str, Any],
                    personas: dict[str, Any] | None = None) -> Path:
    """Adapter + tokenizer + persona prompts + resolved config + metrics into `<output_dir>/<name>/`."""
    out = cfg.checkpoint_dir
    trainer.save_model(str(out))  # a PeftModel saves only the adapter
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
        if personas:
            save_personas(out, personas, source=cfg.dataset)
        resolved = dataclasses.replace(cfg, eot_token=tokens.eot, pad_token=tokens.pad)
        save_config(resolved, out / "train_config.yaml")
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def finetune(cfg: TrainConfig, log: Callable[[str], None] = print) -> FinetuneResult:
    """Train a LoRA adapter on `cfg.dataset` and save it; returns where, and the loss history."""
    from transformers import set_seed

    # 1. config and machine checks, model source: fail fast with one line each
    check_runtime(cfg)
    device = resolve_device(cfg)
    prepare_model_source(cfg)
    # 2. tokenizer: chat template, end-of-turn token, a pad token that is not end-of-turn
    tokenizer, tokens = load_tokenizer(cfg)
    log(f"tokenizer: end of turn {tokens.eot} (id {tokens.eot_id}), pad {tokens.pad} (id {tokens.pad_id})")
    # 3. dataset: render, mask, drop and count, pack
    data = build_datasets(cfg, tokenizer, tokens)
    for line in data.report:
        log(line)
    # 4. model: frozen base in 4-bit NF4 (or bf16), then 5. LoRA on every linear layer but the head
    started = time.time()
    set_seed(cfg.seed)
    model = load_base_model(cfg, device, quantized=cfg.load_in_4bit)
    model.config.pad_token_id = model.generation_config.pad_token_id = tokens.pad_id
    model = add_lora(model, cfg)
    trainable, total = model.get_nb_trainable_parameters()
    log(f"model: {cfg.model} on {device}, {'4-bit ' + cfg.quant_type if cfg.load_in_4bit else cfg.compute_dtype} "
        f"base; LoRA r={cfg.lora_r}: {trainable:,} trainable of {total:,} parameters")
    # 6. train (resuming from the newest trainer checkpoint of this name, if any)
    trainer = make_trainer(cfg, model, tokenizer, tokens, data, device)
    resume = last_trainer_checkpoint(cfg)
    if resume:
        log(f"resuming from {resume}")
    result = trainer.train(resume_from_checkpoint=resume)
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "steps": result.global_step}
    if data.eval is not None:
        metrics.update(trainer.evaluate())
    metrics["seconds"] = round(time.time() - started, 1)
    # 7. save adapter, tokenizer, resolved config
    out = save_checkpoint(cfg, trainer, tokenizer, tokens, metrics, data.personas)
    log(f"saved adapter to {out} ({result.global_step} steps, train loss {result.training_loss:.3f}"
        + (f", eval loss {metrics['eval_loss']:.3f}" if "eval_loss" in metrics else "") + ")")
    return FinetuneResult(checkpoint_dir=out, log_history=list(trainer.state.log_history), metrics=metrics,
                          model=trainer.model)

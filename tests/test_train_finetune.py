"""train/finetune.py: the real bitsandbytes 4-bit QLoRA path overfits 8 chats on the CPU, and what it saves reloads."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file

from train.config import load_config
from train.data import DataError
from train.finetune import finetune
from train.model import keep_4bit_layers_trainable_on_cpu, load_base_model, load_tokenizer
from train.chat import checkpoint_personas
from train.personas import PERSONAS_FILE, seed_personas
from train.tiny import (SAMPLE_CHATS, SAMPLE_TEXTS, SYSTEM_ENFP, SYSTEM_ISTJ, build_tiny_model, seed_texts,
                        train_tiny_tokenizer)

TINY = Path(__file__).resolve().parent.parent / "train" / "configs" / "tiny-cpu.yaml"


def write_dataset(path: Path, train, test=None) -> Path:
    def rows(chats):  # the published shape: mbti beside messages (the tiny chats are ISTJ or ENFP)
        return {"mbti": ["ISTJ" if c[0]["content"] == SYSTEM_ISTJ else "ENFP" for c in chats], "messages": chats}

    splits = {"train": Dataset.from_dict(rows(train))}
    if test:
        splits["test"] = Dataset.from_dict(rows(test))
    DatasetDict(splits).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One training run shared by the tests below: 40 steps on 8 chats (about 5 s)."""
    root = tmp_path_factory.mktemp("ft")
    model_dir = build_tiny_model(root / "tiny", tokenizer=train_tiny_tokenizer(seed_texts() + SAMPLE_TEXTS))
    data = write_dataset(root / "data", SAMPLE_CHATS, SAMPLE_CHATS[:2])
    cfg = load_config(TINY, [f"model={model_dir}", f"dataset={data}", f"output_dir={root / 'ckpt'}", "max_steps=40",
                             "learning_rate=1e-2", "lora_r=16", "lora_alpha=32", "logging_steps=5", "eval_steps=20",
                             "batch_size=2", "max_seq_len=512", "time_limit_minutes=null"])
    lines: list[str] = []
    result = finetune(cfg, log=lines.append)
    return cfg, result, lines


def test_loss_falls_when_overfitting_eight_chats(run):
    _, result, _ = run
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.4, losses
    evals = [h["eval_loss"] for h in result.log_history if "eval_loss" in h]
    assert evals[-1] < evals[0]


def test_the_trained_base_is_4bit_and_unchanged(run):
    cfg, result, _ = run
    fresh = load_base_model(cfg, "cpu", quantized=True)
    trained = dict(result.model.base_model.model.named_parameters())
    checked = 0
    for name, p in fresh.named_parameters():
        key = name.replace(".weight", ".base_layer.weight") if name.split(".")[-2] in (
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj") else name
        t = trained[key]
        assert not t.requires_grad
        if p.dtype == torch.uint8:  # packed NF4: byte for byte
            assert torch.equal(t.data, p.data), name
        else:                       # norms, embeddings, head: upcast to fp32 by k-bit preparation, same values
            assert torch.equal(t.data, p.data.to(t.dtype)), name
        checked += 1
    assert checked == len(list(fresh.parameters()))


def test_the_adapter_weights_changed(run):
    _, result, _ = run
    lora_b = {n: p for n, p in result.model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b.values())  # lora_B starts at exactly zero


def test_what_is_saved_and_the_resolved_config(run):
    cfg, result, lines = run
    out = result.checkpoint_dir
    assert out == cfg.checkpoint_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja",
                 "train_config.yaml", "metrics.json", PERSONAS_FILE):
        assert (out / name).is_file(), name
    saved = load_config(out / "train_config.yaml")
    assert (saved.eot_token, saved.pad_token, saved.lora_r) == ("<|eot_id|>", "<|finetune_right_pad_id|>", 16)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 40 and metrics["eval_loss"] > 0
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all("lora_" in k for k in weights) and not any("lm_head" in k for k in weights)
    assert lines[0].startswith("tokenizer: end of turn <|eot_id|>")
    assert any(line.startswith("train: kept 8/8 chats") for line in lines)
    assert any(line.startswith("packed 8 chats into ") for line in lines)
    assert lines[-1].startswith(f"saved adapter to {out} (40 steps")


def test_the_checkpoint_holds_the_persona_prompts_it_trained_on(run, tmp_path):
    cfg, _, lines = run
    saved = json.loads((cfg.checkpoint_dir / PERSONAS_FILE).read_text(encoding="utf-8"))
    assert {t: (p["system_prompt"], p["chats"]) for t, p in saved["personas"].items()} == {
        "ENFP": (SYSTEM_ENFP, 4), "ISTJ": (SYSTEM_ISTJ, 4)}
    assert saved["personas"]["ENFP"]["nickname"] == seed_personas()["ENFP"].nickname  # display name from seeds/
    assert "persona prompts of 2 type(s) saved with the checkpoint (ENFP ISTJ)" in lines
    # chat reads the checkpoint, not seeds/: the seeds' ISTJ prompt differs from what was trained on
    notes: list[str] = []
    assert checkpoint_personas(cfg, note=notes.append)["ISTJ"].system_prompt == SYSTEM_ISTJ != seed_personas()["ISTJ"].system_prompt
    assert notes == []
    # a checkpoint from before personas were saved: seeds/ now, said in one line
    old = dataclasses.replace(cfg, output_dir=str(tmp_path), name="old")
    assert checkpoint_personas(old, note=notes.append)["ISTJ"].system_prompt == seed_personas()["ISTJ"].system_prompt
    assert len(notes) == 1 and "personas.json not found" in notes[0]


def test_the_saved_adapter_reloads_to_the_same_logits(run):
    from peft import PeftModel

    cfg, result, _ = run
    tok, _ = load_tokenizer(cfg, source=result.checkpoint_dir)
    ids = tok(tok.apply_chat_template(SAMPLE_CHATS[3], tokenize=False), add_special_tokens=False,
              return_tensors="pt")["input_ids"]
    reloaded = PeftModel.from_pretrained(load_base_model(cfg, "cpu", quantized=True), str(result.checkpoint_dir))
    keep_4bit_layers_trainable_on_cpu(reloaded)  # the same fp32 kernel as the trained model, for an exact compare
    with torch.no_grad():
        a = result.model.eval()(input_ids=ids).logits
        b = reloaded.eval()(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-5)
    base = load_base_model(cfg, "cpu", quantized=True)
    keep_4bit_layers_trainable_on_cpu(base)
    with torch.no_grad():
        assert not torch.allclose(base.eval()(input_ids=ids).logits, b, atol=1e-3), "the adapter does something"


def test_bad_data_fails_before_the_model_is_loaded(tmp_path, monkeypatch):
    model_dir = build_tiny_model(tmp_path / "tiny", tokenizer=train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400))
    DatasetDict({"train": Dataset.from_dict({"text": ["a"]})}).save_to_disk(str(tmp_path / "d"))
    cfg = load_config(TINY, [f"model={model_dir}", f"dataset={tmp_path / 'd'}", f"output_dir={tmp_path / 'ckpt'}"])

    def no_model(*a, **k):
        raise AssertionError("the model must not be loaded before the data is checked")

    monkeypatch.setattr("train.finetune.load_base_model", no_model)
    with pytest.raises(DataError, match="no 'messages' column"):
        finetune(cfg, log=lambda _: None)
    assert not (tmp_path / "ckpt").exists()


def test_a_time_limit_stops_training_early_and_still_saves(tmp_path):
    model_dir = build_tiny_model(tmp_path / "tiny", tokenizer=train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400))
    data = write_dataset(tmp_path / "data", SAMPLE_CHATS)
    cfg = load_config(TINY, [f"model={model_dir}", f"dataset={data}", f"output_dir={tmp_path / 'ckpt'}",
                             "max_steps=500", "time_limit_minutes=0.0001", "max_seq_len=512"])
    result = finetune(cfg, log=lambda _: None)
    assert result.metrics["steps"] == 1
    assert (result.checkpoint_dir / "adapter_model.safetensors").is_file()

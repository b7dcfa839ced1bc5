"""train/config.py: every committed YAML loads, overrides are typed, problems are collected and name the fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

import train.config as config_mod
from train.config import (ConfigError, TrainConfig, check_runtime, field_docs, load_config, save_config,
                          valid_keys)

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "train" / "configs").glob("*.yaml"))
TINY = next(p for p in CONFIGS if p.name == "tiny-cpu.yaml")


def problems_of(path=TINY, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(path, list(overrides))
    return e.value.problems


def test_the_four_model_configs_are_committed():
    assert {p.name for p in CONFIGS} >= {"bllossom-8b.yaml", "open-ko-8b.yaml", "kullm-12.8b.yaml", "tiny-cpu.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_committed_yaml_loads_and_mirrors_every_field(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainConfig)
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(raw) == valid_keys(), "the YAML lists every field, in the dataclass order"
    text = path.read_text(encoding="utf-8")
    assert text.startswith("# "), "each YAML opens with a comment saying what it is for"


def test_the_default_config_is_bllossom_with_the_qlora_recipe():
    cfg = load_config(CONFIGS[0].parent / "bllossom-8b.yaml")
    assert cfg.model == "MLP-KTLim/llama-3-Korean-Bllossom-8B"
    assert (cfg.load_in_4bit, cfg.quant_type, cfg.double_quant, cfg.compute_dtype) == (True, "nf4", True, "bfloat16")
    assert (cfg.optim, cfg.lr_scheduler, cfg.gradient_checkpointing) == ("paged_adamw_8bit", "cosine", True)
    assert cfg.lora_target_modules == "all-linear" and cfg.merge_dtype == "bfloat16"
    assert cfg == TrainConfig(dataset=cfg.dataset), "the dataclass defaults are the default YAML"


def test_kullm_documents_the_template_it_uses():
    path = CONFIGS[0].parent / "kullm-12.8b.yaml"
    assert load_config(path).chat_template == "plain-ko"
    assert "NO chat template" in path.read_text(encoding="utf-8")


def test_every_field_has_a_docstring():
    docs = field_docs()
    assert set(docs) == set(valid_keys())
    assert all(len(d) > 8 for d in docs.values())


def test_overrides_are_typed_against_the_dataclass():
    cfg = load_config(TINY, ["lora_r=4", "learning_rate=1e-3", "packing=false", "max_train_samples=null",
                             "chat_template=plain-ko", "epochs=2", "--seed=7"])
    assert (cfg.lora_r, cfg.learning_rate, cfg.packing, cfg.max_train_samples) == (4, 0.001, False, None)
    assert (cfg.chat_template, cfg.epochs, cfg.seed) == ("plain-ko", 2.0, 7)
    assert isinstance(cfg.epochs, float)


def test_unknown_key_is_one_line_naming_it_and_listing_valid_keys():
    (line,) = problems_of(overrides=["lora_rank=4"])
    assert line.startswith("unknown config key 'lora_rank' in the command line (did you mean lora_r?)")
    assert "valid keys: name, output_dir, seed" in line and "repetition_penalty" in line
    assert "\n" not in line


def test_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model: x/y\nlearning_rat: 1.0e-4\n", encoding="utf-8")
    (line,) = problems_of(path)
    assert f"unknown config key 'learning_rat' in {path}" in line and "did you mean learning_rate?" in line


def test_every_problem_is_collected_and_raised_once():
    problems = problems_of(overrides=["lora_r=0", "bf16=maybe", "lora_dropout=2", "optim=adamw_turbo", "oops"])
    assert len(problems) == 5
    joined = "\n".join(problems)
    for expected in ("bf16='maybe': expected true or false", "override 'oops': write key=value",
                     "lora_r=0: must be a positive integer", "lora_dropout=2.0: must be in [0, 1)",
                     "optim='adamw_turbo' is not a transformers optimiser"):
        assert expected in joined


def test_missing_and_malformed_files(tmp_path):
    (line,) = problems_of(tmp_path / "nope.yaml")
    assert "does not exist" in line and "tiny-cpu.yaml" in line
    bad = tmp_path / "bad.yaml"
    bad.write_text("lora_r: [1\n", encoding="utf-8")
    (line,) = problems_of(bad)
    assert "not valid YAML" in line


def test_unknown_builtin_template_or_missing_file():
    (line,) = problems_of(overrides=["chat_template=chatml"])
    assert "chat_template='chatml'" in line and "llama3, plain-ko" in line


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = dataclasses.replace(load_config(TINY), eot_token="<|eot_id|>", learning_rate=2e-4)
    save_config(cfg, tmp_path / "train_config.yaml")
    assert load_config(tmp_path / "train_config.yaml") == cfg


def test_checkpoint_paths_follow_the_name():
    cfg = load_config(TINY, ["output_dir=/x/ckpt", "name=run1"])
    assert cfg.checkpoint_dir == Path("/x/ckpt/run1") and cfg.merged_dir == Path("/x/ckpt/run1/merged")


def test_gpu_only_settings_fail_on_a_cpu_with_the_fix(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(config_mod, "cpu_has_bf16", lambda: False)
    cfg = load_config(CONFIGS[0].parent / "bllossom-8b.yaml")
    with pytest.raises(ConfigError) as e:
        check_runtime(cfg)
    problems = e.value.problems
    assert any("optim=paged_adamw_8bit needs a CUDA GPU" in p and "optim=adamw_torch" in p for p in problems)
    assert any(p.startswith("bf16=true needs a GPU") and "set bf16=false" in p for p in problems)
    assert any("compute_dtype=bfloat16" in p and "compute_dtype=float32" in p for p in problems)
    with pytest.raises(ConfigError) as e:
        check_runtime(dataclasses.replace(cfg, device="cuda"))
    assert "device=cuda but no CUDA GPU" in e.value.problems[0]
    with pytest.raises(ConfigError) as e:
        check_runtime(dataclasses.replace(cfg, optim="adamw_torch", bf16=False, compute_dtype="float32",
                                          attn_implementation="flash_attention_2"))
    assert e.value.problems == ["attn_implementation=flash_attention_2 needs a CUDA GPU; set attn_implementation=sdpa"]


def test_the_tiny_config_runs_on_any_cpu(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr(config_mod, "cpu_has_bf16", lambda: False)
    check_runtime(load_config(TINY))  # no exception


def test_fsdp_needs_float_quant_storage(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    cfg = load_config(CONFIGS[0].parent / "bllossom-8b.yaml")
    with pytest.raises(ConfigError) as e:
        check_runtime(cfg)
    assert "quant_storage_dtype=bfloat16" in e.value.problems[0]
    check_runtime(dataclasses.replace(cfg, quant_storage_dtype="bfloat16"))

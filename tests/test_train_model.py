"""train/model.py: where models are looked for, the real NF4 4-bit base, LoRA on every linear layer but lm_head."""

from __future__ import annotations

import bitsandbytes as bnb
import pytest
import torch

from train.config import TrainConfig
from train.model import (ModelSourceError, add_lora, check_model_source, keep_4bit_layers_trainable_on_cpu,
                         load_base_model, load_tokenizer)
from train.tiny import SAMPLE_TEXTS, build_tiny_model, train_tiny_tokenizer

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", tokenizer=train_tiny_tokenizer(SAMPLE_TEXTS))


def cfg_for(path, **kw) -> TrainConfig:
    return TrainConfig(**{"model": str(path), "dataset": "unused", "optim": "adamw_torch",
                          "gradient_checkpointing": False, **kw})


def test_a_missing_local_folder_is_named(tmp_path):
    with pytest.raises(ModelSourceError) as e:
        check_model_source(str(tmp_path / "models" / "nope"))
    assert str(e.value).startswith(f"model folder {tmp_path / 'models' / 'nope'} does not exist; set model=")


def test_a_folder_without_config_json(tmp_path):
    with pytest.raises(ModelSourceError, match="has no config.json"):
        check_model_source(str(tmp_path))


def test_a_hub_id_missing_from_the_cache_offline_says_where_it_looked(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelSourceError) as e:
        check_model_source("MLP-KTLim/llama-3-Korean-Bllossom-8B")
    msg = str(e.value)
    assert "not in the Hugging Face cache" in msg and str(tmp_path / "hub") in msg
    assert "HF_HOME" in msg and "model=/path/to/local/folder" in msg and "\n" not in msg


def test_a_cached_hub_id_passes_offline(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snap = tmp_path / "hub" / "models--org--m" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--org--m" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--m" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    check_model_source("org/m")  # no exception


def test_tokenizer_gets_eot_and_a_distinct_pad(tiny_dir):
    tok, tokens = load_tokenizer(cfg_for(tiny_dir))
    assert (tokens.eot, tokens.pad) == ("<|eot_id|>", "<|finetune_right_pad_id|>")
    assert tok.pad_token_id == tokens.pad_id != tokens.eot_id
    assert tokens.stop_ids == (tokens.eot_id, tok.eos_token_id)


def test_the_base_is_real_nf4_with_double_quant_and_bf16_compute(tiny_dir):
    model = load_base_model(cfg_for(tiny_dir), "cpu", quantized=True)
    for layer in model.model.layers:
        for name in LINEARS:
            mod = getattr(layer.self_attn, name, None) or getattr(layer.mlp, name)
            assert isinstance(mod, bnb.nn.Linear4bit)
            qs = mod.weight.quant_state
            assert (qs.quant_type, qs.nested, mod.compute_dtype) == ("nf4", True, torch.bfloat16)
            assert mod.weight.dtype == torch.uint8
    assert type(model.lm_head) is torch.nn.Linear and model.lm_head.weight.dtype == torch.bfloat16
    assert model.is_loaded_in_4bit


def test_lora_goes_on_every_linear_layer_except_lm_head(tiny_dir):
    cfg = cfg_for(tiny_dir, compute_dtype="float32")
    model = add_lora(load_base_model(cfg, "cpu", quantized=True), cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_A." in n or ".lora_B." in n for n in trainable)
    wrapped = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable}
    assert wrapped == set(LINEARS)
    layers = model.base_model.model.config.num_hidden_layers
    assert len(trainable) == 2 * len(LINEARS) * layers
    assert not any("lm_head" in n for n in trainable)
    assert model.peft_config["default"].r == cfg.lora_r and model.config.use_cache is False


def test_evaluating_on_a_cpu_does_not_break_4bit_gradients(tiny_dir):
    """bitsandbytes 0.50 repacks 4-bit weights for CPU inference on eval and loses their gradient after;
    our LoRA wrapper turns that off, so a train step after an eval has the same gradients as without."""
    cfg = cfg_for(tiny_dir, compute_dtype="float32", lora_dropout=0.0)
    x = torch.randint(10, 500, (1, 24))

    def grads(evaluate_first: bool):
        torch.manual_seed(0)
        model = add_lora(load_base_model(cfg, "cpu", quantized=True), cfg)
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                model(input_ids=x)
            model.train()
        model(input_ids=x, labels=x).loss.backward()
        return {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    plain, after_eval = grads(False), grads(True)
    assert plain.keys() == after_eval.keys()
    for n in plain:
        assert torch.allclose(plain[n], after_eval[n], atol=1e-4, rtol=1e-3), n


def test_keep_trainable_counts_only_4bit_layers(tiny_dir):
    model = load_base_model(cfg_for(tiny_dir), "cpu", quantized=False, dtype="float32")
    assert keep_4bit_layers_trainable_on_cpu(model) == 0


@pytest.mark.parametrize("answer, says", [
    (ConnectionError("[Errno -2] Name or service not known"), "the Hub is unreachable ([Errno -2] Name or service"),
    (401, "gated or private model"), (404, "no such model"), (500, "HTTP 500"), (200, None)])
def test_an_uncached_hub_id_is_checked_with_one_request(tmp_path, monkeypatch, answer, says):
    from types import SimpleNamespace

    from huggingface_hub import constants

    calls = []

    def head(method, url, max_retries, **kw):
        calls.append((method, url, max_retries))
        if isinstance(answer, Exception):
            raise answer
        return SimpleNamespace(status_code=answer)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.utils.http_backoff", head)
    if says is None:
        check_model_source("org/model")
    else:
        with pytest.raises(ModelSourceError) as e:
            check_model_source("org/model")
        assert says in str(e.value) and "hf download org/model" in str(e.value) and "HF_HOME" in str(e.value)
    (method, url, retries), = calls
    assert (method, retries) == ("HEAD", 0) and url.endswith("/org/model/resolve/main/config.json")

"""train/merge.py: the adapter is folded into the unquantised base, and the merged model matches the adapter model."""

from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel

from train.config import TrainConfig
from train.merge import merge
from train.model import ModelSourceError, add_lora, keep_4bit_layers_trainable_on_cpu, load_base_model
from train.tiny import SAMPLE_CHATS, SAMPLE_TEXTS, build_tiny_model, train_tiny_tokenizer


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A tiny base and a LoRA adapter made on its 4-bit version with non-zero random B (no training needed)."""
    root = tmp_path_factory.mktemp("merge")
    tok = train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400)
    path = build_tiny_model(root / "tiny", tokenizer=tok)
    cfg = TrainConfig(model=str(path), dataset="unused", optim="adamw_torch", output_dir=str(root / "ckpt"),
                      name="a", compute_dtype="float32", gradient_checkpointing=False)
    model = add_lora(load_base_model(cfg, "cpu", quantized=True), cfg)
    g = torch.Generator().manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    model.save_pretrained(str(cfg.checkpoint_dir))
    tok.save_pretrained(str(cfg.checkpoint_dir))
    ids = tok(tok.apply_chat_template(SAMPLE_CHATS[0], tokenize=False), add_special_tokens=False,
              return_tensors="pt")["input_ids"]
    return cfg, ids


def logits(model, ids):
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits.float()


def test_merged_model_matches_the_adapter_model(adapter):
    cfg, ids = adapter
    out = merge(cfg, log=lambda _: None)
    assert out == cfg.merged_dir
    merged = logits(load_base_model(cfg, "cpu", quantized=False, dtype="bfloat16", source=out), ids)
    # The same adapter on the same bf16 base, unmerged: equal up to bf16 rounding of the folded weights.
    unmerged = logits(PeftModel.from_pretrained(load_base_model(cfg, "cpu", False, dtype="bfloat16"),
                                                str(cfg.checkpoint_dir)), ids)
    assert (merged - unmerged).abs().max() < 0.02
    # The adapter model as trained (4-bit base): only the base's quantisation error apart, while
    # the base alone (no adapter) is far off, so the merge kept what the adapter does.
    q = load_base_model(cfg, "cpu", quantized=True)
    keep_4bit_layers_trainable_on_cpu(q)
    trained = logits(PeftModel.from_pretrained(q, str(cfg.checkpoint_dir)), ids)
    base_only = logits(load_base_model(cfg, "cpu", False, dtype="float32"), ids)
    assert (merged - trained).abs().mean() < 0.25 * (merged - base_only).abs().mean()


def test_merge_is_into_the_unquantised_base_and_stops_at_end_of_turn(adapter):
    cfg, _ = adapter
    out = merge(cfg, log=lambda _: None)
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "bfloat16"
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["eos_token_id"][0] == 4 and gen["pad_token_id"] == 5  # <|eot_id|> first, pad distinct
    assert (out / "chat_template.jinja").is_file()


def test_float32_merge_is_exact(adapter):
    import dataclasses

    cfg, ids = adapter
    cfg32 = dataclasses.replace(cfg, merge_dtype="float32")
    out = merge(cfg32, log=lambda _: None)
    merged = logits(load_base_model(cfg32, "cpu", False, dtype="float32", source=out), ids)
    unmerged = logits(PeftModel.from_pretrained(load_base_model(cfg32, "cpu", False, dtype="float32"),
                                                str(cfg.checkpoint_dir)), ids)
    assert torch.allclose(merged, unmerged, atol=1e-5)


def test_merge_without_an_adapter_says_to_train_first(tmp_path):
    cfg = TrainConfig(model=str(tmp_path), dataset="unused", output_dir=str(tmp_path / "none"), optim="adamw_torch")
    with pytest.raises(ModelSourceError, match=r"no adapter in .*; train first"):
        merge(cfg)

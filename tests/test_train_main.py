"""train/__main__.py: the CLI turns every mistake a user can fix into one `error:` line (exit 2), no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Dataset, DatasetDict

from train.__main__ import main
from train.tiny import SAMPLE_TEXTS, build_tiny_model, train_tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "train" / "configs" / "tiny-cpu.yaml")


def one_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()  # drop what the test's own setup printed
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("m") / "tiny", tokenizer=train_tiny_tokenizer(SAMPLE_TEXTS,
                                                                                                    vocab_size=400))


def test_the_real_cli_names_an_unknown_key_without_a_traceback():
    proc = subprocess.run([sys.executable, "-m", "train", "train", "--config", TINY, "lora_rank=8"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: unknown config key 'lora_rank' in the command line (did you mean lora_r?); "
                           "valid keys: name, output_dir,")


def test_a_dataset_without_messages(capsys, tmp_path, tiny_dir):
    DatasetDict({"train": Dataset.from_dict({"prompt": ["a"], "completion": ["b"]})}).save_to_disk(str(tmp_path / "d"))
    line = one_error(capsys, ["train", "--config", TINY, f"model={tiny_dir}", f"dataset={tmp_path / 'd'}",
                              f"output_dir={tmp_path / 'ck'}"])
    assert "has no 'messages' column (it has: prompt, completion)" in line


def test_a_model_that_cannot_be_loaded_offline(capsys, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    line = one_error(capsys, ["train", "--config", TINY, "model=nobody/no-such-model", "tiny_random_init=false",
                              f"output_dir={tmp_path / 'ck'}"])
    assert "nobody/no-such-model is not in the Hugging Face cache" in line and "HF_HOME" in line


def test_a_gpu_only_setting_without_a_gpu(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    line = one_error(capsys, ["train", "--config", TINY, "optim=paged_adamw_8bit", f"output_dir={tmp_path}"])
    assert line == ("error: optim=paged_adamw_8bit needs a CUDA GPU (bitsandbytes paged/8-bit optimiser); "
                    "on the CPU set optim=adamw_torch")


def test_merge_and_chat_before_training(capsys, tmp_path, tiny_dir):
    line = one_error(capsys, ["merge", "--config", TINY, f"model={tiny_dir}", f"output_dir={tmp_path}"])
    assert "no adapter in" in line and "train first" in line
    line = one_error(capsys, ["chat", "--config", TINY, "--mbti", "XXXX", f"output_dir={tmp_path}"])
    assert "--mbti XXXX: use one of the 16 types" in line


def test_several_config_problems_are_one_line_each(capsys):
    assert main(["train", "--config", TINY, "lora_r=0", "bf16=maybe"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(x.startswith("error: ") for x in err)

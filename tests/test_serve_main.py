"""`python -m serve` and `python -m serve.vllm`: one-line errors before any model loads; the vLLM command."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from serve.__main__ import main
from serve.vllm import main as vllm_main
from serve.vllm import vllm_command
from tests.helpers import build_tiny_checkpoint
from train.config import load_config

TINY = Path(__file__).resolve().parent.parent / "train" / "configs" / "tiny-cpu.yaml"


def test_no_demo_checkpoint_names_make_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--demo"]) == 2
    assert capsys.readouterr().err == ("error: no checkpoint in outputs/demo/checkpoints/tiny-cpu: run `make demo` "
                                       "first to make one\n")


def test_no_trained_checkpoint_names_make_train_with_the_config(tmp_path, capsys):
    assert main(["--config", str(TINY), f"output_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err == (f"error: no checkpoint in {tmp_path}/tiny-cpu: run `make train "
                                       f"CONFIG={TINY}` first to make one\n")
    assert main(["--config", str(TINY), f"output_dir={tmp_path}", "--merged"]) == 2
    assert capsys.readouterr().err.startswith(f"error: no merged model in {tmp_path}/tiny-cpu/merged: run `make merge`")


@pytest.mark.parametrize("argv, message", [
    (["--demo", "--config", "x.yaml"], "error: --demo serves the demo's own config"),
    (["--config", str(TINY), "lora_rr=4"], "error: unknown config key 'lora_rr' in the command line (did you mean "
                                           "lora_r?)"),
    (["--config", str(TINY), "--port", "70000"], "error: --port 70000: use a TCP port between 1 and 65535"),
    (["--config", str(TINY), "--upstream", "gpu:8001"], "error: --upstream gpu:8001: give a URL like "
                                                        "http://127.0.0.1:8001/v1"),
    (["--config", str(TINY), "--api-key", " "], "error: --api-key is empty"),
])
def test_mistakes_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err


def test_a_checkpoint_without_personas_falls_back_to_seeds_with_a_note(tmp_path):
    from serve.config import ServeConfig
    from serve.server import build_app

    cfg = build_tiny_checkpoint(tmp_path)
    (cfg.checkpoint_dir / "personas.json").unlink()
    notes: list[str] = []
    app = build_app(cfg, ServeConfig(upstream="http://127.0.0.1:9/v1"), note=notes.append)
    assert len(app.state.personas) == 16 and list(app.state.personas)[:2] == ["ISTJ", "ISFJ"]
    assert notes and notes[0].startswith(f"note: {cfg.checkpoint_dir}/personas.json not found")


def test_the_vllm_command_serves_base_plus_adapter_named_as_serve_asks(tmp_path, capsys, monkeypatch):
    cfg = load_config("train/configs/bllossom-8b.yaml", [f"output_dir={tmp_path}", "lora_r=20"])
    adapter = str((tmp_path / "bllossom-8b-mbti").resolve())
    assert vllm_command(cfg) == ["vllm", "serve", "MLP-KTLim/llama-3-Korean-Bllossom-8B", "--enable-lora",
                                 "--lora-modules", f"bllossom-8b-mbti={adapter}", "--max-lora-rank", "32",
                                 "--tokenizer", adapter, "--dtype", "bfloat16", "--host", "127.0.0.1", "--port", "8001"]
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert vllm_main(["--config", "train/configs/bllossom-8b.yaml", f"output_dir={tmp_path}", "lora_r=20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert shlex.split(lines[0]) == vllm_command(cfg)
    assert lines[1] == (f"then, for the page and the persona API: python -m serve --config "
                        f"train/configs/bllossom-8b.yaml output_dir={tmp_path} lora_r=20 --upstream "
                        "http://127.0.0.1:8001/v1")
    assert lines[2].startswith(f"note: no adapter in {tmp_path}/bllossom-8b-mbti yet")
    assert lines[3].startswith("vllm is not installed here")

"""One `--out` for every stage: generate → curate → publish → train → chat's personas, through the real CLIs."""

from __future__ import annotations

import json
import sys

from tests.llm_server import LLMServer, dialogue_factory


def datagen(monkeypatch, capsys, *args: str) -> str:
    from datagen import cli

    monkeypatch.setattr(sys, "argv", ["datagen", *args])
    try:
        cli.main()
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    return capsys.readouterr().out


def test_the_same_out_folder_carries_a_run_from_generate_to_a_checkpoint(tmp_path, seeds_dir, clean_env, capsys):
    from train.__main__ import main as train_main
    from train.personas import read_personas

    out = tmp_path / "work"
    clean_env.chdir(tmp_path)  # the tiny model of tiny-cpu.yaml is built under ./outputs/models
    with LLMServer(default=dialogue_factory(2)) as server:
        text = datagen(clean_env, capsys, "generate", "--mbti", "ISTJ,ENFP", "--count", "12", "--run", "r1", "--out",
                       str(out), "--seeds", str(seeds_dir), "--model", "test-model", "--base-url", server.base_url,
                       "--no-progress", "--set", "per_request=3")
    assert "run r1: 24 accepted" in text
    assert "kept 24/24" in datagen(clean_env, capsys, "curate", "--run", "r1", "--out", str(out), "--seeds",
                                   str(seeds_dir))
    text = datagen(clean_env, capsys, "publish", "--run", "r1", "--out", str(out), "--seeds", str(seeds_dir),
                   "--test-share", "0.1")
    assert text.startswith(f"wrote {out / 'dataset' / 'r1'}: train 22, test 2 (2 types)")
    code = train_main(["train", "--config", "tiny-cpu", "--out", str(out), "--run", "r1", "max_steps=2",
                       "eval_steps=1", "logging_steps=1", "time_limit_minutes=null"])
    assert code == 0
    ckpt = out / "checkpoints" / "tiny-cpu"
    assert (ckpt / "adapter_model.safetensors").is_file() and (out / "cache" / "encoded").is_dir()
    assert set(read_personas(ckpt)) == {"ISTJ", "ENFP"}
    history = [json.loads(x)["command"] for x in (out / "runs" / "r1" / "config.jsonl").read_text().splitlines()]
    assert history == ["generate", "curate", "publish"]
    capsys.readouterr()
    assert train_main(["train", "--config", "tiny-cpu", "--out", str(out), "--run", "nope", "max_steps=1"]) == 2
    assert capsys.readouterr().err.strip() == (f"error: dataset {out / 'dataset' / 'nope'} does not exist; make one with "
                                               "`datagen publish --run R` (it writes outputs/dataset/R) or set "
                                               "dataset=<folder or Hub id>")

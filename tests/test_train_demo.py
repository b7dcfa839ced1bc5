"""train/demo.py: the newcomer's first command, end to end on small inputs (seeds faked, 2 training steps)."""

from __future__ import annotations

import pytest

from datagen.seeds import load_personas
from tests.test_seed_check import write_seeds
from train.data import load_chat_dataset
from train.demo import build_demo_dataset, pick_personas, run_demo
from train.tiny import SAMPLE_CHATS


def fake_seeds(root, types=("ISTJ", "ENFP", "INTP")):
    """A seeds folder with three types, four seed dialogues each, and a persona profile for each type."""
    rows = {t: [{"mbti": t, "topic": "주제", "messages": [m for m in chat if m["role"] != "system"], "source": "seed",
                 "meta": {}} for chat in SAMPLE_CHATS[:4]] for t in types}
    return write_seeds(root, rows, personas=types)


def test_the_demo_dataset_is_a_published_one(tmp_path):
    seeds = fake_seeds(tmp_path / "seeds")
    path, n, types = build_demo_dataset(tmp_path / "demo" / "dataset", seeds_dir=seeds)
    assert (path / "README.md").is_file() and list((path / "data").glob("train-*.parquet"))
    dd = load_chat_dataset(str(path))
    assert n == 12 and types == ["ENFP", "INTP", "ISTJ"]
    assert (len(dd["train"]), len(dd["test"])) == (9, 3)  # one test chat per type
    personas, _ = load_personas(seeds, ("ISTJ", "ENFP", "INTP"))
    for row in dd["train"]:
        assert row["messages"][0] == {"role": "system", "content": personas[row["mbti"]].system_prompt()}


def test_no_seeds_is_one_clear_line(tmp_path):
    from datagen.errors import UserError

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no seed dialogues under"):
        build_demo_dataset(tmp_path / "ds", seeds_dir=tmp_path / "empty")


def test_personas_shown():
    assert pick_personas(["INTP", "ISTJ", "ENFP"]) == ["ENFP", "ISTJ"]
    assert pick_personas(["INTP", "ESTJ"]) == ["INTP", "ESTJ"]


def test_the_demo_runs_end_to_end_and_says_the_model_is_random(tmp_path, monkeypatch):
    seeds = fake_seeds(tmp_path / "seeds")
    monkeypatch.chdir(tmp_path)  # everything it writes lands under tmp_path/outputs
    lines: list[str] = []
    run_demo(["max_steps=2", "eval_steps=1", "max_new_tokens=4"],
             out=lambda *a, **k: lines.append("".join(map(str, a)) + k.get("end", "\n")), seeds_dir=seeds)
    text = "".join(lines)
    assert "tiny RANDOM Llama" in text and "says nothing sensible" in text
    assert "1. dataset: 12 seed chats of 3 type(s) (ENFP INTP ISTJ)" in text
    assert "saved adapter to outputs/demo/checkpoints/tiny-cpu (2 steps" in text
    assert text.count("답: ") == 2 and "[ENFP] 답: " in text and "[ISTJ] 답: " in text
    assert "the replies above are noise, as expected" in text
    assert (tmp_path / "outputs" / "models" / "tiny-random-llama" / "config.json").is_file()
    assert (tmp_path / "outputs" / "demo" / "checkpoints" / "tiny-cpu" / "adapter_model.safetensors").is_file()

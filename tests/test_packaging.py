"""The wheel ships everything the commands need outside the repository: code, prompts, configs, seeds."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True, timeout=240)
    (whl,) = out.glob("*.whl")
    return set(zipfile.ZipFile(whl).namelist())


def repo_files(folder: str, pattern: str) -> set[str]:
    return {str(p.relative_to(REPO)) for p in (REPO / folder).rglob(pattern) if "__pycache__" not in p.parts}


def test_the_wheel_holds_every_module_prompt_config_and_seed(wheel_names):
    code = repo_files("datagen", "*.py") | repo_files("train", "*.py")
    if (REPO / "serve").is_dir():
        code |= repo_files("serve", "*.py") | {n for n in repo_files("serve", "*") if "/static/" in n}
    missing = code - wheel_names
    assert not missing, f"not in the wheel: {sorted(missing)}"
    assert repo_files("datagen/prompts", "*.txt") <= wheel_names
    assert repo_files("train/configs", "*.yaml") | repo_files("train/accelerate", "*.yaml") <= wheel_names
    seeds = {"datagen/seeds_data/" + str(p.relative_to(REPO / "seeds")) for p in (REPO / "seeds").rglob("*")
             if p.is_file()}
    assert len(seeds) == 16 + 16 + 2 and seeds <= wheel_names  # personas, dialogues, topics.yaml, STYLE.md
    assert not any(n.startswith(("tests/", "bench/", "outputs/")) for n in wheel_names)


def test_configs_are_found_by_name_outside_the_repository(tmp_path, monkeypatch):
    from train.config import config_path

    monkeypatch.chdir(tmp_path)
    shipped = REPO / "train" / "configs" / "bllossom-8b.yaml"
    for given in ("train/configs/bllossom-8b.yaml", "bllossom-8b.yaml", "bllossom-8b"):
        assert config_path(given).resolve() == shipped
    (tmp_path / "mine.yaml").write_text("lora_r: 8\n")
    assert config_path("mine.yaml") == Path("mine.yaml")

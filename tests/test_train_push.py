"""train/push.py: the checkpoint goes up through huggingface_hub (stood in for here), never the network."""

from __future__ import annotations

import huggingface_hub
import pytest

from datagen.errors import UserError
from tests.test_publish import hub  # noqa: F401  (the same Hub stand-in as publish's tests)
from train.config import TrainConfig
from train.push import IGNORED, push


@pytest.fixture
def cfg(tmp_path):
    cfg = TrainConfig(name="ck", output_dir=str(tmp_path), model="MLP-KTLim/llama-3-Korean-Bllossom-8B",
                      dataset="me/mbti-chat-ko")
    cfg.checkpoint_dir.mkdir()
    (cfg.checkpoint_dir / "adapter_config.json").write_text("{}")
    return cfg


@pytest.mark.parametrize("private", [False, True])
def test_push_uploads_the_checkpoint_folder_as_a_model_repo(cfg, hub, private):
    url = push(cfg, "me/ck-lora", private=private, log=lambda _: None)
    assert url == "https://huggingface.co/me/ck-lora" and hub.tokens == ["hf_fake_token"]
    assert [c[0] for c in hub.calls] == (["create_repo", "update_repo_settings", "upload_folder"] if private
                                         else ["create_repo", "upload_folder"])
    assert hub.calls[0] == ("create_repo", ("me/ck-lora",), {"repo_type": "model", "private": private, "exist_ok": True})
    assert hub.calls[-1] == ("upload_folder", (), {"repo_id": "me/ck-lora", "folder_path": str(cfg.checkpoint_dir),
                                                   "repo_type": "model", "commit_message": "python -m train push (ck)",
                                                   "ignore_patterns": IGNORED})
    card = (cfg.checkpoint_dir / "README.md").read_text(encoding="utf-8")
    assert "base_model: MLP-KTLim/llama-3-Korean-Bllossom-8B" in card and 'repo = "me/ck-lora"' in card


def test_no_token_is_one_line_and_nothing_is_lost(cfg, hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(UserError) as e:
        push(cfg, "me/ck-lora", log=lambda _: None)
    assert str(e.value) == (f"no Hugging Face token: set HF_TOKEN or run `hf auth login`; the checkpoint is kept at "
                            f"{cfg.checkpoint_dir}; rerun the same command to upload it")
    assert hub.calls == [] and (cfg.checkpoint_dir / "adapter_config.json").is_file()


def test_bad_repo_id_or_no_adapter(cfg, hub, tmp_path):
    with pytest.raises(UserError, match=r"--repo-id 'ck-lora' must be USER/NAME \(e.g. me/mbti-persona-lora\)"):
        push(cfg, "ck-lora", log=lambda _: None)
    with pytest.raises(UserError, match="no adapter in .*train first"):
        push(TrainConfig(name="none", output_dir=str(tmp_path)), "me/x", log=lambda _: None)
    assert hub.calls == []


def test_the_cli_says_one_line_without_a_token(cfg, hub, monkeypatch, capsys):
    from train.__main__ import main

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(["push", "--config", "train/configs/tiny-cpu.yaml", f"output_dir={cfg.output_dir}", "name=ck",
                 "--repo-id", "me/ck-lora", "--private"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: no Hugging Face token: set HF_TOKEN or run `hf auth login`; the checkpoint is kept at "
                   f"{cfg.checkpoint_dir}; rerun the same command to upload it"]

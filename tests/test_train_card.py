"""train/card.py: the checkpoint's README.md is a Hub model card (YAML the Hub reads, the eval table, how to chat)."""

from __future__ import annotations

import json

import yaml

from train.card import EVAL_RESULTS_FILE, render_model_card, write_model_card
from train.config import TrainConfig
from train.personas import PersonaPrompt, save_personas

RESULTS = {"name": "ck", "judge_model": "gpt-4o-mini", "limit_per_type": 5,
           "conditions": {c: {"n_chats": 80, "full_type": ft, "axes": {"E/I": 0.9, "S/N": 0.88, "T/F": 0.95, "J/P": 0.85},
                              "scores": {"persona": 4.1, "naturalness": 4.3, "engagement": 3.9}, "rules_pass": 0.97,
                              "stop_rate": 0.99, "distinct_2": 0.77, "reply_chars_mean": 88.0, "loss": loss,
                              "perplexity": ppl}
                          for c, ft, loss, ppl in (("fine_tuned", 0.71, 1.23, 3.42), ("base", 0.2, 2.5, 12.18))},
           "held_out": {"reply_chars_mean": 91.5}, "setup": {"held_out": "me/mbti-chat-ko (test split)"}}


def header_and_body(text: str) -> tuple[dict, str]:
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_the_card_header_the_hub_reads():
    cfg = TrainConfig(name="bllossom-8b-mbti", dataset="me/mbti-chat-ko")
    head, body = header_and_body(render_model_card(cfg, RESULTS, dataset_id="me/mbti-chat-ko", license="cc-by-nc-4.0"))
    assert head == {"base_model": "MLP-KTLim/llama-3-Korean-Bllossom-8B", "library_name": "peft",
                    "datasets": ["me/mbti-chat-ko"], "language": ["ko"], "license": "cc-by-nc-4.0",
                    "pipeline_tag": "text-generation",
                    "tags": ["mbti", "persona", "korean", "conversational", "role-play", "lora", "qlora", "peft"]}
    assert "| full type accuracy (blind judge) | 71.0% | 20.0% |" in body
    assert "| loss / perplexity | 1.230 / 3.42 | 2.500 / 12.18 |" in body
    assert "80 held-out chats (`me/mbti-chat-ko (test split)`, at most 5 per type)" in body
    assert "not a validated clinical instrument" in body and "never diagnoses" in body
    assert 'repo = "USER/NAME"' in body and "vllm serve MLP-KTLim/llama-3-Korean-Bllossom-8B --enable-lora" in body


def test_a_local_base_and_dataset_stay_out_of_the_header(tmp_path):
    cfg = TrainConfig(name="tiny", model=str(tmp_path), dataset=str(tmp_path / "data"), tiny_random_init=True)
    head, body = header_and_body(render_model_card(cfg))
    assert "base_model" not in head and "datasets" not in head and head["license"] == "other"
    assert "Not evaluated yet. `python -m train eval --config <config>`" in body and "Demo checkpoint" in body


def test_write_model_card_uses_the_checkpoint_files(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# d\n", encoding="utf-8")
    cfg = TrainConfig(name="ck", output_dir=str(tmp_path / "out"), dataset=str(data))
    save_personas(cfg.checkpoint_dir, {"ENFP": PersonaPrompt("ENFP", "당신은 ENFP ...", "가능성 수집가", "호기심 많은 사람")})
    (cfg.checkpoint_dir / "metrics.json").write_text(json.dumps({"train_loss": 1.5, "eval_loss": 1.25, "steps": 300}))
    (cfg.checkpoint_dir / "train_config.yaml").write_text("eot_token: <|im_end|>\n")
    path = write_model_card(cfg, RESULTS, repo_id="me/ck-lora", config_path="train/configs/x.yaml")
    text = path.read_text(encoding="utf-8")
    head, body = header_and_body(text)
    assert head["license"] == "cc-by-4.0"  # the dataset card's
    assert "| ENFP | 가능성 수집가 | 호기심 많은 사람 |" in body and "| eval loss | 1.25 |" in body
    assert 'repo = "me/ck-lora"' in body and 'convert_tokens_to_ids("<|im_end|>")' in body
    assert "python -m train chat --config train/configs/x.yaml --mbti ENFP" in body
    assert json.loads((cfg.checkpoint_dir / EVAL_RESULTS_FILE).read_text(encoding="utf-8")) == RESULTS
    # without results: the ones saved beside the checkpoint, the same bytes again (no dates)
    assert write_model_card(cfg, repo_id="me/ck-lora", config_path="train/configs/x.yaml").read_text("utf-8") == text

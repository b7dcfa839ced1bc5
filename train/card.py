"""The checkpoint's README.md as a Hugging Face model card: what `python -m train push` uploads.

A YAML header the Hub reads (`base_model`, `library_name: peft`, `datasets`, `language: ko`, `license`,
`pipeline_tag`, tags), then a body for a stranger: what the adapter is, the personas it knows, the
evaluation table (from `python -m train eval`'s results), how to chat with it (this repo's CLI,
transformers + peft, vLLM), how it was trained, and its limits. `write_model_card` replaces the stub
README.md peft writes beside every adapter, and keeps the results beside it as `eval_results.json`.

The card is a pure function of the checkpoint's files and the results (no dates), so writing it again
gives the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from datagen.schema import MBTI_TYPES
from train.config import TrainConfig

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts
CARD_FILE = "README.md"
EVAL_RESULTS_FILE = "eval_results.json"
PLACEHOLDER_REPO = "USER/NAME"
TAGS = ("mbti", "persona", "korean", "conversational", "role-play", "lora", "qlora", "peft")
DISCLAIMER = ("MBTI is a popular typology, not a validated clinical instrument: these personas are conversational "
              "styles, never diagnoses. Do not use this model to label people.")
CARD_ROWS = (  # (label, path in a condition's results block, format)
    ("full type accuracy (blind judge)", ("full_type",), "pct"),
    ("axis E/I", ("axes", "E/I"), "pct"), ("axis S/N", ("axes", "S/N"), "pct"),
    ("axis T/F", ("axes", "T/F"), "pct"), ("axis J/P", ("axes", "J/P"), "pct"),
    ("persona consistency (1-5)", ("scores", "persona"), "f2"),
    ("naturalness (1-5)", ("scores", "naturalness"), "f2"),
    ("engagement (1-5)", ("scores", "engagement"), "f2"),
    ("Korean rules pass", ("rules_pass",), "pct"),
    ("stop rate (end-of-turn)", ("stop_rate",), "pct"),
    ("distinct-2", ("distinct_2",), "f3"),
    ("reply characters (mean)", ("reply_chars_mean",), "f1"),
    ("loss / perplexity", None, "loss"),
)


def lora_rank_bound(r: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds LoRA rank `r` (it takes only these values).

    >>> lora_rank_bound(16), lora_rank_bound(20)
    (16, 32)
    """
    return next((v for v in VLLM_LORA_RANKS if v >= r), r)


def looks_like_hub_id(name: str | None) -> bool:
    """`owner/name` that is not a local path (the Hub rejects a card whose base_model or datasets are paths).

    >>> looks_like_hub_id("MLP-KTLim/llama-3-Korean-Bllossom-8B"), looks_like_hub_id("outputs/models/tiny")
    (True, False)
    """
    if not name or name.startswith((".", "/", "~")) or name.count("/") != 1 or Path(name).exists():
        return False
    return all(part and not part.startswith((".", "-")) for part in name.split("/"))


def _read(path: Path) -> Any:
    try:
        if path.suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None


def dataset_license(dataset: str) -> str | None:
    """The license in a local `datagen publish` folder's card header, if there is one."""
    readme = Path(dataset) / "README.md"
    if not readme.is_file():
        return None
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return None
    try:
        header = yaml.safe_load(text[4:text.index("\n---", 4)])
    except (ValueError, yaml.YAMLError):
        return None
    lic = header.get("license") if isinstance(header, dict) else None
    return lic if isinstance(lic, str) else None


def card_header(cfg: TrainConfig, dataset_id: str | None, license: str) -> dict[str, Any]:
    header: dict[str, Any] = {}
    if looks_like_hub_id(cfg.model):
        header["base_model"] = cfg.model
    header["library_name"] = "peft"
    if dataset_id:
        header["datasets"] = [dataset_id]
    header.update({"language": ["ko"], "license": license, "pipeline_tag": "text-generation", "tags": list(TAGS)})
    return header


def eval_section(results: dict[str, Any] | None, config_path: str) -> str:
    if not results:
        return ("## Evaluation\n\nNot evaluated yet. `python -m train eval --config " + config_path + "` replays the "
                "held-out chats with this adapter and with the base model alone, has an LLM judge guess each "
                "persona's type blind, and writes the table here.")
    from train.evaluate.report import fmt, lookup, table  # the report's cells and tables (lazy: it imports the judge)

    conds = list(results["conditions"])
    setup = results.get("setup", {})
    blocks = results["conditions"]
    n = blocks[conds[0]]["n_chats"] if conds else 0
    lines = ["## Evaluation", "",
             f"`python -m train eval`: {n} held-out chats (`{setup.get('held_out')}`"
             + (f", at most {results['limit_per_type']} per type" if results.get("limit_per_type") else "")
             + ") replayed turn by turn: the user turns are sent again and each model writes every reply, with "
             "the persona's system prompt. `fine_tuned` is this adapter, `base` the same base model with the "
             "same system prompt and no adapter (is fine-tuning better than prompting?)"
             + (", `reference` another model prompted the same way" if "reference" in conds else "") + ". "
             + (f"The judge, `{results['judge_model']}`, sees only the assistant's turns and guesses the type "
                "blind (chance: 6.25% for the full type, 50% per axis); it scores persona consistency against the "
                "claimed type's profile." if results.get("judge_model") else "The judge did not run."), ""]
    rows = []
    for label, path, kind in CARD_ROWS:
        if kind == "loss":
            cells = [f"{fmt(blocks[c].get('loss'), 'f3')} / {fmt(blocks[c].get('perplexity'), 'f2')}" for c in conds]
        else:
            cells = [fmt(lookup(blocks[c], path), kind) for c in conds]  # type: ignore[arg-type]
        rows.append([label, *cells])
    lines += table(["metric", *[f"`{c}`" for c in conds]], rows)
    held = (results.get("held_out") or {}).get("reply_chars_mean")
    if held is not None:
        lines += ["", f"The held-out chats' own replies average {held:.1f} characters."]
    return "\n".join(lines)


def render_model_card(cfg: TrainConfig, results: dict[str, Any] | None = None, personas: dict[str, Any] | None = None,
                      train_metrics: dict[str, Any] | None = None, dataset_id: str | None = None,
                      license: str = "other", repo_id: str | None = None, eot: str | None = None,
                      config_path: str = "<config>") -> str:
    """README.md's text (pure)."""
    personas = personas or {}
    repo = repo_id or PLACEHOLDER_REPO
    header = yaml.safe_dump(card_header(cfg, dataset_id, license), allow_unicode=True, sort_keys=False, width=1000)
    types = [t for t in MBTI_TYPES if t in personas]
    example = "ENFP" if "ENFP" in types else (types[0] if types else "ENFP")
    eot = eot or cfg.eot_token or "<|eot_id|>"
    base = cfg.model
    data = f"[`{dataset_id}`](https://huggingface.co/datasets/{dataset_id})" if dataset_id else f"`{cfg.dataset}`"
    lines = [f"# {cfg.name}: Korean MBTI persona chat (LoRA)", "",
             f"A LoRA adapter for `{base}`, trained with QLoRA (4-bit NF4 base) on Korean multi-turn chats of {data}. "
             f"One model talks in the conversational style of any of the {len(types) or 16} types below; the system "
             "prompt picks the persona. The exact system prompts it was trained with are in `personas.json`: use "
             "them as they are (the model learned those words).", "",
             "한국어 MBTI 페르소나 채팅 LoRA 어댑터입니다. system 프롬프트로 16유형 중 하나의 대화 스타일을 고릅니다.", "",
             f"> {DISCLAIMER}"]
    if cfg.tiny_random_init:
        lines += ["", "> **Demo checkpoint:** the base is a tiny randomly initialised model built for `make demo`; "
                      "what it says is noise. It shows the pipeline, not quality."]
    if types:
        lines += ["", "## Personas", "", "| type | nickname | in short |", "|---|---|---|"]
        for t in types:
            p = personas[t]
            lines.append(f"| {t} | {getattr(p, 'nickname', None) or '-'} | {getattr(p, 'summary', None) or '-'} |")
    lines += ["", eval_section(results, config_path)]
    lines += ["", "## Chat with it", "", "With this project (streaming, the saved system prompts):", "", "```bash",
              f"python -m train chat --config {config_path} --mbti {example}", "```", "",
              "With transformers and peft:", "", "```python", "import json", "", "import torch",
              "from huggingface_hub import hf_hub_download", "from peft import AutoPeftModelForCausalLM",
              "from transformers import AutoTokenizer", "", f'repo = "{repo}"',
              'model = AutoPeftModelForCausalLM.from_pretrained(repo, dtype=torch.bfloat16, device_map="auto")',
              "tokenizer = AutoTokenizer.from_pretrained(repo)",
              'personas = json.load(open(hf_hub_download(repo, "personas.json"), encoding="utf-8"))["personas"]',
              f'messages = [{{"role": "system", "content": personas["{example}"]["system_prompt"]}},',
              '            {"role": "user", "content": "요즘 일이 너무 많아서 지쳤어요. 주말에 어떻게 쉬면 좋을까요?"}]',
              "prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)",
              'inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)',
              f'out = model.generate(**inputs, max_new_tokens=256, eos_token_id=tokenizer.convert_tokens_to_ids("{eot}"),',
              "                     do_sample=True, temperature=0.7, top_p=0.9)",
              'print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))', "```", "",
              f"Replies end with `{eot}`: stop there (the model was trained to emit it after every reply).", "",
              "With vLLM (OpenAI-compatible server, the adapter on top of the base):", "", "```bash",
              f"vllm serve {base} --enable-lora --lora-modules {cfg.name}={repo} "
              f"--max-lora-rank {lora_rank_bound(cfg.lora_r)} --tokenizer {repo}",
              "```", "",
              f'then send `model="{cfg.name}"` with the persona\'s system prompt as the first message.']
    lines += ["", "## Training", "", "| setting | value |", "|---|---|"]
    rows = [("base model", f"`{base}`"), ("data", data),
            ("quantisation", f"4-bit {cfg.quant_type}" + (", double quantisation" if cfg.double_quant else "")
             if cfg.load_in_4bit else f"none ({cfg.compute_dtype})"),
            ("LoRA", f"r={cfg.lora_r}, alpha={cfg.lora_alpha}, dropout={cfg.lora_dropout}, {cfg.lora_target_modules}"),
            ("loss", "assistant turns and their end-of-turn token only"),
            ("schedule", f"lr {cfg.learning_rate:g}, {cfg.lr_scheduler}, warmup {cfg.warmup_ratio:g}, "
             + (f"{cfg.max_steps} steps" if cfg.max_steps > 0 else f"{cfg.epochs:g} epochs")),
            ("sequence", f"max {cfg.max_seq_len} tokens" + (", packed" if cfg.packing else ""))]
    for key, label in (("steps", "optimiser steps"), ("train_loss", "train loss"), ("eval_loss", "eval loss")):
        value = (train_metrics or {}).get(key)
        if isinstance(value, (int, float)):
            rows.append((label, f"{value:.4g}" if isinstance(value, float) else str(value)))
    lines += [f"| {k} | {v} |" for k, v in rows]
    lines += ["", "The recipe, its config (`train_config.yaml` here) and the data pipeline: the mbti-persona-chat "
                  "project (`make train`).", "",
              "## Limitations", "",
              f"- {DISCLAIMER}",
              "- The personas are stereotypes of the types as the training data portrays them; the model imitates a "
              "style, it does not know anyone's personality.",
              "- The evaluation's judge is itself an LLM: its type guesses and 1-5 scores are noisy, and a few turns "
              "say little about a type. Read the numbers side by side (fine-tuned vs base), not as absolutes.",
              "- Replies are small talk, not professional, medical, legal or financial advice.",
              f"- The base model's license and limitations apply as well (`{base}`)."]
    return f"---\n{header}---\n\n" + "\n".join(lines).rstrip() + "\n"


def thoroughness(results: Any) -> tuple[int, bool]:
    """How much an evaluation measured: (held-out chats replayed, whether the judge ran)."""
    if not isinstance(results, dict) or not isinstance(results.get("conditions"), dict):
        return (0, False)
    n = max((b.get("n_chats") or 0 for b in results["conditions"].values() if isinstance(b, dict)), default=0)
    return (n, bool(results.get("judge_model")))


def card_keeps(folder: Path, results: dict[str, Any]) -> tuple[int, bool] | None:
    """The card's evaluation when it is more thorough than `results` (then a default eval run leaves it), else None."""
    held = _read(folder / EVAL_RESULTS_FILE)
    mine, theirs = thoroughness(results), thoroughness(held)
    return theirs if theirs[0] > mine[0] or (theirs[0] == mine[0] and theirs[1] and not mine[1]) else None


def write_model_card(cfg: TrainConfig, results: dict[str, Any] | None = None, dataset_id: str | None = None,
                     license: str | None = None, repo_id: str | None = None, config_path: str | None = None) -> Path:
    """Write `<checkpoint>/README.md` (and `eval_results.json` when `results` are given); returns the card's path.

    Without `results`, the last ones saved beside the checkpoint are used.
    """
    from train.personas import read_personas

    folder = cfg.checkpoint_dir
    folder.mkdir(parents=True, exist_ok=True)
    if results is not None:
        (folder / EVAL_RESULTS_FILE).write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n",
                                                encoding="utf-8")
    else:
        results = _read(folder / EVAL_RESULTS_FILE)
    personas = read_personas(folder) or read_personas(cfg.merged_dir) or {}
    resolved = _read(folder / "train_config.yaml")
    eot = resolved.get("eot_token") if isinstance(resolved, dict) else None
    dataset_id = dataset_id or (cfg.dataset if looks_like_hub_id(cfg.dataset) else None)
    license = license or dataset_license(cfg.dataset) or "other"
    text = render_model_card(cfg, results if isinstance(results, dict) else None, personas,
                             _read(folder / "metrics.json"), dataset_id, license, repo_id, eot,
                             config_path or f"train/configs/{cfg.name}.yaml")
    path = folder / CARD_FILE
    path.write_text(text, encoding="utf-8")
    return path

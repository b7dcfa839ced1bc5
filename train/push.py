"""`python -m train push --config C --repo-id USER/NAME [--private]`: the checkpoint to the Hugging Face Hub.

Uploads what someone needs to use the adapter: the adapter weights and config, the tokenizer (with its
chat template and pad token), `personas.json` (the system prompts it was trained with), the model card
(README.md, written again here so it matches the files), `train_config.yaml`, `metrics.json` and, when
`python -m train eval` ran, `eval_results.json`. Resumable trainer states (`trainer/`) and the merged
model (`merged/`, GBs) stay local.

The upload is datagen publish's (`datagen.publish.upload_to_hub`): token from `HF_TOKEN` or the stored
login, bounded retries, one line on failure with everything kept; a rerun resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from datagen.errors import UserError
from train.config import TrainConfig

IGNORED = ["trainer/**", "merged/**", "*.tmp", ".cache/**"]
"""Left out of the upload: resumable trainer states (optimizer, RNG: several times the adapter), the merged model."""


def push(cfg: TrainConfig, repo_id: str, private: bool = False, dataset_id: str | None = None,
         license: str | None = None, config_path: str | None = None, attempts: int = 3, retry_wait_s: float = 5.0,
         log: Callable[[str], None] = print) -> str:
    """Write the card, upload the checkpoint folder (without trainer/ and merged/); returns the repo's URL."""
    from datagen.publish import repo_id_problem, upload_to_hub
    from train.card import write_model_card
    from train.merge import require_adapter

    problem = repo_id_problem(repo_id)
    if problem:
        raise UserError(problem.replace("me/mbti-chat-ko", "me/mbti-persona-lora"))
    folder: Path = require_adapter(cfg)
    card = write_model_card(cfg, dataset_id=dataset_id, license=license, repo_id=repo_id, config_path=config_path)
    log(f"model card: {card}")
    url = upload_to_hub(folder, repo_id, repo_type="model", private=private,
                        commit_message=f"python -m train push ({cfg.name})",
                        keep=f"the checkpoint is kept at {folder}; rerun the same command to upload it",
                        attempts=attempts, retry_wait_s=retry_wait_s, ignore_patterns=IGNORED)
    log(f"uploaded {folder} to {url}")
    return url

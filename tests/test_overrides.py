"""`--set key=value`: every stage's config can be set from the command line, typed, with one clear message per mistake."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest

from datagen.curate import CurateConfig
from datagen.generate import GenerateConfig
from datagen.judge import JudgeConfig
from datagen.overrides import OverrideError, apply_overrides, config_keys
from datagen.publish import PublishConfig
from datagen.seed_check import SeedCheckConfig

STAGES = [GenerateConfig(), CurateConfig(), JudgeConfig(), PublishConfig(run="r1"), SeedCheckConfig()]


def as_text(value) -> str:
    """A value written the way a user types it after `--set key=`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("cfg", STAGES, ids=lambda c: type(c).__name__)
def test_every_key_of_every_stage_config_round_trips(cfg):
    keys = config_keys(type(cfg))
    assert len(keys) >= 5
    for key in keys:
        value = get(cfg, key)
        if isinstance(value, tuple) and any("," in str(v) for v in value):
            continue  # a comma inside an item cannot be written comma-separated
        assert apply_overrides(cfg, [f"{key}={as_text(value)}"]) == cfg, key


def test_overrides_are_typed_and_nested():
    cfg = apply_overrides(GenerateConfig(), ["count=50", "types=ISTJ,ENFP", "max_cost=1.5", "llm.max_attempts=2",
                                             "checks.near_dup_threshold=0.5", "checks.banned_phrases=AI,챗봇",
                                             "out_dir=/tmp/x", "run=null"])
    assert (cfg.count, cfg.types, cfg.max_cost, cfg.llm.max_attempts) == (50, ("ISTJ", "ENFP"), 1.5, 2)
    assert cfg.checks.near_dup_threshold == 0.5 and cfg.checks.banned_phrases == ("AI", "챗봇")
    assert cfg.out_dir == Path("/tmp/x") and cfg.run is None
    assert dataclasses.replace(cfg, count=200) != GenerateConfig()  # nothing else moved by accident


def test_every_mistake_is_named_at_once():
    with pytest.raises(OverrideError) as e:
        apply_overrides(GenerateConfig(), ["cont=5", "llm.max_atempts=2", "count=many", "checks", "seed=1.5"])
    assert e.value.problems == [
        "override 'checks': write key=value, e.g. count=50",
        "--set cont=5: unknown key 'cont' (did you mean count?)",
        "--set llm.max_atempts=2: unknown key 'llm.max_atempts' (did you mean llm.max_attempts or llm.max_tokens or "
        "llm.max_rate_limit_waits?)",
    ]
    with pytest.raises(OverrideError) as e:
        apply_overrides(GenerateConfig(), ["count=many", "seed=1.5", "llm.timeout_s=x"])
    assert e.value.problems == ["--set count='many': expected an integer", "--set seed='1.5': expected an integer",
                                "--set llm.timeout_s='x': expected a number"]
    with pytest.raises(OverrideError, match=r"--count must be at least 1 \(got 0\)"):
        apply_overrides(GenerateConfig(), ["count=0"])  # the config's own check, named once


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from datagen import cli

    monkeypatch.setattr(sys, "argv", ["datagen", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, " ".join(out.err.split())


def test_each_command_takes_set(seeds_dir, tmp_path, clean_env, capsys):
    # generate: the planned requests follow per_request from --set
    code, out, _ = run_cli(clean_env, capsys, "generate", "--count", "4", "--seeds", str(seeds_dir), "--out",
                           str(tmp_path), "--dry-run", "--set", "per_request=4")
    assert code == 0 and "ISTJ: 0 accepted, 4 to go → 1 request " in out
    # seeds check: a stricter collection rule from --set
    code, out, _ = run_cli(clean_env, capsys, "seeds", "check", "--seeds", str(seeds_dir), "--set", "min_dialogues=4",
                           "--set", "min_distinct_exchanges=1", "--set", "short_exchanges=null",
                           "--set", "long_exchanges=null", "--set", "require_register_expressions=false")
    assert code == 1 and "too_few_dialogues: ISTJ has 3 seed dialogues; write at least 4" in out
    # publish and curate: a bad key is one line naming the closest valid one
    code, _, err = run_cli(clean_env, capsys, "publish", "--run", "r1", "--out", str(tmp_path), "--set", "test_shar=0.1")
    assert (code, err) == (2, "error: --set test_shar=0.1: unknown key 'test_shar' (did you mean test_share?)")
    code, _, err = run_cli(clean_env, capsys, "curate", "--run", "r1", "--out", str(tmp_path), "--set",
                           "rules.min_exchange=2")
    assert code == 2 and err.startswith("error: --set rules.min_exchange=2: unknown key 'rules.min_exchange' (did you "
                                        "mean rules.min_exchanges")
    code, _, err = run_cli(clean_env, capsys, "curate", "--run", "r1", "--out", str(tmp_path), "--judge",
                           "--base-url", "http://127.0.0.1:9/v1", "--set", "judge.min_persona=9")
    assert (code, err) == (2, "error: judge min_persona must be between 1 and 5")

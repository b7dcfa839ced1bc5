import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import datasets
import huggingface_hub
import pytest
import yaml

from datagen import card, publish as pub
from datagen.errors import UserError
from datagen.publish import PublishConfig
from datagen.schema import Dialogue
from datagen.seeds import load_personas
from tests.helpers import PERSONA

GENERATED_META = {"model": "test-model", "register": "존댓말", "usage": {"prompt_tokens": 812}, "example_ids": ["a", "b"]}


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """No test reaches the Hub: offline flags (env and the already-imported constants), a tmp HF home, no token."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def dialogue(mbti: str, i: int, source: str = "generated", meta: dict | None = None) -> Dialogue:
    """A distinct two-exchange dialogue per (type, i)."""
    return Dialogue.build(mbti, f"주제 {i}", [
        {"role": "user", "content": f"{i}번째 고민이 있어요. 요즘 잠을 잘 못 자요."},
        {"role": "assistant", "content": f"언제부터 그랬는지 먼저 볼까요? {i}일 전부터인가요?"},
        {"role": "user", "content": "일주일쯤 됐어요."},
        {"role": "assistant", "content": "그럼 자기 전 한 시간만 휴대폰을 멀리 두는 것부터 해 봐요." + "요." * (i % 7)},
    ], source=source, meta=dict(GENERATED_META if meta is None else meta))


def write_seeds(root: Path, types=("ISTJ", "ENFP"), seeds_per_type: int = 0) -> Path:
    (root / "personas").mkdir(parents=True)
    (root / "dialogues").mkdir()
    for t in types:
        (root / "personas" / f"{t}.yaml").write_text(yaml.safe_dump({"mbti": t} | PERSONA, allow_unicode=True), "utf-8")
        rows = [dialogue(t, 1000 + i, "seed", {"register": "반말"}).to_json() + "\n" for i in range(seeds_per_type)]
        (root / "dialogues" / f"{t}.jsonl").write_text("".join(rows), "utf-8")
    return root


def write_run(tmp_path: Path, per_type: dict[str, int], name: str = "r1", extra_lines: str = "") -> list[Dialogue]:
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    records = [dialogue(t, i) for t, n in per_type.items() for i in range(n)]
    (run / "curated.jsonl").write_text("".join(d.to_json() + "\n" for d in records) + extra_lines, "utf-8")
    return records


def config(tmp_path: Path, **overrides) -> PublishConfig:
    fields = {"run": "r1", "out": tmp_path, "dataset_dir": tmp_path / "dataset" / "r1",
              "seeds_dir": tmp_path / "seeds", "retry_wait_s": 0.0}
    return PublishConfig(**(fields | overrides))


@pytest.fixture
def seeds(tmp_path):
    return write_seeds(tmp_path / "seeds")


def load_folder(folder: Path, tmp_path: Path) -> datasets.DatasetDict:
    return datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "hf-cache"))


def read_header(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text("utf-8")
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def assert_nothing_written(tmp_path: Path) -> None:
    assert not (tmp_path / "dataset").exists() or list((tmp_path / "dataset").iterdir()) == []


# --- the folder -------------------------------------------------------------------------------------------


def test_load_dataset_reads_the_folder_with_splits_features_and_rows(tmp_path, seeds):
    records = write_run(tmp_path, {"ISTJ": 20, "ENFP": 30})
    result = pub.publish(config(tmp_path))

    ds = load_folder(result.folder, tmp_path)
    assert set(ds) == {"train", "test"}
    assert (ds["train"].num_rows, ds["test"].num_rows) == (47, 3)
    assert ds["train"].features == pub.features(("model", "run", "register"))
    assert ds["train"].column_names == ["id", "mbti", "topic", "messages", "source", "meta"]
    personas, _ = load_personas(seeds, types=("ISTJ", "ENFP"))
    published = {r["id"]: r for split in ds.values() for r in split}
    assert sorted(published) == sorted(d.id for d in records)
    d = records[0]
    assert published[d.id] == {
        "id": d.id, "mbti": "ISTJ", "topic": "주제 0",
        "messages": [{"role": "system", "content": personas["ISTJ"].system_prompt()}, *d.messages],
        "source": "generated", "meta": {"model": "test-model", "run": "r1", "register": "존댓말"}}
    assert result.counts == {"train": {"ISTJ": 19, "ENFP": 28}, "test": {"ISTJ": 1, "ENFP": 2}}
    assert result.summary() == f"wrote {result.folder}: train 47, test 3 (2 types)"
    assert sorted(str(p.relative_to(result.folder)) for p in result.folder.rglob("*") if p.is_file()) == [
        "README.md", "data/test-00000-of-00001.parquet", "data/train-00000-of-00001.parquet",
        "plots/exchanges.png", "plots/lengths.png", "plots/type_counts.png"]


def test_every_system_message_is_the_personas_system_prompt(tmp_path):
    seeds = write_seeds(tmp_path / "seeds", types=("ISTJ", "ENFP"))
    (seeds / "personas" / "ENFP.yaml").write_text(
        yaml.safe_dump({"mbti": "ENFP"} | PERSONA | {"summary": "가능성을 먼저 보는 대화 상대."}, allow_unicode=True), "utf-8")
    write_run(tmp_path, {"ISTJ": 10, "ENFP": 10})
    ds = load_folder(pub.publish(config(tmp_path)).folder, tmp_path)
    personas, _ = load_personas(seeds, types=("ISTJ", "ENFP"))
    rows = [r for split in ds.values() for r in split]
    assert {r["messages"][0]["content"] for r in rows if r["mbti"] == "ENFP"} == {personas["ENFP"].system_prompt()}
    assert {r["messages"][0]["content"] for r in rows if r["mbti"] == "ISTJ"} == {personas["ISTJ"].system_prompt()}
    assert all(r["messages"][0]["role"] == "system" and r["messages"][1]["role"] == "user" for r in rows)
    assert "가능성을 먼저 보는 대화 상대." in personas["ENFP"].system_prompt()


def test_meta_is_compact_and_never_carries_usage_or_secrets(tmp_path):
    d = dialogue("ISTJ", 1, meta={"model": "m1", "run": "older-run", "usage": {"total_tokens": 9}, "api_key": "sk-x",
                                  "register": "반말", "judge": {"score": 5}})
    assert pub.to_row(d, SimpleNamespace(system_prompt=lambda: "S"), "r1", ("model", "run", "register"))["meta"] == {
        "model": "m1", "run": "older-run", "register": "반말"}
    seed = dialogue("ISTJ", 2, source="seed", meta={"register": "존댓말"})
    assert pub.compact_meta(seed, "r1", ("model", "run", "register")) == {"model": None, "run": None, "register": "존댓말"}


def test_card_yaml_parses_and_carries_the_hub_fields(tmp_path, seeds):
    write_run(tmp_path, {"ISTJ": 20, "ENFP": 30})
    run = tmp_path / "runs" / "r1"
    (run / "config.json").write_text(json.dumps({"model": "gen-model-x", "temperature": 0.9, "max_tokens": 1200,
                                                 "api_key": "sk-secret-do-not-publish", "base_url": "http://u:pw@host/v1"}))
    (run / "report.json").write_text(json.dumps({"kept": 50, "rejected": {"too_short": 7, "persona_break": 3},
                                                 "dedup": {"near": 4}, "judge": {"agreement": 0.81}}))
    folder = pub.publish(config(tmp_path, license="apache-2.0", repo_id=None)).folder
    header, body = read_header(folder)

    assert header["language"] == ["ko"]
    assert header["license"] == "apache-2.0"
    assert header["task_categories"] == ["text-generation"]
    assert header["size_categories"] == ["n<1K"]
    assert {"mbti", "persona", "korean", "synthetic"} <= set(header["tags"])
    assert header["configs"] == [{"config_name": "default", "data_files": [
        {"split": "train", "path": "data/train-*"}, {"split": "test", "path": "data/test-*"}]}]
    assert header["dataset_info"]["splits"] == [
        {"name": "train", "num_bytes": header["dataset_info"]["splits"][0]["num_bytes"], "num_examples": 47},
        {"name": "test", "num_bytes": header["dataset_info"]["splits"][1]["num_bytes"], "num_examples": 3}]

    assert "| ISTJ | 꼼꼼한 기록가 | 19 | 1 | 20 | 0 | 20 | 2.0 |" in body
    assert "| **all** | | **47** | **3** | **50** | **0** | **50** | | |" in body
    assert "| `rejected.too_short` | 7 |" in body and "| `judge.agreement` | 0.81 |" in body
    assert "Model(s): `test-model`." in body
    assert "temperature: 0.9" in body and "sk-secret" not in body and "pw@" not in body
    assert 'load_dataset("USER/NAME")' in body and "SFTTrainer(" in body
    assert "not a validated clinical instrument" in body
    assert body.count("> **system**:") == 2
    for png in ("type_counts", "exchanges", "lengths"):
        assert f"](plots/{png}.png)" in body
        assert (folder / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_card_degrades_gracefully_without_config_or_report(tmp_path, seeds):
    write_run(tmp_path, {"ISTJ": 10})
    (tmp_path / "runs" / "r1" / "report.json").write_text("{not json")
    _, body = read_header(pub.publish(config(tmp_path)).folder)
    assert "_No generation settings (`config.json`) were recorded for this run._" in body
    assert "- report.json could not be read (JSONDecodeError); left out of this card" in body
    assert "Types without dialogues in this release: ISFJ, INFJ," in body


def test_rebuild_is_byte_identical_and_replaces_the_folder(tmp_path, seeds):
    write_run(tmp_path, {"ISTJ": 10, "ENFP": 10})
    folder = pub.publish(config(tmp_path)).folder
    first = {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    (folder / "data" / "train-00001-of-00002.parquet").write_text("a shard of an older, bigger release")
    pub.publish(config(tmp_path))
    assert {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == first
    assert sorted(p.name for p in folder.parent.iterdir()) == ["r1"]


def test_out_must_not_be_a_folder_of_something_else(tmp_path, seeds):
    write_run(tmp_path, {"ISTJ": 10})
    with pytest.raises(UserError) as e:
        pub.publish(config(tmp_path, dataset_dir=tmp_path))
    assert str(e.value) == (f"--dataset-dir {tmp_path} exists and is not a dataset folder written by `datagen publish` "
                            "(it would be replaced whole); pick a new folder")
    assert (tmp_path / "runs" / "r1" / "curated.jsonl").exists()


def test_shards_split_large_splits(tmp_path, seeds):
    write_run(tmp_path, {"ISTJ": 25})
    folder = pub.publish(config(tmp_path, rows_per_shard=10, test_share=0.04)).folder
    assert sorted(p.name for p in (folder / "data").iterdir()) == [
        "test-00000-of-00001.parquet", "train-00000-of-00003.parquet", "train-00001-of-00003.parquet",
        "train-00002-of-00003.parquet"]
    assert load_folder(folder, tmp_path)["train"].num_rows == 24


def test_test_share_zero_publishes_train_only(tmp_path, seeds):
    write_run(tmp_path, {"ISTJ": 3})
    folder = pub.publish(config(tmp_path, test_share=0)).folder
    assert set(load_folder(folder, tmp_path)) == {"train"}
    assert read_header(folder)[0]["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*"}]


def test_include_seeds_adds_the_run_types_seeds_once(tmp_path):
    write_seeds(tmp_path / "seeds", types=("ISTJ", "ENFP"), seeds_per_type=3)
    write_run(tmp_path, {"ISTJ": 10})
    run_file = tmp_path / "runs" / "r1" / "curated.jsonl"
    already = dialogue("ISTJ", 1000, "seed", {"register": "반말"})  # a seed curate already kept
    run_file.write_text(run_file.read_text("utf-8") + already.to_json() + "\n", "utf-8")

    result = pub.publish(config(tmp_path, include_seeds=True))
    assert result.seeds_added == 2  # ENFP's seeds stay out: the run has no ENFP
    rows = [r for split in load_folder(result.folder, tmp_path).values() for r in split]
    assert sorted((r["mbti"], r["source"]) for r in rows).count(("ISTJ", "seed")) == 3
    assert {r["mbti"] for r in rows} == {"ISTJ"}
    assert "3 seed dialogues are included in this dataset (`source: seed`)." in read_header(result.folder)[1]


def test_bad_and_duplicate_lines_are_skipped_and_counted(tmp_path, seeds):
    records = write_run(tmp_path, {"ISTJ": 10}, extra_lines='{"broken": \n')
    run_file = tmp_path / "runs" / "r1" / "curated.jsonl"
    run_file.write_text(run_file.read_text("utf-8") + records[0].to_json() + "\n", "utf-8")
    result = pub.publish(config(tmp_path))
    assert (result.skipped, sum(sum(c.values()) for c in result.counts.values())) == (2, 10)
    assert "- 2 bad or duplicate line(s) of curated.jsonl were left out" in read_header(result.folder)[1]


# --- the split --------------------------------------------------------------------------------------------


def test_split_is_stratified_per_type_and_seeded():
    records = [dialogue(t, i) for t, n in {"ISTJ": 40, "ENFP": 21, "INTP": 10}.items() for i in range(n)]
    splits = pub.stratified_split(records, 0.05, seed=7)
    count = lambda split, t: sum(d.mbti == t for d in splits[split])  # noqa: E731
    assert [count("test", t) for t in ("ISTJ", "ENFP", "INTP")] == [2, 1, 1]
    assert [count("train", t) for t in ("ISTJ", "ENFP", "INTP")] == [38, 20, 9]
    assert sorted(d.id for s in splits.values() for d in s) == sorted(d.id for d in records)
    assert pub.stratified_split(records, 0.05, seed=7) == splits
    assert pub.stratified_split(records, 0.05, seed=8)["test"] != splits["test"]
    # a type's split depends only on its own records: more ENFP leaves ISTJ's test records alone
    more = pub.stratified_split(records + [dialogue("ENFP", 99)], 0.05, seed=7)
    assert [d for d in more["test"] if d.mbti == "ISTJ"] == [d for d in splits["test"] if d.mbti == "ISTJ"]


def test_too_few_records_for_the_split_is_a_clear_error_and_writes_nothing(tmp_path, seeds):
    write_run(tmp_path, {"ISTJ": 30, "ENFP": 4})
    with pytest.raises(UserError) as e:
        pub.publish(config(tmp_path))
    assert str(e.value) == ("too few records for a 0.05 test split: ENFP has 4; each type needs at least 10. "
                            "Grow the run, pass a larger --test-share, or --test-share 0 for no test split")
    assert_nothing_written(tmp_path)


# --- bad input --------------------------------------------------------------------------------------------


def test_missing_run_and_missing_curated_file_are_clear_errors(tmp_path, seeds):
    with pytest.raises(UserError, match=r"^no run 'r1' in .*runs; run `datagen generate` and `datagen curate` first$"):
        pub.publish(config(tmp_path))
    (tmp_path / "runs" / "r1").mkdir(parents=True)
    with pytest.raises(UserError, match=r"curated\.jsonl not found; run `datagen curate --run r1` first$"):
        pub.publish(config(tmp_path))
    assert_nothing_written(tmp_path)


def test_empty_or_all_bad_curated_file_is_a_clear_error(tmp_path, seeds):
    write_run(tmp_path, {})
    with pytest.raises(UserError, match=r"curated\.jsonl has no valid records \(the file is empty\); nothing to publish$"):
        pub.publish(config(tmp_path))
    (tmp_path / "runs" / "r1" / "curated.jsonl").write_text('{"mbti": "ISTJ"}\n', "utf-8")
    with pytest.raises(UserError, match=r"no valid records \(1 bad line\(s\), first: .*:1: missing_field: "):
        pub.publish(config(tmp_path))
    assert_nothing_written(tmp_path)


@pytest.mark.parametrize("repo_id, problem", [
    ("no-namespace", "--repo-id 'no-namespace' must be USER/NAME (e.g. me/mbti-chat-ko)"),
    ("a/b/c", "--repo-id 'a/b/c' must be USER/NAME (e.g. me/mbti-chat-ko)"),
    ("me/bad..name", "--repo-id 'me/bad..name' is not a valid Hub repo id"),
    ("me/한글", "--repo-id 'me/한글' is not a valid Hub repo id"),
])
def test_invalid_repo_id_fails_before_any_work(tmp_path, repo_id, problem):
    with pytest.raises(UserError) as e:
        config(tmp_path, repo_id=repo_id)  # the run does not even exist: the config check comes first
    assert str(e.value).startswith(problem)


def test_config_collects_every_problem_at_once(tmp_path):
    with pytest.raises(UserError) as e:
        config(tmp_path, run="../x", test_share=0.7, license="gpl-ish")
    assert str(e.value) == (f"--run '../x' must be a run folder name under {tmp_path / 'runs'}; "
                            "--test-share 0.7 must be between 0 and 0.5 (e.g. 0.05); "
                            "--license 'gpl-ish' is not a Hub license id; use e.g. cc-by-nc-4.0, cc-by-4.0, "
                            "apache-2.0, mit or other")


def test_missing_persona_is_a_clear_error(tmp_path):
    write_seeds(tmp_path / "seeds", types=("ISTJ",))
    write_run(tmp_path, {"ISTJ": 10, "ENFP": 10})
    with pytest.raises(UserError, match=r"needs a valid persona for every published type: .*ENFP\.yaml:0: persona_missing"):
        pub.publish(config(tmp_path))
    assert_nothing_written(tmp_path)


def test_a_failed_build_keeps_the_previous_folder_and_leaves_no_temp(tmp_path, seeds, monkeypatch):
    write_run(tmp_path, {"ISTJ": 10})
    folder = pub.publish(config(tmp_path)).folder
    before = (folder / "README.md").read_bytes()

    def broken(*args):
        raise OSError("disk full")
    monkeypatch.setattr(card, "write_plots", broken)
    with pytest.raises(OSError, match="disk full"):
        pub.publish(config(tmp_path, license="mit"))
    assert (folder / "README.md").read_bytes() == before
    assert sorted(p.name for p in folder.parent.iterdir()) == ["r1"]


# --- the Hub boundary -------------------------------------------------------------------------------------


class FakeHub:
    """Stands in for `huggingface_hub.HfApi`; records calls, fails `upload_folder` with `errors` in turn."""

    def __init__(self, errors=()):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.errors = list(errors)
        self.tokens: list[str] = []

    def api(self, token=None):
        self.tokens.append(token)
        return SimpleNamespace(
            create_repo=lambda *a, **kw: self.calls.append(("create_repo", a, kw)),
            update_repo_settings=lambda *a, **kw: self.calls.append(("update_repo_settings", a, kw)),
            upload_folder=self.upload_folder)

    def upload_folder(self, *a, **kw):
        self.calls.append(("upload_folder", a, kw))
        if self.errors:
            raise self.errors.pop(0)


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", fake.api)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_fake_token")
    return fake


@pytest.mark.parametrize("private", [True, False])
def test_upload_gets_dataset_type_repo_id_private_flag_and_folder(tmp_path, seeds, hub, private):
    write_run(tmp_path, {"ISTJ": 10})
    result = pub.publish(config(tmp_path, repo_id="me/mbti-chat-ko", private=private))

    assert result.url == "https://huggingface.co/datasets/me/mbti-chat-ko"
    assert hub.tokens == ["hf_fake_token"]
    assert hub.calls[0] == ("create_repo", ("me/mbti-chat-ko",),
                            {"repo_type": "dataset", "private": private, "exist_ok": True})
    assert [c[0] for c in hub.calls] == (["create_repo", "update_repo_settings", "upload_folder"] if private
                                         else ["create_repo", "upload_folder"])
    assert hub.calls[-1] == ("upload_folder", (), {
        "repo_id": "me/mbti-chat-ko", "folder_path": str(result.folder), "repo_type": "dataset",
        "commit_message": "datagen publish --run r1", "delete_patterns": ["data/*", "plots/*"]})
    assert 'load_dataset("me/mbti-chat-ko")' in read_header(result.folder)[1]
    assert "hf_fake_token" not in (result.folder / "README.md").read_text("utf-8")


def test_no_token_is_one_clear_line_and_the_folder_is_kept(tmp_path, seeds, hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    write_run(tmp_path, {"ISTJ": 10})
    cfg = config(tmp_path, repo_id="me/mbti-chat-ko")
    with pytest.raises(UserError) as e:
        pub.publish(cfg)
    assert str(e.value) == (f"no Hugging Face token: set HF_TOKEN or run `hf auth login`; the dataset folder is kept "
                            f"at {cfg.folder}; rerun the same command to upload it")
    assert (cfg.folder / "README.md").exists() and hub.calls == []


def test_offline_mode_is_a_clear_error_without_a_request(tmp_path, seeds, hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    write_run(tmp_path, {"ISTJ": 10})
    with pytest.raises(UserError, match=r"^HF_HUB_OFFLINE is set, so nothing can be uploaded; the dataset folder is kept"):
        pub.publish(config(tmp_path, repo_id="me/mbti-chat-ko"))
    assert hub.calls == []


def test_network_errors_are_retried_a_bounded_number_of_times_then_rerun_resumes(tmp_path, seeds, hub):
    hub.errors = [ConnectionError("connection reset")] * 3
    write_run(tmp_path, {"ISTJ": 10})
    cfg = config(tmp_path, repo_id="me/mbti-chat-ko", upload_attempts=3)
    with pytest.raises(UserError) as e:
        pub.publish(cfg)
    assert str(e.value) == ("upload to me/mbti-chat-ko failed after 3 tries (ConnectionError: connection reset); "
                            f"the dataset folder is kept at {cfg.folder}; rerun the same command to upload it; "
                            "it resumes where it stopped")
    assert [c[0] for c in hub.calls].count("upload_folder") == 3
    assert pub.publish(cfg).url == "https://huggingface.co/datasets/me/mbti-chat-ko"


def test_one_network_error_then_success(tmp_path, seeds, hub):
    hub.errors = [TimeoutError("timed out")]
    write_run(tmp_path, {"ISTJ": 10})
    assert pub.publish(config(tmp_path, repo_id="me/mbti-chat-ko")).url is not None
    assert [c[0] for c in hub.calls].count("upload_folder") == 2


class FakeHTTPError(OSError):
    def __init__(self, status):
        super().__init__(f"{status} Client Error")
        self.response = SimpleNamespace(status_code=status)


def test_auth_errors_are_not_retried(tmp_path, seeds, hub):
    hub.errors = [FakeHTTPError(403)]
    write_run(tmp_path, {"ISTJ": 10})
    cfg = config(tmp_path, repo_id="me/mbti-chat-ko")
    with pytest.raises(UserError) as e:
        pub.publish(cfg)
    assert str(e.value) == ("the Hub refused the upload to me/mbti-chat-ko (HTTP 403): check that the token can write "
                            f"to that namespace; the dataset folder is kept at {cfg.folder}; rerun the same command to upload it")
    assert [c[0] for c in hub.calls].count("upload_folder") == 1


# --- the CLI ----------------------------------------------------------------------------------------------


def test_cli_prints_one_line_for_bad_input(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_TOKEN"}
    proc = subprocess.run([sys.executable, "-c", "from datagen.cli import main; main()", "publish", "--run", "r1",
                           "--out", str(tmp_path), "--repo-id", "not a repo"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --repo-id 'not a repo' must be USER/NAME (e.g. me/mbti-chat-ko)"]
    assert not (tmp_path / "outputs").exists()


def test_cli_publish_writes_the_folder(tmp_path, seeds):
    from typer.testing import CliRunner

    from datagen.cli import app

    write_run(tmp_path, {"ISTJ": 10})
    out = tmp_path / "dataset" / "r1"
    result = CliRunner().invoke(app, ["publish", "--run", "r1", "--out", str(tmp_path), "--dataset-dir", str(out),
                                      "--seeds", str(seeds), "--test-share", "0.1", "--seed", "3", "--license", "mit"])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {out}: train 9, test 1 (1 type)\n"
    assert read_header(out)[0]["license"] == "mit"

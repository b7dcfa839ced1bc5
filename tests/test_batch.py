"""--batch-out writes a valid Batch API input file without calling anything; ingest-batch is idempotent."""

from __future__ import annotations

import json
from pathlib import Path

from datagen.batch import BATCH_URL, ingest_batch, write_batch
from datagen.cost import TokenCounter
from datagen.generate import GenerateConfig, generate
from datagen.llm import LLMConfig, request_hash
from datagen.schema import read_jsonl
from tests.conftest import read_lines
from tests.llm_server import LLMServer, completion_body, dialogue_factory, dialogues_reply, distinct_dialogue


def offline_counter() -> TokenCounter:
    def offline(name):
        raise RuntimeError("offline")

    return TokenCounter("gpt-4o-mini", loader=offline)


def batch_config(seeds_dir: Path, tmp_path: Path, **kw) -> GenerateConfig:
    return GenerateConfig(**{"types": ("ISTJ", "ENFP"), "count": 4, "per_request": 2, "out_dir": tmp_path / "out",
                             "seeds_dir": seeds_dir, "run": "b", "llm": LLMConfig(model="gpt-4o-mini"), **kw})


def fake_results(batch_file: Path, fail: set[int] = frozenset()) -> list[dict]:
    """What the Batch API returns for our input file: one answer per custom_id (line numbers in `fail` fail)."""
    out = []
    for n, line in enumerate(batch_file.read_text(encoding="utf-8").splitlines()):
        req = json.loads(line)
        if n in fail:
            out.append({"id": f"batch_req_{n}", "custom_id": req["custom_id"], "response": None,
                        "error": {"code": "server_error", "message": "internal error"}})
            continue
        content = dialogues_reply([distinct_dialogue(2 * n), distinct_dialogue(2 * n + 1)]).content
        body = completion_body("gpt-4o-mini-2024-07-18", content, usage={"prompt_tokens": 2000, "completion_tokens": 800})
        out.append({"id": f"batch_req_{n}", "custom_id": req["custom_id"],
                    "response": {"status_code": 200, "request_id": f"req_{n}", "body": body}, "error": None})
    return out


def write_results(path: Path, results: list[dict], extra: str = "") -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results) + extra, encoding="utf-8")
    return path


def test_batch_file_format(seeds_dir, tmp_path, clean_env):
    cfg = batch_config(seeds_dir, tmp_path)
    rep = write_batch(cfg, tmp_path / "batch.jsonl", counter=offline_counter())
    lines = [json.loads(x) for x in (tmp_path / "batch.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rep.requests == {"ISTJ": 2, "ENFP": 2} and len(lines) == 4
    assert all(set(x) == {"custom_id", "method", "url", "body"} for x in lines)
    assert all(x["method"] == "POST" and x["url"] == BATCH_URL == "/v1/chat/completions" for x in lines)
    assert len({x["custom_id"] for x in lines}) == 4
    assert [x["custom_id"][:12] for x in lines] == ["ISTJ-000000-", "ISTJ-000001-", "ENFP-000000-", "ENFP-000001-"]
    body = lines[0]["body"]
    assert body["model"] == "gpt-4o-mini" and body["response_format"]["type"] == "json_schema"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    plan = read_lines(cfg.run_dir / "batch_plan.jsonl")
    assert [p["custom_id"] for p in plan] == [x["custom_id"] for x in lines]
    assert all(p["request_hash"] == request_hash(x["body"]) and x["custom_id"].endswith(p["request_hash"][:16])
               for p, x in zip(plan, lines))
    assert rep.cost is not None and rep.cost > 0 and rep.token_note.startswith("tiktoken cannot load")
    # writing again gives the same file and does not grow the plan
    write_batch(cfg, tmp_path / "batch2.jsonl", counter=offline_counter())
    assert (tmp_path / "batch2.jsonl").read_bytes() == (tmp_path / "batch.jsonl").read_bytes()
    assert len(read_lines(cfg.run_dir / "batch_plan.jsonl")) == 4


def test_ingest_is_the_same_accept_path_and_idempotent(seeds_dir, tmp_path, clean_env):
    cfg = batch_config(seeds_dir, tmp_path)
    write_batch(cfg, tmp_path / "batch.jsonl", counter=offline_counter())
    results = fake_results(tmp_path / "batch.jsonl", fail={3})
    unknown = dict(results[0], custom_id="not-ours")
    path = write_results(tmp_path / "results.jsonl", results + [unknown], extra='{"custom_id": "ISTJ-0000')
    rep = ingest_batch(path, cfg)
    assert (rep.lines, rep.skipped, len(rep.problems)) == (6, 0, 2)
    assert "unknown_custom_id" in rep.problems[0] and "torn_line" in rep.problems[1]
    assert (rep.stats["ISTJ"].accepted, rep.stats["ENFP"].accepted) == (4, 2)
    assert dict(rep.stats["ENFP"].failed) == {"batch_error": 1}
    recs, errors = read_jsonl(cfg.run_dir / "generated" / "ISTJ.jsonl")
    assert errors == [] and len(recs) == 4
    meta = recs[0].meta
    assert meta["model"] == "gpt-4o-mini-2024-07-18" and meta["custom_id"] == results[0]["custom_id"]
    assert 1 <= len(meta["examples"]) <= 3 and meta["request_hash"] == read_lines(cfg.run_dir / "batch_plan.jsonl")[0]["request_hash"]
    assert rep.stats["ISTJ"].cost == (2 * 2000 * 0.15 + 2 * 800 * 0.60) / 1e6 * 0.5  # Batch API: half price

    def data_files():  # config.jsonl is the invocation history: every ingest adds a line to it
        return {p: p.read_bytes() for p in cfg.run_dir.rglob("*.jsonl") if p.name != "config.jsonl"}

    snapshot = data_files()
    again = ingest_batch(path, cfg)
    assert again.skipped == 4 and all(st.new == 0 for st in again.stats.values())
    assert data_files() == snapshot
    assert [h["command"] for h in read_lines(cfg.run_dir / "config.jsonl")] == ["batch-out", "ingest-batch", "ingest-batch"]

    # the batch results count for the live run too: ISTJ is done, ENFP needs one more request
    with LLMServer(default=dialogue_factory(2, salt="live")) as server:
        live = generate(GenerateConfig(**{**cfg.__dict__, "llm": LLMConfig(model="gpt-4o-mini", base_url=server.base_url,
                                                                             backoff_base_s=0.01)}), api_key="k")
        assert (live.types["ISTJ"].requests, live.types["ENFP"].requests, server.completions) == (0, 1, 1)
    # the ENFP request that failed in the batch is planned again under its index: same topics and registers
    # (its examples now include a dialogue the batch accepted, so its prompt is newer)
    live_raw = [r for r in read_lines(cfg.run_dir / "raw" / "ENFP.jsonl") if r["source"] == "api"]
    failed_plan = read_lines(cfg.run_dir / "batch_plan.jsonl")[3]
    assert [(r["request_index"], r["items"]) for r in live_raw] == [(1, failed_plan["items"])]


def test_ingest_without_the_plan_uses_the_custom_id(seeds_dir, tmp_path, clean_env):
    cfg = batch_config(seeds_dir, tmp_path, types=("ISTJ",))
    write_batch(cfg, tmp_path / "batch.jsonl", counter=offline_counter())
    (cfg.run_dir / "batch_plan.jsonl").unlink()  # e.g. ingested on another machine
    path = write_results(tmp_path / "results.jsonl", fake_results(tmp_path / "batch.jsonl"))
    rep = ingest_batch(path, cfg)
    assert rep.stats["ISTJ"].accepted == 4 and not rep.problems
    raw = read_lines(cfg.run_dir / "raw" / "ISTJ.jsonl")
    assert [r["request_index"] for r in raw] == [0, 1] and raw[0]["request_hash"].startswith("batch:ISTJ-000000-")
    assert ingest_batch(path, cfg).skipped == 2

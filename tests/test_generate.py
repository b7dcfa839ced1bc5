"""`datagen generate` end to end against a local OpenAI-compatible server: counts, faults, resume, cost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from datagen.cost import Price, format_usd
from datagen.errors import UserError
from datagen.generate import GenerateConfig, generate, parse_dialogues
from datagen.llm import LLMConfig, request_hash
from datagen.schema import MBTI_TYPES, read_jsonl
from tests.conftest import TOPICS, make_seeds, read_lines
from tests.llm_server import (LLMServer, dialogue_factory, dialogues_reply, korean_dialogue, malformed, rate_limited,
                              refused, server_error, slow, truncated)
from tests.test_llm import closed_port
from tests.test_prompts import EXPECTED_SYSTEM

REPO = Path(__file__).resolve().parent.parent


def config(seeds_dir: Path, tmp_path: Path, server: LLMServer | None, **kw) -> GenerateConfig:
    """Fast settings: tiny back-offs, 2 dialogues per request, the test model."""
    llm = dict(model="test-model", base_url=server.base_url if server else None, concurrency=4, backoff_base_s=0.01,
               backoff_max_s=0.05, timeout_s=5.0)
    llm.update(kw.pop("llm", {}))
    base = dict(types=("ISTJ",), count=4, out_dir=tmp_path / "out", seeds_dir=seeds_dir, per_request=2)
    base.update(kw)
    return GenerateConfig(llm=LLMConfig(**llm), **base)


def generated(cfg: GenerateConfig, mbti: str = "ISTJ"):
    records, errors = read_jsonl(cfg.run_dir / "generated" / f"{mbti}.jsonl")
    assert errors == []
    return records


def assert_unique(records) -> None:
    assert len({d.id for d in records}) == len(records)
    assert len({d.text for d in records}) == len(records)


# --- the happy path ---------------------------------------------------------------------------

def test_exact_counts_for_two_types(seeds_dir, tmp_path, llm_server, clean_env):
    cfg = config(seeds_dir, tmp_path, llm_server, types=("ISTJ", "ENFP"), count=6)
    stats = generate(cfg, api_key="sk-test-SECRET")
    for t in ("ISTJ", "ENFP"):
        recs = generated(cfg, t)
        assert len(recs) == 6 and stats.types[t].accepted == 6 and stats.types[t].requests == 3
        assert all(d.source == "generated" and d.mbti == t for d in recs)
        assert_unique(recs)
        assert len(read_lines(cfg.run_dir / "raw" / f"{t}.jsonl")) == 3
    assert llm_server.completions == 6
    assert not (cfg.run_dir / "rejected.jsonl").exists()
    meta = generated(cfg)[0].meta
    assert set(meta) == {"model", "run", "request_hash", "candidate", "request_index", "examples", "usage",
                         "response_format", "requested_register", "requested_relation", "requested_exchanges",
                         "register"}
    assert meta["model"] == "test-model" and meta["run"] == "test-model" and 1 <= len(meta["examples"]) <= 3
    assert {d.topic for d in generated(cfg)} <= set(TOPICS)
    # the key is in no file; the resolved config is
    for p in cfg.run_dir.rglob("*"):
        if p.is_file():
            assert "SECRET" not in p.read_text(encoding="utf-8")
    conf = read_lines(cfg.run_dir / "config.jsonl")[-1]["config"]
    assert conf["run"] == "test-model" and conf["llm"]["base_url"] == llm_server.base_url and conf["count"] == 6


def test_faults_and_rejects_are_counted_by_reason(seeds_dir, tmp_path, llm_server, clean_env):
    keep = korean_dialogue(5000, polite=True)
    ai = korean_dialogue(5001)
    ai["messages"][-1]["content"] = "저는 AI라서 잘 모르겠어요. 그래도 응원할게요."
    llm_server.push(
        rate_limited(0.05), server_error(500), malformed(),             # request 1: waits, retries, then bad JSON
        slow(2.0), truncated(),                                         # request 2: times out once, then cut off
        refused(),                                                      # request 3
        dialogues_reply([keep, keep]),                                  # request 4: 1 accepted, 1 duplicate
        dialogues_reply([ai, korean_dialogue(5002, exchanges=2)]),      # request 5: persona break, too short
        dialogues_reply([korean_dialogue(5000, polite=False)]),         # request 6: 반말 rewrite of an accepted one
    )
    cfg = config(seeds_dir, tmp_path, llm_server, count=5, llm=dict(concurrency=1, timeout_s=0.3))
    stats = generate(cfg, api_key="k")
    st = stats.types["ISTJ"]
    assert st.rejected == Counter({"bad_json": 1, "length": 1, "refusal": 1, "duplicate": 1, "persona_break": 1,
                                   "too_few_exchanges": 1, "near_dup": 1})
    assert (st.accepted, st.new, st.requests, st.failed) == (5, 5, 8, Counter())
    assert llm_server.completions == 11  # request 1 sent 3 times, request 2 twice, 6 more once
    recs = generated(cfg)
    assert len(recs) == 5
    assert_unique(recs)
    rejected = read_lines(cfg.run_dir / "rejected.jsonl")
    assert Counter(r["reason"] for r in rejected) == st.rejected
    assert {r["reason"]: r["candidate"] for r in rejected if r["candidate"] is None} == {
        "bad_json": None, "length": None, "refusal": None}
    near = next(r for r in rejected if r["reason"] == "near_dup")
    assert near["detail"].startswith("character 3-gram Jaccard ~") and recs[0].id in near["detail"]
    assert len(read_lines(cfg.run_dir / "raw" / "ISTJ.jsonl")) == 8  # every response kept, parse failures too
    assert st.summary().startswith("ISTJ: kept 5/12 (")


def test_json_schema_rejected_by_the_server(seeds_dir, tmp_path, clean_env):
    with LLMServer(default=dialogue_factory(2), reject_formats=("json_schema",)) as server:
        stats = generate(config(seeds_dir, tmp_path, server, llm=dict(concurrency=1)), api_key="k")
    assert stats.notices == ["the server rejected response_format json_schema; using json_object from now on"]
    assert stats.types["ISTJ"].accepted == 4


def test_all_types_share_one_concurrency_budget(tmp_path, clean_env):
    seeds = make_seeds(tmp_path / "seeds16", types=MBTI_TYPES)
    with LLMServer(default=dialogue_factory(2), latency=0.05) as server:
        cfg = config(seeds, tmp_path, server, types=MBTI_TYPES, count=2)
        stats = generate(cfg, api_key="k")
    assert all(st.accepted == 2 and st.requests == 1 for st in stats.types.values())
    assert server.completions == 16 and server.max_in_flight == 4


def test_parse_dialogues():
    good = '{"dialogues": [{"topic": "이사", "messages": []}]}'
    assert parse_dialogues(good)[1] is None
    assert parse_dialogues("```json\n" + good + "\n```")[0] == [{"topic": "이사", "messages": []}]
    assert parse_dialogues("여기 있어요: " + good + " 끝")[1] is None
    assert parse_dialogues('{"dialogues": [')[1][0] == "bad_json"
    assert parse_dialogues('[{"topic": "x"}]')[1][0] == "bad_shape"
    assert parse_dialogues('{"dialogues": []}')[1][0] == "no_dialogues"


# --- resume -----------------------------------------------------------------------------------

def test_count_means_in_all_and_surplus_is_used_later(seeds_dir, tmp_path, llm_server, clean_env):
    cfg = config(seeds_dir, tmp_path, llm_server, count=5, llm=dict(concurrency=1))
    first = generate(cfg, api_key="k").types["ISTJ"]
    assert (first.accepted, first.requests, first.surplus) == (5, 3, 1)
    again = generate(cfg, api_key="k").types["ISTJ"]  # same command: nothing to do, nothing sent
    assert (again.accepted, again.new, again.requests) == (5, 0, 0)
    more = generate(config(seeds_dir, tmp_path, llm_server, count=6), api_key="k").types["ISTJ"]
    assert (more.accepted, more.new, more.requests) == (6, 1, 0)  # the surplus dialogue, from raw/
    assert llm_server.completions == 3
    assert_unique(generated(cfg))


def test_stored_responses_are_replayed_not_resent(seeds_dir, tmp_path, llm_server, clean_env):
    cfg = config(seeds_dir, tmp_path, llm_server, count=6)
    generate(cfg, api_key="k")
    path = cfg.run_dir / "generated" / "ISTJ.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    # a kill after a response was stored but before its dialogues were written ...
    path.write_text("".join(lines[:3]) + lines[3][:25], encoding="utf-8")  # ... and a torn last line
    stats = generate(cfg, api_key="k")
    assert stats.types["ISTJ"].requests == 0 and llm_server.completions == 3
    recs = generated(cfg)
    assert sorted(d.id for d in recs) == sorted(json.loads(x)["id"] for x in lines)
    assert_unique(recs)


def test_a_complete_last_line_without_newline_is_kept(seeds_dir, tmp_path, llm_server, clean_env):
    """A writer killed between a record and its newline: the record is whole, so nothing is dropped or re-sent."""
    cfg = config(seeds_dir, tmp_path, llm_server, count=4)
    generate(cfg, api_key="k")
    for name in ("generated/ISTJ.jsonl", "raw/ISTJ.jsonl"):
        path = cfg.run_dir / name
        path.write_bytes(path.read_bytes().rstrip(b"\n"))  # the last record is complete, its newline is missing
    stats = generate(config(seeds_dir, tmp_path, llm_server, count=6), api_key="k")
    assert (stats.types["ISTJ"].accepted, stats.types["ISTJ"].requests, llm_server.completions) == (6, 1, 3)
    assert stats.notices == [f"{n}: the last line was complete but had no newline; kept it and added the newline"
                             for n in ("generated/ISTJ.jsonl", "raw/ISTJ.jsonl")]
    assert len(generated(cfg)) == 6 and len(read_lines(cfg.run_dir / "raw" / "ISTJ.jsonl")) == 3
    assert stats.spent_before == 0 and stats.types["ISTJ"].cached == 0  # the 2 stored answers replayed, not re-sent


def test_torn_tails_are_dropped(seeds_dir, tmp_path, llm_server, clean_env):
    cfg = config(seeds_dir, tmp_path, llm_server, count=4)
    generate(cfg, api_key="k")
    for name in ("generated/ISTJ.jsonl", "raw/ISTJ.jsonl", "rejected.jsonl"):
        with open(cfg.run_dir / name, "a", encoding="utf-8") as f:
            f.write('{"id": "ISTJ-0000000')
    stats = generate(config(seeds_dir, tmp_path, llm_server, count=6), api_key="k")
    assert (stats.types["ISTJ"].accepted, llm_server.completions) == (6, 3)
    assert stats.notices == [f"{n}: dropped a torn last line left by an interrupted write (it did not parse)"
                             for n in ("generated/ISTJ.jsonl", "raw/ISTJ.jsonl", "rejected.jsonl")]
    assert len(generated(cfg)) == 6
    for name in ("generated/ISTJ.jsonl", "raw/ISTJ.jsonl"):
        assert (cfg.run_dir / name).read_text(encoding="utf-8").endswith("}\n")


def test_resume_after_sigkill(seeds_dir, tmp_path, clean_env):
    out = tmp_path / "out"
    with LLMServer(default=dialogue_factory(2), latency=0.05) as server:
        cmd = [sys.executable, "-m", "datagen.cli", "generate", "--mbti", "ISTJ", "--count", "60", "--per-request", "2",
               "--concurrency", "2", "--model", "test-model", "--base-url", server.base_url, "--seeds", str(seeds_dir),
               "--out", str(out), "--backoff", "0.01", "--no-progress"]
        env = dict(os.environ, OPENAI_API_KEY="test-key")
        gen = out / "runs" / "test-model" / "generated" / "ISTJ.jsonl"
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not gen.exists() or gen.read_bytes().count(b"\n") < 10):
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        before = [json.loads(x) for x in gen.read_bytes().split(b"\n")[:-1]]  # complete lines only
        raw = read_lines_lenient(out / "runs" / "test-model" / "raw" / "ISTJ.jsonl")
        stored = {r["request_hash"] for r in raw if r.get("completion")}
        sent_first = len(server.requests)
        assert 10 <= len(before) < 60 and stored
        # every stored hash is one the server saw: the hash is of the body as sent
        assert stored <= {request_hash(b) for b in server.completion_bodies()}

        done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        resent = {request_hash(r.body) for r in server.requests[sent_first:]}
    after = [json.loads(x) for x in gen.read_text(encoding="utf-8").splitlines()]
    assert len(after) == 60
    assert [d["id"] for d in after[:len(before)]] == [d["id"] for d in before]  # nothing lost, nothing moved
    assert len({d["id"] for d in after}) == 60 and len({json.dumps(d["messages"]) for d in after}) == 60
    assert not (resent & stored)  # no stored request sent again
    assert "ISTJ: kept" in done.stdout and "60/60 in the run" in done.stdout


def read_lines_lenient(path: Path) -> list[dict]:
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass  # a torn tail
    return out


# --- cost -------------------------------------------------------------------------------------

def test_max_cost_stops_before_the_budget_is_exceeded(seeds_dir, tmp_path, clean_env):
    usage = {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}  # $0.002 at $1/$1 per 1M
    with LLMServer(default=dialogue_factory(2, usage=usage)) as server:
        # worst case per request: ~2,100 counted prompt tokens + max_tokens 500 = ~$0.0026 at $1/$1 per 1M
        cfg = config(seeds_dir, tmp_path, server, count=10, max_cost=0.005, price=Price(1.0, 1.0),
                     llm=dict(concurrency=1, max_tokens=500))
        stats = generate(cfg, api_key="k")
        st = stats.types["ISTJ"]
        assert (st.requests, st.accepted, server.completions) == (2, 4, 2)
        assert stats.spent == pytest.approx(0.004) and stats.spent <= 0.005
        assert stats.stop_reason.startswith("--max-cost $0.0050 would be exceeded by another request (spent $0.0040")
        again = generate(cfg, api_key="k")  # the cap is for the run in all: earlier spend counts
        assert again.types["ISTJ"].requests == 0 and again.spent_before == pytest.approx(0.004)
        assert "would be exceeded" in again.stop_reason
        higher = generate(config(seeds_dir, tmp_path, server, count=10, max_cost=0.007, price=Price(1.0, 1.0),
                                 llm=dict(concurrency=1, max_tokens=500)), api_key="k")
        assert higher.types["ISTJ"].requests == 1 and higher.spent == pytest.approx(0.006)


def test_max_cost_is_a_cap_against_a_server_that_bills_whole_max_tokens(seeds_dir, tmp_path, clean_env):
    """60% of answers billed at their whole max_tokens (as reasoning models' hidden tokens are), 16 in flight:
    what the server billed stays under --max-cost, in one invocation and over two."""
    import random

    from datagen.cost import approx_tokens
    from tests.llm_server import dialogues_reply, distinct_dialogue, requested_topics

    rng = random.Random(0)
    billed: list[float] = []
    price = Price(1.0, 4.0)

    def answer(body, n):
        topics = requested_topics(body) or ["주말 계획"]
        reply = dialogues_reply([distinct_dialogue(2 * n + j, topic=topics[j % len(topics)]) for j in range(2)])
        prompt = sum(4 + approx_tokens(m["content"]) for m in body["messages"]) + 3
        completion = body["max_tokens"] if rng.random() < 0.6 else 300
        billed.append((prompt * price.input + completion * price.output) / 1e6)
        reply.usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        return reply

    with LLMServer(default=answer, latency=0.02) as server:
        cfg = config(seeds_dir, tmp_path, server, count=200, max_cost=0.15, price=price,
                     llm=dict(concurrency=16, max_tokens=2000))
        first = generate(cfg, api_key="k")
        assert sum(billed) <= 0.15 and first.spent == pytest.approx(sum(billed))
        assert first.stop_reason.startswith("--max-cost $0.1500 would be exceeded by another request")
        assert server.max_in_flight > 1 and len(billed) >= 10
        sent = len(billed)
        again = generate(cfg, api_key="k")  # earlier spend counts, at the price it was billed at
        assert again.spent_before == pytest.approx(sum(billed[:sent])) and sum(billed) <= 0.15
        with pytest.raises(UserError) as e:  # a cap below one request's worst case: one line, nothing sent
            generate(config(seeds_dir, tmp_path, server, count=200, max_cost=0.005, price=price, run="tiny",
                            llm=dict(max_tokens=2000)), api_key="k")
        assert len(billed) == len(server.requests)
    msg = str(e.value)
    assert msg.startswith("--max-cost $0.0050 is below what one request may cost: up to $0.0")
    assert msg.endswith("or more, or lower --max-tokens") and "max_tokens 2,000 at $1 / $4 per 1M" in msg


def test_max_cost_needs_a_price(seeds_dir, tmp_path, llm_server, clean_env):
    with pytest.raises(UserError, match="no price known for model test-model"):
        generate(config(seeds_dir, tmp_path, llm_server, max_cost=1.0), api_key="k")
    assert llm_server.completions == 0


def test_spend_is_summed_from_usage(seeds_dir, tmp_path, clean_env):
    usage = {"prompt_tokens": 3000, "completion_tokens": 500, "total_tokens": 3500}
    with LLMServer(default=dialogue_factory(2, usage=usage)) as server:
        stats = generate(config(seeds_dir, tmp_path, server, count=4, price=Price(0.5, 2.0)), api_key="k")
    st = stats.types["ISTJ"]
    assert (st.prompt_tokens, st.completion_tokens) == (6000, 1000)
    assert st.cost == pytest.approx((6000 * 0.5 + 1000 * 2.0) / 1e6)


# --- bad input --------------------------------------------------------------------------------

def test_config_errors_name_the_fix():
    with pytest.raises(UserError) as e:
        GenerateConfig(types=("ISTX",), count=0, max_cost=-1.0, llm=LLMConfig(concurrency=0))
    msg = str(e.value)
    assert "--concurrency must be at least 1 (got 0)" in msg
    assert f"unknown type ISTX: use one of {' '.join(MBTI_TYPES)}, or all" in msg
    assert "--count must be at least 1 (got 0)" in msg and "--max-cost must be 0 or more USD (got -1)" in msg


def test_no_key_and_no_server(seeds_dir, tmp_path, clean_env):
    with pytest.raises(UserError, match="set OPENAI_API_KEY.*--dry-run and --batch-out work offline"):
        generate(config(seeds_dir, tmp_path, None))
    assert not (tmp_path / "out").exists()


def test_unreachable_server_keeps_what_was_accepted(seeds_dir, tmp_path, llm_server, clean_env):
    cfg = config(seeds_dir, tmp_path, llm_server, count=2, run="r")
    generate(cfg, api_key="k")
    before = (cfg.run_dir / "generated" / "ISTJ.jsonl").read_bytes()
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    t = time.monotonic()
    with pytest.raises(UserError) as e:
        generate(config(seeds_dir, tmp_path, None, count=10, run="r", llm=dict(base_url=dead, max_attempts=2)),
                 api_key="k")
    assert time.monotonic() - t < 10
    msg = str(e.value)
    assert msg.startswith(f"5 requests in a row failed at {dead} after 2 attempt(s) each (last: connection:")
    assert msg.endswith("2 accepted dialogue(s) kept in " + str(cfg.run_dir / "generated")
                        + "; rerun the same command to resume")
    assert (cfg.run_dir / "generated" / "ISTJ.jsonl").read_bytes() == before
    failed = [r for r in read_lines(cfg.run_dir / "raw" / "ISTJ.jsonl") if r["error"]]
    assert failed and all(r["error"] == "connection" and r["attempts"] == 2 for r in failed)


def test_a_run_keeps_its_model(seeds_dir, tmp_path, llm_server, clean_env):
    generate(config(seeds_dir, tmp_path, llm_server, count=2, run="r"), api_key="k")
    with pytest.raises(UserError, match="run 'r' was generated with model test-model, not other-model"):
        generate(config(seeds_dir, tmp_path, llm_server, count=2, run="r", llm=dict(model="other-model")), api_key="k")


def test_a_run_from_before_config_jsonl_keeps_its_model_after_a_later_stage(seeds_dir, tmp_path, llm_server,
                                                                            clean_env):
    """An older run recorded its generate config in config.json only; a curate started config.jsonl since."""
    from datagen.runs import append_config, generator_model

    run_dir = tmp_path / "out" / "runs" / "old"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"llm": {"model": "test-model"}, "count": 2}), encoding="utf-8")
    append_config(run_dir, "curate", {"judge": None})
    assert generator_model(run_dir) == "test-model"
    with pytest.raises(UserError, match="run 'old' was generated with model test-model, not other-model"):
        generate(config(seeds_dir, tmp_path, llm_server, count=2, run="old", llm=dict(model="other-model")),
                 api_key="k")
    assert llm_server.completions == 0


def test_missing_persona_is_named_before_any_request(seeds_dir, tmp_path, llm_server, clean_env):
    with pytest.raises(UserError, match="no valid persona profile for INTP.*datagen seeds check"):
        generate(config(seeds_dir, tmp_path, llm_server, types=("ISTJ", "INTP")), api_key="k")
    assert llm_server.completions == 0


def test_base_url_credentials_never_reach_config(seeds_dir, tmp_path, llm_server, clean_env):
    url = llm_server.base_url.replace("http://", "http://user:pw-SECRET@")
    cfg = config(seeds_dir, tmp_path, None, count=2, llm=dict(base_url=url))
    generate(cfg, api_key="k")
    assert "SECRET" not in (cfg.run_dir / "config.jsonl").read_text(encoding="utf-8")


# --- the CLI ----------------------------------------------------------------------------------

def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from datagen import cli

    monkeypatch.setattr(sys, "argv", ["datagen", *args])
    with pytest.raises(SystemExit) as e:
        cli.main()
    out = capsys.readouterr()
    return e.value.code or 0, out.out, out.err


def test_dry_run_output(seeds_dir, tmp_path, clean_env, capsys):
    out_dir = tmp_path / "out"
    code, out, err = run_cli(clean_env, capsys, "generate", "--mbti", "istj", "--count", "10", "--seeds", str(seeds_dir),
                             "--out", str(out_dir), "--dry-run")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == (f"dry run: nothing is sent. run gpt-4o-mini ({out_dir / 'runs' / 'gpt-4o-mini'}), model "
                        "gpt-4o-mini, server OpenAI (https://api.openai.com/v1)")
    assert lines[1].startswith("--- first request for ISTJ (request 0, hash ")
    assert lines[2:4] == ["[system]", EXPECTED_SYSTEM]
    assert lines[4:6] == ["[user]", "아래 인물이 assistant가 되어 평범한 사람(user)과 메신저로 나누는 새 대화 3개를 써 주세요."]
    assert "1. 주제: 친구와의 갈등 / 말투: 반말 / 상대: 친구 / 주고받기 3번 (메시지 6개)" in lines
    assert lines[-5:] == [
        "--- end of prompt ---",
        "ISTJ: 0 accepted, 10 to go → 4 requests (~5,612 prompt + ~2,528 completion tokens)",
        "planned: 4 requests, ~5,612 prompt + ~2,528 completion tokens, if every dialogue is accepted (rejects add requests)",
        "tiktoken cannot load o200k_base offline (offline in tests); tokens approximated as 1 per Hangul syllable + 1 "
        "per 4 other characters (datagen/cost.py)",
        "cost: ~$0.0024 at $0.15 / $0.6 per 1M prompt / completion tokens (Batch API: ~$0.0012)",
    ]
    assert not out_dir.exists()  # a dry run writes nothing


def test_dry_run_of_a_local_model_has_no_price(seeds_dir, tmp_path, clean_env, capsys):
    code, out, _ = run_cli(clean_env, capsys, "generate", "--count", "3", "--model", "Qwen/Qwen2.5-7B-Instruct",
                           "--seeds", str(seeds_dir), "--out", str(tmp_path / "out"), "--dry-run")
    assert code == 0
    assert out.splitlines()[-1] == ("cost: no price known for model Qwen/Qwen2.5-7B-Instruct (a local server costs "
                                    "nothing per token); pass --price-in/--price-out to estimate")
    assert "run Qwen-Qwen2.5-7B-Instruct (" in out.splitlines()[0]


@pytest.mark.parametrize("args, message", [
    ([], "error: no API key and no server: set OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL / --base-url for a local "
         "OpenAI-compatible server (vLLM, Ollama, llama.cpp); --dry-run and --batch-out work offline without either"),
    (["--mbti", "ISTX", "--base-url", "URL"], f"error: unknown type ISTX: use one of {' '.join(MBTI_TYPES)}, or all"),
    (["--count", "0", "--base-url", "URL"], "error: --count must be at least 1 (got 0)"),
    (["--max-cost", "-1", "--base-url", "URL"], "error: --max-cost must be 0 or more USD (got -1)"),
    (["--concurrency", "0", "--base-url", "URL"], "error: --concurrency must be at least 1 (got 0)"),
    (["--price-in", "1", "--base-url", "URL"], "error: pass both --price-in and --price-out (USD per 1M prompt / "
                                              "completion tokens)"),
])
def test_bad_input_is_one_line_before_any_request(args, message, seeds_dir, tmp_path, llm_server, clean_env, capsys):
    args = [a.replace("URL", llm_server.base_url) for a in args]
    code, out, err = run_cli(clean_env, capsys, "generate", "--seeds", str(seeds_dir), "--out", str(tmp_path / "o"),
                             *args)
    assert (code, out) == (2, "")
    assert " ".join(err.split()) == message  # rich may wrap a long line on a narrow terminal; the text is one line
    assert "Traceback" not in err
    assert llm_server.completions == 0 and not (tmp_path / "o").exists()


def test_cli_batch_out_and_ingest(seeds_dir, tmp_path, clean_env, capsys):
    out_dir, batch = tmp_path / "out", tmp_path / "batch.jsonl"
    code, out, _ = run_cli(clean_env, capsys, "generate", "--count", "4", "--per-request", "2", "--seeds",
                           str(seeds_dir), "--out", str(out_dir), "--batch-out", str(batch))
    assert code == 0 and batch.exists()
    assert out.splitlines()[0] == (f"wrote 2 requests to {batch} (ISTJ 2); plan kept in "
                                   f"{out_dir / 'runs' / 'gpt-4o-mini' / 'batch_plan.jsonl'}")
    assert out.splitlines()[-1] == "submit it with the OpenAI Batch API, then: datagen ingest-batch RESULTS.jsonl --run gpt-4o-mini"
    from tests.test_batch import fake_results, write_results

    results = write_results(tmp_path / "results.jsonl", fake_results(batch))
    code, out, _ = run_cli(clean_env, capsys, "ingest-batch", str(results), "--run", "gpt-4o-mini", "--seeds",
                           str(seeds_dir), "--out", str(out_dir))
    assert code == 0
    assert out.splitlines()[-1] == "2 result lines: 2 ingested, 0 already ingested, 0 unreadable"
    assert out.splitlines()[0].startswith("ISTJ: kept 4/4 · 4 in the run · 2 requests")


def test_one_writer_per_run(seeds_dir, tmp_path, llm_server, clean_env):
    from datagen.generate import RunLock

    cfg = config(seeds_dir, tmp_path, llm_server, count=2, run="r")
    with RunLock(cfg.run_dir):
        with pytest.raises(UserError, match="run 'r' is being written by another datagen process"):
            generate(cfg, api_key="k")
    assert llm_server.completions == 0
    assert generate(cfg, api_key="k").types["ISTJ"].accepted == 2  # released


def test_progress_table_renders(seeds_dir, tmp_path, llm_server, clean_env):
    from rich.console import Console

    from datagen.cli import _progress_table

    seen = []
    stats = generate(config(seeds_dir, tmp_path, llm_server, count=2), api_key="k", progress=seen.append)
    assert seen and seen[-1] is stats
    console = Console(width=120, record=True)
    console.print(_progress_table(stats))
    text = console.export_text()
    assert "generate · run test-model · spent ?" in text and "ISTJ" in text and "2/2" in text
    capped = generate(config(seeds_dir, tmp_path, llm_server, count=4, max_cost=1.0, price=Price(1.0, 1.0),
                             llm=dict(max_tokens=1000)), api_key="k")
    console.print(_progress_table(capped))
    shown = " ".join(console.export_text().split())  # rich wraps a title longer than the table
    assert (f"generate · run test-model · spent {format_usd(capped.spent)} · reserved $0.0000 · left "
            f"{format_usd(1.0 - capped.spent)}") in shown


def test_worker_process_gives_the_same_verdicts(seeds_dir, tmp_path, clean_env):
    def run(acceptor: str) -> GenerateConfig:
        keep = korean_dialogue(5000, polite=True)
        with LLMServer(default=dialogue_factory(2)) as server:
            server.push(malformed(), dialogues_reply([keep, keep]), dialogues_reply([korean_dialogue(5000, polite=False)]))
            cfg = config(seeds_dir, tmp_path / acceptor, server, count=4, acceptor=acceptor, llm=dict(concurrency=1))
            assert generate(cfg, api_key="k").types["ISTJ"].surplus == 1  # 1 + 2 + 2 candidates for 4
            more = generate(config(seeds_dir, tmp_path / acceptor, server, count=5, acceptor=acceptor), api_key="k")
            assert (more.types["ISTJ"].new, more.types["ISTJ"].requests) == (1, 0)  # the surplus, replayed
        return cfg

    inline, process = run("inline"), run("process")
    assert not inline.accept_in_process and process.accept_in_process
    for name in ("generated/ISTJ.jsonl", "rejected.jsonl"):
        assert (inline.run_dir / name).read_bytes() == (process.run_dir / name).read_bytes()
    assert Counter(r["reason"] for r in read_lines(process.run_dir / "rejected.jsonl")) == {
        "bad_json": 1, "duplicate": 1, "near_dup": 1}


def test_acceptor_choice():
    assert GenerateConfig(llm=LLMConfig(concurrency=64)).accept_in_process == ((os.cpu_count() or 1) >= 2)
    assert not GenerateConfig(llm=LLMConfig(concurrency=16)).accept_in_process
    assert GenerateConfig(acceptor="process").accept_in_process
    with pytest.raises(UserError, match="acceptor must be one of auto, inline, process"):
        GenerateConfig(acceptor="threads")

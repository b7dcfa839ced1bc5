"""python -m train eval end to end: one tiny trained checkpoint (real NF4 + LoRA on the CPU) shared by the module,
the local OpenAI-compatible test server as the judge (and as the vLLM-style and reference backends)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict

from datagen.errors import UserError
from datagen.schema import Dialogue, read_jsonl
from tests.conftest import make_seeds
from tests.llm_server import LLMServer, Reply, chat_reply, judge_factory, judge_kind
from train.__main__ import main
from train.config import load_config
from train.evaluate import EvalConfig, evaluate
from train.evaluate.recipe import CHAT_CACHE, CHATS_FILE, RESULTS_FILE, LocalModel
from train.finetune import finetune
from train.tiny import SAMPLE_CHATS, SAMPLE_TEXTS, SYSTEM_ENFP, SYSTEM_ISTJ, build_tiny_model, train_tiny_tokenizer

TINY = str(Path(__file__).resolve().parent.parent / "train" / "configs" / "tiny-cpu.yaml")
SECRET = "sk-test-secret-never-written-0123456789"
ISTJ_CHATS = [c for c in SAMPLE_CHATS if c[0]["content"] == SYSTEM_ISTJ]
ENFP_CHATS = [c for c in SAMPLE_CHATS if c[0]["content"] == SYSTEM_ENFP]
HELD_OUT = ISTJ_CHATS[:3] + ENFP_CHATS[:2]  # 3 ISTJ and 2 ENFP chats, 7 assistant turns in all


def rows(chats):
    return {"mbti": ["ISTJ" if c[0]["content"] == SYSTEM_ISTJ else "ENFP" for c in chats],
            "topic": ["주제"] * len(chats), "messages": chats}


def write_dataset(path: Path, splits: dict) -> Path:
    DatasetDict({k: Dataset.from_dict(rows(v)) for k, v in splits.items()}).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint trained for 2 steps (enough for the LoRA to move off zero) on the 8 sample chats; 5 held out."""
    root = tmp_path_factory.mktemp("ev")
    model = build_tiny_model(root / "tiny", tokenizer=train_tiny_tokenizer(SAMPLE_TEXTS, vocab_size=400))
    data = write_dataset(root / "data", {"train": SAMPLE_CHATS, "test": HELD_OUT})
    cfg = load_config(TINY, [f"model={model}", f"dataset={data}", f"output_dir={root / 'ck'}", "max_steps=2",
                             "warmup_ratio=0", "learning_rate=5e-2", "lora_r=4", "lora_alpha=8", "max_seq_len=256", "logging_steps=1",
                             "time_limit_minutes=null", "max_new_tokens=6"])
    finetune(cfg, log=lambda _: None)
    return cfg, make_seeds(root / "seeds")


def ecfg(tmp_path, seeds, server=None, **kw) -> EvalConfig:
    base = dict(out=str(tmp_path), seeds_dir=str(seeds), judge_concurrency=4, judge_max_attempts=1,
                judge_model="test-model", judge_base_url=server.base_url if server else None, judge=server is not None)
    base.update(kw)
    return EvalConfig(**base)


def quiet(_: str) -> None:
    pass


def test_a_judge_answering_one_type_gives_the_accuracies_computed_by_hand(ckpt, tmp_path, monkeypatch):
    cfg, seeds = ckpt
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # sent to the server, never written anywhere
    # ISFP for everything: ISTJ chats agree on E/I and S/N, ENFP chats on T/F and J/P; no chat is claimed ISFP.
    with LLMServer(default=judge_factory(guess="ISFP", persona=2, naturalness=5, engagement=3)) as server:
        out = evaluate(cfg, ecfg(tmp_path, seeds, server), log=quiet)
        assert server.completions == 2 * 2 * 5  # two requests per chat, 5 chats per condition
    res = json.loads((out.folder / RESULTS_FILE).read_text(encoding="utf-8"))
    assert list(res) == ["name", "judge_model", "limit_per_type", "conditions", "held_out", "setup", "notes"]
    assert (res["name"], res["judge_model"], res["limit_per_type"]) == (cfg.name, "test-model", None)
    assert list(res["conditions"]) == ["fine_tuned", "base"]
    for block in res["conditions"].values():
        assert list(block) == ["n_chats", "n_turns", "n_judged", "full_type", "axes", "per_type", "confusion", "scores",
                               "rules_pass", "rules_failed", "stop_rate", "distinct_1", "distinct_2",
                               "reply_chars_mean", "loss", "perplexity"]
        assert (block["n_chats"], block["n_turns"], block["n_judged"]) == (5, 7, 5)
        assert block["full_type"] == 0.0
        assert block["axes"] == {"E/I": 0.6, "S/N": 0.6, "T/F": 0.4, "J/P": 0.4}
        assert block["per_type"]["ISTJ"]["axes"] == {"E/I": 1.0, "S/N": 1.0, "T/F": 0.0, "J/P": 0.0}
        assert block["per_type"]["ENFP"]["axes"] == {"E/I": 0.0, "S/N": 0.0, "T/F": 1.0, "J/P": 1.0}
        assert (block["per_type"]["ISTJ"]["n_chats"], block["per_type"]["ENFP"]["n_chats"]) == (3, 2)
        assert block["confusion"] == {"ISTJ": {"ISFP": 3}, "ENFP": {"ISFP": 2}}
        assert block["scores"] == {"persona": 2.0, "naturalness": 5.0, "engagement": 3.0}
        assert 0 <= block["stop_rate"] <= 1 and 0 <= block["rules_pass"] <= 1
        assert block["loss"] > 0 and block["perplexity"] == pytest.approx(2.718281828 ** block["loss"], rel=1e-3)
    assert res["conditions"]["fine_tuned"]["loss"] != res["conditions"]["base"]["loss"]
    held = res["held_out"]
    assert (held["n_chats"], held["n_turns"], held["n_judged"], held["stop_rate"], held["loss"]) == (5, 7, None, None, None)
    assert held["rules_failed"] == {"mixed_register": 1} and held["rules_pass"] == 0.8  # a sample chat mixes 요 and 반말

    # chats.jsonl: every generated chat a Dialogue, the held-out user turns replayed, condition in meta
    chats, bad = read_jsonl(out.folder / CHATS_FILE)
    assert not bad and len(chats) == 10
    held_users = [[m["content"] for m in c if m["role"] == "user"] for c in HELD_OUT]
    for c, d in zip(["fine_tuned"] * 5 + ["base"] * 5, chats):
        assert d.source == "eval" and d.meta["condition"] == c and len(d.meta["turns"]) == len(d.turns("assistant"))
        assert d.turns("user") in held_users
    # report, confusion PNGs, and the checkpoint's model card
    report = (out.folder / "report.md").read_text(encoding="utf-8")
    assert "| **full type accuracy** (blind judge) | 0.0% | 0.0% | - |" in report
    assert "| axis E/I | 60.0% | 60.0% | - |" in report and "not a validated clinical instrument" in report
    assert report.count("### `") == 2 and "![fine_tuned](plots/confusion_fine_tuned.png)" in report
    for c in ("fine_tuned", "base"):
        assert (out.folder / "plots" / f"confusion_{c}.png").read_bytes()[:4] == b"\x89PNG"
    card = (cfg.checkpoint_dir / "README.md").read_text(encoding="utf-8")
    header = yaml.safe_load(card.split("---\n")[1])
    assert header["library_name"] == "peft" and header["language"] == ["ko"] and "mbti" in header["tags"]
    assert "| axis T/F | 40.0% | 40.0% |" in card
    assert json.loads((cfg.checkpoint_dir / "eval_results.json").read_text(encoding="utf-8")) == res
    # no key in any output
    for path in [*out.folder.rglob("*"), cfg.checkpoint_dir / "README.md"]:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_rerun_skips_finished_chats_and_judgements(ckpt, tmp_path):
    cfg, seeds = ckpt
    with LLMServer(default=judge_factory()) as server:
        first = evaluate(cfg, ecfg(tmp_path, seeds, server, limit_per_type=1), log=quiet)
        files = {p: p.read_bytes() for p in first.folder.rglob("*") if p.is_file()}
        sent = server.completions
        assert sent == 2 * 2 * 2  # 2 chats (1 per type) × 2 conditions × 2 judge requests
        again = evaluate(cfg, ecfg(tmp_path, seeds, server, limit_per_type=1), log=quiet)
        assert server.completions == sent and again.judge_sent == 0
        assert again.generated_turns == {"fine_tuned": 0, "base": 0} and not again.model_loaded
        assert {p: p.read_bytes() for p in files} == files  # the same bytes: results, report, PNGs, chats, caches
        # a chat lost (e.g. killed before its line was written): only that one is generated again
        cache = first.folder / CHAT_CACHE
        lines = cache.read_text(encoding="utf-8").splitlines(keepends=True)
        cache.write_text("".join(lines[1:]), encoding="utf-8")
        third = evaluate(cfg, ecfg(tmp_path, seeds, server, limit_per_type=1), log=quiet)
        # a smaller run in the same folder keeps what the bigger one generated
        evaluate(cfg, ecfg(tmp_path, seeds, server, limit_per_type=1, conditions=("base",)), log=quiet)
        fourth = evaluate(cfg, ecfg(tmp_path, seeds, server, limit_per_type=1), log=quiet)
    lost = Dialogue.from_dict(json.loads(lines[0]))
    assert third.generated_turns == {"fine_tuned": len(lost.turns("user")), "base": 0}
    assert fourth.generated_turns == {"fine_tuned": 0, "base": 0}
    assert (first.folder / CHATS_FILE).read_text(encoding="utf-8").count("\n") == 4


def test_base_really_runs_without_the_adapter(ckpt):
    cfg, _ = ckpt
    from train.model import load_base_model

    local = LocalModel(cfg, quiet)
    ids = torch.tensor([[5, 17, 42, 99, 7]])

    def logits(model):
        with torch.no_grad():
            return model(input_ids=ids).logits

    with local.condition("fine_tuned") as (model, _, _):
        tuned = logits(model)
    with local.condition("base") as (model, _, _):
        base = logits(model)
    with local.condition("fine_tuned") as (model, _, _):
        assert torch.equal(logits(model), tuned)  # the adapter is back on after `base`
    fresh = logits(load_base_model(cfg, "cpu", quantized=True).eval())
    assert not torch.allclose(tuned, base, atol=1e-4)
    assert torch.allclose(base, fresh, atol=1e-5)  # `base` is exactly the 4-bit base model


def echo(body, n):
    """A chat turn that quotes the user's turn: every held-out chat gets replies of its own."""
    last = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    return Reply(content=f"{last[:12]} 그 얘기 더 해 줄래요?")


def test_a_malformed_judge_answer_is_repaired_or_counted(ckpt, tmp_path):
    cfg, seeds = ckpt
    # Generation on the server (replies of its own per chat), so each chat's judge request is its own.
    with LLMServer(default=judge_factory(replies=echo)) as gen_server:
        evaluate(cfg, ecfg(tmp_path, seeds, None, base_url=gen_server.base_url, conditions=("fine_tuned",)), log=quiet)
    chats, _ = read_jsonl(tmp_path / "eval" / cfg.name / CHATS_FILE)
    hopeless, repaired = chats[0].turns("assistant")[0], chats[1].turns("assistant")[0]
    valid = judge_factory(guess="ISTJ")
    asked: dict[str, int] = {}

    def judge(body, n):
        text = body["messages"][1]["content"]
        if judge_kind(body) == "guess" and len(body["messages"]) >= 2:
            for line, times in ((hopeless, 99), (repaired, 1)):
                if f"1. {line}" in text:
                    asked[line] = asked.get(line, 0) + 1
                    if asked[line] <= times:
                        return Reply(content="유형은 ISTJ 같아요. 점수는 4점이에요.")
        return valid(body, n)

    with LLMServer(default=judge) as server:
        out = evaluate(cfg, ecfg(tmp_path, seeds, server, base_url=gen_server.base_url, conditions=("fine_tuned",)),
                       log=quiet)
        # 5 chats × 2 requests, + 1 repair that worked, + 2 repairs that did not (3 attempts in all)
        assert server.completions == 13
    block = out.results["conditions"]["fine_tuned"]
    assert (block["n_chats"], block["n_judged"]) == (5, 4)
    assert asked == {hopeless: 3, repaired: 2}
    assert out.generated_turns == {"fine_tuned": 0}  # the chats came from chats.jsonl
    assert block["loss"] is None and any("--base-url" in n for n in out.results["notes"])


def test_server_backends_replay_with_the_persona_prompt_and_count_stops(ckpt, tmp_path):
    cfg, seeds = ckpt
    personas = json.loads((cfg.checkpoint_dir / "personas.json").read_text(encoding="utf-8"))["personas"]

    def replies(body, n):  # the reference model runs out of tokens on every turn
        r = chat_reply(body, n)
        return Reply(content=r.content, finish_reason="length") if body["model"] == "ref-model" else r

    with LLMServer(default=judge_factory(replies=replies)) as server:
        out = evaluate(cfg, ecfg(tmp_path, seeds, server, base_url=server.base_url, reference_model="ref-model",
                                 reference_base_url=server.base_url, conditions=("fine_tuned", "reference")), log=quiet)
        turns = [b for b in server.completion_bodies() if judge_kind(b) is None]
    assert {b["model"] for b in turns} == {cfg.name, "ref-model"} and len(turns) == 2 * 7
    assert all(b["max_tokens"] == cfg.max_new_tokens and b["temperature"] == 0.0 for b in turns)
    assert {b["messages"][0]["content"] for b in turns} == {personas[t]["system_prompt"] for t in ("ISTJ", "ENFP")}
    istj = personas["ISTJ"]["system_prompt"]
    second = next(b for b in turns if len(b["messages"]) == 4 and b["model"] == cfg.name
                  and b["messages"][0]["content"] == istj)
    assert second["messages"][2]["content"] == chat_reply({"messages": second["messages"][:2]}, 0).content  # own reply
    conds = out.results["conditions"]
    assert (conds["fine_tuned"]["stop_rate"], conds["reference"]["stop_rate"]) == (1.0, 0.0)
    assert conds["reference"]["loss"] is None and conds["reference"]["n_judged"] == 5
    assert out.results["setup"]["models"]["reference"] == f"ref-model at {server.base_url}"


def test_judge_unreachable_keeps_the_chats_and_a_rerun_judges_the_rest(ckpt, tmp_path):
    cfg, seeds = ckpt
    server = LLMServer(default=judge_factory()).start()
    url = server.base_url
    server.stop()  # nothing listens there any more
    cfg_eval = ecfg(tmp_path, seeds, None, judge=True, judge_base_url=url, conditions=("base",))
    with pytest.raises(UserError) as e:
        evaluate(cfg, cfg_eval, log=quiet)
    message = str(e.value)
    assert "\n" not in message and message.startswith("the judge could not finish; the 5 generated chats are kept in")
    assert "rerun the same command to judge the rest" in message
    folder = tmp_path / "eval" / cfg.name
    assert len(read_jsonl(folder / CHATS_FILE)[0]) == 5 and not (folder / RESULTS_FILE).exists()
    with LLMServer(default=judge_factory()) as server:
        out = evaluate(cfg, dataclasses.replace(cfg_eval, judge_base_url=server.base_url), log=quiet)
    assert out.generated_turns == {"base": 0} and out.results["conditions"]["base"]["n_judged"] == 5


# --- bad input: one line each, before any work ------------------------------------------------------------------


def one_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_no_checkpoint_names_the_command_that_makes_one(capsys, tmp_path, monkeypatch):
    line = one_error(capsys, ["eval", "--config", TINY, f"output_dir={tmp_path / 'none'}", "--no-judge"])
    assert f"no checkpoint to evaluate in {tmp_path / 'none' / 'tiny-cpu'}" in line
    assert "python -m train train --config" in line
    monkeypatch.chdir(tmp_path)
    assert "`make demo` (python -m train demo) trains it" in one_error(capsys, ["eval", "--demo", "--no-judge"])


@pytest.mark.parametrize("args, expected", [
    (["--conditions", "fine_tuned,tuned"], "error: --conditions: unknown condition 'tuned'; use fine_tuned, base, reference"),
    (["--limit", "0"], "error: --limit 0: give at least 1 chat per type, or leave --limit out"),
    (["--conditions", "reference"], "error: the reference condition needs --reference-model"),
])
def test_bad_options_are_one_line(capsys, tmp_path, args, expected):
    assert one_error(capsys, ["eval", "--config", TINY, f"output_dir={tmp_path}", "--no-judge", *args]).startswith(expected)


def test_a_missing_or_empty_test_split(capsys, ckpt, tmp_path, monkeypatch):
    cfg, _ = ckpt
    base = ["eval", "--config", TINY, f"model={cfg.model}", f"output_dir={cfg.output_dir}"]
    opts = ["--no-judge", "--out", str(tmp_path)]
    only_train = write_dataset(tmp_path / "train-only", {"train": SAMPLE_CHATS})
    line = one_error(capsys, [*base, f"dataset={only_train}", *opts])
    assert f"dataset {only_train} has no 'test' split (it has: train)" in line and "--prompts FILE" in line
    empty = write_dataset(tmp_path / "empty-test", {"train": SAMPLE_CHATS, "test": SAMPLE_CHATS[:1]})
    dd = DatasetDict.load_from_disk(str(empty))
    dd = DatasetDict({"train": dd["train"], "test": dd["test"].select([])})
    dd.save_to_disk(str(tmp_path / "empty"))  # datasets cannot read this back (an IndexError inside it)
    line = one_error(capsys, [*base, f"dataset={tmp_path / 'empty'}", *opts])
    assert "one of its splits was saved with no rows" in line and "--prompts FILE" in line
    monkeypatch.setattr("train.data.load_chat_dataset", lambda source: dd)  # a Hub dataset with an empty split
    line = one_error(capsys, [*base, f"dataset={tmp_path / 'empty'}", *opts])
    assert f"the 'test' split of {tmp_path / 'empty'} is empty: nothing to replay" in line
    assert not (tmp_path / "eval").exists()  # nothing was started


def test_no_judge_server_is_one_line_before_any_work(capsys, ckpt, tmp_path, clean_env):
    cfg, _ = ckpt
    line = one_error(capsys, ["eval", "--config", TINY, f"model={cfg.model}", f"output_dir={cfg.output_dir}",
                              "--out", str(tmp_path)])
    assert line.startswith("error: the judge needs a model: set OPENAI_API_KEY") and "--no-judge" in line
    assert not (tmp_path / "eval").exists()


def test_prompts_file_and_limit_per_type(ckpt, tmp_path):
    cfg, seeds = ckpt
    prompts = tmp_path / "prompts.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in
             [{"mbti": "ENFP", "messages": c} for c in ENFP_CHATS] + [{"mbti": "INTP", "messages": ENFP_CHATS[0]}]]
    prompts.write_text("\n".join(lines + ["{not json"]) + "\n", encoding="utf-8")
    out = evaluate(cfg, ecfg(tmp_path, seeds, None, prompts=str(prompts), limit_per_type=2, conditions=("base",),
                             name="prompts"), log=quiet)
    block = out.results["conditions"]["base"]
    assert block["n_chats"] == 2 and list(block["per_type"]) == ["ENFP"] and block["full_type"] is None
    assert out.results["limit_per_type"] == 2 and out.folder == tmp_path / "eval" / "prompts"
    notes = out.results["notes"]
    assert any(n.startswith("skipped 1 unusable held-out chat(s) (first: ") and "bad_json" in n for n in notes)
    assert "skipped held-out chats of types the checkpoint has no persona for (INTP=1)" in notes


def test_the_judge_cost_cap(ckpt, tmp_path, clean_env):
    cfg, seeds = ckpt
    with pytest.raises(UserError, match="^no price known for judge model test-model, so --judge-max-cost cannot be "
                                        "enforced; pass --judge-price-in and --judge-price-out"):
        with LLMServer(default=judge_factory()) as server:
            evaluate(cfg, ecfg(tmp_path, seeds, server, judge_max_cost=1.0), log=quiet)
    assert not (tmp_path / "eval").exists()  # refused before any work
    with LLMServer(default=judge_factory()) as server:
        capped = ecfg(tmp_path, seeds, server, judge_max_cost=0.01, judge_price_in=1.0, judge_price_out=1.0,
                      conditions=("base",))
        with pytest.raises(UserError, match=r"the judge could not finish.*--judge-max-cost \$0\.0100 would be exceeded.*higher --judge-max-cost"):
            evaluate(cfg, capped, log=quiet)  # one request's worst case (600 tokens at $1/1M) is $0.0006+
        assert 0 < server.completions < 10
    spent = sum(json.loads(x)["billed"]["usd"] for x in
                (tmp_path / "eval" / cfg.name / "judge" / "raw.jsonl").read_text(encoding="utf-8").splitlines())
    assert spent <= 0.01


def test_the_reference_cost_cap_holds_over_invocations_and_a_higher_cap_finishes(ckpt, tmp_path, clean_env):
    """A reference model billed its whole max_tokens on every turn: each invocation stops before the cap, the
    earlier invocations' spend counts, and a rerun with a higher cap sends only the turns not stored yet."""
    cfg, seeds = ckpt

    def replies(body, n):
        r = chat_reply(body, n)
        return Reply(content=r.content, usage={"prompt_tokens": 40 * len(body["messages"]),
                                               "completion_tokens": body["max_tokens"]})

    def run(server, **kw):
        return evaluate(cfg, ecfg(tmp_path, seeds, None, reference_model="ref-model", reference_base_url=server.base_url,
                                  conditions=("reference",), **kw), log=quiet)

    with LLMServer(default=replies) as server:
        with pytest.raises(UserError, match="^no price known for reference model ref-model, so --reference-max-cost "
                                            "cannot be enforced; pass --reference-price-in and --reference-price-out"):
            run(server, reference_max_cost=1.0)
        assert not (tmp_path / "eval").exists() and server.completions == 0  # refused before any work
        raw = tmp_path / "eval" / cfg.name / "generate" / "raw.jsonl"
        priced = {"reference_price_in": 100.0, "reference_price_out": 100.0}  # $0.0001 a token
        spent = []
        for _ in range(2):
            with pytest.raises(UserError, match=r"^reference: generation stopped: --reference-max-cost \$0\.0500 would "
                                                r"be exceeded .* with a higher --reference-max-cost$"):
                run(server, reference_max_cost=0.05, **priced)
            spent.append(sum(json.loads(x)["billed"]["usd"] for x in raw.read_text(encoding="utf-8").splitlines()))
        assert 0 < spent[0] <= spent[1] <= 0.05
        out = run(server, reference_max_cost=10.0, **priced)
        sent = [b for b in server.completion_bodies() if b["model"] == "ref-model"]
    assert out.results["conditions"]["reference"]["n_chats"] == 5
    assert len(sent) == 7  # every turn sent once: the capped runs' answers were kept and reused


def test_the_cli_maps_every_option_onto_the_configs(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr("train.evaluate.evaluate", lambda cfg, ecfg, demo, config_ref: seen.update(
        cfg=cfg, ecfg=ecfg, demo=demo, ref=config_ref))
    assert main(["eval", "--config", TINY, "lora_r=4", "--limit", "3", "--conditions", "base,reference",
                 "--reference-model", "gpt-4o-mini", "--reference-base-url", "http://ref/v1", "--base-url", "http://vllm/v1",
                 "--reference-max-cost", "1.5", "--reference-price-in", "0.5", "--reference-price-out", "2",
                 "--adapter-name", "mine", "--served-base", "base-model", "--judge-model", "j", "--judge-base-url",
                 "http://judge/v1", "--judge-max-cost", "2.5", "--judge-price-in", "0", "--judge-price-out", "0",
                 "--temperature", "0.7", "--seed", "9", "--max-new-tokens", "64", "--batch-size", "4", "--no-loss",
                 "--name", "x", "--out", str(tmp_path), "--split", "validation", "--no-card"]) == 0
    e = seen["ecfg"]
    assert (e.limit_per_type, e.run_conditions, e.reference_model, e.reference_base_url, e.base_url) == (
        3, ("base", "reference"), "gpt-4o-mini", "http://ref/v1", "http://vllm/v1")
    assert (e.adapter_name, e.served_base, e.judge_model, e.judge_base_url, e.judge_max_cost) == (
        "mine", "base-model", "j", "http://judge/v1", 2.5)
    assert (e.reference_max_cost, e.reference_price_in, e.reference_price_out, e.update_card) == (1.5, 0.5, 2.0, False)
    assert (e.temperature, e.seed, e.max_new_tokens, e.batch_size, e.loss, e.judge, e.name, e.split) == (
        0.7, 9, 64, 4, False, True, "x", "validation")
    assert e.folder("ignored") == tmp_path / "eval" / "x" and seen["cfg"].lora_r == 4 and not seen["demo"]
    # --out is the outputs root, as for every command: the checkpoint comes from OUT/checkpoints
    assert seen["ref"] == f"{TINY} output_dir={tmp_path / 'checkpoints'} lora_r=4"
    assert seen["cfg"].checkpoint_dir == tmp_path / "checkpoints" / seen["cfg"].name


def test_a_merged_only_checkpoint_runs_the_merged_model_and_the_base_apart(ckpt, tmp_path):
    import shutil

    from train.merge import merge

    cfg, seeds = ckpt
    with_adapter = evaluate(cfg, ecfg(tmp_path, seeds, None, limit_per_type=1, name="adapter"), log=quiet)
    merged_cfg = dataclasses.replace(cfg, output_dir=str(tmp_path / "merged-only"), merge_dtype="float32")
    shutil.copytree(cfg.checkpoint_dir, merged_cfg.checkpoint_dir, ignore=shutil.ignore_patterns("trainer"))
    merge(merged_cfg, log=quiet)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (merged_cfg.checkpoint_dir / name).unlink()  # only merged/ is left
    loaded: list[str] = []
    out = evaluate(merged_cfg, ecfg(tmp_path, seeds, None, limit_per_type=1, name="merged"), log=loaded.append)
    a, m = with_adapter.results["conditions"], out.results["conditions"]
    assert out.results["setup"]["models"]["fine_tuned"] == str(merged_cfg.merged_dir)
    assert m["base"]["loss"] == a["base"]["loss"]  # the same 4-bit base as with the adapter disabled
    assert m["fine_tuned"]["loss"] != m["base"]["loss"]
    assert m["fine_tuned"]["loss"] == pytest.approx(a["fine_tuned"]["loss"], abs=0.05)  # fp32 merge vs NF4 + LoRA
    # each condition's chats and loss while its model is loaded: the merged model once, then the base once
    assert [x for x in loaded if x.startswith("loading")] == [f"loading merged model {merged_cfg.merged_dir} ...",
                                                              f"loading the base {cfg.model} ..."]


def test_the_weights_digest_follows_every_shard_without_reading_it_whole(tmp_path):
    """The base / merged model's identity in the chat cache: config and every shard's name, size, first and
    last MiB (a shard's middle is not read: 16 GB would take minutes on every evaluation)."""
    from train.evaluate.recipe import _weights_digest

    mib = 1 << 20
    (tmp_path / "config.json").write_text('{"hidden_size": 64}')
    shards = [tmp_path / f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    for i, s in enumerate(shards):
        s.write_bytes(bytes([i]) * (3 * mib))
    first = _weights_digest(tmp_path, ("config.json",))

    def changed(path: Path, offset: int) -> str:
        data = bytearray(path.read_bytes())
        data[offset] ^= 0xFF
        path.write_bytes(bytes(data))
        try:
            return _weights_digest(tmp_path, ("config.json",))
        finally:
            data[offset] ^= 0xFF
            path.write_bytes(bytes(data))

    assert changed(shards[1], 0) != first and changed(shards[1], 3 * mib - 1) != first
    assert changed(tmp_path / "config.json", 2) != first
    assert changed(shards[0], int(1.5 * mib)) == first  # the middle is not read
    shards[1].write_bytes(bytes([1]) * (3 * mib + 1))
    assert _weights_digest(tmp_path, ("config.json",)) != first


def test_the_card_keeps_the_most_thorough_evaluation_unless_told(ckpt, tmp_path):
    import shutil

    cfg, seeds = ckpt
    cfg = dataclasses.replace(cfg, output_dir=str(tmp_path / "ck"))
    shutil.copytree(ckpt[0].checkpoint_dir, cfg.checkpoint_dir)
    (cfg.checkpoint_dir / "eval_results.json").unlink(missing_ok=True)
    lines: list[str] = []
    kept = lambda: json.loads((cfg.checkpoint_dir / "eval_results.json").read_text(encoding="utf-8"))  # noqa: E731

    def run(**kw):
        lines.clear()
        return evaluate(cfg, ecfg(tmp_path, seeds, None, conditions=("base",), loss=False, **kw), log=lines.append)

    run(name="all")  # 5 held-out chats: the card takes them
    assert kept()["conditions"]["base"]["n_chats"] == 5
    run(name="smoke", limit_per_type=1)  # 2 chats: a smoke run leaves the card alone, and says so
    assert kept()["name"] == "all" and kept()["conditions"]["base"]["n_chats"] == 5
    assert lines[-1].endswith(f"model card {cfg.checkpoint_dir / 'README.md'} left as it was (it holds a more "
                              "thorough evaluation (5 held-out chats); --card puts these results in it)")
    run(name="smoke", limit_per_type=1, update_card=True)
    assert kept()["conditions"]["base"]["n_chats"] == 2
    run(name="all", update_card=False)
    assert kept()["conditions"]["base"]["n_chats"] == 2 and lines[-1].endswith("left as it was (--no-card)")
    run(name="all")
    assert kept()["conditions"]["base"]["n_chats"] == 5 and lines[-1].endswith(f"model card {cfg.checkpoint_dir / 'README.md'}")

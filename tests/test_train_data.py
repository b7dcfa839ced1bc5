"""train/data.py: the loss mask is exactly every assistant turn + its end-of-turn token; truncation, packing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict

from train.config import TrainConfig
from train.data import (IGNORE, DataError, build_datasets, encode_chat, encode_chats, find_eot, load_chat_dataset,
                        make_collator, pack, padding_share, pick_pad, prepare_tokenizer)
from train.templates import LLAMA3, PLAIN_KO
from train.tiny import LLAMA3_SPECIAL_TOKENS, SAMPLE_CHATS, SAMPLE_TEXTS, seed_texts, train_tiny_tokenizer

# A second, different template: ChatML (Qwen-style), which writes "\n" after each end-of-turn token.
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' + '\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
EOT = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>", "plain-ko": "<|end_of_text|>"}


def cfg_for(template: str | None = None, **kw) -> TrainConfig:
    return TrainConfig(**{"model": "unused", "dataset": "unused", "optim": "adamw_torch", "chat_template": template,
                          **kw})


def _saved(tok, factory) -> Path:
    path = factory.mktemp("tok")
    tok.save_pretrained(str(path))
    return path


def fresh(base_tok, factory):
    """A copy of the module's tokenizer that a test may change."""
    return base_tok.__class__.from_pretrained(str(_saved(base_tok, factory)))


@pytest.fixture(scope="module")
def base_tok():
    """A byte-level BPE tokenizer trained here on the seeds (whatever exists) and the sample chats."""
    return train_tiny_tokenizer(seed_texts() + SAMPLE_TEXTS,
                                special_tokens=LLAMA3_SPECIAL_TOKENS + ("<|im_start|>", "<|im_end|>"))


@pytest.fixture(scope="module", params=["llama3", "chatml", "plain-ko"])
def chat_tok(request, base_tok, tmp_path_factory):
    """(template name, tokenizer, ChatTokens) for each of the three templates."""
    tok = fresh(base_tok, tmp_path_factory)
    tok.chat_template = {"llama3": LLAMA3, "chatml": CHATML, "plain-ko": PLAIN_KO}[request.param]
    return request.param, tok, prepare_tokenizer(tok, cfg_for())


def segments(tok, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of consecutive trained tokens."""
    runs, cur = [], []
    for i, lab in zip(ids, labels):
        if lab != IGNORE:
            assert lab == i, "a trained label is the input token itself (the model shifts)"
            cur.append(i)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return [tok.decode(r) for r in runs]


def assistant_turns(messages) -> list[str]:
    return [m["content"].strip() for m in messages if m["role"] == "assistant"]


def seed_chats(n: int = 12) -> list[list[dict[str, str]]]:
    """Some real seed dialogues (with a system line), if the seeds exist yet; the sample chats otherwise."""
    from datagen.seeds import load_seed_dialogues

    found, _ = load_seed_dialogues(fill_id=True)
    chats = [[{"role": "system", "content": "시스템"}] + [dict(m) for m in d.messages]
             for pairs in found.values() for _, d in pairs]
    return chats[:n] or SAMPLE_CHATS


def test_labels_are_exactly_every_assistant_turn_plus_its_end_of_turn_token(chat_tok):
    name, tok, tokens = chat_tok
    assert tokens.eot == EOT[name]
    for chat in SAMPLE_CHATS + seed_chats():
        enc = encode_chat(tok, chat, tokens.eot_id, max_seq_len=10**6)
        assert segments(tok, enc.input_ids, enc.labels) == [t + EOT[name] for t in assistant_turns(chat)]
        text = tok.apply_chat_template(chat, tokenize=False)
        assert enc.input_ids == tok(text, add_special_tokens=False)["input_ids"]


def test_every_label_run_ends_on_the_end_of_turn_id(chat_tok):
    _, tok, tokens = chat_tok
    enc = encode_chat(tok, SAMPLE_CHATS[0], tokens.eot_id, 10**6)
    ends = [i for i in range(len(enc.labels)) if enc.labels[i] != IGNORE and
            (i + 1 == len(enc.labels) or enc.labels[i + 1] == IGNORE)]
    assert [enc.input_ids[i] for i in ends] == [tokens.eot_id, tokens.eot_id]


def test_pad_is_never_the_end_of_turn_token(base_tok, tmp_path_factory):
    tok = fresh(base_tok, tmp_path_factory)
    assert pick_pad(tok, "<|eot_id|>", None) == "<|finetune_right_pad_id|>"  # Llama-3.1's reserved pad
    tok.pad_token = "<|eot_id|>"  # a tokenizer shipped with pad = end-of-turn: not kept
    assert pick_pad(tok, "<|eot_id|>", None) == "<|finetune_right_pad_id|>"
    with pytest.raises(DataError, match="never learn to stop"):
        pick_pad(tok, "<|eot_id|>", "<|eot_id|>")
    with pytest.raises(DataError, match="not a token"):
        pick_pad(tok, "<|eot_id|>", "<nope>")


def test_a_template_with_nothing_after_the_reply_is_refused(base_tok, tmp_path_factory):
    tok = fresh(base_tok, tmp_path_factory)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% endfor %}"
                         "{% if add_generation_prompt %}assistant: {% endif %}")
    with pytest.raises(DataError, match="could never learn to stop"):
        find_eot(tok)


def test_a_template_that_rewrites_earlier_turns_is_dropped_not_mislabelled(base_tok, tmp_path_factory):
    """Like templates that strip earlier reasoning: the last message renders differently from the same one
    followed by more turns, so prefixes do not line up. Such chats are dropped, never mislabelled."""
    tok = fresh(base_tok, tmp_path_factory)
    tokens = prepare_tokenizer(tok, cfg_for())
    tok.chat_template = LLAMA3.replace("{{ content }}", "{% if loop.last %}[last]{% endif %}{{ content }}")
    assert encode_chat(tok, SAMPLE_CHATS[0], tokens.eot_id, 10**6) == "template_not_prefix"


def test_long_chats_are_cut_at_a_turn_boundary_and_dropped_when_no_reply_fits(chat_tok):
    name, tok, tokens = chat_tok
    chat = SAMPLE_CHATS[0]  # two exchanges
    full = encode_chat(tok, chat, tokens.eot_id, 10**6)
    first_end = full.labels.index(tokens.eot_id) + 1
    last_end = max(i for i, x in enumerate(full.labels) if x != IGNORE) + 1
    cut = encode_chat(tok, chat, tokens.eot_id, max_seq_len=last_end - 1)
    assert cut.truncated and len(cut.input_ids) == first_end
    assert segments(tok, cut.input_ids, cut.labels) == [assistant_turns(chat)[0] + EOT[name]]
    assert encode_chat(tok, chat, tokens.eot_id, max_seq_len=first_end - 1) == "too_long"


def test_bad_chats_are_dropped_and_counted(chat_tok):
    _, tok, tokens = chat_tok
    bad = [
        [],
        [{"role": "user", "content": "질문"}],                                            # ends with user
        [{"role": "assistant", "content": "대답"}],                                       # starts with assistant
        [{"role": "user", "content": "질문"}, {"role": "assistant", "content": "  "}],   # empty reply
        [{"role": "user"}],
    ]
    long_chat = [{"role": "user", "content": "질문 " * 300}, {"role": "assistant", "content": "대답"}]
    ds, stats = encode_chats(tok, SAMPLE_CHATS + bad + [long_chat], tokens.eot_id, max_seq_len=200)
    assert len(ds) == stats.kept == len(SAMPLE_CHATS)
    assert dict(stats.dropped) == {"no_messages": 1, "ends_with_user": 1, "bad_roles": 1, "empty_turn": 1,
                                   "bad_message": 1, "too_long": 1}
    assert stats.summary("train").startswith(f"train: kept 8/{8 + 6} chats (dropped: ")


def test_no_trained_token_is_ever_left_in_a_sample(chat_tok):
    _, tok, tokens = chat_tok
    for max_len in (40, 60, 90, 200):
        ds, _ = encode_chats(tok, SAMPLE_CHATS, tokens.eot_id, max_seq_len=max_len)
        assert all(any(x != IGNORE for x in labels) for labels in ds["labels"])
        assert all(len(ids) <= max_len for ids in ds["input_ids"])


@pytest.fixture(scope="module")
def llama3(base_tok, tmp_path_factory):
    tok = fresh(base_tok, tmp_path_factory)
    return tok, prepare_tokenizer(tok, cfg_for())


def test_packing_leaves_no_padding_and_restarts_positions_per_chat(llama3):
    tok, tokens = llama3
    chats = (SAMPLE_CHATS + seed_chats(40)) * 3
    ds, stats = encode_chats(tok, chats, tokens.eot_id, max_seq_len=512)
    packed = pack(ds, 512)
    assert len(packed) < len(ds)
    collate = make_collator(tokens, packing=True)
    starts = positions = 0
    for i in range(0, len(packed), 4):
        rows = [packed[j] for j in range(i, min(i + 4, len(packed)))]
        batch = collate(rows)
        assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch  # padding-free
        positions += batch["input_ids"].numel()
        pos = batch["position_ids"][0]
        new = (pos == 0).nonzero().flatten()
        starts += len(new)
        # the collator changes no label: each chat's first token is already unlabelled by the encoder
        assert batch["labels"][0].tolist() == [x for r in rows for x in r["labels"]]
        assert torch.equal(pos[1:][pos[1:] != 0], (pos[:-1] + 1)[pos[1:] != 0])
    assert starts == stats.kept
    real = sum(sum(r) for r in packed["seq_lengths"])
    assert positions == real == stats.tokens  # not one pad token in any batch
    assert padding_share([sum(r) for r in packed["seq_lengths"]], 4, padding_free=True) == 1 - real / positions == 0.0
    # without packing, the same function predicts the pads the padding collator really adds
    pad_collate = make_collator(tokens, packing=False)
    lengths = [len(x) for x in ds["input_ids"]]
    padded = sum(pad_collate([ds[j] for j in range(i, min(i + 4, len(ds)))])["input_ids"].numel()
                 for i in range(0, len(ds), 4))
    share = padding_share(lengths, 4, padding_free=False)
    assert share == pytest.approx(1 - sum(lengths) / padded) and share > 0.02


def test_packed_rows_give_the_same_logits_as_chats_alone(llama3, tmp_path):
    """Attention stays inside each chat: the packed row's logits equal each chat run alone."""
    from train.model import add_lora, load_base_model
    from train.tiny import build_tiny_model

    tok, tokens = llama3
    path = build_tiny_model(tmp_path / "m", tokenizer=tok)
    cfg = cfg_for(model=str(path), load_in_4bit=False, compute_dtype="float32", gradient_checkpointing=False)
    model = add_lora(load_base_model(cfg, "cpu", quantized=False), cfg).eval()
    ds, _ = encode_chats(tok, SAMPLE_CHATS[:3], tokens.eot_id, 512)
    packed = pack(ds, 512)
    row = max(range(len(packed)), key=lambda j: len(packed[j]["seq_lengths"]))
    batch = make_collator(tokens, packing=True)([packed[row]])
    assert len(packed[row]["seq_lengths"]) >= 2
    with torch.no_grad():
        together = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        offset = 0
        for n in packed[row]["seq_lengths"]:
            alone = model(input_ids=batch["input_ids"][:, offset:offset + n]).logits[0]
            assert torch.allclose(together[offset:offset + n], alone, atol=1e-5)
            offset += n


# -- loading --------------------------------------------------------------------------------------

def _publish_like_folder(root: Path, rows: dict[str, list[dict]]) -> Path:
    """The layout `datagen publish` writes: README.md with configs + data/<split>-*.parquet."""
    (root / "data").mkdir(parents=True)
    for split, items in rows.items():
        Dataset.from_list(items).to_parquet(str(root / "data" / f"{split}-00000-of-00001.parquet"))
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n"
        + "".join(f"  - split: {s}\n    path: data/{s}-*\n" for s in rows) + "---\n# card\n", encoding="utf-8")
    return root


def _rows(chats):
    return [{"id": f"ISTJ-{i}", "mbti": "ISTJ", "topic": "t", "messages": c} for i, c in enumerate(chats)]


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "cache")
    return tmp_path


def test_loads_a_publish_folder_a_save_to_disk_folder_and_jsonl(datasets_cache):
    root = datasets_cache
    pub = _publish_like_folder(root / "pub", {"train": _rows(SAMPLE_CHATS[:6]), "test": _rows(SAMPLE_CHATS[6:])})
    dd = load_chat_dataset(str(pub))
    assert (len(dd["train"]), len(dd["test"])) == (6, 2)
    assert dd["train"][0]["messages"][0]["role"] == "system"
    DatasetDict({"train": Dataset.from_list(_rows(SAMPLE_CHATS))}).save_to_disk(str(root / "disk"))
    assert len(load_chat_dataset(str(root / "disk"))["train"]) == 8
    (root / "c.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _rows(SAMPLE_CHATS)),
                                  encoding="utf-8")
    assert len(load_chat_dataset(str(root / "c.jsonl"))["train"]) == 8


def test_a_missing_dataset_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; make one with `datagen publish"):
        load_chat_dataset(str(tmp_path / "nope"))


def test_a_dataset_without_messages_fails_in_one_line(tmp_path, llama3):
    tok, tokens = llama3
    DatasetDict({"train": Dataset.from_dict({"text": ["a", "b"]})}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError) as e:
        build_datasets(cfg_for(dataset=str(tmp_path / "d")), tok, tokens)
    assert str(e.value) == (f"dataset {tmp_path / 'd'} has no 'messages' column (it has: text); train needs chats as "
                            "messages=[{role, content}, ...] as `datagen publish` writes them")


def test_build_datasets_reports_kept_dropped_and_packing(tmp_path, llama3):
    tok, tokens = llama3
    bad = [{"role": "user", "content": "끝"}]
    DatasetDict({"train": Dataset.from_list(_rows(SAMPLE_CHATS + [bad])),
                 "test": Dataset.from_list(_rows(SAMPLE_CHATS[:2]))}).save_to_disk(str(tmp_path / "d"))
    data = build_datasets(cfg_for(dataset=str(tmp_path / "d"), max_seq_len=512), tok, tokens)
    assert data.report[0].startswith("train: kept 8/9 chats (dropped: ends_with_user=1)")
    assert data.report[1].startswith("test: kept 2/2 chats")
    assert data.report[2].startswith("packed 8 chats into ")
    assert set(data.train.column_names) == {"input_ids", "labels", "seq_lengths"}
    no_eval = build_datasets(dataclasses.replace(cfg_for(dataset=str(tmp_path / "d")), eval_split="dev"), tok, tokens)
    assert no_eval.eval is None and "no 'dev' split" in no_eval.report[1]


# -- the fast path, control text, the cache ------------------------------------------------------

def test_batched_labels_equal_the_one_chat_labels(chat_tok):
    """encode_batch labels from the Rust encodings' char-to-token map; encode_chat from per-token offsets."""
    _, tok, tokens = chat_tok
    chats = SAMPLE_CHATS + seed_chats(200)
    ds, _ = encode_chats(tok, chats, tokens.eot_id, 10**6)
    alone = [encode_chat(tok, c, tokens.eot_id, 10**6) for c in chats]
    assert ds["input_ids"] == [e.input_ids for e in alone] and ds["labels"] == [e.labels for e in alone]
    cut, _ = encode_chats(tok, chats[:20], tokens.eot_id, 300)  # truncation at a turn end, both ways
    assert cut["labels"] == [e.labels for c in chats[:20] if not isinstance(e := encode_chat(tok, c, tokens.eot_id, 300), str)]


def test_the_parallel_arrow_encoder_keeps_the_same_rows_types_and_counts(chat_tok):
    """encode_split (datasets.map over typed Arrow tables, 2 processes) = encode_chats (in process), with
    drops (a bad role, control text, too long) and a truncation among them."""
    from datasets import List, Value

    from train.data import encode_split

    _, tok, tokens = chat_tok
    chats = [[dict(m) for m in c] for c in SAMPLE_CHATS + seed_chats(40)]
    chats[1][1]["role"] = "narrator"
    chats[2][2]["content"] = f"네{tokens.eot}"
    longest = max(chats[3:], key=lambda c: len(encode_chat(tok, c, tokens.eot_id, 10**6).input_ids))
    limit = len(encode_chat(tok, longest, tokens.eot_id, 10**6).input_ids) + 1  # every chat fits ...
    chats.append(longest + [m for m in longest if m["role"] != "system"])  # ... but this one: cut at a turn end
    rows = Dataset.from_list([{"mbti": "ISTJ", "messages": c} for c in chats])
    ds, stats = encode_split(rows, tok, tokens.eot_id, limit, workers=2)
    alone, expected = encode_chats(tok, chats, tokens.eot_id, limit)
    assert ds.features == {"input_ids": List(Value("int32")), "labels": List(Value("int64"))}
    assert ds["input_ids"] == alone["input_ids"] and ds["labels"] == alone["labels"]
    assert stats.to_dict() == expected.to_dict()
    assert (stats.total, stats.kept, stats.truncated) == (len(chats), len(chats) - 2, 1)
    assert stats.dropped == {"bad_roles": 1, "control_text": 1}


def test_one_rendering_gives_the_reference_spans_on_every_seed_chat(chat_tok):
    """fast_spans (one rendering) must equal assistant_spans (two renderings per turn) wherever it is used."""
    from train.data import assistant_spans, fast_spans, render, template_info

    _, tok, tokens = chat_tok
    info = template_info(tok, tokens.eot_id)
    assert info.fast
    for chat in SAMPLE_CHATS + seed_chats(400):
        text = render(tok, chat)
        assert fast_spans(text, chat, info)[0] == assistant_spans(tok, chat)[1]


@pytest.mark.parametrize("template", ["llama3", "plain-ko"])
def test_control_token_text_in_a_reply_never_becomes_the_control_id(template, base_tok, tmp_path_factory):
    tok = fresh(base_tok, tmp_path_factory)
    tok.chat_template = {"llama3": LLAMA3, "plain-ko": PLAIN_KO}[template]
    tokens = prepare_tokenizer(tok, cfg_for())
    chat = [dict(m) for m in SAMPLE_CHATS[0]]
    chat[2]["content"] = f"지금 회사에서{tokens.eot}제일 불편한 점이 뭐예요?"  # the template's own end-of-turn text
    chat[3]["content"] = "연봉이요 <|start_header_id|>"
    enc = encode_chat(tok, chat, tokens.eot_id, 10**6)
    ends = [i for i, x in enumerate(enc.labels) if x == tokens.eot_id]
    assert len(ends) == 2 and all(enc.labels[i + 1:i + 2] in ([], [IGNORE]) for i in ends)  # one per turn, at its end
    plain = [dict(m) for m in SAMPLE_CHATS[0]]
    baseline = encode_chat(tok, plain, tokens.eot_id, 10**6).input_ids.count(tokens.eot_id)
    assert enc.input_ids.count(tokens.eot_id) == baseline  # the one in the reply is encoded as plain text
    assert segments(tok, enc.input_ids, enc.labels)[0] == chat[2]["content"] + tokens.eot
    ds, stats = encode_chats(tok, [chat] + SAMPLE_CHATS[1:], tokens.eot_id, 10**6)  # the builder drops it, counted
    assert dict(stats.dropped) == {"control_text": 1} and len(ds) == len(SAMPLE_CHATS) - 1


def test_encoded_splits_are_cached_and_workers_change_nothing(tmp_path, llama3):
    tok, tokens = llama3
    rows = _rows(SAMPLE_CHATS + seed_chats(60)) * 3
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(tmp_path / "d"))
    cfg = cfg_for(dataset=str(tmp_path / "d"), max_seq_len=512, output_dir=str(tmp_path / "ck"), preprocess_workers=1)
    def data_line(prepared):
        return next(line for line in prepared.report if line.startswith("data "))

    first = build_datasets(cfg, tok, tokens)
    assert data_line(first).startswith("data encoded and cached in ")
    again = build_datasets(cfg, tok, tokens)
    assert data_line(again).startswith("data loaded from the cache in ") and again.report[0] == first.report[0]
    assert again.train["input_ids"] == first.train["input_ids"] and again.train["seq_lengths"] == first.train["seq_lengths"]
    assert len(list((tmp_path / "cache" / "encoded").iterdir())) == 1
    shorter = build_datasets(dataclasses.replace(cfg, max_seq_len=400), tok, tokens)  # another key: built anew
    assert data_line(shorter).startswith("data encoded and cached")
    two = build_datasets(dataclasses.replace(cfg, preprocess_workers=2, data_cache_dir=str(tmp_path / "c2")), tok, tokens)
    assert two.train["input_ids"] == first.train["input_ids"] and two.report[0] == first.report[0]

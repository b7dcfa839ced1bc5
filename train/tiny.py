"""A tiny random Llama and a BPE tokenizer trained on our own Korean text: no download, seconds on a CPU.

Used by the tests, the demo (`tiny_random_init: true` in train/configs/tiny-cpu.yaml) and the
CPU benchmark. The weights are random, so what the model says is noise; what it exercises is
the real path: the same chat template as Bllossom (Llama-3), real NF4 4-bit layers, LoRA,
packing, merge and streaming chat.

    build_tiny_model("outputs/models/tiny-random-llama")   # config.json, model.safetensors,
                                                           # tokenizer.json, chat_template.jinja, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from train.templates import LLAMA3

# The Llama-3 special tokens the template uses, plus the reserved pad Llama-3.1 ships.
LLAMA3_SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                         "<|eot_id|>", "<|finetune_right_pad_id|>")
TINY_VOCAB = 1024       # byte-level BPE: 256 bytes + merges; enough for common Hangul syllables
TINY_SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)  # 64 = one bitsandbytes quantisation block per row

SYSTEM_ISTJ = "당신은 ISTJ 성향의 대화 상대입니다. 사실을 차분히 짚고 순서대로 정리해 주는 사람. 말투: 담백하고 정중하다."
SYSTEM_ENFP = "당신은 ENFP 성향의 대화 상대입니다. 호기심 많고 다정하게 공감해 주는 사람. 말투: 밝고 감탄이 많다."

# Eight short chats (system, then user/assistant alternating, ending with assistant): the shape of
# the published dataset. Tests overfit on them; the tokenizer is trained on them plus the seeds.
SAMPLE_CHATS: list[list[dict[str, str]]] = [
    [{"role": "system", "content": SYSTEM_ISTJ},
     {"role": "user", "content": "이직할까 말까 고민돼요."},
     {"role": "assistant", "content": "지금 회사에서 제일 불편한 점이 뭔지부터 적어 볼까요?"},
     {"role": "user", "content": "연봉이랑 야근이요."},
     {"role": "assistant", "content": "그럼 두 가지를 숫자로 비교해 보죠. 이번 주 안에 표로 정리해 보세요."}],
    [{"role": "system", "content": SYSTEM_ENFP},
     {"role": "user", "content": "오늘 발표 잘 끝났어요!"},
     {"role": "assistant", "content": "우와 진짜요? 너무 잘됐다! 어떤 부분이 제일 반응 좋았어요?"}],
    [{"role": "system", "content": SYSTEM_ISTJ},
     {"role": "user", "content": "시험이 일주일 남았는데 하나도 못 했어요."},
     {"role": "assistant", "content": "남은 범위를 일곱 덩어리로 나눠서 하루에 하나씩 끝내면 됩니다."}],
    [{"role": "system", "content": SYSTEM_ENFP},
     {"role": "user", "content": "주말에 뭐 할지 모르겠어요."},
     {"role": "assistant", "content": "안 가 본 동네 골목 산책 어때요? 생각만 해도 설레요!"},
     {"role": "user", "content": "좋네요, 어디가 좋을까요?"},
     {"role": "assistant", "content": "지도 펴고 눈 감고 찍어 봐요! 우연이 제일 재밌거든요."}],
    [{"role": "system", "content": SYSTEM_ISTJ},
     {"role": "user", "content": "룸메이트가 설거지를 안 해요."},
     {"role": "assistant", "content": "당번표를 만들고 냉장고에 붙여 두세요. 말보다 기록이 낫습니다."}],
    [{"role": "system", "content": SYSTEM_ENFP},
     {"role": "user", "content": "친구랑 싸웠어요."},
     {"role": "assistant", "content": "헉 속상했겠다ㅠㅠ 무슨 일이 있었는지 천천히 얘기해 줄래요?"}],
    [{"role": "system", "content": SYSTEM_ISTJ},
     {"role": "user", "content": "돈이 자꾸 새는 것 같아요."},
     {"role": "assistant", "content": "지난달 카드 내역부터 항목별로 더해 보세요. 새는 곳이 보입니다."},
     {"role": "user", "content": "커피값이 제일 많네요."},
     {"role": "assistant", "content": "그럼 평일 커피를 주 세 번으로 정하고 지켜 보세요."}],
    [{"role": "system", "content": SYSTEM_ENFP},
     {"role": "user", "content": "새 취미를 찾고 싶어요."},
     {"role": "assistant", "content": "도자기 공방 어때요? 손으로 뭔가 만드는 거 완전 힐링이에요!"}],
]
SAMPLE_TEXTS: list[str] = [m["content"] for chat in SAMPLE_CHATS for m in chat]


def seed_texts() -> list[str]:
    """Every persona prompt and seed dialogue line under seeds/ (whatever exists yet), for tokenizer training."""
    try:
        from datagen.seeds import load_personas, load_seed_dialogues
    except ImportError:
        return []
    personas, _ = load_personas()
    texts = [p.system_prompt() for p in personas.values()]
    dialogues, _ = load_seed_dialogues(fill_id=True)
    texts += [m["content"] for pairs in dialogues.values() for _, d in pairs for m in d.messages]
    return texts


def train_tiny_tokenizer(texts: Iterable[str], vocab_size: int = TINY_VOCAB, chat_template: str = LLAMA3,
                         special_tokens: tuple[str, ...] = LLAMA3_SPECIAL_TOKENS,
                         bos_token: str = "<|begin_of_text|>", eos_token: str = "<|end_of_text|>"):
    """A byte-level BPE tokenizer (like Llama-3's) trained on `texts`, with `chat_template` set.

    No pad token is set, as in Meta's Llama-3 tokenizers: `train.data.prepare_tokenizer` picks one.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(list(texts), trainer)
    others = [t for t in special_tokens if t not in (bos_token, eos_token)]
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=bos_token, eos_token=eos_token,
                                  additional_special_tokens=others)
    tok.chat_template = chat_template
    return tok


def tiny_llama_config(vocab_size: int, **shape):
    """A Llama config of TINY_SHAPE (overridable), untied head like Llama-3-8B."""
    from transformers import LlamaConfig

    dims = {**TINY_SHAPE, **shape}
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=4096, tie_word_embeddings=False,
                       rms_norm_eps=1e-5, rope_theta=500000.0, **dims)


def build_tiny_model(out_dir: str | Path, texts: Iterable[str] | None = None, seed: int = 0,
                     tokenizer=None, **shape) -> Path:
    """Write a tiny random Llama and its tokenizer to `out_dir` (a folder `from_pretrained` can load)."""
    import torch
    from transformers import LlamaForCausalLM

    out = Path(out_dir)
    if tokenizer is None:
        tokenizer = train_tiny_tokenizer(list(texts) if texts is not None else seed_texts() + SAMPLE_TEXTS)
    config = tiny_llama_config(len(tokenizer), **shape)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):  # seed the init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out

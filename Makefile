# The front door. `make install` then `make test` on a fresh machine; the rest are the stages.
PYTHON ?= python3
# CPU wheel on CI (found offline there); on a GPU machine set TORCH_SPEC to the CUDA build you want.
TORCH_SPEC ?= torch==2.13.0
MBTI ?= ISTJ
N ?= 200
RUN ?=
REPO ?=
CONFIG ?= train/configs/bllossom-8b.yaml
ARGS ?=

.PHONY: install test seeds-check generate curate publish train merge chat demo eval push serve serve-demo serve-vllm bench

install:  ## everything needed to run and test (torch first, so no CUDA packages get pulled)
	$(PYTHON) -m pip install "$(TORCH_SPEC)"
	$(PYTHON) -m pip install -e ".[train,serve,dev]"

test:  ## the whole suite; no network, no GPU
	$(PYTHON) -m pytest

seeds-check:
	datagen seeds check

generate:  ## make generate MBTI=ISTJ N=200 (MBTI=all for all 16 types)
	datagen generate --mbti $(MBTI) --count $(N) $(if $(RUN),--run $(RUN)) $(ARGS)

curate:  ## make curate RUN=NAME
	datagen curate $(if $(RUN),--run $(RUN)) $(ARGS)

publish:  ## make publish RUN=NAME [REPO=USER/NAME]
	datagen publish $(if $(RUN),--run $(RUN)) $(if $(REPO),--repo-id $(REPO)) $(ARGS)

train:  ## make train [CONFIG=train/configs/bllossom-8b.yaml] [ARGS="key=value ..."]
	$(PYTHON) -m train train --config $(CONFIG) $(ARGS)

merge:  ## merge the LoRA adapter into the bf16 base (never the 4-bit one)
	$(PYTHON) -m train merge --config $(CONFIG) $(ARGS)

chat:  ## make chat MBTI=ENFP
	$(PYTHON) -m train chat --config $(CONFIG) --mbti $(MBTI) $(ARGS)

demo:  ## no key, no GPU: seeds -> tiny dataset -> 1 minute of CPU QLoRA -> two persona replies
	$(PYTHON) -m train demo

eval:  ## make eval [CONFIG=...] [ARGS="--judge-model gpt-4o-mini --limit 5"]; ARGS="--demo ..." evaluates the demo
	$(PYTHON) -m train eval --config $(CONFIG) $(ARGS)

push:  ## make push REPO=USER/NAME [CONFIG=...] [ARGS=--private]: adapter, tokenizer, personas and card to the Hub
	$(PYTHON) -m train push --config $(CONFIG) --repo-id $(REPO) $(ARGS)

serve:  ## web chat + OpenAI-compatible API for the 16 personas: make serve [CONFIG=...] [ARGS="--port 8080 --api-key K"]
	$(PYTHON) -m serve --config $(CONFIG) $(ARGS)

serve-demo:  ## the page and the API over the model `make demo` trained (CPU)
	$(PYTHON) -m serve --demo $(ARGS)

serve-vllm:  ## print and run `vllm serve BASE --enable-lora --lora-modules NAME=ADAPTER ...` for CONFIG
	$(PYTHON) -m serve.vllm --config $(CONFIG) $(ARGS)

bench:
	$(PYTHON) bench/generate_throughput.py
	$(PYTHON) bench/dedup.py
	$(PYTHON) bench/train_throughput.py
	$(PYTHON) bench/serve_throughput.py

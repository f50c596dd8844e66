# CUDA backend: PTX generation and the GPU check (see backends/cuda/gpu-check.sh).
CUDA_GPU_DIR ?= .cache/gpu

.PHONY: ptx gpu-build gpu-check

ptx: ## regenerate backends/cuda/kernels/*.ptx with Debian's clang-16 (commit the result)
	sh backends/cuda/kernels/build-ptx.sh

gpu-build: ## cross-build the GPU check's test binary and octet into .cache/gpu (CGO_ENABLED=0), with stories260K
	@mkdir -p $(CUDA_GPU_DIR)/shared/models/stories260K
	CGO_ENABLED=0 $(GO) test -c -o $(CUDA_GPU_DIR)/cuda.test ./backends/cuda/
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(CUDA_GPU_DIR)/octet ./cmd/octet
	@for f in stories260K-f32.gguf stories260K-q8_0-f16mix.gguf; do \
	  [ -f $(SHARED)/models/stories260K/$$f ] && cp $(SHARED)/models/stories260K/$$f $(CUDA_GPU_DIR)/shared/models/stories260K/ || true; done

gpu-check: ## on a host with an NVIDIA GPU (no Go needed): correctness vs ref, ptxas, sanitizer, benchmarks, a table
	@[ -x $(CUDA_GPU_DIR)/cuda.test ] || $(MAKE) gpu-build
	sh backends/cuda/gpu-check.sh $(CUDA_GPU_DIR)

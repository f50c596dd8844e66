# native.mk — the CPU backend's kernel libraries (included by the top Makefile).
#
# One shared library per instruction set, from the same C sources, into
# backends/cpu/native/lib/, which the Go package embeds (go:embed of the
# folder: the committed README.md keeps the pattern valid in a clean clone,
# so `go vet` and `CGO_ENABLED=0 go build` work before anything is built; such
# a binary loads the libraries from /usr/lib/octet or falls back to ref).
# The .so files are build outputs, not committed. A variant whose flags
# the compiler does not know is skipped with a note. F16C goes with AVX2:
# every AVX2 CPU has it, and __builtin_cpu_supports cannot ask for it.

NATIVE_DIR    := backends/cpu/native
NATIVE_LIB    := $(NATIVE_DIR)/lib
NATIVE_OBJ    := build/native
NATIVE_SRC    := $(addprefix $(NATIVE_DIR)/,pool.c q8.c fmat.c ops.c runner.c api.c)
NATIVE_HDR    := $(wildcard $(NATIVE_DIR)/*.h)
NATIVE_CFLAGS ?= -O3 -std=gnu11 -fPIC -fvisibility=hidden -pthread -fno-math-errno -fno-trapping-math \
                 -fno-strict-aliasing -Wall -Wextra -Wno-unused-parameter
NATIVE_LDFLAGS ?= -shared -pthread -Wl,-z,now -Wl,--as-needed -lm

NATIVE_ARCH := $(shell $(CC) -dumpmachine 2>/dev/null)
ifneq (,$(findstring x86_64,$(NATIVE_ARCH)))
NATIVE_VARIANTS := avx512 avxvnni avx2 portable
else ifneq (,$(findstring aarch64,$(NATIVE_ARCH)))
NATIVE_VARIANTS := neon-dotprod portable
else
NATIVE_VARIANTS := portable
endif

native_flags_avx512       := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c
native_flags_avxvnni      := -mavxvnni -mavx2 -mfma -mf16c
native_flags_avx2         := -mavx2 -mfma -mf16c
native_flags_neon-dotprod := -march=armv8.2-a+dotprod
native_flags_portable     :=
native_need_avx512        := -DOC_NEED_AVX512
native_need_avxvnni       := -DOC_NEED_AVXVNNI
native_need_avx2          := -DOC_NEED_AVX2
native_need_neon-dotprod  := -DOC_NEED_NEON_DOTPROD
native_need_portable      :=

# Variants the compiler can build.
native_ok = $(shell echo 'int x;' | $(CC) $(native_flags_$(1)) -x c -c - -o /dev/null 2>/dev/null && echo $(1))
NATIVE_BUILT := $(foreach v,$(NATIVE_VARIANTS),$(call native_ok,$(v)))
NATIVE_LIBS  := $(foreach v,$(NATIVE_BUILT),$(NATIVE_LIB)/octet-cpu-$(v).so)

.PHONY: native native-clean
native: $(NATIVE_LIBS) ## build the CPU kernel libraries (one per instruction set)
	@for v in $(NATIVE_VARIANTS); do case " $(NATIVE_BUILT) " in *" $$v "*) ;; \
	  *) echo "native: $(CC) cannot build the $$v variant; skipped";; esac; done

$(NATIVE_LIB)/octet-cpu-%.so: $(NATIVE_SRC) $(NATIVE_HDR) $(NATIVE_DIR)/cpucheck.c $(NATIVE_DIR)/native.mk
	@mkdir -p $(NATIVE_OBJ)/$* $(NATIVE_LIB)
	$(CC) $(NATIVE_CFLAGS) $(native_need_$*) -c $(NATIVE_DIR)/cpucheck.c -o $(NATIVE_OBJ)/$*/cpucheck.o
	$(CC) $(NATIVE_CFLAGS) $(native_flags_$*) $(NATIVE_SRC) $(NATIVE_OBJ)/$*/cpucheck.o $(NATIVE_LDFLAGS) -o $@.tmp
	@mv $@.tmp $@

native-clean:
	rm -rf $(NATIVE_OBJ) $(NATIVE_LIB)/*.so

build unit bench-smoke bench models: native
clean: native-clean

# In make's test runs the kernel tests must run, not skip for want of a
# library (backends/cpu/kernels_test.go).
unit bench-smoke bench: export OCTET_NATIVE_REQUIRED := 1

.PHONY: install-native
install-native: native ## copy the CPU kernel libraries to $(DESTDIR)/usr/lib/octet (the installed layout)
	install -d $(DESTDIR)/usr/lib/octet
	install -m 0644 $(NATIVE_LIBS) $(DESTDIR)/usr/lib/octet/

# hermit — one Makefile for every module.
# Modules are folders; each folder's *.c (except main.c) becomes a static library,
# main.c becomes the folder's binary. New files are picked up by wildcard. A module can
# be a subfolder (tracer/engine): its library is named with a dash (libtracer-engine.a).

BUILD    ?= build
PREFIX   ?= /usr/local
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
GO       ?= go

SAN_FLAGS :=
ifeq ($(SAN),1)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif

CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 -Wall -Wextra -Werror -D_GNU_SOURCE -I. -I$(BUILD)/bpf \
           -fno-strict-aliasing -MMD -MP $(SAN_FLAGS)
LDFLAGS += $(SAN_FLAGS)
LDLIBS  := -Wl,--as-needed -lbpf -lelf -lz -lmnl -ljson-c -lpcre2-8 -lhttp_parser -lseccomp -lpthread
# what the kube module (Kubernetes API client) needs: added for whatever links it
KUBE_LDLIBS := -lyaml
kube_ldlibs = $(if $(filter kube,$(1)),$(KUBE_LDLIBS))

# library modules, in link order (dependents first)
LIB_MODULES := agent tracer/redirect tracer/policy tracer/engine kube client relay runtime loader proto util
BIN_trace-pod   := runtime
BIN_trace-agent := agent
BIN_trace-run   := tracer/redirect
# the modules each binary links, in link order
LIBS_trace-pod   := runtime loader util
LIBS_trace-agent := agent client relay runtime loader proto util
LIBS_trace-run   := tracer/redirect tracer/policy tracer/engine kube client relay proto util
# the modules each unit test (tests/unit/test_NAME.c) links, in link order: the tests
# named in UNIT_<binary> link that binary's modules, a lower module's tests only that
# module, and a test named nowhere here every library module
UNIT_trace-pod   := cgroup container devices net rootfs_path seccomp
UNIT_trace-agent := agent_%
UNIT_trace-run   := tracer tracer_%
LIBS_test_util   := util
LIBS_test_proto  := proto util
LIBS_test_loader := loader util
LIBS_test_loader_steal := loader util
LIBS_test_kube   := kube client proto util
unit_program = $(firstword $(foreach b,trace-pod trace-agent trace-run,$(if $(filter $(UNIT_$(b):%=test_%),$(1)),$(b))))
unit_libs = $(or $(LIBS_$(1)),$(LIBS_$(call unit_program,$(1))),$(LIB_MODULES))

define module_vars
$(1)_SRC := $$(filter-out $(1)/main.c,$$(wildcard $(1)/*.c))
$(1)_OBJ := $$(patsubst %.c,$(BUILD)/obj/%.o,$$($(1)_SRC))
$(1)_LIB := $$(if $$($(1)_SRC),$(BUILD)/lib/lib$$(subst /,-,$(1)).a)
endef
$(foreach m,$(LIB_MODULES),$(eval $(call module_vars,$(m))))

ALL_LIBS := $(foreach m,$(LIB_MODULES),$($(m)_LIB))
BINS := $(foreach b,trace-pod trace-agent trace-run,$(if $(wildcard $(BIN_$(b))/main.c),$(BUILD)/bin/$(b)))

# ---- BPF: vmlinux.h from the running kernel's BTF, objects, skeletons ----
BPF_SRC  := $(wildcard bpf/*.bpf.c)
BPF_OBJ  := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRC))
BPF_SKEL := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.skel.h,$(BPF_SRC))
# bpf_tracing.h's __TARGET_ARCH_*, named from the build machine as libbpf-tools does
BPF_ARCH ?= $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/i.86/x86/' -e 's/aarch64/arm64/' \
	-e 's/arm.*/arm/' -e 's/ppc64le/powerpc/' -e 's/mips.*/mips/' -e 's/riscv64/riscv/' \
	-e 's/loongarch64/loongarch/' -e 's/s390x/s390/')

UNIT_SRC  := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))
GO_APPS   := $(patsubst tests/apps/%/main.go,$(BUILD)/apps/%,$(wildcard tests/apps/*/main.go))
# end-to-end driver of a real agent (tests/integration/20_agent.sh): every tests/agent/*.c
AGENT_E2E_SRC := $(wildcard tests/agent/*.c)
AGENT_E2E_OBJ := $(patsubst %.c,$(BUILD)/obj/%.o,$(AGENT_E2E_SRC))
AGENT_E2E     := $(if $(AGENT_E2E_SRC),$(BUILD)/tests/agent_e2e)
# small static C servers that tests deploy into pods (trace-pod deploy): tests/apps-c/NAME.c
APPS_C := $(patsubst tests/apps-c/%.c,$(BUILD)/tests/%,$(wildcard tests/apps-c/*.c))

# keep objects make would treat as intermediate (test and main objects)
.SECONDARY:

.PHONY: all deps test unit integration asan valgrind bench demo install clean fuzz format format-check
all: $(BINS) $(UNIT_BINS) $(GO_APPS) $(AGENT_E2E) $(APPS_C)

deps:
	@bash scripts/deps.sh

$(BUILD)/bpf/vmlinux.h:
	@mkdir -p $(@D)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c $(BUILD)/bpf/vmlinux.h
	$(CLANG) -target bpf -g -O2 -D__TARGET_ARCH_$(BPF_ARCH) -I$(BUILD)/bpf -Ibpf -MMD -MP -c $< -o $@

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(BPFTOOL) gen skeleton $< > $@.tmp && mv $@.tmp $@
# objects named explicitly are not intermediates: make keeps them for bpftool/llvm-objdump
# and rebuilds them when a header in their .d changes
$(BPF_SKEL): | $(BPF_OBJ)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

# loader code includes the generated skeletons
$(loader_OBJ): $(BPF_SKEL)

$(BUILD)/lib/lib%.a:
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

define module_lib_rule
$($(1)_LIB): $($(1)_OBJ)
endef
$(foreach m,$(LIB_MODULES),$(if $($(m)_LIB),$(eval $(call module_lib_rule,$(m)))))

.SECONDEXPANSION:
$(BUILD)/bin/%: $(BUILD)/obj/$$(BIN_$$*)/main.o $$(foreach m,$$(LIBS_$$*),$$($$(m)_LIB))
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(foreach m,$(LIBS_$*),$($(m)_LIB)) $(call kube_ldlibs,$(LIBS_$*)) $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $$(foreach m,$$(call unit_libs,$$*),$$($$(m)_LIB))
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $< $(foreach m,$(call unit_libs,$*),$($(m)_LIB)) \
		$(call kube_ldlibs,$(call unit_libs,$*)) $(LDLIBS) -lcmocka

# a client of a real agent: it links what a client does
LIBS_agent_e2e := client proto util
$(BUILD)/tests/agent_e2e: $(AGENT_E2E_OBJ) $(foreach m,$(LIBS_agent_e2e),$($(m)_LIB))
	@mkdir -p $(@D)
	$(CC) $(LDFLAGS) -o $@ $(AGENT_E2E_OBJ) $(foreach m,$(LIBS_agent_e2e),$($(m)_LIB)) $(LDLIBS)

# no sanitizers: they do not link statically, and a pod has no libasan
$(APPS_C): $(BUILD)/tests/%: tests/apps-c/%.c
	@mkdir -p $(@D)
	$(CC) -std=gnu11 -O2 -Wall -Wextra -Werror -D_GNU_SOURCE -I. -static -o $@ $<

# static Go test apps (CGO_ENABLED=0): the case an LD_PRELOAD tool cannot see
$(BUILD)/apps/%: tests/apps/%/main.go
	@mkdir -p $(@D)
	cd tests/apps/$* && CGO_ENABLED=0 GOCACHE=$(abspath $(BUILD))/gocache GOFLAGS=-mod=mod \
		$(GO) build -trimpath -o $(abspath $@) .

test: deps all
	@BUILD=$(BUILD) bash tests/run.sh

unit: all
	@BUILD=$(BUILD) bash tests/run.sh --unit

integration: all
	@BUILD=$(BUILD) bash tests/run.sh --integration

asan:
	@$(MAKE) --no-print-directory BUILD=build-asan SAN=1 test

# Unit tests under valgrind. The others use syscalls Debian's valgrind 3.19 does not
# know (clone3, pidfd_open, openat2, seccomp listeners, bpf) and run under `make asan`.
VALGRIND_TESTS := test_util test_proto test_agent_streams test_cgroup test_net test_tracer_policy test_agent_admission test_agent_peer test_agent_http test_agent_reassembly test_kube
valgrind: all
	@set -e; for t in $(VALGRIND_TESTS); do echo "valgrind: $$t"; \
		valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite \
			--suppressions=tests/valgrind.supp \
			$(BUILD)/tests/$$t >$(BUILD)/tests/$$t.valgrind.log 2>&1 || \
			{ tail -40 $(BUILD)/tests/$$t.valgrind.log; echo "valgrind: $$t FAILED"; exit 1; }; \
	done; echo "valgrind: $(words $(VALGRIND_TESTS)) unit test programs clean"

bench: deps all
	@BUILD=$(BUILD) bash bench/run.sh

demo: deps all
	@BUILD=$(BUILD) bash scripts/demo.sh

# libFuzzer targets: one per network-facing decoder
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRC))
FUZZ_TIME ?= 60
# the module sources each target links besides util/
FUZZ_LINK_fuzz_proto := $(wildcard proto/*.c)
FUZZ_LINK_fuzz_dns   := tracer/policy/net.c
FUZZ_LINK_fuzz_http  := agent/http_filter.c agent/http_parse.c
FUZZ_LINK_fuzz_websocket := kube/websocket.c kube/util.c kube/dl.c
# the libraries a target needs besides -lz -lpthread
FUZZ_LIBS_fuzz_http  := -ljson-c -lpcre2-8 -lhttp_parser
FUZZ_LIBS_fuzz_websocket := -ljson-c
$(BUILD)/fuzz/%: tests/fuzz/%.c $$(FUZZ_LINK_$$*) $(wildcard util/*.c proto/*.h util/*.h tracer/policy/policy.h tracer/engine/tracer.h agent/internal.h kube/*.h)
	@mkdir -p $(@D)
	$(CLANG) -std=gnu11 -g -O1 -D_GNU_SOURCE -I. -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined -o $@ $< $(FUZZ_LINK_$*) $(wildcard util/*.c) $(FUZZ_LIBS_$*) -lz -lpthread
# seeds: tests/fuzz/seeds/NAME/ (read-only, committed); a finding fails the target
fuzz: $(FUZZ_BINS)
	@set -e; for f in $(FUZZ_BINS); do \
		n=$$(basename $$f); mkdir -p $(BUILD)/fuzz/corpus-$$n; \
		echo "fuzz: $$f for $(FUZZ_TIME)s"; \
		if ! $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 -artifact_prefix=$(BUILD)/fuzz/ \
			$(BUILD)/fuzz/corpus-$$n $$(ls -d tests/fuzz/seeds/$$n 2>/dev/null) \
			> $(BUILD)/fuzz/$$n.log 2>&1; then \
			tail -40 $(BUILD)/fuzz/$$n.log; echo "fuzz: $$n FAILED"; exit 1; fi; \
		grep -E 'DONE |^stat::(number_of_executed_units|peak_rss_mb)' $(BUILD)/fuzz/$$n.log; \
	done

install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/

# the C sources and headers .clang-format governs: `make format` rewrites them,
# `make format-check` (run by CI) fails on any that differ
FORMAT_SRC = $(filter-out bpf/vmlinux%,$(shell git ls-files '*.c' '*.h'))
format:
	clang-format -i $(FORMAT_SRC)

format-check:
	@clang-format --dry-run -Werror $(FORMAT_SRC) && echo "format-check: $(words $(FORMAT_SRC)) files clean"

clean:
	rm -rf build build-asan

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
-include $(BPF_OBJ:.o=.d)

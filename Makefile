# heymarket — build, test and install the Lua C module.
#
#   make                 build for LUA (default lua5.4) into build/$(LUA)/heymarket.so
#   make LUA=luajit      the same for LuaJIT (also lua5.1, lua5.2, lua5.3)
#   make test            build and run the specs under every Lua we support
#   make demo            run examples/quickstart.lua against the bundled fake API
#   make install         luarocks make the rockspec for LUA (LOCAL=1: into ~/.luarocks)
#   make dist            the source rock build/dist/heymarket-<version>-1.src.rock, offline
#   make lint            luacheck the Lua code
#   make valgrind        the Lua 5.4 specs under valgrind's memcheck
#   make asan            the Lua 5.4 specs with AddressSanitizer, UBSan and LeakSanitizer
#   make fuzz            libFuzzer over header parsing and key redaction
#   make bench           speed and memory against baselines measured in the same run
#   make bench-hosts     heymarket.nvim / heymarket.resty against issue 9's targets (markdown)

# ---- variables ---------------------------------------------------------------

SHELL    := /bin/bash

LUA      ?= lua5.4
VERSIONS ?= lua5.1 lua5.2 lua5.3 lua5.4 luajit

CC       ?= cc
CFLAGS   ?= -O2 -g
WARNINGS  = -std=c99 -Wall -Wextra -Werror -pedantic -Wmissing-prototypes -Wshadow
LIBS      = -lcurl -lm

SOURCES   = src/heymarket.c src/options.c src/client.c src/request.c src/transfer.c src/loop.c src/json.c \
            src/errors.c
HEADERS   = src/hm.h src/compat.h

BUILD     = build/$(LUA)
MODULE    = $(BUILD)/heymarket.so

# The version has one source of truth, HM_VERSION in src/hm.h; the rockspec's
# name and version must agree with it (spec/release_spec.lua checks).
VERSION   := $(shell sed -n 's/.*define HM_VERSION "\([^"]*\)".*/\1/p' src/hm.h)
ROCKSPEC   = rockspec/heymarket-$(VERSION)-1.rockspec
DIST_DIR   = build/dist
SRC_ROCK   = $(DIST_DIR)/heymarket-$(VERSION)-1.src.rock

# Where each Lua keeps its headers, and how to run busted with it.
lua_abi     = $(if $(filter luajit,$(1)),5.1,$(patsubst lua%,%,$(1)))
lua_include = $(if $(filter luajit,$(1)),/usr/include/luajit-2.1,/usr/include/$(1))
busted_for  = $(1) /usr/bin/busted --cpath="build/$(1)/?.so" --lpath="src/?.lua;src/?/init.lua"

# Packages a fresh Debian 12 needs for the specs and for the demo.
TEST_PACKAGES = gcc make lua5.1 lua5.2 lua5.3 lua5.4 liblua5.1-0-dev liblua5.2-dev \
                liblua5.3-dev liblua5.4-dev luajit2 libluajit2-5.1-dev \
                libcurl4-openssl-dev lua-cjson lua-busted lua-check lua-socket \
                nginx-light libnginx-mod-http-lua neovim valgrind openssl ca-certificates \
                luarocks curl procps coreutils zip unzip git lua-luv
# make bench adds the peers it measures heymarket against, and taskset.
BENCH_PACKAGES = lua-curl lua-socket lua-cjson util-linux
DEMO_PACKAGES = gcc make lua5.4 liblua5.4-dev libcurl4-openssl-dev lua-cjson lua-socket \
                nginx-light libnginx-mod-http-lua openssl ca-certificates procps

# The specs talk only to 127.0.0.1: keep a proxy in the environment out of it.
export no_proxy = 127.0.0.1,localhost
export NO_PROXY = 127.0.0.1,localhost

# ---- targets -----------------------------------------------------------------

.PHONY: all test spec demo install rock dist lint valgrind asan fuzz bench bench-hosts deps-test deps-clang deps-demo deps-bench clean

all: $(MODULE)

$(MODULE): $(SOURCES) $(HEADERS) Makefile
	@mkdir -p $(BUILD)
	$(CC) $(WARNINGS) $(CFLAGS) -fPIC -I$(call lua_include,$(LUA)) -shared \
		-o $@ $(SOURCES) $(LIBS)

# Build every version first (the Neovim and nginx specs load the LuaJIT
# build whichever Lua runs busted), lint, then one spec run per version; every
# version runs even after a failure, and the target fails if any did.
test: deps-test
	@for v in $(VERSIONS); do $(MAKE) --no-print-directory LUA=$$v all || exit 1; done
	@$(MAKE) --no-print-directory build/oom_host
	@$(MAKE) --no-print-directory lint
	@failed=""; \
	for v in $(VERSIONS); do \
		echo "==> specs under $$v"; \
		$(call busted_for,$$v) --output=utfTerminal spec 2>&1 | tee build/$$v/spec.log; \
		[ "$${PIPESTATUS[0]}" = 0 ] || failed="$$failed $$v"; \
	done; \
	sh tools/summary.sh $(addprefix build/,$(addsuffix /spec.log,$(VERSIONS))); \
	if [ -n "$$failed" ]; then echo "specs failed for:$$failed"; exit 1; fi

# The allocation-failure host (spec/oom_spec.lua runs it in the 5.4 pass).
build/oom_host: tools/oom_host.c
	@mkdir -p build
	$(CC) -std=c99 -Wall -Wextra -Werror -O1 -g -I/usr/include/lua5.4 -o $@ tools/oom_host.c \
		-llua5.4 -ldl

# The specs for one version: make spec LUA=lua5.3
spec: $(MODULE)
	$(call busted_for,$(LUA)) spec

demo: deps-demo
	@$(MAKE) --no-print-directory LUA=lua5.4 all
	lua5.4 tools/demo.lua

# make install LUA=lua5.1 (for Neovim and OpenResty), LOCAL=1 for ~/.luarocks
# instead of the system tree, TREE=dir for another tree.
install:
	luarocks --lua-version=$(call lua_abi,$(LUA)) make $(ROCKSPEC) --deps-mode=none \
		$(if $(filter 1 yes true,$(LOCAL)),--local) $(if $(TREE),--tree=$(TREE))

# LuaRocks runs this (build.type = "make" in the rockspec) with the compiler,
# flags and Lua headers of the Lua it installs for; the module goes to
# build/rock/ and LuaRocks copies it from there. Always rebuilt: the same
# folder serves every Lua version.
LIBFLAG    ?= -shared
LUA_INCDIR ?= $(call lua_include,$(LUA))
rock:
	@mkdir -p build/rock
	$(CC) -std=c99 $(CFLAGS) -fPIC -I$(LUA_INCDIR) $(LIBFLAG) -o build/rock/heymarket.so \
		$(SOURCES) $(if $(CURL_LIBDIR),-L$(CURL_LIBDIR)) $(LIBS)

# The source rock for a release: the rockspec plus the tracked files of the
# checkout (as luarocks pack would fetch them from the tag), with no network.
# lua/ holds only symlinks for plugin managers and stays out.
dist:
	@test -f $(ROCKSPEC) || { echo "make dist: no $(ROCKSPEC) for HM_VERSION $(VERSION) in src/hm.h" >&2; exit 1; }
	luarocks lint $(ROCKSPEC)
	rm -rf $(DIST_DIR)/stage $(SRC_ROCK)
	mkdir -p $(DIST_DIR)/stage/heymarket
	git ls-files -z -- . ':!:lua' | tar --null -T - -cf - | tar -C $(DIST_DIR)/stage/heymarket -xf -
	cp $(ROCKSPEC) $(DIST_DIR)/stage/
	cd $(DIST_DIR)/stage && zip -qrX ../$(notdir $(SRC_ROCK)) $(notdir $(ROCKSPEC)) heymarket
	rm -rf $(DIST_DIR)/stage
	@echo "wrote $(SRC_ROCK)"

lint:
	luacheck -q src spec examples tools types bin/heymarket

valgrind: deps-test
	@$(MAKE) --no-print-directory LUA=lua5.4 all
	valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
		--suppressions=tools/valgrind.supp \
		--show-leak-kinds=definite $(call busted_for,lua5.4) spec

asan: deps-test deps-clang
	@mkdir -p build/asan
	clang $(WARNINGS) -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fPIC -DHM_CHECK_INVARIANTS \
		-I/usr/include/lua5.4 -shared -o build/asan/heymarket.so $(SOURCES) $(LIBS)
	clang -std=c99 -Wall -Wextra -Werror -O1 -g -fsanitize=address,undefined \
		-I/usr/include/lua5.4 -o build/asan/lua tools/asan_lua.c -llua5.4
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build/asan/lua /usr/bin/busted --cpath="build/asan/?.so" --lpath="src/?.lua;src/?/init.lua" spec

# libFuzzer, FUZZ_SECONDS each: the failure triple built from header lines and
# bodies (the key must never show), decoding + normalising any bytes, and (on
# Lua 5.1, where object nulls are blanked in the text) decoding against
# lua-cjson itself; the last two once with the SSE2 byte scans and once with
# the portable ones other machines use.
FUZZ_SECONDS ?= 60
FUZZ_FLAGS    = -std=c99 -Wall -Wextra -Werror -g -O1 -fsanitize=fuzzer,address,undefined \
                -I/usr/include/lua5.4
FUZZ_SOURCES  = $(filter-out src/transfer.c,$(SOURCES))
fuzz: deps-test deps-clang
	@mkdir -p build/fuzz/corpus build/fuzz/corpus_json
	clang $(FUZZ_FLAGS) -o build/fuzz/fuzz_response fuzz/fuzz_response.c $(FUZZ_SOURCES) \
		-llua5.4 -lcurl -lm
	clang $(FUZZ_FLAGS) -o build/fuzz/fuzz_json fuzz/fuzz_json.c $(SOURCES) \
		-llua5.4 -lcurl -lm
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build/fuzz/fuzz_response -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz/corpus fuzz/seeds
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build/fuzz/fuzz_json -max_total_time=$(FUZZ_SECONDS) -max_len=4096 build/fuzz/corpus_json fuzz/seeds_json
	clang $(FUZZ_FLAGS) -DHM_PORTABLE_SCAN -o build/fuzz/fuzz_json_portable fuzz/fuzz_json.c $(SOURCES) \
		-llua5.4 -lcurl -lm
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build/fuzz/fuzz_json_portable -max_total_time=$(FUZZ_SECONDS) -max_len=4096 \
		build/fuzz/corpus_json fuzz/seeds_json
	@mkdir -p build/fuzz/corpus_nulls
	clang $(subst lua5.4,lua5.1,$(FUZZ_FLAGS)) -o build/fuzz/fuzz_nulls fuzz/fuzz_nulls.c $(SOURCES) \
		-llua5.1 -lcurl -lm
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build/fuzz/fuzz_nulls -max_total_time=$(FUZZ_SECONDS) -max_len=8192 build/fuzz/corpus_nulls fuzz/seeds_nulls
	clang $(subst lua5.4,lua5.1,$(FUZZ_FLAGS)) -DHM_PORTABLE_SCAN -o build/fuzz/fuzz_nulls_portable \
		fuzz/fuzz_nulls.c $(SOURCES) -llua5.1 -lcurl -lm
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		build/fuzz/fuzz_nulls_portable -max_total_time=$(FUZZ_SECONDS) -max_len=8192 \
		build/fuzz/corpus_nulls fuzz/seeds_nulls

# The floor (tools/bench_baseline.c), a C module built for each Lua benched.
BENCH_LUAS = lua5.4 luajit
FLOORS     = $(foreach v,$(BENCH_LUAS),build/bench/$(v)/floor.so)

build/bench/%/floor.so: tools/bench_baseline.c Makefile
	@mkdir -p $(dir $@)
	$(CC) -std=c99 -O2 -Wall -Wextra -Werror -pedantic -fPIC -shared -I$(call lua_include,$*) \
		-o $@ tools/bench_baseline.c -lcurl

# Speed and memory, written to BENCHMARKS.md; HEYMARKET_BENCH_QUICK=1 for a
# short run that only checks the bench still works (CI).
bench: deps-bench
	@for v in $(BENCH_LUAS); do $(MAKE) --no-print-directory LUA=$$v all || exit 1; done
	@$(MAKE) --no-print-directory $(FLOORS)
	lua5.4 tools/bench.lua

# The host event loops (Neovim, OpenResty): needs the LuaJIT build; prints a
# markdown section for BENCHMARKS.md on stdout.
bench-hosts: deps-test
	@$(MAKE) --no-print-directory LUA=luajit all
	@$(MAKE) --no-print-directory LUA=lua5.4 all
	lua5.4 tools/bench_hosts.lua

deps-test:
	@sh tools/ensure-packages.sh $(TEST_PACKAGES)

deps-clang:
	@sh tools/ensure-packages.sh clang libclang-rt-14-dev

deps-demo:
	@sh tools/ensure-packages.sh $(DEMO_PACKAGES)

deps-bench: deps-test
	@sh tools/ensure-packages.sh $(BENCH_PACKAGES)

clean:
	rm -rf build

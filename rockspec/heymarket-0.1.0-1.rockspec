-- The release rockspec. Its version must match HM_VERSION in src/hm.h (the one
-- source of truth); spec/release_spec.lua fails when they disagree. How a
-- release is cut: README.md, "Releasing".
rockspec_format = "3.0"
package = "heymarket"
version = "0.1.0-1"

source = {
  url = "git+https://github.com/heymarket-lua/heymarket.git",
  tag = "v0.1.0",
}

description = {
  summary = "The Heymarket SMS API as native Lua tables, over libcurl",
  detailed = [[
heymarket is a Lua C module: heymarket.inboxes() and heymarket.team() make
HTTPS requests with libcurl, decode them with lua-cjson and return plain
tables. Non-blocking request objects, heymarket.nvim for Neovim,
heymarket.resty for OpenResty, a `heymarket` command, and type definitions
for lua-language-server.
]],
  license = "MIT",
  labels = { "http", "api", "sms", "curl", "neovim", "openresty" },
}

dependencies = {
  "lua >= 5.1, < 5.5",
  "lua-cjson >= 2.1.0",
}

-- LuaRocks' header probe misses Debian's multiarch curl/curl.h; the library
-- alone is enough for it to find libcurl.
external_dependencies = {
  CURL = { library = "curl" },
}

-- The Makefile's `rock` target compiles into build/rock/ (never into the
-- source tree's root, where Lua 5.1, LuaJIT and Neovim would find it through
-- `./?.so`); LuaRocks then installs the files listed below.
build = {
  type = "make",
  build_target = "rock",
  build_variables = {
    CC = "$(CC)",
    CFLAGS = "$(CFLAGS)",
    LIBFLAG = "$(LIBFLAG)",
    LUA_INCDIR = "$(LUA_INCDIR)",
    CURL_LIBDIR = "$(CURL_LIBDIR)",
  },
  install_pass = false,
  install = {
    lib = { heymarket = "build/rock/heymarket.so" },
    lua = {
      ["heymarket._client"] = "src/heymarket/_client.lua",
      ["heymarket.nvim"] = "src/heymarket/nvim.lua",
      ["heymarket.resty"] = "src/heymarket/resty.lua",
    },
    bin = { heymarket = "bin/heymarket" },
  },
  -- lua-language-server definitions: <rock dir>/types (README, "Editor types")
  copy_directories = { "types" },
}

rockspec_format = "3.0"
package = "heymarket"
version = "scm-1"

source = {
  url = "git+file:///dev/null", -- built from a checkout with `luarocks make`
}

description = {
  summary = "The Heymarket SMS API as native Lua tables, over libcurl",
  detailed = [[
heymarket is a Lua C module: heymarket.inboxes() and heymarket.team() make
HTTPS requests with libcurl, decode them with lua-cjson and return plain
tables. Non-blocking request objects, plus heymarket.nvim for Neovim and
heymarket.resty for OpenResty.
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

build = {
  type = "builtin",
  modules = {
    heymarket = {
      sources = {
        "src/heymarket.c",
        "src/options.c", "src/client.c", "src/request.c",
        "src/transfer.c",
        "src/json.c",
        "src/errors.c",
      },
      libraries = { "curl" },
      incdirs = { "src" },
      libdirs = { "$(CURL_LIBDIR)" },
    },
    ["heymarket.nvim"] = "src/heymarket/nvim.lua",
    ["heymarket.resty"] = "src/heymarket/resty.lua",
  },
  copy_directories = {},
}

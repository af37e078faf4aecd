-- The release (issue 7 §1): one version everywhere, a rockspec that lints,
-- `make dist` writing the source rock offline, that rock installing for Lua
-- 5.1 and 5.4 with everything in it working, `make install LOCAL=1` into
-- ~/.luarocks as the README says, and nothing built left outside build/.
local fixture = require("spec.support.fixture")
local guides = require("spec.support.guides")
local util = require("spec.support.util")

local quote, read, sh = util.shell_quote, util.read_file, guides.sh

local VERSION = read("src/hm.h"):match('#define HM_VERSION "([^"]+)"')
local ROCKSPEC = "rockspec/heymarket-" .. VERSION .. "-1.rockspec"
local SRC_ROCK = "build/dist/heymarket-" .. VERSION .. "-1.src.rock"

describe("The version", function()
  it("has one source, HM_VERSION in src/hm.h, and the module reports it", function()
    assert.matches("^%d+%.%d+%.%d+$", VERSION)
    assert.equals(VERSION, require("heymarket")._VERSION)
  end)

  it("is the rockspec's: its file name, version and tag; no other rockspec", function()
    local names = util.capture("ls rockspec")
    assert.equals("heymarket-" .. VERSION .. "-1.rockspec\n", names)
    local env = {}
    local chunk = assert((loadfile or load)(ROCKSPEC, "t", env))
    if setfenv then setfenv(chunk, env) end
    chunk()
    assert.equals(VERSION .. "-1", env.version)
    assert.equals("v" .. VERSION, env.source.tag)
    assert.equals("MIT", env.description.license)
  end)

  it("is the one the README names everywhere", function()
    local readme = read("README.md")
    local seen = {}
    for v in readme:gmatch("heymarket%-(%d+%.%d+%.%d+)%-1") do seen[#seen + 1] = v end
    for v in readme:gmatch("heymarket%-lua/(%d+%.%d+%.%d+)") do seen[#seen + 1] = v end
    for v in readme:gmatch("heymarket/(%d+%.%d+%.%d+)%-1") do seen[#seen + 1] = v end
    for line in readme:gmatch("[^\n]+") do
      if line:find("_VERSION", 1, true) then
        for v in line:gmatch('"(%d+%.%d+%.%d+)"') do seen[#seen + 1] = v end
      end
    end
    assert.is_true(#seen >= 3, "the README names the version fewer than 3 times")
    for _, v in ipairs(seen) do
      assert.equals(VERSION, v)
    end
  end)

  it("heads CHANGELOG.md, below an Unreleased section", function()
    local changelog = read("CHANGELOG.md")
    assert.equals(VERSION, changelog:match("\n## (%d+%.%d+%.%d+)"))
    assert.truthy(changelog:find("## Unreleased", 1, true))
    assert.truthy(read("LICENSE"):find("MIT License", 1, true))
  end)

  it("passes luarocks lint", function()
    local status, out, err = sh("luarocks lint " .. ROCKSPEC)
    assert.equals(0, status, out .. err)
  end)
end)

-- Building and installing rocks takes a few seconds: once per `make test`, in
-- the Lua 5.4 pass (the Lua 5.1 rock is built there too, with luarocks).
if util.interpreter == "lua5.4" then
  describe("The source rock", function()
    local srv, before

    setup(function()
      srv = fixture.start()
      before = guides.checkout_state()
    end)

    teardown(function()
      if srv then srv:stop() end
    end)

    local function api_env(extra)
      local env = { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http }
      for k, v in pairs(extra or {}) do env[k] = v end
      return env
    end

    -- LUA_PATH/LUA_CPATH (any _5_x flavour) for a tree, from `luarocks path`.
    local function tree_env(abi, tree, into)
      into = into or {}
      local out = util.capture("luarocks --lua-version=" .. abi .. " --tree " .. quote(tree) .. " path")
      for name, value in out:gmatch("export (LUA_C?PATH[%w_]*)='([^']*)'") do into[name] = value end
      assert.is_string(into.LUA_CPATH or into["LUA_CPATH_" .. abi:gsub("%.", "_")], out)
      return into
    end

    it("is written by make dist with no network, leaving the checkout as it was", function()
      os.remove(SRC_ROCK)
      -- any download would go through this proxy, which refuses
      local status, out, err = sh("make -s dist", { http_proxy = "http://127.0.0.1:9",
        https_proxy = "http://127.0.0.1:9", all_proxy = "http://127.0.0.1:9" })
      assert.equals(0, status, out .. err)
      assert.truthy(read(SRC_ROCK), SRC_ROCK .. " was not written")
      local listing = util.capture("unzip -Z1 " .. SRC_ROCK)
      assert.matches("^heymarket%-" .. VERSION:gsub("%.", "%%.") .. "%-1%.rockspec\n", listing)
      for _, file in ipairs({ "heymarket/src/hm.h", "heymarket/bin/heymarket", "heymarket/types/heymarket.lua",
                              "heymarket/LICENSE", "heymarket/Makefile" }) do
        assert.truthy(listing:find(file .. "\n", 1, true), file .. " is not in the rock")
      end
      assert.equals(before, guides.checkout_state())
    end)

    for _, abi in ipairs({ "5.1", "5.4" }) do
      it("installs offline for Lua " .. abi .. ": module, submodules, command and types all work", function()
        assert.truthy(read(SRC_ROCK), "run make dist first (the test above)")
        local tree = guides.tmpdir()
        local status, out, err = sh("luarocks --lua-version=" .. abi .. " install " .. SRC_ROCK
          .. " --deps-mode=none --tree " .. quote(tree),
          { http_proxy = "http://127.0.0.1:9", https_proxy = "http://127.0.0.1:9" })
        local ok, problem = pcall(function()
          assert.equals(0, status, out .. err)
          local lua = abi == "5.1" and "lua5.1" or "lua5.4"
          local env = tree_env(abi, tree, api_env())
          -- the module from the tree, in a fresh process
          status, out, err = sh(lua .. " -e " .. quote([[
            local function find(name, path) -- package.searchpath, which 5.1 lacks
              for p in path:gmatch("[^;]+") do
                local file = p:gsub("%?", (name:gsub("%.", "/")))
                local f = io.open(file)
                if f then f:close() return file end
              end
            end
            local heymarket = require("heymarket")
            print(heymarket._VERSION, find("heymarket", package.cpath))
            print(find("heymarket.nvim", package.path))
            print(find("heymarket.resty", package.path))
            print(assert(heymarket.inboxes())[1].name)]]), env)
          assert.equals(0, status, err)
          assert.equals(VERSION .. "\t" .. tree .. "/lib/lua/" .. abi .. "/heymarket.so\n"
            .. tree .. "/share/lua/" .. abi .. "/heymarket/nvim.lua\n"
            .. tree .. "/share/lua/" .. abi .. "/heymarket/resty.lua\nSupport\n", out)
          assert.equals(read("src/heymarket/nvim.lua"), read(tree .. "/share/lua/" .. abi .. "/heymarket/nvim.lua"))
          assert.equals(read("src/heymarket/resty.lua"), read(tree .. "/share/lua/" .. abi .. "/heymarket/resty.lua"))
          -- the command
          status, out, err = sh(quote(tree .. "/bin/heymarket") .. " team", env)
          assert.equals(0, status, err)
          assert.matches("^Team 7: Acme Support", out)
          -- the types, in the rock's directory
          local rock_dir = util.capture("luarocks --lua-version=" .. abi .. " --tree " .. quote(tree)
            .. " show --rock-dir heymarket"):gsub("%s+$", "")
          for _, file in ipairs({ "heymarket.lua", "heymarket/nvim.lua", "heymarket/resty.lua" }) do
            assert.equals(read("types/" .. file), read(rock_dir .. "/types/" .. file), "types/" .. file)
          end
          if abi == "5.1" then
            -- heymarket.nvim from this tree in Neovim (LUA_PATH/LUA_CPATH as luarocks path sets them)
            local r = guides.nvim([[
              local hm = require("heymarket.nvim")
              H.R.from = debug.getinfo(hm.inboxes, "S").source
              hm.inboxes(function(inboxes, message)
                H.R.name, H.R.message = inboxes and inboxes[1].name, message
                H.finish()
              end)]], { env = env })
            assert.equals("@" .. tree .. "/share/lua/5.1/heymarket/nvim.lua", r.from)
            assert.equals("Support", r.name, r.message)
            -- heymarket.resty from this tree in nginx, from examples/nginx.conf
            local h = guides.example_nginx(tree .. "/lib/lua/5.1", tree .. "/share/lua/5.1", env)
            local code, body = guides.http_get(h.port, "/inboxes")
            local log = h.log()
            h.stop()
            assert.equals(200, code, log)
            assert.equals("413 Support\n", body)
          end
        end)
        guides.rmdir(tree)
        assert(ok, problem)
      end)
    end

    it("make install LOCAL=1 installs into ~/.luarocks; loaded as the README says, for 5.4 and Neovim", function()
      local home = guides.tmpdir()
      local ok, problem = pcall(function()
        local env = api_env({ HOME = home, LUA_PATH = false, LUA_CPATH = false, LUA_PATH_5_4 = false,
          LUA_CPATH_5_4 = false })
        local status, out, err = sh("make -s install LUA=lua5.4 LOCAL=1", env)
        assert.equals(0, status, out .. err)
        assert.truthy(read(home .. "/.luarocks/lib/lua/5.4/heymarket.so"))
        -- the README: eval "$(luarocks --lua-version=5.4 path)", then lua5.4 and the command
        status, out, err = sh([[eval "$(luarocks --lua-version=5.4 path)"
          lua5.4 -e 'print(package.searchpath("heymarket", package.cpath), #assert(require("heymarket").inboxes()))'
          heymarket --version]], env)
        assert.equals(0, status, err)
        assert.equals(home .. "/.luarocks/lib/lua/5.4/heymarket.so\t1\nheymarket " .. VERSION .. "\n", out)
        -- the types where the README's .luarc.json example says
        assert.equals(read("types/heymarket.lua"),
          read(home .. "/.luarocks/lib/luarocks/rocks-5.4/heymarket/" .. VERSION .. "-1/types/heymarket.lua"))

        -- Neovim: the Lua 5.1 install, found through luarocks path's LUA_PATH/LUA_CPATH
        status, out, err = sh("make -s install LUA=lua5.1 LOCAL=1", env)
        assert.equals(0, status, out .. err)
        local paths = util.capture("HOME=" .. quote(home) .. " luarocks --lua-version=5.1 path")
        for name, value in paths:gmatch("export (LUA_C?PATH)='([^']*)'") do env[name] = value end
        local r = guides.nvim([[
          H.R.so = package.searchpath("heymarket", package.cpath)
          require("heymarket.nvim").team(function(team, message)
            H.R.name, H.R.message = team and team.name, message
            H.finish()
          end)]], { env = env })
        assert.equals(home .. "/.luarocks/lib/lua/5.1/heymarket.so", r.so)
        assert.equals("Acme Support", r.name, r.message)
      end)
      guides.rmdir(home)
      assert(ok, problem)
      -- luarocks make built under build/rock and left nothing else
      assert.equals(before, guides.checkout_state())
      assert.is_nil(read("heymarket.so"))
    end)
  end)
end

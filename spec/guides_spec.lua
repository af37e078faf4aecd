-- The guides run exactly as written (issue 7 §4): every ```lua block of
-- README.md, examples/nginx.conf in nginx, examples/init.lua in Neovim, and
-- the plugin-manager set-up, all against the fake API.
--
-- Rules for README.md's ```lua blocks (what a block needs is read from it):
--   * Each block stands alone: its own `require`, no `...` placeholders.
--   * A block whose first line is `-- examples/<file>` must equal that file
--     byte for byte; the file itself is run by its own test below.
--   * A block that uses `vim` runs in headless Neovim (in the LuaJIT pass)
--     with the checkout on 'runtimepath', as a plugin manager puts it there.
--     `require("lazy")` is the plugin manager: a stand-in that copies the
--     checkout's files like a clone, runs the plugin's `build` command in the
--     copy and puts the copy on 'runtimepath'. The block must raise nothing,
--     and nothing may be reported as an error within a second after it ran.
--   * A block using `<close>` runs under Lua 5.4 only; a block using `ngx` is
--     not allowed (nginx configurations are ```nginx blocks and must equal
--     examples/nginx.conf).
--   * Every other block runs in a fresh interpreter of each Lua (and LuaJIT),
--     with the build of that Lua and HEYMARKET_API_KEY / HEYMARKET_BASE_URL
--     set to the fake API; it must exit with status 0 and write nothing to
--     stderr.
--   * `<!-- run: lua5.1 -->` (or any interpreter, or `nvim`) on the line
--     before the fence chooses the runner instead.
local fixture = require("spec.support.fixture")
local guides = require("spec.support.guides")
local util = require("spec.support.util")

local quote, read, sh = util.shell_quote, util.read_file, guides.sh
local root = util.root

-- The README's fenced blocks: { lang =, text =, line =, run = marker or nil }.
local function blocks()
  local list, current, marker = {}, nil, nil
  local n = 0
  for line in (read("README.md") .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if current then
      if line:match("^```%s*$") then
        list[#list + 1] = current
        current = nil
      else
        current.text = current.text .. line .. "\n"
      end
    else
      local lang = line:match("^```(%S*)%s*$")
      if lang then
        current = { lang = lang, text = "", line = n + 1, run = marker }
      end
      marker = line:match("^<!%-%- run: (%S+) %-%->$")
    end
  end
  assert(current == nil, "README.md: a ``` block is not closed")
  return list
end

local function runner(block)
  if block.run then return block.run end
  if block.text:match("^%-%- examples/") then return "example" end
  if block.text:find("ngx%.") then return "ngx" end
  if block.text:find("vim%.") or block.text:find('require%("lazy"%)') then return "nvim" end
  if block.text:find("<close>", 1, true) then return "lua5.4" end
  return "all"
end

-- The stand-in for lazy.nvim: setup{ { "owner/heymarket", build = "cmd" } }.
local LAZY = [[
package.preload["lazy"] = function()
  return {
    setup = function(plugins)
      for _, plugin in ipairs(plugins) do
        local dir = vim.fn.tempname()
        vim.fn.mkdir(dir, "p")
        -- a clone: the tracked files, symbolic links kept
        local out = vim.fn.system("cd " .. vim.fn.shellescape(CHECKOUT)
          .. " && git ls-files -z | tar --null -T - -cf - | tar -C " .. vim.fn.shellescape(dir) .. " -xf -")
        assert(vim.v.shell_error == 0, "copying the checkout failed: " .. out)
        if plugin.build then
          out = vim.fn.system("cd " .. vim.fn.shellescape(dir) .. " && " .. plugin.build)
          assert(vim.v.shell_error == 0, "the build command failed: " .. out)
        end
        vim.opt.runtimepath:prepend(dir)
        PLUGIN_DIRS[#PLUGIN_DIRS + 1] = dir
      end
    end,
  }
end
]]

-- Runs lua (a chunk) in headless Neovim as the rules say; extra (Lua source)
-- runs after it. Returns the results table and nvim's output.
local function run_in_nvim(srv, lua, extra, args)
  local chunk = os.tmpname()
  local f = assert(io.open(chunk, "w"))
  f:write(lua)
  f:close()
  local r, output = guides.nvim(table.concat({
    ("CHECKOUT, PLUGIN_DIRS = %q, {}"):format(root),
    LAZY,
    "H.R.notified = {}",
    "vim.notify = function(message, level) table.insert(H.R.notified, { tostring(message), level }) end",
    "vim.schedule(H.guard(function()",
    ("  dofile(%q)"):format(chunk),
    extra or "",
    "  H.R.plugin_dirs = PLUGIN_DIRS",
    "  vim.defer_fn(H.finish, 1000)",
    "end))",
  }, "\n"), {
    -- nothing on package.path or package.cpath: only 'runtimepath' provides heymarket
    env = { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http,
            LUA_PATH = "/nonexistent/?.lua", LUA_CPATH = "/nonexistent/?.so" },
    args = args or ("-u NONE --cmd " .. quote("set rtp^=" .. root)),
  })
  os.remove(chunk)
  for _, dir in ipairs(r.plugin_dirs or {}) do guides.rmdir(dir) end
  assert(r.error == nil, "the block raised in Neovim: " .. tostring(r.error) .. "\n" .. output)
  assert.is_nil(output:find("Error", 1, true), "Neovim reported an error:\n" .. output)
  for _, n in ipairs(r.notified) do
    assert.is_true(n[2] == nil or n[2] < 4, "vim.notify at level ERROR: " .. n[1])
  end
  return r, output
end

describe("The README's Lua blocks", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() if srv then srv:stop() end end)

  local all = blocks()
  local count = 0
  for _, block in ipairs(all) do
    if block.lang == "lua" then
      count = count + 1
      local how = runner(block)
      local name = "README.md line " .. block.line .. " (" .. how .. ")"
      if how == "example" then
        it(name .. " is the file it names", function()
          local file = block.text:match("^%-%- (examples/[%w_.-]+)")
          assert.equals(read(file), block.text, "README.md's block differs from " .. file)
        end)
      elseif how == "ngx" then
        it(name .. " is not an nginx snippet in a lua block", function()
          error("put nginx configuration in an ```nginx block equal to examples/nginx.conf")
        end)
      elseif how == "nvim" then
        if util.interpreter == "luajit" then
          it(name .. " runs in headless Neovim", function()
            run_in_nvim(srv, block.text)
          end)
        end
      elseif how == "all" or how == util.interpreter then
        it(name .. " runs under " .. util.interpreter, function()
          assert.is_nil(block.text:find("^%s*%.%.%.%s*$") or block.text:find("then %.%.%. end", 1, true),
            "a placeholder `...` in the block")
          local file = os.tmpname()
          local f = assert(io.open(file, "w"))
          f:write(block.text)
          f:close()
          local status, out, err = sh(util.interpreter .. " " .. quote(file), {
            LUA_CPATH = root .. "/" .. util.build_dir .. "/?.so;;",
            LUA_PATH = root .. "/src/?.lua;;",
            LUA_CPATH_5_2 = false, LUA_CPATH_5_3 = false, LUA_CPATH_5_4 = false,
            LUA_PATH_5_2 = false, LUA_PATH_5_3 = false, LUA_PATH_5_4 = false,
            HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http,
          })
          os.remove(file)
          assert.equals("", err, "stderr of the block at " .. name)
          assert.equals(0, status, name .. " exited with " .. tostring(status) .. ":\n" .. out)
        end)
      end
    end
  end

  it("are there to be run, and the nginx block is examples/nginx.conf", function()
    assert.is_true(count >= 8, "found only " .. count .. " lua blocks: the extraction is broken")
    local nginx = {}
    for _, block in ipairs(all) do
      if block.lang == "nginx" then nginx[#nginx + 1] = block.text end
    end
    assert.same({ read("examples/nginx.conf") }, nginx)
  end)

  it("hold JSON that parses, naming the rock's types folder for lua-language-server", function()
    local cjson = require("cjson")
    local n = 0
    for _, block in ipairs(all) do
      if block.lang == "json" then
        n = n + 1
        local ok, value = pcall(cjson.decode, block.text)
        assert(ok, "README.md line " .. block.line .. ": " .. tostring(value))
        for _, dir in ipairs(value["workspace.library"] or {}) do
          assert.matches("/lib/luarocks/rocks%-5%.%d/heymarket/[%d.]+%-1/types$", dir)
        end
      end
    end
    assert.is_true(n >= 1)
  end)

  it("show wait(seconds), not a loop of poll() alone, for waiting without blocking", function()
    local readme = read("README.md")
    assert.truthy(readme:find(":wait(0.1)", 1, true))
    assert.is_nil(readme:find("until a_done and b_done", 1, true))
  end)
end)

-- nginx and Neovim embed LuaJIT: once per `make test`, in the LuaJIT pass.
if util.interpreter == "luajit" then
  describe("The guides", function()
    local srv
    setup(function()
      assert(read("build/luajit/heymarket.so"), "build/luajit/heymarket.so is missing: run `make LUA=luajit` first")
      srv = fixture.start()
    end)
    teardown(function() if srv then srv:stop() end end)

    it("examples/nginx.conf runs in nginx as written (only the port and module paths changed)", function()
      -- the checkout's build, copied where nginx's workers may read it even
      -- when they run as nobody and the checkout is in a private directory
      local lib = guides.tmpdir()
      assert(util.execute("mkdir -p " .. quote(lib .. "/heymarket") .. " && cp build/luajit/heymarket.so "
        .. quote(lib) .. " && cp src/heymarket/*.lua " .. quote(lib .. "/heymarket") .. " && chmod -R a+rX "
        .. quote(lib)))
      finally(function() guides.rmdir(lib) end)
      local h = guides.example_nginx(lib, lib,
        { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http })
      local ok, problem = pcall(function()
        local code, body = guides.http_get(h.port, "/inboxes")
        assert.equals(200, code, h.log())
        assert.equals("413 Support\n", body)
        code, body = guides.http_get(h.port, "/team")
        assert.equals(200, code, h.log())
        assert.equals("Acme Support\n1 Alice Smith admin\n2 Bob Jones member\n", body)
      end)
      h.stop()
      assert(ok, problem)

      -- a wrong key: 502, the one-line message in the error log, never the key
      h = guides.example_nginx(lib, lib,
        { HEYMARKET_API_KEY = "wrong-key-5d1e", HEYMARKET_BASE_URL = srv.http .. "/t/leak/x" })
      local code, body = guides.http_get(h.port, "/inboxes")
      local log = h.log()
      h.stop()
      assert.equals(502, code)
      assert.is_nil(body:find("wrong-key-5d1e", 1, true))
      assert.is_nil(log:find("wrong-key-5d1e", 1, true))
      assert.truthy(log:find("heymarket: GET /v1/inboxes: HTTP 401: Invalid API key: [redacted]", 1, true), log)
    end)

    it("examples/init.lua runs as Neovim's init file: :HeymarketInboxes picks an inbox", function()
      local r = run_in_nvim(srv, [[
        -- a picker that takes the first item, as a user would
        vim.ui.select = function(items, opts, on_choice)
          H.R.prompt = opts.prompt
          H.R.items = {}
          for i, item in ipairs(items) do H.R.items[i] = opts.format_item(item) end
          on_choice(items[1], 1)
        end
      ]], "vim.cmd('HeymarketInboxes')",
        "-u " .. quote(root .. "/examples/init.lua") .. " --cmd " .. quote("set rtp^=" .. root))
      assert.equals("Heymarket inbox", r.prompt)
      assert.same({ "Support  14155550100" }, r.items)
      assert.same({ { "Using inbox Support (413)" } }, r.notified)
    end)

    it("a plugin manager's clone, after the README's build command, loads heymarket.nvim from 'runtimepath'",
      function()
        local lazy_block
        for _, block in ipairs(blocks()) do
          if block.lang == "lua" and block.text:find('require("lazy")', 1, true) then lazy_block = block.text end
        end
        assert.is_string(lazy_block, "the README shows no lazy.nvim set-up")
        local packer = read("README.md"):match('use { "[^"]+", run = "([^"]+)" }')
        assert.equals(lazy_block:match('build = "([^"]+)"'), packer, "lazy.nvim and packer builds differ")
        local r = run_in_nvim(srv, lazy_block, [[
          H.R.cpath = package.cpath
          H.R.so = vim.api.nvim_get_runtime_file("lua/heymarket.so", false)[1]
          local hm = require("heymarket.nvim")
          H.R.nvim_from = debug.getinfo(hm.inboxes, "S").source
          hm.inboxes(function(inboxes, message)
            H.R.name, H.R.message = inboxes and inboxes[1].name, message
          end)
        ]], "-u NONE")
        assert.equals("Support", r.name, r.message)
        local dir = r.plugin_dirs[1]
        assert.equals(dir .. "/lua/heymarket.so", r.so)
        assert.equals("@" .. dir .. "/lua/heymarket/nvim.lua", r.nvim_from)
        assert.is_nil(r.cpath:find(dir, 1, true), "package.cpath was edited")
      end)
  end)
end

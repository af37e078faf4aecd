-- The type definitions in types/ (issue 7 §3) against the real modules: every
-- function and field the modules export is annotated, nothing annotated is
-- missing, every option the C code reads is described, and every field that
-- may be absent is optional.
--
-- What is exported is found by introspection, so anything added later
-- without an annotation fails here: the module table of `heymarket`, the
-- __index tables of a client's and a request's metatables, and the tables of
-- `heymarket.nvim` and `heymarket.resty` as loaded in real Neovim and nginx.
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")
local heymarket = require("heymarket")

local FILES = { "types/heymarket.lua", "types/heymarket/nvim.lua", "types/heymarket/resty.lua" }

-- Parses the annotation files: classes (name -> { fields = { name -> {optional=} },
-- owner = local name }) and stubs (owner -> { name -> { params = {...}, doc = {...} } }).
local function parse()
  local classes, stubs, owners = {}, {}, {}
  for _, file in ipairs(FILES) do
    local text = assert(util.read_file(file), "cannot read " .. file)
    local doc, current = {}, nil
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      local class = line:match("^%-%-%-@class ([%w_.]+)")
      local field, opt = line:match("^%-%-%-@field ([%w_]+)(%??)")
      local owner = line:match("^local ([%w_]+) = {}")
      local stub_owner, sep, name, params = line:match("^function ([%w_]+)([.:])([%w_]+)%(([^)]*)%) end")
      if class then
        current = { name = class, fields = {} }
        classes[class] = current
        doc = {}
      elseif field and current then
        current.fields[field] = { optional = opt == "?" }
      elseif owner and current then
        owners[owner] = current.name
        current.owner = owner
        current = nil
      elseif stub_owner then
        local cls = assert(owners[stub_owner], file .. ": " .. stub_owner .. " is no annotated class")
        stubs[cls] = stubs[cls] or {}
        local list = {}
        for p in params:gmatch("[%w_]+") do list[#list + 1] = p end
        stubs[cls][name] = { params = list, doc = doc, method = sep == ":" }
        doc = {}
        current = nil
      elseif line:match("^%-%-%-") then
        doc[#doc + 1] = line
      else
        doc, current = {}, nil
      end
    end
  end
  return classes, stubs
end

local classes, stubs = parse()

local function keys(t, want_functions)
  local out = {}
  for k, v in pairs(t) do
    if (type(v) == "function") == want_functions then out[#out + 1] = k end
  end
  table.sort(out)
  return out
end

local function sorted(t)
  local out = {}
  for k in pairs(t or {}) do out[#out + 1] = k end
  table.sort(out)
  return out
end

-- The keys of require(module) inside the real host, as { name = type }:
-- "nvim" (headless, with the checkout on 'runtimepath') or "nginx" (with the
-- Lua module). Both load the LuaJIT build.
local function exports_in(host, module)
  local lines
  if host == "nvim" then
    local out = os.tmpname()
    local lua = ("local f = io.open(%q, 'w') for k, v in pairs(require(%q)) do f:write(k, '\\t', type(v), '\\n') end"
      .. " f:close()"):format(out, module)
    util.capture("env -u LUA_PATH -u LUA_CPATH timeout -s KILL 20 nvim --headless -n -u NONE -i NONE --cmd "
      .. util.shell_quote("set rtp^=" .. util.root) .. " -c " .. util.shell_quote("lua " .. lua)
      .. " -c 'qa!' </dev/null 2>&1")
    lines = util.read_file(out) or ""
    os.remove(out)
  else
    local h = fixture.nginx({ http = table.concat({
      'lua_package_cpath "' .. util.root .. '/build/luajit/?.so;;";',
      'lua_package_path "' .. util.root .. '/src/?.lua;;";',
      "server { listen 127.0.0.1:${port1}; location / { content_by_lua_block {",
      "  for k, v in pairs(require(\"" .. module .. "\")) do ngx.say(k, \"\\t\", type(v)) end",
      "} } }",
    }, "\n") })
    local body, code = require("socket.http").request("http://127.0.0.1:" .. h.ports[1] .. "/")
    local log = h:error_log()
    h:stop()
    assert(code == 200, "nginx answered " .. tostring(code) .. ":\n" .. log)
    lines = body
  end
  local t = {}
  for name, kind in lines:gmatch("([^\t\n]+)\t([^\n]+)") do t[name] = kind end
  assert(next(t), host .. " listed nothing for " .. module)
  return t
end

-- { name = type } as a table with functions where the type is "function".
local function as_module(list)
  local m = {}
  for name, kind in pairs(list) do m[name] = kind == "function" and print or kind end
  return m
end

local function client()
  return heymarket.new({ api_key = "types-spec-key", base_url = "http://127.0.0.1:1", max_retries = 0 })
end

-- module (a table) against class name: functions, then other fields.
local function same_exports(real, class)
  assert.is_table(classes[class], "no ---@class " .. class)
  assert.same(keys(real, true), sorted(stubs[class]), class .. ": exported functions vs annotated ones")
  local fields = {}
  for k in pairs(classes[class].fields) do fields[#fields + 1] = k end
  table.sort(fields)
  assert.same(keys(real, false), fields, class .. ": exported fields vs ---@field lines")
end

describe("The type definitions (types/)", function()
  it("annotate exactly what heymarket exports", function()
    same_exports(heymarket, "heymarket")
  end)

  it("annotate exactly a client's methods and a request's methods", function()
    local c = client()
    local mt = debug.getmetatable(c)
    assert.is_table(mt.__index)
    same_exports(mt.__index, "heymarket.Client")
    local req = c:get_async("/v1/team")
    local rmt = debug.getmetatable(req)
    assert.is_table(rmt.__index)
    same_exports(rmt.__index, "heymarket.Request")
    req:cancel()
    c:close()
  end)

  -- Neovim and nginx embed LuaJIT: once per `make test`, in the LuaJIT pass.
  if util.interpreter == "luajit" then
    it("annotate exactly what heymarket.nvim exports in Neovim", function()
      same_exports(as_module(exports_in("nvim", "heymarket.nvim")), "heymarket.nvim")
    end)

    it("annotate exactly what heymarket.resty exports in nginx", function()
      same_exports(as_module(exports_in("nginx", "heymarket.resty")), "heymarket.resty")
    end)
  end

  it("describe every function: documented, each parameter with a ---@param", function()
    local count = 0
    for class, list in pairs(stubs) do
      for name, stub in pairs(list) do
        count = count + 1
        local where = class .. (stub.method and ":" or ".") .. name
        local documented = {}
        for _, line in ipairs(stub.doc) do
          local p = line:match("^%-%-%-@param ([%w_]+)")
          if p then documented[p] = true end
        end
        assert.is_true(#stub.doc > 0, where .. " has no annotation")
        for _, p in ipairs(stub.params) do
          assert.is_true(documented[p] == true, where .. ": parameter " .. p .. " has no ---@param")
          documented[p] = nil
        end
        assert.same({}, documented, where .. ": ---@param for parameters it does not take")
      end
    end
    assert.is_true(count >= 17, "too few stubs found: the parser is broken")
  end)

  it("describe exactly the options the C code reads, and each is accepted", function()
    local source = assert(util.read_file("src/options.c"))
    local read = {}
    for name in source:gmatch('strcmp%(name, "([%w_]+)"%)') do read[name] = true end
    assert.same(sorted(read), sorted(classes["heymarket.Options"].fields))
    for name, f in pairs(classes["heymarket.Options"].fields) do
      assert.is_true(f.optional, "option " .. name .. " must be optional")
      -- a value of a wrong type is refused as such, not as an unknown name
      local ok, err = pcall(heymarket.new, { api_key = "k", [name] = {} })
      assert.is_false(ok)
      assert.is_nil(tostring(err):find("unknown option", 1, true), name .. ": " .. tostring(err))
    end
    local ok, err = pcall(heymarket.new, { api_key = "k", no_such_option = 1 })
    assert.is_false(ok)
    assert.matches("unknown option 'no_such_option'", err, 1, true)

    -- get's options
    assert.same({ "raw" }, sorted(classes["heymarket.GetOptions"].fields))
    local c = client()
    ok, err = pcall(c.get, c, "/x", { raw = {} })
    assert.is_false(ok)
    assert.matches("option 'raw' must be a boolean", err, 1, true)
    c:close()
  end)

  describe("against the fake API", function()
    local srv
    setup(function() srv = fixture.start() end)
    teardown(function() if srv then srv:stop() end end)

    -- every field of value is annotated in class; every required one is present
    local function conforms(value, class, where)
      local fields = classes[class].fields
      for k in pairs(value) do
        assert.is_table(fields[k], where .. ": field " .. tostring(k) .. " is not in " .. class)
      end
      for name, f in pairs(fields) do
        if not f.optional then
          assert.is_not_nil(value[name], where .. ": required field " .. name .. " of " .. class .. " is absent")
        end
      end
    end

    it("cover every field of a real inbox, team and member; all but id are optional", function()
      local c = util.client(srv)
      local inboxes = assert(c:inboxes())
      conforms(inboxes[1], "heymarket.Inbox", "inbox")
      local team = assert(c:team())
      conforms(team, "heymarket.Team", "team")
      conforms(team.members[1], "heymarket.Member", "member")
      -- the API may send any of them as null, which drops the key
      for _, class in ipairs({ "heymarket.Inbox", "heymarket.Team", "heymarket.Member" }) do
        for name, f in pairs(classes[class].fields) do
          assert.equals(name ~= "id", f.optional, class .. "." .. name)
        end
      end
      assert.is_true(classes["heymarket.Inbox"].fields.phone.optional)
      -- with nulls in the body, the result still conforms
      local nulls = assert(util.client(srv, "/t/nulls/x"):team())
      conforms(nulls, "heymarket.Team", "team with nulls")
      c:close()
    end)

    it("cover every field of real error tables, required ones always present", function()
      local c = util.client(srv, "/t/requestid/503")
      local _, _, err = c:team()
      assert.is_table(err)
      conforms(err, "heymarket.Error", "HTTP error")
      local _, _, net = client():team()
      assert.is_table(net)
      conforms(net, "heymarket.Error", "network error")
      c:close()
    end)
  end)
end)

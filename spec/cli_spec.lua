-- The `heymarket` command (bin/heymarket), as the rock installs it: issue 7 §2.
--
-- Under Lua 5.1-5.4 the spec installs the rock for that Lua into a temporary
-- tree (`luarocks make`, which builds under build/rock) and runs the command
-- LuaRocks wrote into the tree's bin/, with the tree's paths from
-- `luarocks --tree <tree> path` (as for any tree that is not a configured one).
-- LuaRocks has no LuaJIT flavour here,
-- so under LuaJIT the same script runs with `luajit` and the LuaJIT build.
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")

local quote = util.shell_quote
local read = util.read_file

local VERSION = read("src/hm.h"):match('#define HM_VERSION "([^"]+)"')

describe("The heymarket command", function()
  local srv, tree, command
  local paths = "" -- LUA_PATH=... LUA_CPATH=... for the tree

  setup(function()
    srv = fixture.start()
    if util.interpreter == "luajit" then
      command = "env LUA_CPATH=" .. quote(util.root .. "/build/luajit/?.so;;") .. " luajit "
        .. quote(util.root .. "/bin/heymarket")
    else
      tree = os.tmpname()
      os.remove(tree)
      local abi = util.interpreter:match("%d+%.%d+")
      local log = util.capture("luarocks --lua-version=" .. abi .. " make rockspec/heymarket-" .. VERSION
        .. "-1.rockspec --deps-mode=none --tree " .. quote(tree) .. " 2>&1")
      command = tree .. "/bin/heymarket"
      assert(read(command), "luarocks did not install the command:\n" .. tostring(log))
      command = quote(command)
      local exports = util.capture("luarocks --lua-version=" .. abi .. " --tree " .. quote(tree) .. " path")
      for name, value in exports:gmatch("export (LUA_C?PATH[%w_]*)='([^']*)'") do
        paths = paths .. " " .. name .. "=" .. quote(value)
      end
      assert(paths:find("LUA_CPATH", 1, true), "no LUA_CPATH from luarocks path:\n" .. exports)
    end
  end)

  teardown(function()
    if srv then srv:stop() end
    if tree then os.execute("rm -rf " .. quote(tree)) end
  end)

  -- Runs the command with args (a string, already quoted) and env (name =
  -- value, false to unset); returns exit status, stdout, stderr.
  local function run(args, env)
    local out, err = os.tmpname(), os.tmpname()
    local parts = { "env -u HEYMARKET_API_KEY -u HEYMARKET_BASE_URL" .. paths }
    for name, value in pairs(env or {}) do
      if value then parts[#parts + 1] = name .. "=" .. quote(value) end
    end
    parts[#parts + 1] = command .. " " .. args .. " >" .. out .. " 2>" .. err .. "; echo $?"
    local status = tonumber(util.capture(table.concat(parts, " ")):match("%d+"))
    local stdout, stderr = read(out), read(err)
    os.remove(out)
    os.remove(err)
    -- whatever happened, the key is never shown
    assert.is_nil(stdout:find(srv.key, 1, true), "the key appeared on stdout")
    assert.is_nil(stderr:find(srv.key, 1, true), "the key appeared on stderr")
    return status, stdout, stderr
  end

  local function env(prefix)
    return { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http .. (prefix or "") }
  end

  -- The body the fake API sends for path, fetched with LuaSocket.
  local function body_of(url)
    local chunks = {}
    local http = require("socket.http")
    local ok, code = http.request({
      url = url,
      headers = { authorization = "Bearer " .. srv.key },
      sink = require("ltn12").sink.table(chunks),
    })
    assert(ok and code == 200, "GET " .. url .. " failed: " .. tostring(code))
    return table.concat(chunks)
  end

  -- The column (1-based) where word starts in line.
  local function column(line, word)
    return (line:find(word, 1, true))
  end

  it("--help prints the usage on stdout and exits 0", function()
    local status, out, err = run("--help")
    assert.equals(0, status)
    assert.matches("^usage: heymarket %[options%] inboxes\n", out)
    assert.matches("HEYMARKET_API_KEY", out, 1, true)
    assert.equals("", err)
    local short = { run("-h") }
    assert.same({ 0, out, "" }, short)
  end)

  it("--version prints the module's version and exits 0", function()
    local status, out = run("--version")
    assert.equals(0, status)
    assert.equals("heymarket " .. VERSION .. "\n", out)
  end)

  it("lists inboxes in aligned columns: id, name, phone, member count", function()
    local status, out, err = run("inboxes", env())
    assert.equals("", err)
    assert.equals(0, status)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equals(2, #lines)
    assert.equals(" ID  NAME     PHONE        MEMBERS", lines[1])
    assert.equals("413  Support  14155550100        3", lines[2])
  end)

  it("shows the team: a header line, then id, name and role in columns", function()
    local status, out = run("team", env())
    assert.equals(0, status)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    assert.equals("Team 7: Acme Support (2 members, lists up to 10000 contacts)", lines[1])
    assert.equals(4, #lines)
    -- every row's NAME and ROLE start where the header's do
    for i = 3, 4 do
      assert.equals(column(lines[2], "NAME"), column(lines[i], i == 3 and "Alice" or "Bob"))
      assert.equals(column(lines[2], "ROLE"), column(lines[i], i == 3 and "admin" or "member"))
    end
    assert.matches("^ID  NAME +ROLE$", lines[2])
    assert.matches("^ 1  Alice Smith  admin$", lines[3])
  end)

  it("prints missing fields as '-' and still aligns", function()
    local status, out = run("inboxes", env("/t/nulls/x"))
    assert.equals(0, status)
    -- [{"id":1,"forward_number":null,"members":[1,null,3],...},null]
    assert.equals("ID  NAME  PHONE  MEMBERS\n 1  -     -            3\n -  -     -            -\n", out)
  end)

  it("--json prints the server's JSON exactly as sent: [] stays [], nulls stay", function()
    local status, out = run("--json team", env("/t/nulls/x"))
    assert.equals(0, status)
    local sent = body_of(srv.http .. "/t/nulls/x/v1/team")
    assert.equals('{"id":7,"name":null,"members":[]}', sent)
    assert.equals(sent .. "\n", out)

    status, out = run("inboxes --json", env())
    assert.equals(0, status)
    assert.equals(body_of(srv.http .. "/v1/inboxes") .. "\n", out)
  end)

  it("get PATH prints the JSON of any path as sent, query included", function()
    local status, out = run("get /v1/team?limit=1", env())
    assert.equals(0, status)
    assert.equals(body_of(srv.http .. "/v1/team") .. "\n", out)
  end)

  it("takes --base-url, --timeout and --max-retries, in either form", function()
    local status, out = run("--base-url " .. quote(srv.http) .. " --timeout=5 --max-retries 0 team",
      { HEYMARKET_API_KEY = srv.key })
    assert.equals(0, status)
    assert.matches("^Team 7: Acme Support", out)

    -- --max-retries is used: one attempt only against a 503
    local token = srv:token()
    status = run("--max-retries 0 --base-url " .. quote(srv.http .. "/t/count/" .. token .. "/t/status/503")
      .. " inboxes", { HEYMARKET_API_KEY = srv.key })
    assert.equals(1, status)
    assert.equals(1, srv:hits(token))

    -- --timeout is used: a 2 s answer with a 0.3 s limit
    local t0 = util.now()
    local _, _, err = run("--timeout 0.3 --max-retries 0 get /x",
      { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http .. "/t/sleep/2000" })
    assert.is_true(util.now() - t0 < 1.8, "the timeout was not applied")
    assert.matches("timed out", err:lower(), 1, true)
  end)

  it("a failed call exits 1 with the one-line error on stderr (401, key echoed by the server)", function()
    local status, out, err = run("inboxes", { HEYMARKET_API_KEY = "wrong-key", HEYMARKET_BASE_URL = srv.http })
    assert.equals(1, status)
    assert.equals("", out)
    assert.equals("heymarket: GET /v1/inboxes: HTTP 401: Invalid API key\n", err)

    status, out, err = run("--json team", env("/t/leak/x"))
    assert.equals(1, status)
    assert.equals("", out)
    assert.matches("^heymarket: GET /v1/team: HTTP 401: [^\n]*\n$", err)
    assert.matches("[redacted]", err, 1, true)
  end)

  it("exits 1 when HEYMARKET_API_KEY is not set, without calling anything", function()
    local status, out, err = run("inboxes", { HEYMARKET_BASE_URL = srv.http })
    assert.equals(1, status)
    assert.equals("", out)
    assert.equals("heymarket: no API key (set HEYMARKET_API_KEY)\n", err)
  end)

  it("exits 2 with the usage on bad arguments", function()
    local cases = {
      { "", "no command given" },
      { "inbox", "unknown command inbox" },
      { "inboxes extra", "unexpected argument extra" },
      { "get", "get needs a PATH" },
      { "get v1/team", "PATH must start with /" },
      { "get /v1/team more", "unexpected argument more" },
      { "get '/v1/a b'", "path must not contain spaces or control characters" },
      { "--api-key " .. quote(srv.key) .. " inboxes", "unknown option --api-key" },
      { "--verbose team", "unknown option --verbose" },
      { "team --timeout", "--timeout needs a value" },
      { "--timeout soon team", "--timeout needs a number of seconds >= 0, not 'soon'" },
      { "--timeout -1 team", "--timeout needs a number of seconds >= 0, not '-1'" },
      { "--max-retries 1.5 team", "--max-retries needs a whole number >= 0, not '1.5'" },
      { "--base-url http://example.com team", "base_url uses http:// for a host that is not loopback" },
      { "--timeout 0 team", "timeout" },
    }
    for _, case in ipairs(cases) do
      local status, out, err = run(case[1], env())
      assert.equals(2, status, "heymarket " .. case[1])
      assert.equals("", out, "heymarket " .. case[1])
      assert.matches("^heymarket: [^\n]*" .. case[2]:gsub("%p", "%%%0"), err)
      assert.matches("\nusage: heymarket", err, 1, true)
    end
  end)
end)

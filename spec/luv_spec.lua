-- README "Event loops": the luv example runs exactly as written, in a plain
-- luv loop (a child interpreter of the Lua running the specs), and the
-- interface it uses behaves as documented.
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")

local shell_quote = util.shell_quote

-- The first ```lua block of the README's "## Event loops" section.
local function readme_example()
  local readme = assert(util.read_file("README.md"))
  local section = assert(readme:match("\n## Event loops\n(.-)\n## "), "no Event loops section")
  return assert(section:match("```lua\n(.-)```"), "no lua block in Event loops")
end

local has_luv = pcall(require, "luv")

describe("the luv example in the README", function()
  local srv

  setup(function()
    srv = fixture.start()
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  -- Run source in a child with the fixture's key and base_url; its output.
  local function run(source, base)
    local file = os.tmpname()
    local f = assert(io.open(file, "w"))
    f:write("package.cpath = ", string.format("%q", util.build_dir .. "/?.so;"),
      " .. package.cpath\n", source)
    f:close()
    local out = util.capture("env HEYMARKET_API_KEY=" .. shell_quote(srv.key)
      .. " HEYMARKET_BASE_URL=" .. shell_quote(srv.http .. (base or ""))
      .. " timeout -s KILL 20 " .. util.interpreter .. " " .. file .. " 2>&1; echo exit=$?")
    os.remove(file)
    return out
  end

  it("is there", function()
    assert.matches("uv.run()", readme_example(), 1, true)
  end)

  if not has_luv then
    it("runs (needs lua-luv for " .. util.interpreter .. ")", function()
      error("lua-luv is not installed for " .. util.interpreter)
    end)
    return
  end

  it("runs two requests to the end in a plain luv loop", function()
    local out = run(readme_example(), "/t/sleep/300")
    assert.matches("inboxes\tok\n", out, 1, true)
    assert.matches("team\tok\n", out, 1, true)
    assert.matches("exit=0\n$", out)
  end)

  it("reports failures through the same loop", function()
    local out = run(readme_example(), "/t/status/503")
    assert.matches("inboxes\theymarket: GET /v1/inboxes: HTTP 503", out, 1, true)
    assert.matches("exit=0\n$", out)
  end)

  it("wakes up only for sockets and libcurl's timers while waiting", function()
    -- the example, counting what drives the client, against a 1.5 s server
    local source = readme_example():gsub("local function drive%(fd, events%)\n",
      "local drives = 0\n%0  drives = drives + 1\n", 1)
      .. "\nprint('drives', drives)\n"
    local out = run(source, "/t/sleep/1500")
    assert.matches("team\tok\n", out, 1, true)
    local drives = tonumber(out:match("drives\t(%d+)"))
    assert.is_true(drives ~= nil and drives <= 20, "drive() ran " .. tostring(drives) .. " times")
  end)

  it("sockets(), timeout() and drive() on a client", function()
    local out = run([[
      local heymarket = require("heymarket")
      local client = heymarket.new()
      print("idle timeout", client:timeout())
      local req = client:team_async()
      print("due", client:timeout() == 0)
      local n = 0
      for fd, events in pairs(client:sockets()) do
        n = n + 1
        assert(math.type == nil or math.type(fd) == "integer")
        assert(events == "r" or events == "w" or events == "rw", events)
      end
      print("sockets", n >= 1)
      req:cancel()
      print("after cancel", client:timeout(), client:drive())
      print("bad fd", pcall(client.drive, client, -1, "r"))
      client:close()
      print("closed", next(client:sockets()), client:timeout(), client:drive())
    ]])
    assert.matches("idle timeout\tnil\n", out, 1, true)
    assert.matches("due\ttrue\n", out, 1, true)
    assert.matches("sockets\ttrue\n", out, 1, true)
    assert.matches("after cancel\t0%.?0?\t1\n", out)
    assert.matches("bad fd\tfalse\t[^\n]*whole number >= 0", out)
    assert.matches("closed\tnil\tnil\t0\n", out, 1, true)
  end)
end)

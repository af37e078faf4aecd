-- CONTRACT.md "Errors": Ctrl-C (SIGINT) in the standalone interpreter stops a
-- blocking call, a retry wait or req:wait() at once with the interpreter's
-- usual "interrupted!" error and a non-zero exit; nothing after the call runs.
--
-- Each case runs a script in a child interpreter of the Lua running the specs
-- (so `make test` covers lua5.1 ... lua5.4 and luajit) against a slow route,
-- sends SIGINT half a second in, and times how long the child takes to die.
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")

local shell_quote = util.shell_quote

describe("Ctrl-C", function()
  local srv

  setup(function()
    srv = fixture.start()
  end)

  teardown(function()
    if srv then srv:stop() end
  end)

  -- Runs body (after `local client = ...` for the route under base_url) in a
  -- child, interrupts it after delay seconds; returns exit code, stdout,
  -- stderr and the milliseconds from the signal to the child's exit.
  local function interrupt(route, options, body, delay)
    local script, out, err = os.tmpname(), os.tmpname(), os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write("package.cpath = ", string.format("%q", util.build_dir .. "/?.so;"),
      " .. package.cpath\n")
    f:write(string.format("local client = require('heymarket').new{ api_key = %q, "
      .. "base_url = %q, %s }\n", srv.key, srv.http .. route, options))
    f:write("io.stdout:setvbuf('no')\nprint('started')\n", body, "\nprint('after')\n")
    f:close()
    local cmd = table.concat({
      util.interpreter, shell_quote(script), ">" .. shell_quote(out), "2>" .. shell_quote(err),
      "& P=$!; sleep", tostring(delay or 0.5),
      "; t0=$(date +%s%N); kill -INT $P; wait $P; rc=$?; t1=$(date +%s%N);",
      'echo "$rc $(( (t1 - t0) / 1000000 ))"',
    }, " ")
    local result = assert(util.capture("sh -c " .. shell_quote(cmd)))
    local rc, ms = result:match("^(%d+) (%d+)")
    local stdout, stderr = util.read_file(out) or "", util.read_file(err) or ""
    os.remove(script)
    os.remove(out)
    os.remove(err)
    return tonumber(rc), stdout, stderr, tonumber(ms)
  end

  local function check(rc, stdout, stderr, ms)
    assert.equals("started\n", stdout) -- nothing printed after the call
    assert.matches("interrupted", stderr)
    assert.is_true(rc ~= nil and rc ~= 0, "exit status " .. tostring(rc))
    assert.is_true(ms < 1000, "took " .. tostring(ms) .. " ms to stop")
  end

  it("stops a blocking call", function()
    check(interrupt("/t/sleep/20000", "max_retries = 0",
      "print(client:inboxes())"))
  end)

  it("stops a blocking call whose body would arrive after the signal", function()
    check(interrupt("/t/sleep/700", "max_retries = 0",
      "print(client:inboxes())"))
  end)

  it("stops a wait for Retry-After", function()
    check(interrupt("/t/retryafter/30", "max_retries = 1, max_retry_wait = 60",
      "print(client:team())"))
  end)

  it("stops req:wait() and req:wait(seconds)", function()
    check(interrupt("/t/sleep/20000", "max_retries = 0",
      "local req = client:team_async()\nprint(req:wait())"))
    check(interrupt("/t/sleep/20000", "max_retries = 0",
      "local req = client:team_async()\nprint(req:wait(15))"))
  end)

  it("stops a blocking call in a coroutine that began after the signal", function()
    -- the signal comes while the coroutine runs Lua code: the interpreter's
    -- hook sits on the main thread before the call even starts
    check(interrupt("/t/sleep/20000", "max_retries = 0",
      "print(coroutine.wrap(function()\n"
        .. "  local t = os.clock() while os.clock() - t < 0.8 do end\n"
        .. "  return client:inboxes()\nend)())", 0.3))
  end)

  it("stops a blocking call inside a coroutine", function()
    check(interrupt("/t/sleep/20000", "max_retries = 0",
      "print(coroutine.wrap(function() return client:inboxes() end)())"))
  end)
end)

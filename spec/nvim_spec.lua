-- CONTRACT.md "Non-blocking use": require("heymarket.nvim") inside a real
-- Neovim (`nvim --headless`), against the fake API.
--
-- Each case is a Lua script run by its own nvim process through
-- spec/support/nvim_harness.lua, which writes the script's results to a file
-- this spec reads. nvim embeds LuaJIT, so these run once per `make test`,
-- with the LuaJIT build, and only when the specs run under LuaJIT.
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")

if util.interpreter == "luajit" then
  local NVIM_LIMIT = 15   -- seconds before the spec kills nvim
  local SCRIPT_LIMIT = 10 -- seconds before the script's own watchdog quits

  local shell_quote = util.shell_quote
  local read = util.read_file
  local root = util.root
  local build = root .. "/build/luajit"
  local harness = root .. "/spec/support/nvim_harness.lua"

  -- Runs body (the inside of `function(H, R, P, uv) ... end`, P holding
  -- params.http and params.key) in a fresh nvim and returns the results
  -- table R. opts.cpath replaces package.cpath (else the LuaJIT build goes
  -- first); opts.env adds environment variables.
  local function run_nvim(params, body, opts)
    opts = opts or {}
    local script, out, log = os.tmpname(), os.tmpname(), os.tmpname()
    local source = table.concat({
      string.format("local H = dofile(%q)", harness),
      string.format("H.start(%q, %d)", out, SCRIPT_LIMIT),
      opts.cpath and string.format("package.cpath = %q", opts.cpath)
        or string.format("package.cpath = %q .. package.cpath", build .. "/?.so;"),
      string.format("package.path = %q .. package.path",
        root .. "/src/?.lua;" .. root .. "/src/?/init.lua;"),
      "H.run(function(H, R, P, uv)",
      body,
      "end, {",
      string.format("  http = %q, key = %q, build = %q,", params.http, params.key, build),
      "})",
    }, "\n")
    local f = assert(io.open(script, "w"))
    f:write(source)
    f:close()

    local env = { "env -u HEYMARKET_API_KEY -u HEYMARKET_BASE_URL" }
    for name, value in pairs(opts.env or {}) do
      env[#env + 1] = name .. "=" .. shell_quote(value)
    end
    local cmd = table.concat(env, " ") .. " timeout -s KILL " .. NVIM_LIMIT
      .. " nvim --headless -n -u NONE -i NONE -c " .. shell_quote("luafile " .. script)
      .. " </dev/null >" .. shell_quote(log) .. " 2>&1"
    local t0 = util.now()
    os.execute(cmd)
    local took = util.now() - t0

    local text, output = read(out) or "", read(log) or ""
    os.remove(script)
    os.remove(out)
    os.remove(log)
    local chunk = text ~= "" and loadstring(text)
    local results = chunk and chunk()
    if type(results) ~= "table" then
      error("nvim wrote no results after " .. string.format("%.1f", took)
        .. " s; its output:\n" .. output, 2)
    end
    assert(results.error == nil, "the script in nvim failed: " .. tostring(results.error))
    assert(results.watchdog == nil, "the script in nvim gave up: " .. tostring(results.watchdog))
    return results
  end

  -- The README's example, exactly as it runs here (with HEYMARKET_API_KEY and
  -- HEYMARKET_BASE_URL set, so the default client reaches the fake API).
  local README_SNIPPET = [[
local hm = require("heymarket.nvim")

hm.inboxes(function(inboxes, message)
  if not inboxes then
    vim.notify(message, vim.log.levels.ERROR)
    return
  end
  vim.ui.select(inboxes, {
    prompt = "Heymarket inbox",
    format_item = function(inbox) return inbox.name end,
  }, function(inbox)
    if inbox then
      vim.notify("Using inbox " .. inbox.name .. " (" .. inbox.id .. ")")
    end
  end)
end)
]]

  describe("heymarket.nvim in Neovim", function()
    local srv

    setup(function()
      assert(read(build .. "/heymarket.so"),
        build .. "/heymarket.so is missing: run `make LUA=luajit` first")
      srv = fixture.start()
    end)

    teardown(function()
      if srv then srv:stop() end
    end)

    it("keeps the editor responsive while a request is in flight", function()
      local r = run_nvim(srv, [[
        local hm = require("heymarket.nvim")
        local client = require("heymarket").new{ api_key = P.key,
          base_url = P.http .. "/t/sleep/1000", max_retries = 0 }
        local ticks = 0
        local ticker = uv.new_timer()
        ticker:start(10, 10, function() ticks = ticks + 1 end)
        local t0 = H.now()
        local req = hm.inboxes(client, H.guard(function(inboxes, message)
          R.ticks = ticks
          R.elapsed = H.now() - t0
          R.message = message
          R.name = inboxes and inboxes[1].name
          -- a vim.schedule callback may use the API (no E5560)
          local buf = vim.api.nvim_get_current_buf()
          vim.api.nvim_buf_set_lines(buf, 0, -1, false, { "inbox: " .. tostring(R.name) })
          R.line = vim.api.nvim_buf_get_lines(buf, 0, 1, false)[1]
          ticker:stop()
          ticker:close()
          H.finish()
        end))
        R.returned_after = H.now() - t0
        R.request = tostring(req)
      ]])
      assert.is_nil(r.message)
      assert.equals("Support", r.name)
      assert.equals("inbox: Support", r.line)
      assert.matches("^heymarket%.Request %(GET /v1/inboxes, %a+%)$", r.request)
      assert.is_true(r.returned_after < 0.1, "inboxes() took " .. r.returned_after .. " s")
      assert.is_true(r.elapsed >= 0.95 and r.elapsed < 3, "callback after " .. r.elapsed .. " s")
      assert.is_true(r.ticks >= 50, "only " .. r.ticks .. " ticks of a 10 ms timer in "
        .. r.elapsed .. " s")
    end)

    it("runs its timer only while requests are in flight", function()
      local r = run_nvim(srv, [[
        local hm = require("heymarket.nvim")
        local heymarket = require("heymarket")
        local function client(ms)
          return heymarket.new{ api_key = P.key, base_url = P.http .. "/t/sleep/" .. ms,
            max_retries = 0 }
        end
        local timers = H.watch_timers("heymarket/nvim%.lua$")
        R.before = timers()
        local function callback(tag, after)
          return H.guard(function(value)
            R[tag] = value ~= nil
            R[tag .. "_timers"] = timers()
            if after then after() end
          end)
        end
        hm.inboxes(client(200), callback("first"))
        hm.team(client(600), callback("second", function()
          -- idle now; a new request starts a new timer
          hm.team(client(200), callback("third", function()
            vim.defer_fn(H.guard(function()
              R.later = timers()
              R.made = select(2, timers())
              H.finish()
            end), 100)
          end))
          R.restarted = timers()
        end))
        R.during = timers()
      ]])
      assert.equals(0, r.before)
      assert.equals(1, r.during)
      assert.is_true(r.first)
      assert.equals(1, r.first_timers)  -- the second request is still in flight
      assert.is_true(r.second)
      assert.equals(0, r.second_timers) -- stopped with the last request
      assert.equals(1, r.restarted)
      assert.is_true(r.third)
      assert.equals(0, r.third_timers)
      assert.equals(0, r.later)
      assert.equals(2, r.made)          -- one per busy period, not one per request
    end)

    it("team(), get() and the default client", function()
      local r = run_nvim(srv, [[
        local hm = require("heymarket.nvim")
        local client = require("heymarket").new{ api_key = P.key, base_url = P.http,
          max_retries = 0 }
        local left = 4
        local function callback(tag, field)
          return H.guard(function(value, message)
            R[tag] = value and value[field]
            R[tag .. "_message"] = message
            left = left - 1
            if left == 0 then H.finish() end
          end)
        end
        hm.team(client, callback("team", "name"))
        hm.get(client, "/v1/team", callback("get", "list_size"))
        -- HEYMARKET_API_KEY and HEYMARKET_BASE_URL are set for this nvim
        hm.inboxes(H.guard(function(inboxes, message)
          R.default_inboxes = inboxes and inboxes[1].name
          R.default_inboxes_message = message
          left = left - 1
          if left == 0 then H.finish() end
        end))
        hm.get("/v1/team", callback("default_get", "name"))
      ]], { env = { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http } })
      assert.equals("Acme Support", r.team)
      assert.equals(10000, r.get)
      assert.equals("Support", r.default_inboxes)
      assert.equals("Acme Support", r.default_get)
    end)

    it("reports failures through the callback as nil, message, err", function()
      local r = run_nvim(srv, [[
        local hm = require("heymarket.nvim")
        local heymarket = require("heymarket")
        local left = 2
        local function one_done()
          left = left - 1
          if left == 0 then H.finish() end
        end
        local bad = heymarket.new{ api_key = P.key .. "x", base_url = P.http, max_retries = 0 }
        hm.inboxes(bad, H.guard(function(value, message, err)
          R.http = { value = value, message = message, kind = err and err.kind,
                     status = err and err.status }
          one_done()
        end))
        local slow = heymarket.new{ api_key = P.key, base_url = P.http .. "/t/sleep/2000",
          max_retries = 0 }
        local req = hm.team(slow, H.guard(function(value, message, err)
          R.cancelled = { value = value, message = message, kind = err and err.kind }
          one_done()
        end))
        req:cancel()
      ]])
      assert.same({ kind = "http", status = 401,
                    message = "heymarket: GET /v1/inboxes: HTTP 401: Invalid API key" }, r.http)
      assert.equals("cancelled", r.cancelled.kind)
      assert.is_nil(r.cancelled.value)
      assert.matches("^heymarket: GET /v1/team: ", r.cancelled.message)
    end)

    it("keeps going when poll() or result() raises", function()
      local r = run_nvim(srv, [[
        local hm = require("heymarket.nvim")
        local client = require("heymarket").new{ api_key = P.key,
          base_url = P.http .. "/t/sleep/200", max_retries = 0 }
        local timers = H.watch_timers("heymarket/nvim%.lua$")
        R.before = timers()
        -- make poll() raise for one request and result() for another, as a
        -- bug inside the module would
        local probe = client:team_async()
        probe:cancel()
        local methods = debug.getmetatable(probe).__index
        local real_poll, real_result = methods.poll, methods.result
        local bad_poll, bad_result
        methods.poll = function(self, ...)
          if self == bad_poll then error("simulated poll failure") end
          return real_poll(self, ...)
        end
        methods.result = function(self, ...)
          if self == bad_result then error("simulated result failure") end
          return real_result(self, ...)
        end
        local left = 3
        local function callback(tag)
          return H.guard(function(value, message, err)
            R[tag] = { value = value and (value.name or value[1].name), message = message,
                       kind = err and err.kind, err_message = err and err.message,
                       path = err and err.path }
            left = left - 1
            if left == 0 then
              methods.poll, methods.result = real_poll, real_result
              R.after = timers()
              H.finish()
            end
          end)
        end
        bad_result = hm.inboxes(client, callback("result"))
        bad_poll = hm.get(client, "/v1/inboxes", callback("poll"))
        hm.team(client, callback("other"))
      ]])
      assert.is_nil(r.result.value)
      assert.equals("internal", r.result.kind)
      assert.equals("/v1/inboxes", r.result.path)
      assert.matches("simulated result failure", r.result.err_message, 1, true)
      assert.matches("^heymarket: GET /v1/inboxes: internal: .*simulated result failure",
        r.result.message)
      assert.is_nil(r.poll.value)
      assert.equals("internal", r.poll.kind)
      assert.matches("simulated poll failure", r.poll.err_message, 1, true)
      assert.equals("Acme Support", r.other.value)
      assert.equals(r.before, r.after)
    end)

    it("wakes up only for socket events and libcurl's timers", function()
      local r = run_nvim(srv, [[
        local hm = require("heymarket.nvim")
        local heymarket = require("heymarket")
        local function client(ms)
          return heymarket.new{ api_key = P.key, base_url = P.http .. "/t/sleep/" .. ms,
            max_retries = 0 }
        end
        -- count every callback of a libuv poll handle or timer that
        -- heymarket.nvim starts (their metatables may share methods)
        local started = 0
        local function counting(handle)
          local methods = debug.getmetatable(handle).__index
          local start = methods.start
          if R.patched and R.patched[methods] then return end
          R.patched = R.patched or {}
          R.patched[methods] = true
          methods.start = function(self, a, b, c)
            if not debug.getinfo(2, "S").source:match("heymarket/nvim%.lua$") then
              return start(self, a, b, c)
            end
            if type(b) == "function" then -- poll:start(events, callback)
              started = started + 1
              return start(self, a, function(...)
                R.poll = (R.poll or 0) + 1
                return b(...)
              end)
            end
            return start(self, a, b, function(...) -- timer:start(ms, repeat, callback)
              R.timer = (R.timer or 0) + 1
              return c(...)
            end)
          end
        end
        local tcp = uv.new_tcp()
        tcp:bind("127.0.0.1", 0)
        local probe = uv.new_socket_poll(tcp:fileno())
        counting(probe)
        probe:close()
        tcp:close()
        counting(uv.new_timer())
        local function polls() return started end
        local drives = 0
        local methods = debug.getmetatable(client(0)).__index
        local drive = methods.drive
        methods.drive = function(...) drives = drives + 1 return drive(...) end
        local t0 = H.now()
        local left = 2
        local function done(tag)
          return H.guard(function(value, message)
            R[tag] = value ~= nil and H.now() - t0
            R[tag .. "_message"] = message
            left = left - 1
            if left == 0 then
              R.drives = drives
              R.polls_started = polls()
              R.patched = nil
              H.finish()
            end
          end)
        end
        hm.inboxes(client(1500), done("slow"))
        hm.team(client(300), done("quick"))
      ]])
      assert.is_nil(r.slow_message)
      assert.is_nil(r.quick_message)
      assert.is_true(r.quick >= 0.3 and r.quick < 1.4, "quick one after " .. tostring(r.quick))
      assert.is_true(r.slow >= 1.5 and r.slow < 3, "slow one after " .. tostring(r.slow))
      -- Today's libcurl: connect, send and answer events per request, and a
      -- few timers; a 10 ms poller would have woken 150 times.
      assert.is_true(r.drives <= 20, r.drives .. " drive() calls in 1.5 s")
      assert.is_true((r.timer or 0) <= 10, tostring(r.timer) .. " timer wake-ups in 1.5 s")
      assert.is_true((r.poll or 0) <= 20, tostring(r.poll) .. " socket wake-ups in 1.5 s")
      assert.is_true(r.polls_started >= 2, "only " .. r.polls_started .. " sockets watched")
    end)

    it("delivers cancelled when the client is closed, and reuses descriptors safely", function()
      local r = run_nvim(srv, [[
        local hm = require("heymarket.nvim")
        local heymarket = require("heymarket")
        local function client(ms)
          return heymarket.new{ api_key = P.key, base_url = P.http .. "/t/sleep/" .. ms,
            max_retries = 0 }
        end
        local doomed = client(2000)
        local left = 11
        local function one_done()
          left = left - 1
          if left == 0 then H.finish() end
        end
        hm.team(doomed, H.guard(function(value, message, err)
          R.closed = { value = value, kind = err and err.kind, message = message }
          one_done()
        end))
        -- closed while in flight: its descriptors may be reused at once by
        -- the next client's connections
        vim.defer_fn(H.guard(function()
          doomed:close()
          R.names = {}
          for i = 1, 10 do
            hm.get(client(50 * i), "/v1/team", H.guard(function(value, message)
              R.names[i] = value and value.name or message
              one_done()
            end))
          end
        end), 200)
      ]])
      assert.equals("cancelled", r.closed.kind)
      assert.is_nil(r.closed.value)
      for i = 1, 10 do
        assert.equals("Acme Support", r.names[i])
      end
    end)

    it("raises at once for bad arguments", function()
      local r = run_nvim(srv, [[
        local hm = require("heymarket.nvim")
        local client = require("heymarket").new{ api_key = P.key, base_url = P.http,
          max_retries = 0 }
        local function message(f, ...)
          local ok, err = pcall(f, ...)
          return ok and "no error" or err
        end
        R.no_callback = message(hm.inboxes)
        R.client_only = message(hm.team, client)
        R.not_function = message(hm.inboxes, client, "callback")
        R.not_client = message(hm.team, {}, function() end)
        R.get_no_path = message(hm.get, client, function() end)
        R.get_bad_path = message(hm.get, client, "v1/team", function() end)
        H.finish()
      ]])
      assert.equals("heymarket.nvim.inboxes: callback must be a function (got no value)",
        r.no_callback)
      assert.equals("heymarket.nvim.team: callback must be a function (got no value)",
        r.client_only)
      assert.equals("heymarket.nvim.inboxes: callback must be a function (got string)",
        r.not_function)
      assert.equals("heymarket.nvim.team: first argument must be a heymarket client (got table)",
        r.not_client)
      assert.equals("heymarket.nvim.get: callback must be a function (got no value)",
        r.get_no_path)
      assert.matches("path must start with '/'", r.get_bad_path, 1, true)
    end)

    it("runs the README's vim.ui.select example", function()
      local r = run_nvim(srv, [[
        -- a picker that takes the first item, as a user would
        vim.ui.select = H.guard(function(items, opts, on_choice)
          R.prompt = opts.prompt
          R.items = {}
          for i, item in ipairs(items) do R.items[i] = opts.format_item(item) end
          on_choice(items[1], 1)
        end)
        vim.notify = H.guard(function(message, level)
          R.notified, R.level = message, level
          H.finish()
        end)
      ]] .. README_SNIPPET, { env = { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http } })
      assert.equals("Heymarket inbox", r.prompt)
      assert.same({ "Support" }, r.items)
      assert.equals("Using inbox Support (413)", r.notified)
      assert.is_nil(r.level)
    end)

    it("decodes with vim.json when lua-cjson cannot be loaded", function()
      local r = run_nvim(srv, [[
        R.cjson = (pcall(require, "cjson"))
        local heymarket = require("heymarket")
        local hm = require("heymarket.nvim")
        local function client(keep_null)
          return heymarket.new{ api_key = P.key, base_url = P.http, max_retries = 0,
            keep_null = keep_null }
        end
        local left = 2
        hm.inboxes(client(false), H.guard(function(inboxes, message)
          R.message = message
          local inbox = inboxes and inboxes[1]
          R.id = inbox and inbox.id
          R.forward_number_is_nil = inbox ~= nil and inbox.forward_number == nil
          R.members = inbox and #inbox.members
          left = left - 1
          if left == 0 then H.finish() end
        end))
        hm.inboxes(client(true), H.guard(function(inboxes)
          R.keep_null = inboxes ~= nil and inboxes[1].forward_number == heymarket.null
          left = left - 1
          if left == 0 then H.finish() end
        end))
      ]], { cpath = build .. "/?.so" })
      assert.is_false(r.cjson) -- so the C module had to use vim.json
      assert.is_nil(r.message)
      assert.equals(413, r.id)
      assert.is_true(r.forward_number_is_nil)
      assert.equals(3, r.members)
      assert.is_true(r.keep_null)
    end)
  end)
end

-- CONTRACT.md "Non-blocking use": require("heymarket.resty") inside a real
-- nginx with ngx_http_lua_module, against the fake API.
--
-- The nginx under test loads the LuaJIT build and spec/support/resty_app.lua,
-- whose handlers answer with `name=value` lines. nginx embeds LuaJIT, so
-- these run once per `make test`, only when the specs run under LuaJIT.
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")
local socket = require("socket")

if util.interpreter == "luajit" then
  local ffi = require("ffi")
  ffi.cdef([[
    int setenv(const char *name, const char *value, int overwrite);
    int unsetenv(const char *name);
  ]])

  local read = util.read_file
  local root = util.root
  local build = root .. "/build/luajit"

  -- The README's example, as it is run here (the default client reads
  -- HEYMARKET_API_KEY, passed through by `env HEYMARKET_API_KEY;`).
  local README_LOCATION = [[
    location = /inboxes {
      content_by_lua_block {
        local inboxes, message = require("heymarket.resty").inboxes()
        if not inboxes then
          ngx.log(ngx.ERR, message)
          return ngx.exit(ngx.HTTP_BAD_GATEWAY)
        end
        for _, inbox in ipairs(inboxes) do
          ngx.say(inbox.id, " ", inbox.name)
        end
      }
    }
]]

  local function config(srv)
    local function handler(name)
      return 'content_by_lua_block { require("resty_app").' .. name .. "() }"
    end
    local lines = {
      'lua_package_cpath "' .. build .. '/?.so;;";',
      'lua_package_path "' .. root .. "/src/?.lua;" .. root .. '/spec/support/?.lua;;";',
      "lua_shared_dict resty_spec 1m;",
      string.format('init_by_lua_block { require("resty_app").init{ http = %q, key = %q } }',
        srv.http, srv.key),
      'init_worker_by_lua_block { require("resty_app").init_worker() }',
      "server {",
      "  listen 127.0.0.1:${port1};",
      "  default_type text/plain;",
      README_LOCATION,
    }
    for _, name in ipairs({ "slow", "quick", "team", "get", "default_get", "unauthorized",
                            "bad_arguments", "timer", "phases", "fork", "sleep_error", "many" }) do
      lines[#lines + 1] = "  location = /" .. name .. " { " .. handler(name) .. " }"
    end
    for _, more in ipairs({
      '  location = /rewrite { rewrite_by_lua_block { require("resty_app").early() } }',
      '  location = /access { access_by_lua_block { require("resty_app").early() } }',
      '  location = /set { set_by_lua_block $phase_error { return require("resty_app").set_phase() }'
        .. " return 200 $phase_error; }",
      '  location = /header_filter { header_filter_by_lua_block { require("resty_app").header_filter() }'
        .. " return 200 ok; }",
      '  location = /log { log_by_lua_block { require("resty_app").log() } return 200 ok; }',
      "}",
    }) do
      lines[#lines + 1] = more
    end
    return table.concat(lines, "\n")
  end

  -- GET path on 127.0.0.1:port over a fresh connection: status, headers
  -- (lower-case names), body.
  local function parse_response(raw)
    local head, body = raw:match("^(.-)\r\n\r\n(.*)$")
    assert(head, "no complete HTTP response: " .. raw)
    local status = tonumber(head:match("^HTTP/1%.%d (%d+)"))
    local headers = {}
    for name, value in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
      headers[name:lower()] = value
    end
    if headers["transfer-encoding"] == "chunked" then
      local parts, rest = {}, body
      while true do
        local size, after = rest:match("^(%x+)[^\r\n]*\r\n(.*)$")
        size = tonumber(size or "0", 16)
        if size == 0 then break end
        parts[#parts + 1] = after:sub(1, size)
        rest = after:sub(size + 3)
      end
      body = table.concat(parts)
    end
    return status, headers, body
  end

  local function send_request(port, path)
    local s = assert(socket.tcp())
    s:settimeout(2)
    assert(s:connect("127.0.0.1", port))
    assert(s:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
    return s
  end

  local function read_response(s, timeout)
    s:settimeout(timeout or 5)
    local raw, err, partial = s:receive("*a")
    s:close()
    raw = raw or partial
    assert(raw and raw ~= "", "no response: " .. tostring(err))
    return parse_response(raw)
  end

  local function get(port, path)
    return read_response(send_request(port, path))
  end

  -- the body's name=value lines as a table
  local function fields(body)
    local t = {}
    for name, value in body:gmatch("([%w_]+)=([^\n]*)") do
      t[name] = value
    end
    return t
  end

  local function phase_message(phase)
    return 'heymarket.resty: cannot wait in the "' .. phase
      .. '" phase (use rewrite, access, content or a timer)'
  end

  describe("heymarket.resty in nginx", function()
    local srv, ngx_srv, port

    setup(function()
      assert(read(build .. "/heymarket.so"),
        build .. "/heymarket.so is missing: run `make LUA=luajit` first")
      srv = fixture.start()
      -- what an operator does: export the variables and pass them through
      -- with `env` (nginx clears the environment otherwise)
      local saved = { HEYMARKET_API_KEY = os.getenv("HEYMARKET_API_KEY"),
                      HEYMARKET_BASE_URL = os.getenv("HEYMARKET_BASE_URL") }
      ffi.C.setenv("HEYMARKET_API_KEY", srv.key, 1)
      ffi.C.setenv("HEYMARKET_BASE_URL", srv.http, 1)
      local ok, err = pcall(function()
        ngx_srv = fixture.nginx({
          main = "env HEYMARKET_API_KEY;\nenv HEYMARKET_BASE_URL;",
          http = config(srv),
        })
      end)
      for name, value in pairs(saved) do
        if value then ffi.C.setenv(name, value, 1) else ffi.C.unsetenv(name) end
      end
      assert(ok, err)
      port = ngx_srv.ports[1]
    end)

    teardown(function()
      if ngx_srv then ngx_srv:stop() end
      if srv then srv:stop() end
    end)

    it("runs with one worker", function()
      assert.matches("\nworker_processes 1;\n", read(ngx_srv.conf), 1, true)
    end)

    it("keeps the worker serving while a request waits", function()
      local t0 = util.now()
      local slow = send_request(port, "/slow")
      slow:settimeout(0) -- not read until the quick ones are done
      socket.sleep(0.1)  -- let the worker start the slow request
      local pids = {}
      for i = 1, 20 do
        local t = util.now()
        local status, _, body = get(port, "/quick")
        local took = util.now() - t
        assert.is_true(took < 0.1, string.format("quick request %d took %.3f s", i, took))
        assert.equals(200, status)
        local f = fields(body)
        assert.equals("true", f.waiting, "quick request " .. i .. " came after the slow one")
        pids[f.pid] = true
      end
      local quick_done = util.now() - t0
      local status, _, body = read_response(slow, 5)
      local total = util.now() - t0
      assert.equals(200, status)
      local f = fields(body)
      assert.equals("Support", f.name)
      assert.equals("nil", f.message)
      assert.same({ [f.pid] = true }, pids) -- the same worker served them all
      assert.is_true(quick_done < 0.9, "the quick requests took until " .. quick_done .. " s")
      assert.is_true(tonumber(f.elapsed) >= 0.95 and total < 3,
        "slow request: " .. f.elapsed .. " s in nginx, " .. total .. " s in all")
    end)

    it("polls once per worker, not once per waiting request", function()
      local function many(n)
        local status, _, body = read_response(send_request(port, "/many?n=" .. n), 10)
        assert.equals(200, status)
        local f = fields(body)
        assert.equals(string.rep("Support", n, ","), f.names)
        return tonumber(f.sleeps)
      end
      local one, eight = many(1), many(8)
      -- a poller per request would sleep about eight times as often
      assert.is_true(one > 0, "no sleeps at all")
      assert.is_true(eight <= one * 1.5 + 20,
        eight .. " sleeps for 8 waiting requests against " .. one .. " for one")
    end)

    it("team() and get(), with a client and with the default client", function()
      local _, _, body = get(port, "/team")
      assert.same({ message = "nil", kind = "nil", status = "nil", name = "Acme Support" },
        fields(body))
      _, _, body = get(port, "/get")
      assert.equals("10000", fields(body).list_size)
      _, _, body = get(port, "/default_get")
      assert.equals("Support", fields(body).name)
    end)

    it("runs the README's location with the default client", function()
      local status, _, body = get(port, "/inboxes")
      assert.equals(200, status)
      assert.equals("413 Support\n", body)
    end)

    it("returns nil, message, err for a failure", function()
      local _, _, body = get(port, "/unauthorized")
      assert.same({ value = "nil", kind = "http", status = "401",
                    message = "heymarket: GET /v1/inboxes: HTTP 401: Invalid API key" },
        fields(body))
    end)

    it("raises for bad arguments", function()
      local _, _, body = get(port, "/bad_arguments")
      local f = fields(body)
      assert.matches("heymarket.resty.team: first argument must be a heymarket client (got table)",
        f.not_client, 1, true)
      assert.matches("heymarket.resty.get: path must be a string (got no value)",
        f.get_no_path, 1, true)
      assert.matches("path must start with '/'", f.get_bad_path, 1, true)
    end)

    it("waits in the rewrite, access and timer phases", function()
      for _, phase in ipairs({ "rewrite", "access" }) do
        local status, _, body = get(port, "/" .. phase)
        assert.equals(200, status)
        local f = fields(body)
        assert.equals(phase, f.phase)
        assert.equals("Acme Support", f.name)
      end
      local _, _, body = get(port, "/timer")
      assert.equals("timer Support", fields(body).timer)
    end)

    it("raises a clear error in phases that cannot wait", function()
      local status, _, body = get(port, "/set")
      assert.equals(200, status)
      assert.matches(phase_message("set"), body, 1, true)

      local headers
      status, headers = get(port, "/header_filter")
      assert.equals(200, status)
      assert.matches(phase_message("header_filter"), headers["x-phase-error"], 1, true)

      get(port, "/log")
      -- the log phase runs after the response: give it a moment
      local f
      local deadline = util.now() + 2
      repeat
        _, _, body = get(port, "/phases")
        f = fields(body)
        if f.log == "nil" then socket.sleep(0.02) end
      until f.log ~= "nil" or util.now() > deadline
      assert.matches(phase_message("log"), f.log, 1, true)
      assert.matches(phase_message("init"), f.init, 1, true)
      assert.matches(phase_message("init_worker"), f.init_worker, 1, true)
    end)

    it("uses a client made before nginx forked", function()
      local _, _, body = get(port, "/fork")
      local f = fields(body)
      assert.equals("Acme Support", f.init_team) -- it worked in the master first
      assert.equals("true", f.forked)
      assert.equals("nil", f.message)
      assert.equals("Support", f.name)
      assert.equals("Acme Support", f.team)
    end)

    it("cancels the request when ngx.sleep raises", function()
      local _, _, body = get(port, "/sleep_error")
      local f = fields(body)
      assert.equals("simulated sleep failure", f.raised)
      assert.matches("^heymarket%.Request %(GET /v1/inboxes, done%)$", f.request)
      assert.equals("cancelled", f.kind)
    end)

    it("logs nothing alarming", function()
      local log = ngx_srv:error_log()
      assert.is_nil(log:match("%[alert%][^\n]*"))
      assert.is_nil(log:match("%[crit%][^\n]*"))
      assert.is_nil(log:match("%[error%][^\n]*"))
    end)
  end)
end

-- Issue 6: behaving right inside someone else's process. Secrets in
-- failures, connection limits, closing during a call, NUL bytes, revived
-- requests, Content-Length limits, and the nginx warning. (Ctrl-C is in
-- interrupt_spec.lua, out of memory in oom_spec.lua.)
local fixture = require("spec.support.fixture")
local canned = require("spec.support.canned")
local util = require("spec.support.util")
local socket = require("socket")
local heymarket = require("heymarket")

-- Every window of `len` bytes of key, so that a key cut short still shows.
local function leaks(text, key, len)
  len = len or 6
  for i = 1, #key - len + 1 do
    if text:find(key:sub(i, i + len - 1), 1, true) then
      return key:sub(i, i + len - 1)
    end
  end
  return nil
end

local function random_key(n)
  local t = {}
  for i = 1, n do
    t[i] = string.char(string.byte("a") + math.random(0, 25))
  end
  return "k" .. table.concat(t):sub(2)
end

local function client(url, key, opts)
  local o = { api_key = key, base_url = url, max_retries = 0, timeout = 5 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return heymarket.new(o)
end

describe("Trust", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() if srv then srv:stop() end end)

  describe("redaction", function()
    it("redacts a key inside the reason phrase before cutting it", function()
      for _, shape in ipairs({ { 20, 44 }, { 64, 0 }, { 40, 250 } }) do
        local key = random_key(shape[1])
        local s = canned.start("HTTP/1.1 401 " .. ("R"):rep(shape[2]) .. key
          .. "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        local ok, msg, err = client(s.url, key):inboxes()
        s.stop()
        assert.is_nil(ok)
        assert.equals(401, err.status)
        local everything = msg .. util.dump(err)
        assert.is_nil(leaks(everything, key), "key leaked: " .. everything)
        if shape[2] < 250 then
          assert.truthy(msg:find("[redacted]", 1, true), msg)
        end
      end
    end)

    it("redacts and caps request_id and location at 1024 bytes", function()
      local key = random_key(24)
      local long = ("x"):rep(90000)
      local s = canned.start("HTTP/1.1 302 Found\r\nX-Request-Id: " .. long .. key
        .. "\r\nLocation: http://127.0.0.1/" .. key .. long
        .. "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
      local _, msg, err = client(s.url, key):inboxes()
      s.stop()
      assert.equals(302, err.status)
      assert.equals(1024, #err.request_id)
      assert.equals(1024, #err.location)
      assert.equals("http://127.0.0.1/[redacted]xxxxx", err.location:sub(1, 32))
      assert.is_true(#msg < 1024)
      assert.is_nil(leaks(msg .. util.dump(err), key))
    end)

    it("redacts a key straddling the 4 KiB cut of err.body", function()
      local key = random_key(32)
      local body = ("b"):rep(4090) .. key .. "tail"
      local s = canned.start("HTTP/1.1 500 Oops\r\nContent-Length: " .. #body
        .. "\r\nConnection: close\r\n\r\n" .. body)
      local _, _, err = client(s.url, key):inboxes()
      s.stop()
      assert.equals(500, err.status)
      assert.equals(4096, #err.body)
      assert.equals(("b"):rep(4090) .. "[redac", err.body)
    end)

    it("redacts a long key that starts before the cut and ends after it", function()
      -- each replacement is shorter than the key, so the output reaches its
      -- cut before the input does
      local key = random_key(40)
      local body = key .. " " .. key .. " " .. ("x"):rep(4026) .. key
      local s = canned.start("HTTP/1.1 401 Nope\r\nContent-Length: " .. #body
        .. "\r\nConnection: close\r\n\r\n" .. body)
      local _, msg, err = client(s.url, key):inboxes()
      s.stop()
      assert.equals(401, err.status)
      assert.is_nil(leaks(msg .. util.dump(err), key), err.body:sub(-60))
    end)

    it("redacts keys far into a large body that fails to decode before cutting err.body", function()
      -- Each key becomes 10 bytes, so err.body's 4 KiB read ~16 KB of a body
      -- of 300 KB; the nulls after the first 4 KiB show that blanking them
      -- (5.1, 5.2, LuaJIT) left them alone inside a string.
      local key = random_key(40)
      local body = '[{"a":null},"' .. (key .. " null "):rep(400) .. ("x"):rep(300 * 1024)
      local s = canned.start("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        .. #body .. "\r\nConnection: close\r\n\r\n" .. body)
      local value, msg, err = client(s.url, key):inboxes()
      s.stop()
      assert.is_nil(value)
      assert.equals("decode", err.kind, msg)
      local redacted = body:gsub(key, "[redacted]"):sub(1, 4096)
      assert.equals(4096, #err.body)
      assert.equals(redacted, err.body)
      assert.is_nil(leaks(msg .. util.dump(err), key))
    end)

    it("redacts a key that only appears once the JSON is decoded", function()
      local key = random_key(16)
      local escaped = key:gsub(".", function(c) return string.format("\\u%04x", c:byte()) end)
      local body = '{"error":"bad key ' .. escaped .. '"}'
      local s = canned.start("HTTP/1.1 401 Unauthorized\r\nContent-Length: " .. #body
        .. "\r\nConnection: close\r\n\r\n" .. body)
      local _, msg, err = client(s.url, key):inboxes()
      s.stop()
      assert.equals("bad key [redacted]", err.message)
      assert.is_nil(leaks(msg .. util.dump(err), key))
    end)

    it("never alters a successful call's data, even where it holds the key", function()
      local key = random_key(20)
      local body = '{"' .. key .. '":1,"name":"' .. key .. '","list":["' .. key .. '"]}'
      local s = canned.start("HTTP/1.1 200 OK\r\nContent-Length: " .. #body
        .. "\r\nContent-Type: application/json\r\n\r\n" .. body)
      local c = client(s.url, key)
      local data = assert(c:get("/v1/team"))
      local raw = assert(c:get("/v1/team", { raw = true }))
      s.stop()
      assert.equals(1, data[key])
      assert.equals(key, data.name)
      assert.equals(key, data.list[1])
      assert.equals(body, raw)
    end)
  end)

  describe("max_connections", function()
    it("must be a whole number from 1 to 1000", function()
      for _, bad in ipairs({ 0, -1, 1.5, 1001, 0 / 0 }) do
        assert.has_error(function() client(srv.http, srv.key, { max_connections = bad }) end,
          "heymarket: option 'max_connections' must be a whole number from 1 to 1000")
      end
      assert.has_error(function() client(srv.http, srv.key, { max_connections = "8" }) end,
        "heymarket: option 'max_connections' must be a number (got string)")
    end)

    local function connections(c, n, path)
      local reqs, seen, count = {}, {}, 0
      for i = 1, n do
        reqs[i] = c:get_async(path)
      end
      for i = 1, n do
        assert.is_true(reqs[i]:wait(20))
        local body = assert(reqs[i]:result())
        if not seen[body.connection] then
          seen[body.connection] = true
          count = count + 1
        end
      end
      return count
    end

    it("opens at most max_connections to a host; the rest wait for one", function()
      local c = client(srv.http, srv.key, { max_connections = 3 })
      local t0 = util.now()
      assert.equals(3, connections(c, 12, "/t/conn/100"))
      -- four rounds of three, not one round of twelve
      assert.is_true(util.now() - t0 >= 0.35)
      local d = client(srv.http, srv.key)
      assert.equals(8, connections(d, 24, "/t/conn/100"))
    end)

    it("shares one connection over HTTP/2", function()
      local c = client(srv.https, srv.key, { ca_file = srv.ca_file })
      local first = assert(c:get("/t/conn/0"))
      assert.equals("HTTP/2.0", first.protocol)
      assert.equals(1, connections(c, 20, "/t/conn/50"))
    end)

    -- Sockets this process holds open.
    local function open_sockets()
      local p = io.popen("ls -l /proc/" .. util.capture("echo $PPID"):match("%d+") .. "/fd 2>/dev/null")
      local n = 0
      for line in p:lines() do
        if line:find("socket:", 1, true) then n = n + 1 end
      end
      p:close()
      return n
    end

    it("keeps no more than max_connections idle afterwards", function()
      local before = open_sockets()
      local c = client(srv.http, srv.key)
      local reqs = {}
      for i = 1, 100 do reqs[i] = c:inboxes_async() end
      for i = 1, 100 do assert.is_true(reqs[i]:wait(20)) end
      for i = 1, 100 do assert.is_table((reqs[i]:result())) end
      -- 8 connections and libcurl's own wake-up pair
      assert.is_true(open_sockets() - before <= 10, "sockets: " .. (open_sockets() - before))
      c:close()
    end)

    it("closes sockets at once after a host loop has looked at them", function()
      local s = canned.start("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]")
      local c = client(s.url, "k")
      c:sockets()
      assert.is_table(c:inboxes())
      collectgarbage("collect") -- earlier specs' clients hold sockets too
      collectgarbage("collect")
      local before = open_sockets()
      for _ = 1, 30 do assert.is_table(c:inboxes()) end
      collectgarbage("collect")
      local grew = open_sockets() - before
      s.stop()
      c:close()
      assert.is_true(grew <= 2, "sockets grew by " .. grew)
    end)

    it("reports running out of file descriptors as that", function()
      local out = util.run_lua([[
        local heymarket = require("heymarket")
        local c = heymarket.new({ max_retries = 0 })
        local held = {}
        while true do
          local f = io.open("/dev/null")
          if not f then break end
          held[#held + 1] = f
        end
        -- room for libcurl's wake-up pair, not for a connection
        held[#held]:close(); held[#held] = nil
        held[#held]:close(); held[#held] = nil
        local _, msg, err = c:inboxes()
        print(msg, err and err.kind, err and err.curl_code)
      ]], { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http })
      assert.matches("out of file descriptors", out, 1, true)
      assert.matches("network", out, 1, true)
      assert.is_nil(out:find("Couldn't connect", 1, true), out)
    end)
  end)

  describe("closing a client during a call", function()
    -- A finalizer that closes the client, made garbage right before each
    -- call, with a collector that runs at every allocation.
    it("ends that call as cancelled and never sends without the key", function()
      local outcomes = {}
      collectgarbage("collect")
      local pause = collectgarbage("setpause", 1)
      local stepmul = collectgarbage("setstepmul", 1000)
      for i = 1, 300 do
        local c = client(srv.http, srv.key)
        if newproxy then
          getmetatable(newproxy(true)).__gc = function() c:close() end
        else
          setmetatable({}, { __gc = function() c:close() end })
        end
        local ok, value, msg, err = pcall(function() return c:inboxes() end)
        local key
        if not ok then
          assert.matches("client is closed", value, 1, true)
          key = "raised"
        elseif value then
          key = "ok"
        else
          assert.equals("cancelled", err.kind, msg)
          assert.matches("GET /v1/inboxes: cancelled", msg, 1, true)
          key = "cancelled"
        end
        outcomes[key] = (outcomes[key] or 0) + 1
        if i % 50 == 0 then collectgarbage("collect") end
      end
      collectgarbage("setpause", pause)
      collectgarbage("setstepmul", stepmul)
      assert.is_nil(outcomes.other)
      assert.is_true((outcomes.ok or 0) + (outcomes.cancelled or 0) + (outcomes.raised or 0) == 300)
    end)

    it("a request started after close is never sent", function()
      local c = client(srv.http, srv.key)
      local token = srv:token()
      c:close()
      assert.has_error(function() c:get("/t/count/" .. token .. "/v1/team") end,
        "heymarket: client is closed")
      assert.equals(0, srv:hits(token))
    end)
  end)

  describe("NUL bytes", function()
    it("raise in every string option and in option names", function()
      for _, name in ipairs({ "api_key", "base_url", "user_agent", "proxy", "ca_file", "ca_path" }) do
        local o = { api_key = "k", base_url = "http://127.0.0.1:1" }
        o[name] = (o[name] or "ab") .. "\0cd"
        assert.has_error(function() heymarket.new(o) end,
          "heymarket: option '" .. name .. "' must not contain a NUL byte")
      end
      assert.has_error(function()
        heymarket.new({ api_key = "k", ["timeout\0x"] = 1 })
      end, "heymarket: unknown option 'timeout' (its name holds a NUL byte)")
    end)
  end)

  describe("a request revived after its own finalizer", function()
    it("reports cancelled with its path", function()
      local c = client(srv.http, srv.key)
      local saved
      -- Finalizers run in reverse order of marking: the keeper, marked
      -- first, runs after the request's own __gc, and revives it.
      local function garbage()
        local req
        local function revive() saved = req end
        local keeper
        if newproxy then
          keeper = newproxy(true)
          getmetatable(keeper).__gc = revive
        else
          keeper = setmetatable({}, { __gc = revive })
        end
        req = c:inboxes_async()
        assert.is_true(req:wait(5))
        return keeper
      end
      garbage()
      collectgarbage("collect")
      collectgarbage("collect")
      assert.is_not_nil(saved)
      local ok, msg, err = saved:result()
      assert.is_nil(ok)
      assert.equals("heymarket: GET /v1/inboxes: cancelled: the request was garbage-collected", msg)
      assert.equals("cancelled", err.kind)
      assert.equals("/v1/inboxes", err.path)
    end)
  end)

  describe("a blocking call's own request", function()
    -- Wraps the Request type's __gc to count its calls (restored after).
    local function counting_gc(c)
      local mt = debug.getmetatable(c:inboxes_async())
      local original, calls = mt.__gc, 0
      mt.__gc = function(req)
        calls = calls + 1
        return original(req)
      end
      return function() return calls end, function() mt.__gc = original end
    end

    it("leaves the collector no finalizer to run once it returned", function()
      local c = client(srv.http, srv.key)
      local calls, restore = counting_gc(c)
      finally(restore)
      collectgarbage("collect")
      collectgarbage("collect")
      local before = calls()
      for _ = 1, 20 do
        assert.equals(1, #assert(c:inboxes()))
        assert.is_nil(c:get("/t/status/404"))
      end
      collectgarbage("collect")
      collectgarbage("collect")
      local blocking = calls() - before
      -- ...whereas an async request, which Lua code holds, keeps its own
      for _ = 1, 3 do
        assert.is_true(c:inboxes_async():wait(5))
      end
      collectgarbage("collect")
      collectgarbage("collect")
      local async = calls() - before - blocking
      assert.equals(0, blocking)
      assert.equals(3, async)
    end)
  end)

  describe("max_response", function()
    it("refuses a Content-Length above it before reading the body", function()
      local s = canned.start("HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n[", { hold = 10 })
      local t0 = util.now()
      local _, msg, err = client(s.url, "k", { max_response = 1000, timeout = 8 }):inboxes()
      local took = util.now() - t0
      s.stop()
      assert.equals("too_large", err.kind, msg)
      assert.is_true(took < 2, "took " .. took)
    end)
  end)
end)

if util.interpreter == "luajit" then
  describe("A blocking call inside nginx", function()
    local srv, ngx_srv
    setup(function()
      srv = fixture.start()
      local root, build = util.root, util.root .. "/build/luajit"
      ngx_srv = fixture.nginx({
        http = table.concat({
          'lua_package_cpath "' .. build .. '/?.so;;";',
          'lua_package_path "' .. root .. '/src/?.lua;;";',
          "server {",
          "  listen 127.0.0.1:${port1};",
          "  location = /blocking { content_by_lua_block {",
          string.format("    local c = require('heymarket').new{ api_key = %q, base_url = %q }",
            srv.key, srv.http),
          "    local team = c:team()",
          "    ngx.say(team and team.name)",
          "  } }",
          "}",
        }, "\n"),
        ports = 1,
      })
    end)
    teardown(function()
      if ngx_srv then ngx_srv:stop() end
      if srv then srv:stop() end
    end)

    it("still works, and logs one warning per worker naming heymarket.resty", function()
      for _ = 1, 3 do
        local s = assert(socket.connect("127.0.0.1", ngx_srv.ports[1]))
        s:send("GET /blocking HTTP/1.0\r\nHost: x\r\n\r\n")
        local reply = s:receive("*a")
        s:close()
        assert.matches("Acme Support", reply, 1, true)
      end
      local log = ngx_srv:error_log()
      local _, count = log:gsub("heymarket%.resty", "")
      assert.equals(1, count, log)
      assert.matches("%[warn%]", log)
    end)
  end)
end

-- CONTRACT.md "Clients"
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")
local heymarket = require("heymarket")

describe("Clients", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() if srv then srv:stop() end end)

  local function new(opts)
    local o = { api_key = srv.key, base_url = srv.http, max_retries = 0 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return heymarket.new(o)
  end

  describe("option api_key", function()
    it("is sent as a Bearer key", function()
      -- the fixture answers 401 unless it sees "Bearer <its key>"
      local c = new({ base_url = srv.http .. "/t/headers/x" })
      local h = assert(c:get("/v1/anything"))
      -- a successful call's data is never altered, even where it holds the key
      assert.equals("Bearer " .. srv.key, h.authorization)
      local _, _, err = new({ api_key = srv.key .. "x" }):team()
      assert.equals(401, err.status)
    end)

    it("defaults to the environment's HEYMARKET_API_KEY", function()
      local out = util.run_lua([[
        local c = require("heymarket").new()
        local team = c:team()
        print(team and team.name)
      ]], { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http })
      assert.matches("Acme Support", out, 1, true)
    end)

    it("raises the contract's message when missing or empty", function()
      local msg = "heymarket: no API key (pass api_key or set HEYMARKET_API_KEY)"
      local out = util.run_lua([[
        print(select(2, pcall(require("heymarket").new)))
        print(select(2, pcall(require("heymarket").new, { api_key = "" })))
      ]], { HEYMARKET_API_KEY = false })
      local first, second = out:match("([^\n]*)\n([^\n]*)")
      assert.equals(msg, first)
      assert.equals(msg, second)
      out = util.run_lua([[print(select(2, pcall(require("heymarket").new)))]],
        { HEYMARKET_API_KEY = "" })
      assert.equals(msg, (out:gsub("\n$", "")))
      -- an explicit empty key is not replaced by the environment's
      out = util.run_lua([[print(select(2, pcall(require("heymarket").new, { api_key = "" })))]],
        { HEYMARKET_API_KEY = "from-env" })
      assert.equals(msg, (out:gsub("\n$", "")))
    end)

    it("must be a string without line breaks", function()
      assert.has_error(function() new({ api_key = 42 }) end,
        "heymarket: option 'api_key' must be a string (got number)")
      assert.has_error(function() new({ api_key = "abc\r\nX-Evil: 1" }) end,
        "heymarket: option 'api_key' contains control characters")
    end)
  end)

  describe("option base_url", function()
    it("defaults to HEYMARKET_BASE_URL, else https://api.heymarket.com", function()
      local out = util.run_lua([[print(tostring(require("heymarket").new({ api_key = "k" })))]],
        { HEYMARKET_BASE_URL = false })
      assert.matches("heymarket.Client (https://api.heymarket.com)", out, 1, true)
      out = util.run_lua([[print(tostring(require("heymarket").new({ api_key = "k" })))]],
        { HEYMARKET_BASE_URL = srv.http .. "/from-env" })
      assert.matches("heymarket.Client (" .. srv.http .. "/from-env)", out, 1, true)
    end)

    it("sends requests to prefix .. /v1/..., ignoring a trailing /", function()
      local c = new({ base_url = srv.http .. "/t/headers/x/" })
      local h = assert(c:get("/v1/inboxes"))
      assert.equals("/t/headers/x/v1/inboxes", h.uri)
      assert.equals("heymarket.Client (" .. srv.http .. "/t/headers/x)", tostring(c))
    end)

    it("accepts http:// only for loopback hosts", function()
      for _, url in ipairs({ "http://localhost:1", "http://LocalHost:1", "http://127.0.0.1", "http://127.1.2.3:8080/x",
                             "http://[::1]:9", "https://example.com", "https://api.heymarket.com/" }) do
        assert.has_no_error(function() new({ base_url = url }) end, url)
      end
      for _, url in ipairs({ "http://example.com", "http://10.0.0.1", "http://128.0.0.1",
                             "http://localhost.example.com", "http://127.0.0.1.nip.io" }) do
        assert.has_error(function() new({ base_url = url }) end,
          "heymarket: base_url uses http:// for a host that is not loopback (use https://)")
      end
    end)

    it("must be http(s) with a host", function()
      assert.has_error(function() new({ base_url = "ftp://example.com" }) end,
        "heymarket: base_url must use https:// (or http:// for a loopback host)")
      assert.has_error(function() new({ base_url = "https://" }) end, "heymarket: base_url has no host")
      assert.has_error(function() new({ base_url = "http:///v1" }) end, "heymarket: base_url has no host")
      assert.has_error(function() new({ base_url = "http://:8080" }) end, "heymarket: base_url has no host")
      assert.has_error(function() new({ base_url = "api.heymarket.com" }) end,
        "heymarket: base_url is not a URL of the form scheme://host[:port][/prefix]")
      assert.has_error(function() new({ base_url = "https://user:pw@example.com" }) end,
        "heymarket: base_url must not carry credentials (pass api_key instead)")
      assert.has_error(function() new({ base_url = "https://example.com/?a=1" }) end,
        "heymarket: base_url must not have a query or fragment")
      assert.has_error(function() new({ base_url = {} }) end,
        "heymarket: option 'base_url' must be a string (got table)")
    end)
  end)

  describe("option timeout", function()
    it("limits one attempt", function()
      local c = new({ base_url = srv.http .. "/t/sleep/3000", timeout = 0.3 })
      local t0 = util.now()
      local res, _, err = c:inboxes()
      assert.is_nil(res)
      assert.equals("timeout", err.kind)
      assert.is_true(util.now() - t0 < 2.5)
    end)

    it("must be a positive number", function()
      for _, bad in ipairs({ 0, -1, 0 / 0 }) do
        assert.has_error(function() new({ timeout = bad }) end,
          "heymarket: option 'timeout' must be a positive number of seconds")
      end
      assert.has_error(function() new({ timeout = "5" }) end,
        "heymarket: option 'timeout' must be a number (got string)")
    end)
  end)

  describe("option connect_timeout", function()
    it("limits connecting", function()
      -- A listener whose accept queue is full: new connections hang in SYN.
      local socket = require("socket")
      local server = assert(socket.tcp())
      assert(server:bind("127.0.0.1", 0))
      assert(server:listen(0))
      local _, port = server:getsockname()
      local fillers = {}
      for i = 1, 4 do
        fillers[i] = socket.tcp()
        fillers[i]:settimeout(0)
        fillers[i]:connect("127.0.0.1", port)
      end
      local c = new({ base_url = "http://127.0.0.1:" .. port, connect_timeout = 0.3, timeout = 10 })
      local t0 = util.now()
      local _, msg, err = c:inboxes()
      local took = util.now() - t0
      for _, f in ipairs(fillers) do f:close() end
      server:close()
      assert.equals("timeout", err.kind)
      local ms = tonumber(msg:match("after (%d+) ms"))
      assert.is_true(ms >= 300 and ms < 1500, msg)
      assert.is_true(took < 3, "took " .. took)
    end)

    it("must be a positive number", function()
      assert.has_no_error(function() new({ connect_timeout = 0.5 }) end)
      assert.has_error(function() new({ connect_timeout = 0 }) end,
        "heymarket: option 'connect_timeout' must be a positive number of seconds")
      assert.has_error(function() new({ connect_timeout = true }) end,
        "heymarket: option 'connect_timeout' must be a number (got boolean)")
    end)
  end)

  describe("option max_retries", function()
    it("counts retries after the first attempt", function()
      for _, n in ipairs({ 0, 1 }) do
        local c = new({ base_url = srv.http .. "/t/status/500", max_retries = n })
        local _, _, err = c:inboxes()
        assert.equals(n + 1, err.attempts)
      end
    end)

    it("defaults to 2", function()
      local c = heymarket.new({ api_key = srv.key, base_url = srv.http .. "/t/reset/x" })
      local _, _, err = c:inboxes()
      assert.equals(3, err.attempts)
    end)

    it("must be a whole number from 0 to 1000, never clamped", function()
      for _, bad in ipairs({ -1, 1.5, 0 / 0, 1001, 1e300 }) do
        assert.has_error(function() new({ max_retries = bad }) end,
          "heymarket: option 'max_retries' must be a whole number from 0 to 1000")
      end
      assert.has_no_error(function() new({ max_retries = 1000 }) end)
    end)
  end)

  describe("option max_retry_wait", function()
    it("fails at once on a longer Retry-After, with retry_after set", function()
      local c = new({ base_url = srv.http .. "/t/retryafter/30", max_retries = 2, max_retry_wait = 5 })
      local t0 = util.now()
      local _, _, err = c:inboxes()
      assert.is_true(util.now() - t0 < 1)
      assert.equals(429, err.status)
      assert.equals(30, err.retry_after)
      assert.equals(1, err.attempts)
      assert.is_true(err.retryable)
    end)

    it("must be a number >= 0", function()
      assert.has_no_error(function() new({ max_retry_wait = 0 }) end)
      assert.has_error(function() new({ max_retry_wait = -1 }) end,
        "heymarket: option 'max_retry_wait' must be a non-negative number of seconds")
    end)
  end)

  describe("option max_response", function()
    it("fails larger bodies with kind too_large", function()
      local c = new({ base_url = srv.http .. "/t/big/100000", max_response = 50000 })
      local res, msg, err = c:inboxes()
      assert.is_nil(res)
      assert.equals("too_large", err.kind)
      assert.matches("too_large", msg, 1, true)
      assert.is_false(err.retryable)
      assert.is_table((new({ base_url = srv.http .. "/t/big/100000" })):inboxes())
    end)

    it("counts the body after decompression", function()
      local c = new({ base_url = srv.http .. "/t/gzip/200000", max_response = 100000 })
      local _, _, err = c:inboxes()
      assert.equals("too_large", err.kind)
    end)

    it("must be a whole number of bytes > 0", function()
      assert.has_error(function() new({ max_response = 0 }) end,
        "heymarket: option 'max_response' must be a whole number >= 1")
    end)
  end)

  describe("options ca_file and ca_path", function()
    it("trust the given CA; verification cannot be skipped", function()
      local ok = new({ base_url = srv.https, ca_file = srv.ca_file })
      assert.equals(413, assert(ok:inboxes())[1].id)
      local by_path = new({ base_url = srv.https, ca_path = srv.ca_path })
      assert.equals(7, assert(by_path:team()).id)
    end)

    it("fail with kind tls without the CA, or for another host's certificate", function()
      local _, _, err = new({ base_url = srv.https, max_retries = 2 }):inboxes()
      assert.equals("tls", err.kind)
      assert.equals(1, err.attempts)
      assert.is_false(err.retryable)
      assert.is_number(err.curl_code)
      _, _, err = new({ base_url = srv.https_wrong_host, ca_file = srv.ca_file }):inboxes()
      assert.equals("tls", err.kind)
    end)

    it("must be strings", function()
      assert.has_error(function() new({ ca_file = 1 }) end,
        "heymarket: option 'ca_file' must be a string (got number)")
      assert.has_error(function() new({ ca_path = false }) end,
        "heymarket: option 'ca_path' must be a string (got boolean)")
    end)
  end)

  describe("option proxy", function()
    it("sends requests through the given proxy", function()
      -- Nothing listens on 127.0.0.2:9; the fixture answers as the proxy.
      local c = new({ base_url = "http://127.0.0.2:9", proxy = srv.http })
      local inboxes = assert(c:inboxes())
      assert.equals("Support", inboxes[1].name)
      local direct = new({ base_url = "http://127.0.0.2:9" })
      local _, _, err = direct:inboxes()
      assert.equals("network", err.kind)
    end)
  end)

  describe("option user_agent", function()
    it("is appended to the library's own User-Agent", function()
      local lua = jit and jit.version or _VERSION
      local h = assert(new({ base_url = srv.http .. "/t/headers/x" }):get("/v1/x"))
      local prefix = "heymarket-lua/" .. heymarket._VERSION .. " (" .. lua .. "; libcurl/"
      assert.equals(prefix, h.user_agent:sub(1, #prefix))
      assert.matches("^libcurl/%d+%.%d+%.%d+%)$", h.user_agent:sub(#prefix - 7))
      h = assert(new({ base_url = srv.http .. "/t/headers/x", user_agent = "myapp/2.0" }):get("/v1/x"))
      assert.matches("^heymarket%-lua/.*%) myapp/2%.0$", h.user_agent)
    end)
  end)

  describe("option keep_null", function()
    it("keeps JSON null in objects as heymarket.null", function()
      local team = assert(new({ base_url = srv.http .. "/t/nulls/x", keep_null = true }):team())
      assert.equals(heymarket.null, team.name)
      team = assert(new({ base_url = srv.http .. "/t/nulls/x" }):team())
      assert.is_nil(team.name)
      assert.has_error(function() new({ keep_null = 1 }) end,
        "heymarket: option 'keep_null' must be a boolean (got number)")
    end)
  end)

  describe("options", function()
    it("must be a table", function()
      assert.has_error(function() heymarket.new("key") end, "heymarket: options must be a table (got string)")
      assert.has_error(function() heymarket.inboxes(42) end, "heymarket: options must be a table (got number)")
    end)

    it("raise on unknown names", function()
      assert.has_error(function() new({ timout = 5 }) end, "heymarket: unknown option 'timout'")
      assert.has_error(function() new({ [1] = "x" }) end,
        "heymarket: option names must be strings (got number)")
    end)

    it("send nothing when they are wrong", function()
      local token = srv:token()
      local base = srv.http .. "/t/count/" .. token
      assert.has_error(function() heymarket.inboxes({ api_key = srv.key, base_url = base, timeout = -1 }) end)
      assert.is_true(assert(heymarket.inboxes({ api_key = srv.key, base_url = base })) ~= nil)
      assert.equals(1, srv:hits(token))
    end)
  end)

  describe("client:inboxes(), client:team(), client:get(path)", function()
    it("return decoded JSON", function()
      local c = new()
      assert.equals("Support", assert(c:inboxes())[1].name)
      assert.equals("Acme Support", assert(c:team()).name)
      assert.equals(10000, assert(c:get("/v1/team")).list_size)
    end)

    it("get takes a path with a query", function()
      local h = assert(new({ base_url = srv.http .. "/t/headers/x" }):get("/v1/messages?limit=5&page=2"))
      assert.equals("/t/headers/x/v1/messages?limit=5&page=2", h.uri)
    end)

    it("get raises for a bad path, sending nothing", function()
      local c = new()
      assert.has_error(function() c:get("v1/team") end, "bad argument #1 to 'get' (path must start with '/')")
      for _, bad in ipairs({ "/v1/a b", "/v1/a\r\nX: y", "/v1/a\n" }) do
        assert.has_error(function() c:get(bad) end,
          "bad argument #1 to 'get' (path must not contain spaces or control characters)")
      end
      assert.has_error(function() c:get(12) end, "bad argument #1 to 'get' (path must be a string, got number)")
      assert.has_error(function() c:get() end, "bad argument #1 to 'get' (path must be a string, got no value)")
      local token = srv:token()
      local counted = new({ base_url = srv.http .. "/t/count/" .. token })
      assert.has_error(function() counted:get("/v1/team two") end)
      assert.has_error(function() counted:get("v1/team") end)
      assert.equals(0, srv:hits(token))
    end)

    it("keeps its connection alive between calls", function()
      local c = new({ base_url = srv.http .. "/t/headers/x" })
      local first = assert(c:get("/v1/a"))
      local second = assert(c:get("/v1/b"))
      assert.equals(first.connection, second.connection)
      assert.equals(first.connection_requests + 1, second.connection_requests)
    end)
  end)

  describe("client:close()", function()
    it("makes later calls raise, and is harmless twice", function()
      local c = new()
      assert.is_table(c:team())
      c:close()
      assert.has_no_error(function() c:close() end)
      assert.has_error(function() c:inboxes() end, "heymarket: client is closed")
      assert.has_error(function() c:team() end, "heymarket: client is closed")
      assert.has_error(function() c:get("/v1/team") end, "heymarket: client is closed")
    end)

    it("frees the connection now", function()
      local c = new({ base_url = srv.http .. "/t/headers/x" })
      local first = assert(c:get("/v1/a"))
      c:close()
      local again = assert(new({ base_url = srv.http .. "/t/headers/x" }):get("/v1/a"))
      assert.are_not.equal(first.connection, again.connection)
    end)
  end)

  describe("memory kept for the next call", function()
    -- README "Speed and memory": on Lua 5.4 a client keeps the string its last
    -- body of 64 KiB to 8 MiB was decoded from (its user value 1), until a body
    -- outside that range or close() drops it (glibc then does not give the
    -- heap back and fault it in again every few large calls); other Luas keep
    -- nothing.
    local holds = _VERSION == "Lua 5.4" and not jit
    local BIG = "/t/many/1000/v1/inboxes"

    -- What the client keeps: its user value 1 on 5.4; elsewhere a string could
    -- only be in its user value (5.2, 5.3) or environment (5.1, LuaJIT).
    local function kept(c)
      if holds then
        return (debug.getuservalue(c, 1))
      end
      local uv
      if debug.getfenv then uv = debug.getfenv(c) else uv = debug.getuservalue(c) end
      if type(uv) == "table" then
        for _, v in pairs(uv) do
          if type(v) == "string" and #v >= 64 * 1024 then return v end
        end
        return nil
      end
      return uv
    end

    it("is the last large body's string, dropped by a smaller body or close()", function()
      local c = new()
      local raw = assert(c:get(BIG, { raw = true }))
      assert.is_true(#raw > 128 * 1024, "the large body is " .. #raw .. " bytes")
      assert.is_nil(kept(c), "a raw body is the caller's, not kept")
      assert.equals(1000, #assert(c:get(BIG)))
      if holds then
        assert.equals(raw, kept(c))
      else
        assert.is_nil(kept(c))
      end
      assert.equals(2, #assert(c:get("/t/many/2/v1/inboxes")))
      assert.is_nil(kept(c), "a smaller body drops it")
      assert.equals(1000, #assert(c:get(BIG)))
      assert.equals(holds, kept(c) ~= nil)
      c:close()
      assert.is_nil(kept(c), "close() drops it")
    end)

    it("is kept by result() too, one string a client, none once closed", function()
      local c = new()
      local raw = assert(c:get(BIG, { raw = true }))
      local a, b = c:get_async(BIG), c:get_async("/t/many/1001/v1/inboxes")
      assert.is_true(a:wait())
      assert.is_true(b:wait())
      assert.equals(1001, #assert(b:result()))
      assert.equals(1000, #assert(a:result()))
      if holds then
        assert.equals(raw, kept(c), "the last one decoded")
      else
        assert.is_nil(kept(c))
      end
      local late = c:get_async(BIG)
      assert.is_true(late:wait())
      c:close()
      assert.equals(1000, #assert(late:result()))
      assert.is_nil(kept(c), "a closed client keeps nothing")
    end)

    it("drops it for a body over 8 MiB", function()
      local c = new()
      assert.equals(1000, #assert(c:get(BIG)))
      assert.equals(holds, kept(c) ~= nil)
      local huge = assert(c:get("/t/many/40000/v1/inboxes", { raw = true }))
      assert.is_true(#huge > 8 * 1024 * 1024, "the body is " .. #huge .. " bytes")
      huge = nil -- luacheck: ignore 311
      assert.equals(40000, #assert(c:get("/t/many/40000/v1/inboxes")))
      assert.is_nil(kept(c))
      c:close()
    end)
  end)

  describe("tostring(client)", function()
    it("shows the base_url, never the key", function()
      local c = new({ api_key = "secret-key-abc" })
      assert.equals("heymarket.Client (" .. srv.http .. ")", tostring(c))
      assert.is_nil(tostring(c):find("secret-key-abc", 1, true))
    end)
  end)

  describe("lifetime", function()
    if _VERSION == "Lua 5.4" then
      it("supports <close> on Lua 5.4", function()
        local chunk = assert(load([[
          local heymarket, opts = ...
          local kept
          do
            local c <close> = heymarket.new(opts)
            kept = c
            assert(c:team())
          end
          return kept
        ]]))
        local kept = chunk(heymarket, { api_key = srv.key, base_url = srv.http })
        assert.has_error(function() kept:team() end, "heymarket: client is closed")
      end)
    end

    it("garbage collection frees an unclosed client, even with a request in flight", function()
      local weak = setmetatable({}, { __mode = "v" })
      do
        local c = new()
        assert(c:team())
        weak.client = c
        weak.req = c:inboxes_async()
      end
      collectgarbage()
      collectgarbage()
      assert.is_nil(weak.client)
      assert.is_nil(weak.req)
    end)
  end)

  describe("heymarket.inboxes() and heymarket.team()", function()
    it("use a default client made from the environment and kept", function()
      local out = util.run_lua([[
        local heymarket = require("heymarket")
        local a = heymarket.team()
        local b = heymarket.team()
        print(a.connection == b.connection, b.connection_requests - a.connection_requests)
        print(heymarket.inboxes ~= nil)
      ]], { HEYMARKET_API_KEY = srv.key, HEYMARKET_BASE_URL = srv.http .. "/t/headers/x" })
      assert.matches("^true\t1\ntrue\n", out)
    end)

    it("with options use a client made from them", function()
      local inboxes = assert(heymarket.inboxes({ api_key = srv.key, base_url = srv.http }))
      assert.equals(413, inboxes[1].id)
      local team = assert(heymarket.team({ api_key = srv.key, base_url = srv.http }))
      assert.equals(7, team.id)
      local res, msg = heymarket.team({ api_key = "wrong", base_url = srv.http, max_retries = 0 })
      assert.is_nil(res)
      assert.equals("heymarket: GET /v1/team: HTTP 401: Invalid API key", msg)
    end)
  end)
end)

-- CONTRACT.md "Non-blocking use": request objects in plain Lua
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")

describe("Non-blocking use", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() if srv then srv:stop() end end)

  local function poll_until_done(reqs, limit)
    local deadline = util.now() + (limit or 10)
    local left = #reqs
    while left > 0 and util.now() < deadline do
      left = 0
      for _, r in ipairs(reqs) do
        if not r:poll() then left = left + 1 end
      end
    end
    return left == 0
  end

  describe("client:inboxes_async(), team_async(), get_async(path)", function()
    it("return at once with a request object", function()
      local c = util.client(srv, "/t/sleep/500")
      local t0 = util.now()
      local a, b, g = c:inboxes_async(), c:team_async(), c:get_async("/v1/team")
      assert.is_true(util.now() - t0 < 0.2)
      assert.matches("^heymarket%.Request %(GET /v1/inboxes, %a+%)$", tostring(a))
      assert.is_false(a:poll())
      assert.is_true(poll_until_done({ a, b, g }))
      assert.equals("Support", (a:result())[1].name)
      assert.equals(7, (b:result()).id)
      assert.equals(10000, (g:result()).list_size)
    end)

    it("send each request to its own URL, however many paths are in flight", function()
      -- a client keeps a few parsed URLs for reuse: more paths than it keeps,
      -- all in flight at once (slow), then one after another, twice over
      local c = util.client(srv)
      local reqs = {}
      for i = 1, 10 do
        reqs[i] = c:get_async("/t/sleep/" .. (50 + i) .. "/v1/inboxes")
      end
      local heads = {}
      for i = 1, 10 do
        heads[i] = c:get_async("/t/headers/" .. i .. "/v1/team")
      end
      assert.is_true(poll_until_done(reqs))
      assert.is_true(poll_until_done(heads))
      for i = 1, 10 do
        assert.equals("Support", (assert(reqs[i]:result()))[1].name)
        assert.equals("/t/headers/" .. i .. "/v1/team", (assert(heads[i]:result())).uri)
      end
      for _ = 1, 2 do
        for i = 1, 6 do
          local path = "/t/headers/" .. i .. "/v1/inboxes?n=" .. i
          assert.equals(path, (assert(c:get(path))).uri)
        end
      end
    end)

    it("validate the path like get()", function()
      local c = util.client(srv)
      assert.has_error(function() c:get_async("v1") end,
        "bad argument #1 to 'get_async' (path must start with '/')")
    end)
  end)

  describe("req:poll()", function()
    it("never blocks", function()
      local req = util.client(srv, "/t/sleep/1000"):inboxes_async()
      local slowest = 0
      while not req:poll() do
        local t0 = util.now()
        req:poll()
        slowest = math.max(slowest, util.now() - t0)
      end
      assert.is_true(slowest < 0.1, "a poll took " .. slowest)
      assert.is_table((req:result()))
    end)

    it("runs retries and their waits without sleeping", function()
      local c = util.client(srv, "/t/once/429-" .. srv:token(), { max_retries = 2 })
      local req = c:inboxes_async()
      local polls, slowest = 0, 0
      local t0 = util.now()
      repeat
        local p0 = util.now()
        local done = req:poll()
        slowest = math.max(slowest, util.now() - p0)
        polls = polls + 1
      until done or util.now() - t0 > 5
      assert.is_true(util.now() - t0 >= 0.9, "Retry-After: 1 was honoured")
      assert.is_true(slowest < 0.1, "a poll took " .. slowest)
      assert.is_true(polls > 10)
      assert.equals(413, (req:result())[1].id)
    end)
  end)

  describe("req:wait([seconds])", function()
    it("blocks until finished or until seconds pass", function()
      local req = util.client(srv, "/t/sleep/600"):inboxes_async()
      local t0 = util.now()
      assert.is_false(req:wait(0.1))
      local waited = util.now() - t0
      assert.is_true(waited >= 0.09 and waited < 0.4, "waited " .. waited)
      assert.is_true(req:wait())
      assert.is_true(req:wait(0))
      assert.is_true(req:poll())
    end)

    it("rejects a negative time", function()
      local req = util.client(srv):inboxes_async()
      assert.has_error(function() req:wait(-1) end, "bad argument #1 to 'wait' (seconds must be a number >= 0)")
      req:wait()
    end)
  end)

  describe("req:result()", function()
    it("returns what the blocking call would have", function()
      local c = util.client(srv, "", { api_key = "wrong" })
      local req = c:team_async()
      req:wait()
      local res, msg, err = req:result()
      assert.is_nil(res)
      assert.equals("heymarket: GET /v1/team: HTTP 401: Invalid API key", msg)
      assert.equals("http", err.kind)
      -- the same values on a later call
      local res2, msg2, err2 = req:result()
      assert.is_nil(res2)
      assert.equals(msg, msg2)
      assert.equals(err, err2)
    end)

    it("returns the same value again after a success, and only it", function()
      local req = util.client(srv):team_async()
      req:wait()
      local first = req:result()
      assert.equals(7, first.id)
      assert.equals(1, select("#", req:result()))
      assert.equals(first, (req:result()))
    end)

    it("raises if the request has not finished", function()
      local req = util.client(srv, "/t/sleep/1000"):inboxes_async()
      assert.has_error(function() req:result() end,
        "heymarket: request is not finished (call wait() or poll() until true)")
      req:cancel()
    end)
  end)

  describe("req:cancel()", function()
    it("finishes the request with kind cancelled", function()
      local req = util.client(srv, "/t/sleep/1000"):inboxes_async()
      req:cancel()
      assert.is_true(req:poll())
      local _, _, err = req:result()
      assert.equals("cancelled", err.kind)
      assert.has_no_error(function() req:cancel() end)
    end)

    it("leaves a finished request as it was", function()
      local req = util.client(srv):team_async()
      req:wait()
      req:cancel()
      assert.equals(7, (req:result()).id)
    end)
  end)

  describe("many requests on one client", function()
    it("run at once: two 500 ms requests finish in under 750 ms", function()
      local c = util.client(srv, "/t/sleep/500")
      local t0 = util.now()
      local a, b = c:inboxes_async(), c:team_async()
      assert.is_true(a:wait(5))
      assert.is_true(b:wait(5))
      local took = util.now() - t0
      assert.is_true(took < 0.75, "took " .. took)
      assert.is_table((a:result()))
      assert.is_table((b:result()))
    end)

    it("200 in flight at once all succeed", function()
      local c = util.client(srv, "/t/sleep/200")
      local reqs = {}
      for i = 1, 200 do
        reqs[i] = (i % 2 == 0) and c:inboxes_async() or c:team_async()
      end
      assert.is_true(poll_until_done(reqs, 20))
      for i, r in ipairs(reqs) do
        local res, msg = r:result()
        assert.is_table(res, msg)
        if i % 2 == 0 then assert.equals(413, res[1].id) else assert.equals(7, res.id) end
      end
    end)

    it("share the client's connections", function()
      local c = util.client(srv, "/t/headers/x")
      local first = c:get_async("/v1/a")
      first:wait()
      local second = c:get_async("/v1/b")
      second:wait()
      assert.equals((first:result()).connection, (second:result()).connection)
    end)
  end)

  describe("lifetimes", function()
    it("result() called again by a finalizer while the body decodes decodes for itself, harmlessly", function()
      -- A finalizer can run whenever lua-cjson allocates. If it takes the same
      -- request's result, that inner call decodes too, and must not free the
      -- body the outer call is still reading (it did: a crash, or keys read
      -- from freed memory). Run in a child: the failure was a crash.
      local out = util.run_lua(string.format([[
        local heymarket = require("heymarket")
        local c = heymarket.new({ api_key = %q, base_url = %q, max_retries = 0 })
        local r1 = c:get_async("/t/many/1000/v1/inboxes")
        local r2 = c:get_async("/t/many/5/v1/inboxes")
        assert(r1:wait(10) and r2:wait(10))
        assert(r2:result()) -- its body buffer becomes the client's spare
        local inner, armed, fired
        local function on_gc()
          if armed and not fired then
            fired = true
            inner = select(2, pcall(r1.result, r1))
          end
        end
        local held = {}
        for i = 1, 200 do
          if newproxy then
            held[i] = newproxy(true) -- 5.1 and LuaJIT
            getmetatable(held[i]).__gc = on_gc
          else
            held[i] = setmetatable({}, { __gc = on_gc })
          end
        end
        -- a collector step at every allocation, so one runs during the decode
        if _VERSION == "Lua 5.4" then collectgarbage("incremental", 100, 400) end
        collectgarbage("setpause", 100)
        collectgarbage("setstepmul", 400)
        held, armed = nil, true -- garbage from now on
        local outer = r1:result()
        local floats = 0
        for _, inbox in ipairs(outer) do
          if math.type and math.type(inbox.id) ~= "integer" then floats = floats + 1 end
        end
        print(string.format("outer %%d %%d", #outer, floats))
        print(string.format("inner %%s %%s", type(inner) == "table" and #inner or tostring(inner),
          tostring(inner ~= outer)))
      ]], srv.key, srv.http))
      assert.matches("outer 1000 0", out, 1, true)
      -- the finalizer ran inside the outer decode (else this proves nothing):
      -- it decoded for itself, so it holds another table
      assert.matches("inner 1000 true", out, 1, true)
    end)

    it("a request garbage-collected while in flight is cleaned up", function()
      local c = util.client(srv, "/t/sleep/300")
      local weak = setmetatable({}, { __mode = "v" })
      for i = 1, 20 do weak[i] = c:inboxes_async() end
      collectgarbage()
      collectgarbage()
      assert.is_nil(next(weak))
      -- the client goes on working
      local req = c:team_async()
      assert.is_true(req:wait(5))
      assert.equals(7, (req:result()).id)
    end)

    it("requests of a closed client finish as cancelled", function()
      local c = util.client(srv, "/t/sleep/1000")
      local req = c:inboxes_async()
      c:close()
      assert.is_true(req:poll())
      assert.is_true(req:wait(1))
      local _, msg, err = req:result()
      assert.equals("cancelled", err.kind)
      assert.matches("client was closed", msg, 1, true)
    end)

    if _VERSION ~= "Lua 5.1" and not jit then -- tables have __gc from 5.2 on
      it("a request resurrected by another finalizer is finished, not dangling", function()
        local saved
        do
          local req = util.client(srv, "/t/sleep/1000"):inboxes_async()
          setmetatable({ req = req }, { __gc = function(t) saved = t.req end })
        end
        collectgarbage()
        collectgarbage()
        assert.is_not_nil(saved)
        assert.is_true(saved:poll())
        assert.is_true(saved:wait(1))
        local _, _, err = saved:result()
        assert.equals("cancelled", err.kind)
      end)
    end

    it("a request outlives its client's last reference", function()
      local req = util.client(srv, "/t/sleep/200"):inboxes_async()
      collectgarbage()
      collectgarbage()
      assert.is_true(req:wait(5))
      assert.equals(413, (req:result())[1].id)
    end)
  end)
end)

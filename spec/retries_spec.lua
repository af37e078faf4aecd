-- CONTRACT.md "Retries"
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")
local socket = require("socket")

describe("Retries", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() if srv then srv:stop() end end)

  local function with_retries(prefix, n, opts)
    opts = opts or {}
    opts.max_retries = n
    return util.client(srv, prefix, opts)
  end

  -- The route answers its first request (per token) with `status`: without
  -- retries that is the result; with one retry the call succeeds.
  local function first_fails(route, status)
    local _, _, err = with_retries(route .. srv:token(), 0):inboxes()
    assert.equals(status, err.status)
  end

  it("retry a 503 and then succeed", function()
    first_fails("/t/once/503-", 503)
    local c = with_retries("/t/once/503-" .. srv:token(), 2)
    assert.equals(413, assert(c:inboxes())[1].id)
  end)

  it("honour Retry-After in seconds on a 429, then succeed", function()
    first_fails("/t/once/429-", 429)
    local c = with_retries("/t/once/429-" .. srv:token(), 2)
    local t0 = util.now()
    assert.equals(7, assert(c:team()).id)
    assert.is_true(util.now() - t0 >= 0.9, "waited for Retry-After: 1")
  end)

  it("let a request waiting for its retry be cancelled or collected, the others going on", function()
    -- Each first attempt gets 429 with Retry-After: 1, so all three wait for
    -- their retries. (make asan also checks the client's count of waiting
    -- requests as it drives them.)
    local c = util.client(srv, "", { max_retries = 2 })
    local function get()
      return c:get_async("/t/once/429-" .. srv:token() .. "/v1/team")
    end
    local cancelled, dropped, kept = get(), get(), get()
    local function all_waiting()
      for _, r in ipairs({ cancelled, dropped, kept }) do
        r:poll()
        if not tostring(r):find("queued", 1, true) then
          return false
        end
      end
      return true
    end
    local deadline = util.now() + 5
    while not all_waiting() and util.now() < deadline do
      socket.sleep(0.005)
    end
    assert.is_true(all_waiting(), tostring(kept))
    cancelled:cancel()
    local weak = setmetatable({ dropped }, { __mode = "v" })
    dropped = nil -- luacheck: ignore 311
    collectgarbage()
    collectgarbage()
    assert.is_nil(weak[1], "the dropped request was collected")
    local t0 = util.now()
    assert.is_true(kept:wait(5))
    assert.equals(7, assert(kept:result()).id)
    assert.is_true(util.now() - t0 > 0.5, "kept waited for its Retry-After")
    local _, _, err = cancelled:result()
    assert.equals("cancelled", err.kind)
  end)

  it("honour Retry-After as an HTTP-date", function()
    -- whole seconds on both sides, and nginx's clock is cached: three
    -- seconds ahead is at least one second of waiting
    local c = with_retries("/t/retryafter/date3", 1)
    local t0 = util.now()
    local _, _, err = c:inboxes()
    local waited = util.now() - t0
    assert.equals(2, err.attempts)
    assert.is_true(waited >= 0.9, "waited " .. waited)
    assert.is_true(err.retry_after >= 0 and err.retry_after <= 4, tostring(err.retry_after))
    c = with_retries("/t/retryafter/date3600", 2)
    _, _, err = c:inboxes()
    assert.equals(1, err.attempts)
    -- an HTTP-date counts whole seconds: one either way is rounding
    assert.is_true(err.retry_after > 3500 and err.retry_after <= 3601, tostring(err.retry_after))
  end)

  for _, status in ipairs({ 408, 429, 500, 502, 503, 504 }) do
    it("retry HTTP " .. status, function()
      -- no Retry-After here: every one of them backs off the same way
      first_fails("/t/times/1-" .. status .. "-", status)
      local c = with_retries("/t/times/1-" .. status .. "-" .. srv:token(), 1)
      assert.is_table(assert(c:inboxes()))
    end)
  end

  for _, status in ipairs({ 400, 401, 403, 404, 422 }) do
    it("never retry HTTP " .. status, function()
      local _, _, err = with_retries("/t/status/" .. status, 2):inboxes()
      assert.equals(status, err.status)
      assert.equals(1, err.attempts)
      assert.is_false(err.retryable)
    end)
  end

  it("never retry a TLS verification failure", function()
    local _, _, err = util.client(srv, "", { base_url = srv.https, max_retries = 2 }):inboxes()
    assert.equals("tls", err.kind)
    assert.equals(1, err.attempts)
  end)

  it("retry transport failures and timeouts", function()
    local _, _, err = with_retries("/t/reset/x", 2):inboxes()
    assert.equals("network", err.kind)
    assert.equals(3, err.attempts)
    _, _, err = with_retries("/t/sleep/1000", 1, { timeout = 0.1 }):inboxes()
    assert.equals("timeout", err.kind)
    assert.equals(2, err.attempts)
    assert.matches("(after 2 attempts)", select(2, with_retries("/t/reset/x", 1):inboxes()), 1, true)
  end)

  it("back off exponentially with full jitter (base 0.5 s, cap 8 s)", function()
    -- 3 retries wait at most 0.5 + 1 + 2 = 3.5 s; jitter makes the total vary
    local totals = {}
    for i = 1, 2 do
      local t0 = util.now()
      local _, _, err = with_retries("/t/status/503", 3):inboxes()
      totals[i] = util.now() - t0
      assert.equals(4, err.attempts)
      assert.is_true(totals[i] < 3.5 + 1, "took " .. totals[i])
    end
    assert.are_not.equal(totals[1], totals[2])
  end)
end)

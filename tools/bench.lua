-- `make bench`: heymarket's speed and memory as ratios against baselines
-- measured in the same run, against the fake API (spec/support/fixture.lua)
-- on a real local nginx. Nothing here asserts a time: it reports.
--
--   lua5.4 tools/bench.lua          (make bench builds the module and
--                                    build/bench/baseline from tools/bench_baseline.c first)
--
-- Baselines:
--   libcurl  build/bench/baseline: plain C, one reused easy handle (keep-alive),
--            the same request headers, the body collected into a reused buffer
--            (for the concurrent case: a multi handle with 100 easy handles)
--   cjson    require("cjson").new().decode on the same body, fetched once
--
-- Every case runs one untimed warm-up round, then ROUNDS rounds; in each round
-- the baselines and heymarket run back to back, and the table shows medians.
-- "wall" is elapsed time (the local nginx's time included, on both sides);
-- "cpu" is this process's CPU time (os.clock; the baseline's own
-- CLOCK_PROCESS_CPUTIME_ID), i.e. the client's work alone.
--
-- Environment: HEYMARKET_BENCH_ROUNDS (default 5).
--
-- The memory cases each run in a fresh child process (so neither the earlier
-- cases' garbage nor their high-water marks count):
--   lua5.4 tools/bench.lua --child leak-sync|leak-async|peak-heymarket|peak-cjson BASE_URL KEY

package.path = "./?.lua;" .. package.path
package.cpath = "build/lua5.4/?.so;" .. package.cpath

local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")
local cjson = require("cjson")

local BASELINE = "build/bench/baseline"
local ROUNDS = math.max(1, math.floor(tonumber(os.getenv("HEYMARKET_BENCH_ROUNDS") or "") or 5))
local BIG_100K = "/t/big/100000/v1/inboxes"
local BIG_1M = "/t/big/1000000/v1/inboxes"
local LEAK_CALLS = 5000
local LEAK_PHASES = 4
local CONCURRENT = 100

local now = socket.gettime -- wall clock, microsecond resolution
local cpu = os.clock

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function median(list)
  local t = {}
  for i = 1, #list do
    t[i] = list[i]
  end
  table.sort(t)
  local n = #t
  if n == 0 then
    return 0 / 0
  elseif n % 2 == 1 then
    return t[(n + 1) // 2]
  end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- Fields of /proc/self/status in kB (VmRSS, VmHWM, ...).
local function proc_status()
  local f = assert(io.open("/proc/self/status", "r"))
  local s = f:read("a")
  f:close()
  return {
    rss = tonumber(s:match("VmRSS:%s*(%d+)")),
    hwm = tonumber(s:match("VmHWM:%s*(%d+)")),
  }
end

-- Reset VmHWM to the current RSS (Linux: "5" > /proc/self/clear_refs).
local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if not f then
    return false
  end
  local ok = f:write("5")
  f:close()
  return ok ~= nil
end

local function fetch_body(url, key)
  local chunks = {}
  local ok, code = http.request({
    url = url,
    headers = { authorization = "Bearer " .. key, accept = "application/json" },
    sink = ltn12.sink.table(chunks),
  })
  if not ok or code ~= 200 then
    error("GET " .. url .. " failed: " .. tostring(code))
  end
  return table.concat(chunks)
end

local function check(result, msg, what)
  if result == nil then
    error((what or "call") .. " failed: " .. tostring(msg), 2)
  end
  return result
end

---------------------------------------------------------------------------
-- Child processes for the memory cases
---------------------------------------------------------------------------

local function new_client(base, key)
  return require("heymarket").new({ api_key = key, base_url = base, max_retries = 0 })
end

-- Peak RSS for one 1 MB response. Prints
-- "<peak RSS increase kB> <RSS increase kB with the result alive> <Lua heap increase kB>".
local function peak_child(which, base, key)
  if not reset_peak() then
    print("nan nan nan")
    return
  end
  local before, heap0, result
  if which == "peak-heymarket" then
    local c = new_client(base, key)
    check(c:inboxes()) -- connection open, decoder loaded
    full_gc()
    reset_peak()
    before, heap0 = proc_status(), collectgarbage("count")
    result = check(c:get(BIG_1M))
  else
    local body = fetch_body(base .. BIG_1M, key)
    local decode = cjson.new().decode
    decode("[1]")
    full_gc()
    reset_peak()
    before, heap0 = proc_status(), collectgarbage("count")
    result = decode(body)
  end
  local after = proc_status()
  local heap = collectgarbage("count") - heap0
  assert(#result > 0)
  print(string.format("%d %d %.1f", after.hwm - before.rss, after.rss - before.rss, heap))
end

-- Growth over LEAK_PHASES phases of LEAK_CALLS calls each on one client,
-- after LEAK_CALLS untimed ones, with a full GC before each reading: a leak
-- grows in every phase, a high-water mark (a table that grew to hold the
-- garbage between two collections) at most once. Prints the Lua heap (KB)
-- and RSS (kB) readings, the largest heap seen between GCs, and µs per call.
local function leak_child(which, base, key)
  local c = new_client(base, key)
  local call
  if which == "leak-sync" then
    call = function()
      check(c:inboxes())
    end
  else
    call = function()
      local r = c:inboxes_async()
      r:wait()
      check(r:result())
    end
  end
  for _ = 1, LEAK_CALLS do
    call()
  end
  local heap, rss = {}, {}
  local function reading()
    full_gc()
    heap[#heap + 1] = string.format("%.3f", collectgarbage("count"))
    rss[#rss + 1] = proc_status().rss
  end
  reading()
  local max_heap, elapsed = 0, 0
  for _ = 1, LEAK_PHASES do
    local w0 = now()
    for i = 1, LEAK_CALLS do
      call()
      if i % 100 == 0 then
        max_heap = math.max(max_heap, collectgarbage("count"))
      end
    end
    elapsed = elapsed + now() - w0
    reading()
  end
  c:close()
  print(table.concat(heap, " ") .. " " .. table.concat(rss, " ")
    .. string.format(" %.0f %.2f", max_heap, elapsed * 1e6 / (LEAK_CALLS * LEAK_PHASES)))
end

if arg and arg[1] == "--child" then
  local which = arg[2]
  if which == "leak-sync" or which == "leak-async" then
    leak_child(which, arg[3], arg[4])
  elseif which == "peak-heymarket" or which == "peak-cjson" then
    peak_child(which, arg[3], arg[4])
  else
    io.stderr:write("unknown child ", tostring(which), "\n")
    os.exit(2)
  end
  os.exit(0)
end

---------------------------------------------------------------------------
-- The cases
---------------------------------------------------------------------------

local heymarket = require("heymarket")
local fixture = require("spec.support.fixture")

-- Runs build/bench/baseline; returns wall, cpu seconds and the body size.
local function run_baseline(url, key, n, parallel)
  local cmd = string.format("%s %s %s %d %d", BASELINE, shell_quote(url), shell_quote(key), n,
    parallel or 1)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok = p:close()
  local wall, cpu_s, bytes = out:match("^(%S+) (%S+) (%d+)")
  if not ok or not wall then
    error("baseline failed: " .. cmd .. "\n" .. out)
  end
  return tonumber(wall), tonumber(cpu_s), tonumber(bytes)
end

-- Times fn(n) (which makes n calls); returns wall, cpu seconds.
local function timed(fn, n)
  full_gc()
  local w0, c0 = now(), cpu()
  fn(n)
  return now() - w0, cpu() - c0
end

-- One payload, blocking: libcurl, cjson and heymarket per call, in microseconds.
local function bench_blocking(srv, client, case)
  local url = srv.http .. case.path
  local body = fetch_body(url, srv.key)
  local decode = cjson.new().decode
  local items = #decode(body)
  local call = case.call

  local function cjson_loop(n)
    for _ = 1, n do
      decode(body)
    end
  end
  local function heymarket_loop(n)
    for _ = 1, n do
      local r, msg = call(client)
      if r == nil then
        error(case.name .. ": heymarket failed: " .. tostring(msg))
      end
    end
  end

  -- sanity: both sides see the same payload
  local first = check(call(client))
  if #first ~= items then
    error(string.format("%s: heymarket returned %d items, the body has %d", case.name, #first, items))
  end

  local s = { curl = {}, curl_cpu = {}, cjson = {}, cjson_cpu = {}, hm = {}, hm_cpu = {}, ratio = {} }
  for round = 0, ROUNDS do
    local n = round == 0 and math.max(1, case.n // 5) or case.n
    local cw, cc, bytes = run_baseline(url, srv.key, n)
    if bytes ~= #body then
      error(string.format("%s: baseline got %d bytes, Lua got %d", case.name, bytes, #body))
    end
    local jw, jc = timed(cjson_loop, n)
    local hw, hc = timed(heymarket_loop, n)
    if round > 0 then
      local us = 1e6 / n
      s.curl[#s.curl + 1], s.curl_cpu[#s.curl_cpu + 1] = cw * us, cc * us
      s.cjson[#s.cjson + 1], s.cjson_cpu[#s.cjson_cpu + 1] = jw * us, jc * us
      s.hm[#s.hm + 1], s.hm_cpu[#s.hm_cpu + 1] = hw * us, hc * us
      s.ratio[#s.ratio + 1] = hw / (cw + jw)
    end
  end
  local r = {
    name = case.name, n = case.n, bytes = #body,
    curl = median(s.curl), cjson = median(s.cjson), hm = median(s.hm),
    curl_cpu = median(s.curl_cpu), cjson_cpu = median(s.cjson_cpu), hm_cpu = median(s.hm_cpu),
    ratio_lo = math.min(table.unpack(s.ratio)), ratio_hi = math.max(table.unpack(s.ratio)),
  }
  r.ratio = r.hm / (r.curl + r.cjson)
  r.ratio_cpu = r.hm_cpu / (r.curl_cpu + r.cjson_cpu)
  return r
end

-- Starts CONCURRENT requests on the client; returns them and the seconds that took.
local function submit(client, path)
  local reqs = {}
  local t0 = now()
  for i = 1, CONCURRENT do
    reqs[i] = client:get_async(path)
  end
  return reqs, now() - t0
end

-- CONCURRENT requests in flight, driven by poll() on each until all are done.
local function async_poll(client, path)
  local reqs, submitting = submit(client, path)
  local pending = CONCURRENT
  while pending > 0 do
    pending = 0
    for i = 1, CONCURRENT do
      if not reqs[i]:poll() then
        pending = pending + 1
      end
    end
  end
  for i = 1, CONCURRENT do
    check(reqs[i]:result())
  end
  return submitting
end

-- The same, but wait() (curl_multi_poll) on each request in turn.
local function async_wait(client, path)
  local reqs, submitting = submit(client, path)
  for i = 1, CONCURRENT do
    reqs[i]:wait()
    check(reqs[i]:result())
  end
  return submitting
end

local function sequential(client, path)
  for _ = 1, CONCURRENT do
    check(client:get(path))
  end
end

-- Times one batch; returns its wall seconds and the seconds spent submitting.
local function timed_batch(fn, client, path)
  fn(client, path) -- untimed: opens the connections the batch needs, as the baseline's warm-up does
  full_gc()
  local t0 = now()
  local submitting = fn(client, path)
  return now() - t0, submitting
end

-- CONCURRENT requests at once vs. one after another, all in milliseconds.
local function bench_concurrent(srv, client, case)
  local url = srv.http .. case.path
  local body = fetch_body(url, srv.key)
  local decode = cjson.new().decode
  local s = { poll = {}, poll_submit = {}, wait = {}, seq = {}, multi = {}, serial = {}, cjson = {} }
  local function cjson_loop(n)
    for _ = 1, n do
      decode(body)
    end
  end
  local function add(key, seconds)
    s[key][#s[key] + 1] = seconds * 1e3
  end
  for round = 0, ROUNDS do
    local mw = run_baseline(url, srv.key, CONCURRENT, CONCURRENT)
    local sw = run_baseline(url, srv.key, CONCURRENT, 1)
    local jw = timed(cjson_loop, CONCURRENT)
    local pw, ps = timed_batch(async_poll, client, case.path)
    local ww = timed_batch(async_wait, client, case.path)
    local qw = timed(function() sequential(client, case.path) end)
    if round > 0 then
      add("multi", mw)
      add("serial", sw)
      add("cjson", jw)
      add("poll", pw)
      add("poll_submit", ps)
      add("wait", ww)
      add("seq", qw)
    end
  end
  local r = { name = case.name }
  for k, v in pairs(s) do
    r[k] = median(v)
  end
  return r
end

-- Runs `tools/bench.lua --child which` and returns the numbers it printed.
local function run_child(which, srv)
  local cmd = string.format("lua5.4 tools/bench.lua --child %s %s %s", which, shell_quote(srv.http),
    shell_quote(srv.key))
  local p = assert(io.popen(cmd, "r"))
  local text = p:read("a")
  local ok = p:close()
  local nums = {}
  for w in text:gmatch("%S+") do
    nums[#nums + 1] = tonumber(w)
  end
  if not ok or #nums == 0 then
    error("child failed: " .. cmd .. "\n" .. text)
  end
  return table.unpack(nums)
end

---------------------------------------------------------------------------
-- Report
---------------------------------------------------------------------------

local function out(fmt, ...)
  io.write(string.format(fmt, ...), "\n")
  io.flush()
end

local function human_bytes(n)
  if n >= 1e6 then
    return string.format("%.1f MB", n / 1e6)
  elseif n >= 1e3 then
    return string.format("%.0f KB", n / 1e3)
  end
  return string.format("%d B", n)
end

local function main(srv)
  local exe = io.open(BASELINE, "rb")
  if not exe then
    error(BASELINE .. " is missing: run `make bench`, which builds it from tools/bench_baseline.c", 0)
  end
  exe:close()
  local version = io.popen("curl-config --version 2>/dev/null"):read("l") or "libcurl ?"
  out("heymarket %s, %s, %s, lua-cjson %s; %d round(s) + warm-up, medians",
    heymarket._VERSION, _VERSION, version, cjson._VERSION or "?", ROUNDS)
  out("")

  local client = heymarket.new({ api_key = srv.key, base_url = srv.http, max_retries = 0 })
  local blocking = {
    { name = "inboxes small", path = "/v1/inboxes", n = 3000, call = function(c) return c:inboxes() end },
    { name = "get 100 KB", path = BIG_100K, n = 300, call = function(c) return c:get(BIG_100K) end },
    { name = "get 1 MB", path = BIG_1M, n = 30, call = function(c) return c:get(BIG_1M) end },
  }
  local results = {}
  for i, case in ipairs(blocking) do
    results[i] = bench_blocking(srv, client, case)
  end

  out("Blocking calls, microseconds per call (wall = elapsed incl. the local nginx; cpu = client process only)")
  out("%-14s %9s %6s | %10s %10s %8s %10s | %7s %13s | %8s %8s %8s %7s",
    "case", "body", "calls", "heymarket", "libcurl", "cjson", "curl+json", "ratio", "ratio range",
    "hm cpu", "curl cpu", "json cpu", "ratio")
  for _, r in ipairs(results) do
    out("%-14s %9s %6d | %10.1f %10.1f %8.1f %10.1f | %7.2f %6.2f..%-6.2f | %8.1f %8.1f %8.1f %7.2f",
      r.name, human_bytes(r.bytes), r.n, r.hm, r.curl, r.cjson, r.curl + r.cjson,
      r.ratio, r.ratio_lo, r.ratio_hi, r.hm_cpu, r.curl_cpu, r.cjson_cpu, r.ratio_cpu)
  end
  out("")
  for _, r in ipairs(results) do
    out("  %s: heymarket %.0f µs/call, libcurl %.0f + cjson %.0f = %.0f, ratio %.2f (cpu: %.0f vs %.0f, ratio %.2f)",
      r.name, r.hm, r.curl, r.cjson, r.curl + r.cjson, r.ratio,
      r.hm_cpu, r.curl_cpu + r.cjson_cpu, r.ratio_cpu)
  end
  out("")

  local concurrent = {
    { name = "/v1/inboxes", path = "/v1/inboxes" },
    { name = "/t/sleep/10 (10 ms server latency)", path = "/t/sleep/10/v1/inboxes" },
  }
  out("Concurrency: %d requests on one client, milliseconds for all %d", CONCURRENT, CONCURRENT)
  for _, case in ipairs(concurrent) do
    local r = bench_concurrent(srv, client, case)
    out("  %s", r.name)
    out("    heymarket: async+poll %.1f ms (of which submitting: %.1f), async+wait %.1f ms,"
      .. " sequential blocking %.1f ms -> async/sequential %.2f (poll), %.2f (wait)",
      r.poll, r.poll_submit, r.wait, r.seq, r.poll / r.seq, r.wait / r.seq)
    out("    libcurl:   multi %.1f ms, serial %.1f ms; cjson %.2f ms"
      .. " -> heymarket async / (libcurl multi + cjson) %.2f (poll), %.2f (wait)",
      r.multi, r.serial, r.cjson, r.poll / (r.multi + r.cjson), r.wait / (r.multi + r.cjson))
  end
  client:close()
  out("")

  out("Memory: %d phases of %d calls on one client after %d untimed ones, full GC before each reading"
    .. " (fresh process each)", LEAK_PHASES, LEAK_CALLS, LEAK_CALLS)
  for _, which in ipairs({ "leak-sync", "leak-async" }) do
    local v = { run_child(which, srv) }
    local k = LEAK_PHASES + 1
    local heap, rss = { table.unpack(v, 1, k) }, { table.unpack(v, k + 1, 2 * k) }
    local max_heap, us = v[2 * k + 1], v[2 * k + 2]
    local heap_growth, rss_growth = {}, {}
    for i = 2, k do
      heap_growth[#heap_growth + 1] = (heap[i] - heap[i - 1]) * 1024 / LEAK_CALLS
      rss_growth[#rss_growth + 1] = (rss[i] - rss[i - 1]) * 1024 / LEAK_CALLS
    end
    local function series(list, fmt)
      local parts = {}
      for i, x in ipairs(list) do
        parts[i] = string.format(fmt, x)
      end
      return table.concat(parts, " -> ")
    end
    local hg, rg = median(heap_growth), median(rss_growth)
    out("  %s (%.0f µs/call; Lua heap up to %.0f KB between GCs)",
      which == "leak-sync" and "c:inboxes()" or "c:inboxes_async() + wait() + result()", us, max_heap)
    out("    Lua heap %s KB: %+.2f B/call (median of the phases)%s", series(heap, "%.1f"), hg,
      math.abs(hg) > 1 and "   <-- growth" or "")
    out("    RSS      %s kB: %+.2f B/call (median of the phases)%s", series(rss, "%d"), rg,
      rg > 64 and "   <-- growth" or "")
  end

  local hp, hk, hh = run_child("peak-heymarket", srv)
  local jp, jk, jh = run_child("peak-cjson", srv)
  if hp ~= hp or jp ~= jp then
    out("  peak RSS: /proc/self/clear_refs is not writable here, not measured")
  else
    -- plain libcurl keeps the body in one buffer grown by doubling from 4 KB
    local bytes = #fetch_body(srv.http .. BIG_1M, srv.key)
    local cap = 4096
    while cap < bytes do
      cap = cap * 2
    end
    local base_kb = jp + cap / 1024
    out("  1 MB response, RSS increase over the call (fresh process each):")
    out("    heymarket c:get: %d KB peak, %d KB still resident with the result alive, Lua heap +%.0f KB",
      hp, hk, hh)
    out("    cjson decode:    %d KB peak, %d KB still resident with the result alive, Lua heap +%.0f KB",
      jp, jk, jh)
    out("    baseline = cjson peak + libcurl's %d KB body buffer = %d KB -> ratio %.2f",
      cap // 1024, base_kb, hp / base_kb)
  end
end

local srv
local ok, err = xpcall(function()
  srv = fixture.start()
  main(srv)
end, debug.traceback)
if srv then
  pcall(srv.stop, srv)
end
if not ok then
  io.stderr:write("bench failed: ", tostring(err), "\n")
  os.exit(1)
end

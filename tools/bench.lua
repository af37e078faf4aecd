-- `make bench`: heymarket's speed and memory as ratios against a floor and
-- against the libraries a user would pick instead, all measured in the same
-- run against the fake API (spec/support/fixture.lua) on a real local nginx.
-- Nothing here asserts a time: it reports, and writes BENCHMARKS.md.
--
--   lua5.4 tools/bench.lua     (make bench builds the modules and the floors first)
--
-- The floor: build/bench/<lua>/floor.so (tools/bench_baseline.c), a C module
-- run inside the same interpreter as heymarket: one reused libcurl easy
-- handle, its body decoded by cjson.new().decode; for requests in flight, a
-- curl multi handle decoding each body as its transfer completes.
-- The peers: Debian's lua-curl (luacurl 0.3, packaged for the 5.1 ABI only, so
-- LuaJIT) with one reused handle + cjson, and LuaSocket's socket.http + cjson.
--
-- Every measurement is a fresh process (tools/bench_child.lua)
-- pinned to CPU 0, while this script and nginx sit on CPU 1. In every round
-- each case runs every contestant once, in an order that alternates between
-- rounds; a ratio is taken within a round, and the table shows medians and
-- the range over the rounds.
--
-- Environment:
--   HEYMARKET_BENCH_ROUNDS   rounds (default 11)
--   HEYMARKET_BENCH_QUICK=1  a short run that only shows the bench still works
--                            (.ci/run): one round, few calls, no memory phases;
--                            writes build/bench/BENCHMARKS.quick.md
--   HEYMARKET_BENCH_OUT      where to write the report (default BENCHMARKS.md)
--   HEYMARKET_BENCH_BUILD    load heymarket from this build folder instead of build/
--   HEYMARKET_BENCH_COMPARE  also run heymarket from this build folder (an older
--                            commit's build/) as a contestant, "heymarket@compare":
--                            what a change bought, measured in the same rounds
--
-- A child mode for the memory-growth phases:
--   lua5.4 tools/bench.lua --child leak-sync|leak-async BASE_URL KEY

package.path = "./?.lua;" .. package.path
package.cpath = "build/lua5.4/?.so;" .. package.cpath

local socket = require("socket")

local QUICK = os.getenv("HEYMARKET_BENCH_QUICK") == "1"
local ROUNDS = math.max(1, math.floor(tonumber(os.getenv("HEYMARKET_BENCH_ROUNDS") or "")
  or (QUICK and 1 or 11)))
local OUT = os.getenv("HEYMARKET_BENCH_OUT")
  or (QUICK and "build/bench/BENCHMARKS.quick.md" or "BENCHMARKS.md")
local LUAS = { "lua5.4", "luajit" }
local COMPARE = os.getenv("HEYMARKET_BENCH_COMPARE")
local BIG_PATH = "/t/many/10000/v1/inboxes"
local LEAK_CALLS = 5000
local LEAK_PHASES = 4

local now = socket.gettime

---------------------------------------------------------------------------
-- Helpers
---------------------------------------------------------------------------

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function capture(cmd)
  local p = io.popen(cmd, "r")
  if not p then
    return nil
  end
  local text = p:read("a")
  local ok = p:close()
  return text, ok
end

local function first_line(cmd)
  local text = capture(cmd .. " 2>&1")
  return text and text:match("[^\n]*") or "?"
end

local function median(list)
  local t = table.move(list, 1, #list, 1, {})
  table.sort(t)
  local n = #t
  if n == 0 then
    return 0 / 0
  elseif n % 2 == 1 then
    return t[(n + 1) // 2]
  end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end

local function range(list)
  return math.min(table.unpack(list)), math.max(table.unpack(list))
end

local function full_gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

local function proc_status()
  local f = assert(io.open("/proc/self/status", "r"))
  local s = f:read("a")
  f:close()
  return { rss = tonumber(s:match("VmRSS:%s*(%d+)")) }
end

local function check(result, msg)
  if result == nil then
    error("call failed: " .. tostring(msg), 2)
  end
  return result
end

---------------------------------------------------------------------------
-- Child mode: memory growth over many calls on one client
---------------------------------------------------------------------------

-- Growth over LEAK_PHASES phases of LEAK_CALLS calls each on one client,
-- after LEAK_CALLS untimed ones, with a full GC before each reading: a leak
-- grows in every phase, a high-water mark at most once. Prints the Lua heap
-- (KB) and RSS (kB) readings, the largest heap seen in each phase (KB), and
-- µs/call.
--
-- The full GC runs in incremental mode, and the interpreter's mode is set
-- again after it. Forced in generational mode (Lua 5.4.4), it changed what
-- it measured: with requests (objects with finalizers) most of the garbage,
-- the collector afterwards let the heap grow further in each phase (over
-- twelve phases the largest seen reached 3.8 MB, now 0.8; RSS +85 B/call), while
-- the heap and malloc's bytes in use after each collection stayed flat.
-- Plain Lua tables with a __gc do the same, so the bench no longer forces
-- collections in that mode; a program making these calls without forcing
-- any stays flat in either mode (200,000 calls, BENCHMARKS.md).
local function leak_child(which, base, key)
  local c = require("heymarket").new({ api_key = key, base_url = base, max_retries = 0 })
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
  local heap, rss, peak = {}, {}, {}
  local function reading()
    local mode = collectgarbage("incremental")
    full_gc()
    collectgarbage(mode)
    heap[#heap + 1] = string.format("%.3f", collectgarbage("count"))
    rss[#rss + 1] = proc_status().rss
  end
  reading()
  local elapsed = 0
  for _ = 1, LEAK_PHASES do
    local w0, max_heap = now(), 0
    for i = 1, LEAK_CALLS do
      call()
      if i % 100 == 0 then
        max_heap = math.max(max_heap, collectgarbage("count"))
      end
    end
    elapsed = elapsed + now() - w0
    peak[#peak + 1] = string.format("%.0f", max_heap)
    reading()
  end
  c:close()
  print(table.concat(heap, " ") .. " " .. table.concat(rss, " ") .. " " .. table.concat(peak, " ")
    .. string.format(" %.2f", elapsed * 1e6 / (LEAK_CALLS * LEAK_PHASES)))
end

if arg and arg[1] == "--child" then
  leak_child(arg[2], arg[3], arg[4])
  os.exit(0)
end

---------------------------------------------------------------------------
-- Pinning
---------------------------------------------------------------------------

local function cpu_count()
  local n = tonumber((capture("nproc --all 2>/dev/null") or ""):match("%d+"))
  return n or 1
end

local PIN = cpu_count() >= 2 and (capture("command -v taskset") or ""):find("taskset") ~= nil
local CLIENT_PREFIX = PIN and "taskset -c 0 " or ""

-- This process (and so nginx, which it starts) moves to CPU 1.
local function pin_self()
  if not PIN then
    return
  end
  local f = assert(io.open("/proc/self/stat", "r"))
  local pid = f:read("a"):match("^(%d+)")
  f:close()
  local _, ok = capture("taskset -pc 1 " .. pid .. " >/dev/null 2>&1")
  if not ok then
    PIN, CLIENT_PREFIX = false, ""
  end
end

---------------------------------------------------------------------------
-- Running contestants
---------------------------------------------------------------------------

-- Runs one measurement; returns { wall, cpu, items_or_bytes, hwm_kb }.
local function run(cmd)
  local text, ok = capture(CLIENT_PREFIX .. cmd .. " 2>&1")
  local wall, cpu_s, count, hwm = (text or ""):match("^(%S+) (%S+) (%d+) (%-?%d+)")
  if not ok or not wall then
    error("bench run failed: " .. cmd .. "\n" .. tostring(text), 0)
  end
  return { wall = tonumber(wall), cpu = tonumber(cpu_s), count = tonumber(count), hwm = tonumber(hwm) }
end

local function has_module(lua, name)
  local _, ok = capture(string.format("%s -e %s >/dev/null 2>&1", lua,
    shell_quote("require('" .. name .. "')")))
  return ok
end

-- The contestants of a case for one Lua: name -> command maker.
local function contestants(srv, lua, case, maxconn)
  local function child(name, conns)
    return string.format("%s tools/bench_child.lua %s %s %s %s %d %d %d", lua, name,
      shell_quote(srv.http), shell_quote(case.path), shell_quote(srv.key), case.n, case.p,
      conns or 0)
  end
  local list = { { name = "floor", cmd = child("floor", maxconn) } }
  list[#list + 1] = { name = "heymarket", cmd = child("heymarket") }
  if COMPARE then
    list[#list + 1] = { name = "heymarket@compare",
      cmd = "env HEYMARKET_BENCH_BUILD=" .. shell_quote(COMPARE) .. " " .. child("heymarket") }
  end
  if case.p > 1 then
    -- not a peer: the floor driven through libcurl's socket interface
    list[#list + 1] = { name = "sockets", cmd = child("sockets", maxconn) }
  end
  if case.p == 1 then
    -- not a peer: the told floor, the contract's work told where (bench_child.lua)
    list[#list + 1] = { name = "told", cmd = child("told") }
    if has_module(lua, "curl") then
      list[#list + 1] = { name = "lua-curl", cmd = child("luacurl") }
    end
    list[#list + 1] = { name = "luasocket", cmd = child("luasocket") }
  end
  return list
end

-- Every round runs each contestant once (the order alternating between
-- rounds); returns per-contestant samples and per-round ratios to the floor.
local function bench_case(srv, lua, case, maxconn)
  local list = contestants(srv, lua, case, maxconn)
  local samples = {}
  for _, c in ipairs(list) do
    samples[c.name] = { rate = {}, cpu_us = {}, hwm = {}, vs_floor = {}, cpu_vs_floor = {}, vs = {} }
  end
  for round = 1, ROUNDS do
    local got = {}
    local first, last, step = 1, #list, 1
    if round % 2 == 0 then
      first, last, step = #list, 1, -1
    end
    for i = first, last, step do
      local c = list[i]
      local r = run(c.cmd)
      if r.count ~= case.items then
        error(string.format("%s under %s returned %d items for %s, expected %d", c.name, lua,
          r.count, case.path, case.items), 0)
      end
      got[c.name] = r
    end
    for name, r in pairs(got) do
      local s = samples[name]
      s.rate[#s.rate + 1] = case.n / r.wall
      s.cpu_us[#s.cpu_us + 1] = r.cpu * 1e6 / case.n
      s.hwm[#s.hwm + 1] = r.hwm
      s.vs_floor[#s.vs_floor + 1] = got.floor.wall / r.wall
      s.cpu_vs_floor[#s.cpu_vs_floor + 1] = got.floor.cpu / r.cpu
    end
    -- heymarket (and the told floor) against each peer, in the same round
    for _, who in ipairs({ "heymarket", "told" }) do
      if got[who] then
        local vs = samples[who].vs
        for name, r in pairs(got) do
          vs[name] = vs[name] or {}
          table.insert(vs[name], r.wall / got[who].wall)
        end
      end
    end
  end
  local rows, by_name = {}, {}
  for _, c in ipairs(list) do
    local s = samples[c.name]
    local lo, hi = range(s.vs_floor)
    rows[#rows + 1] = {
      name = c.name, rate = median(s.rate), cpu_us = median(s.cpu_us), hwm = median(s.hwm),
      ratio = median(s.vs_floor), lo = lo, hi = hi, cpu_ratio = median(s.cpu_vs_floor),
    }
    by_name[c.name] = rows[#rows]
  end
  local vs, bound = {}, nil
  for name, list_ in pairs(samples.heymarket.vs) do
    if name ~= "heymarket" and name ~= "floor" then
      local lo, hi = range(list_)
      if name == "told" or name == "sockets" then
        bound = { ratio = median(list_), lo = lo, hi = hi }
      else
        vs[name] = { ratio = median(list_), lo = lo, hi = hi }
      end
    end
  end
  local told_vs = {}
  if samples.told then
    for name, list_ in pairs(samples.told.vs) do
      if vs[name] then
        local lo, hi = range(list_)
        told_vs[name] = { ratio = median(list_), lo = lo, hi = hi }
      end
    end
  end
  return { rows = rows, by_name = by_name, vs = vs, bound = bound, told_vs = told_vs }
end

-- Runs `tools/bench.lua --child which` (lua5.4, pinned like the contestants) and
-- returns its numbers: LEAK_PHASES + 1 heap and as many RSS readings, each phase's
-- largest heap, and µs/call.
local function run_leak(which, srv)
  local cmd = string.format("%slua5.4 tools/bench.lua --child %s %s %s", CLIENT_PREFIX, which,
    shell_quote(srv.http), shell_quote(srv.key))
  local text, ok = capture(cmd)
  local nums = {}
  for w in (text or ""):gmatch("%S+") do
    nums[#nums + 1] = tonumber(w)
  end
  if not ok or #nums ~= 3 * LEAK_PHASES + 3 then
    error("child failed: " .. cmd .. "\n" .. tostring(text), 0)
  end
  return nums
end

-- heymarket's default connection cap per host, which the multi floor copies:
-- 8 where the build knows max_connections, else none (0).
local function default_maxconn(srv)
  local ok = pcall(require("heymarket").new,
    { api_key = srv.key, base_url = srv.http, max_connections = 8 })
  return ok and 8 or 0
end

---------------------------------------------------------------------------
-- Report
---------------------------------------------------------------------------

local lines = {}

local function out(fmt, ...)
  local s = select("#", ...) > 0 and string.format(fmt, ...) or fmt
  lines[#lines + 1] = s
  io.write(s, "\n")
  io.flush()
end

local function machine()
  local model = first_line("grep -m1 'model name' /proc/cpuinfo"):gsub("^model name%s*:%s*", "")
  local load = first_line("cat /proc/loadavg")
  return string.format("%s, %d CPUs, %s; load average at start: %s", model, cpu_count(),
    first_line("uname -srm"), load:match("^(%S+ %S+ %S+)") or load)
end

local function versions()
  local cjson = require("cjson")
  return table.concat({
    "heymarket " .. require("heymarket")._VERSION .. " ("
      .. (os.getenv("HEYMARKET_BENCH_BUILD") and ("build from " .. os.getenv("HEYMARKET_BENCH_BUILD"))
        or first_line("git describe --always --dirty 2>/dev/null")) .. ")",
    first_line("lua5.4 -v"):match("^(Lua %S+)") or "lua5.4 ?",
    first_line("luajit -v"):match("^(LuaJIT %S+)") or "luajit ?",
    first_line("curl-config --version"),
    "lua-cjson " .. tostring(cjson._VERSION or "?"),
    "LuaSocket " .. (tostring(socket._VERSION or "?"):gsub("^LuaSocket ", "")),
    "lua-curl " .. first_line("dpkg-query -W -f='${Version}' lua-curl"),
    (first_line("nginx -v"):gsub("^nginx version: ", "")),
  }, ", ")
end

local function mb(kb)
  return string.format("%.1f", kb / 1024)
end

local function fmt_ratio(r)
  return string.format("%.2f (%.2f–%.2f)", r.ratio, r.lo, r.hi)
end

local targets = {}
-- info: a line that is not a target itself, shown in italics
local function target(what, measured, goal, met, info)
  targets[#targets + 1] = { what = what, measured = measured, goal = goal, met = met, info = info }
end

local function main(srv)
  for _, lua in ipairs(LUAS) do
    local so = io.open("build/bench/" .. lua .. "/floor.so", "rb")
    if not so then
      error("build/bench/" .. lua .. "/floor.so is missing: run `make bench`", 0)
    end
    so:close()
  end
  local maxconn = default_maxconn(srv)
  local small_n, big_n = QUICK and 50 or 4000, QUICK and 2 or 20
  local blocking = {
    { label = "one inbox (220 B)", key = "small", path = "/v1/inboxes", n = small_n, p = 1, items = 1,
      goal = 0.97 },
    { label = "10,000 inboxes (2.3 MB)", key = "big", path = BIG_PATH, n = big_n, p = 1,
      items = 10000, goal = { ["lua5.4"] = 0.92, luajit = 0.95 } },
  }
  local inflight = {
    { label = "100 in flight", path = "/v1/inboxes", p = 100, n = QUICK and 100 or 2000, items = 1,
      goal = 0.9 },
    { label = "1,000 in flight", path = "/v1/inboxes", p = 1000, n = QUICK and 1000 or 5000,
      items = 1, goal = 0.8 },
  }

  local t0 = now()
  out("<!-- bench:begin (written by `make bench`; edits between these markers are overwritten) -->")
  out("")
  out("## Latest run")
  out("")
  out("- Command: `%s`", QUICK and "HEYMARKET_BENCH_QUICK=1 make bench" or "make bench")
  out("- Date: %s", os.date("!%Y-%m-%d %H:%M UTC"))
  out("- Machine: %s", machine())
  out("- Versions: %s", versions())
  out("- Method: %d round(s); each contestant is a fresh process %s; the order of the"
    .. " contestants alternates between rounds; ratios are taken within a round (median, and"
    .. " the range over the rounds in brackets). Ratios are calls/s over the floor's calls/s:"
    .. " above 1 is faster than the floor.", ROUNDS,
    PIN and "pinned to CPU 0 while nginx is pinned to CPU 1 (`taskset`)" or "(not pinned: no taskset or one CPU)")
  out("- The floor (`tools/bench_baseline.c`, a C module loaded into the same interpreter, so the"
    .. " same Lua build, state and GC mode): one reused libcurl easy handle, the body handed to"
    .. " `cjson.new().decode`; for requests in flight a curl multi handle%s decoding each body as"
    .. " it completes.",
    maxconn > 0 and string.format(" capped at %d connections per host like heymarket's default", maxconn)
      or " (no connection cap, like this heymarket build)")
  out("- *told*, the told floor (blocking calls only; not a peer, not a target): the floor sending"
    .. " heymarket's User-Agent, its result then handed to `floor.told`, which is told where an"
    .. " inbox's numbers and nulls are (`id`, `team`, `members`; `forward_number`) and makes the whole"
    .. " numbers integers (Lua 5.3+) and drops the null members, as the contract asks, without"
    .. " searching. lua-cjson 2.1.0 makes every number a float, so on 5.3+ no client on it can"
    .. " return the contract's integers for less: there the told floor is a lower bound. Nulls can"
    .. " be dropped for less before decoding (heymarket blanks them in the text on 5.1, 5.2 and"
    .. " LuaJIT), so on LuaJIT it is a reference, not a bound.")
  out("- *sockets* (requests in flight only; not a peer, not a target): the floor's multi handle"
    .. " driven through libcurl's socket interface (the sockets and timer libcurl asks for, polled,"
    .. " then `curl_multi_socket_action`), as heymarket drives it so that host event loops can,"
    .. " instead of `curl_multi_perform` and `curl_multi_poll`.")
  out("")

  local results = {}
  -- Run each case under each Lua, one table row per contestant; the results
  -- are kept by case[key] .. lua for the targets below.
  local function run_cases(cases, key)
    for _, case in ipairs(cases) do
      for _, lua in ipairs(LUAS) do
        local r = bench_case(srv, lua, case, maxconn)
        results[case[key] .. lua] = r
        for _, row in ipairs(r.rows) do
          out("| %s | %s | %s | %.0f | %.1f | %s | %s | %.2f |", case.label, lua, row.name, row.rate,
            row.cpu_us, mb(row.hwm), row.name == "floor" and "1" or fmt_ratio(row), row.cpu_ratio)
        end
      end
    end
    out("")
  end

  out("### Blocking calls, one after another on one client")
  out("")
  out("| case | Lua | contestant | calls/s | CPU µs/call | peak RSS MB | × floor calls/s | × floor CPU |")
  out("| --- | --- | --- | ---: | ---: | ---: | --- | ---: |")
  run_cases(blocking, "key")

  out("### Requests in flight on one client (`get_async` ×P, then `wait()` + `result()` on each)")
  out("")
  out("| case | Lua | contestant | requests/s | CPU µs/request | peak RSS MB | × floor | × floor CPU |")
  out("| --- | --- | --- | ---: | ---: | ---: | --- | ---: |")
  run_cases(inflight, "label")

  -- Targets (issue 8)
  for _, case in ipairs(blocking) do
    for _, lua in ipairs(LUAS) do
      local r = results[case.key .. lua]
      local goal = type(case.goal) == "table" and case.goal[lua] or case.goal
      local hm, floor, told = r.by_name.heymarket, r.by_name.floor, r.by_name.told
      target(string.format("%s, %s: calls/s × floor", case.label, lua),
        fmt_ratio(hm) .. string.format("; CPU %.2f", hm.cpu_ratio),
        string.format("≥ %.2f", goal), hm.ratio >= goal)
      -- Not a target: can it be met at all? The told floor against the same
      -- goal, and heymarket against it.
      target(string.format("%s, %s: *the told floor*: calls/s × floor", case.label, lua),
        fmt_ratio(told) .. string.format("; CPU %.2f", told.cpu_ratio),
        string.format("≥ %.2f", goal), told.ratio >= goal, true)
      target(string.format("%s, %s: *heymarket × the told floor*", case.label, lua),
        fmt_ratio(r.bound), "—", nil, true)
      if case.key == "big" then
        target(string.format("%s, %s: peak RSS", case.label, lua),
          string.format("%s MB vs floor %s MB", mb(hm.hwm), mb(floor.hwm)), "≤ floor",
          hm.hwm <= floor.hwm)
      end
      for name, v in pairs(r.vs) do
        target(string.format("%s, %s: heymarket calls/s × %s", case.label, lua, name),
          fmt_ratio(v), "> 1", v.ratio > 1)
        if r.told_vs[name] then
          target(string.format("%s, %s: *the told floor × %s*", case.label, lua, name),
            fmt_ratio(r.told_vs[name]), "> 1", r.told_vs[name].ratio > 1, true)
        end
      end
    end
  end
  for _, case in ipairs(inflight) do
    for _, lua in ipairs(LUAS) do
      local r = results[case.label .. lua]
      local hm, sockets = r.by_name.heymarket, r.by_name.sockets
      target(string.format("%s, %s: requests/s × floor", case.label, lua),
        fmt_ratio(hm) .. string.format("; CPU %.2f", hm.cpu_ratio),
        string.format("≥ %.2f", case.goal), hm.ratio >= case.goal)
      target(string.format("%s, %s: *the floor through libcurl's socket interface*: × floor",
        case.label, lua), fmt_ratio(sockets), string.format("≥ %.2f", case.goal),
        sockets.ratio >= case.goal, true)
      target(string.format("%s, %s: *heymarket × it*", case.label, lua), fmt_ratio(r.bound), "—",
        nil, true)
      for name, v in pairs(r.vs) do
        target(string.format("%s, %s: heymarket requests/s × %s", case.label, lua, name),
          fmt_ratio(v), "> 1", v.ratio > 1)
      end
    end
  end
  out("### Targets (issue 8)")
  out("")
  out("| target | measured | goal | met |")
  out("| --- | --- | --- | --- |")
  for _, t in ipairs(targets) do
    local met = t.met and "yes" or "**no**"
    if t.info then
      met = t.met == nil and "—" or t.met and "*yes*" or "*no*"
    end
    out("| %s | %s | %s | %s |", t.what, t.measured, t.goal, met)
  end
  out("")

  if not QUICK then
    out("### Memory growth (Lua 5.4, %d phases of %d calls after %d untimed ones, a full GC in"
      .. " incremental mode before each reading)", LEAK_PHASES, LEAK_CALLS, LEAK_CALLS)
    out("")
    out("| calls | µs/call | Lua heap KB per phase | B/call | RSS kB per phase | B/call"
      .. " | largest Lua heap in each phase, KB |")
    out("| --- | ---: | --- | ---: | --- | ---: | --- |")
    for _, which in ipairs({ "leak-sync", "leak-async" }) do
      local v = run_leak(which, srv)
      local k = LEAK_PHASES + 1
      local heap, rss = { table.unpack(v, 1, k) }, { table.unpack(v, k + 1, 2 * k) }
      local peak = { table.unpack(v, 2 * k + 1, 2 * k + LEAK_PHASES) }
      local us = v[2 * k + LEAK_PHASES + 1]
      local hg, rg = {}, {}
      for i = 2, k do
        hg[#hg + 1] = (heap[i] - heap[i - 1]) * 1024 / LEAK_CALLS
        rg[#rg + 1] = (rss[i] - rss[i - 1]) * 1024 / LEAK_CALLS
      end
      local function series(list, fmt)
        local parts = {}
        for i, x in ipairs(list) do
          parts[i] = string.format(fmt, x)
        end
        return table.concat(parts, " → ")
      end
      out("| %s | %.0f | %s | %+.2f | %s | %+.2f | %s |",
        which == "leak-sync" and "`c:inboxes()`" or "`inboxes_async()` + `wait()` + `result()`",
        us, series(heap, "%.1f"), median(hg), series(rss, "%d"), median(rg), series(peak, "%d"))
    end
    out("")
  end

  if io.open("tools/bench_hosts.lua", "r") then
    local text, ok = capture("make -s --no-print-directory bench-hosts 2>&1")
    if ok then
      -- the markdown only: from its first heading on
      out("%s", ((text:match("\n(#.*)$") or text:match("^#.*$") or text):gsub("%s+$", "")))
    else
      out("### Hosts\n\n`make bench-hosts` failed:\n\n```\n%s\n```", text or "")
    end
    out("")
  end

  out("Load average at the end: %s; the whole run took %.0f s. The machine was shared with other"
    .. " work, so single numbers swing; the ratios within a round are what to read.",
    (first_line("cat /proc/loadavg"):match("^(%S+ %S+ %S+)")), now() - t0)
  out("")
  out("<!-- bench:end -->")
end

-- Replace the generated part of OUT, keeping what was written by hand around it.
local function write_report()
  local body = table.concat(lines, "\n")
  local f = io.open(OUT, "r")
  local old = f and f:read("a")
  if f then
    f:close()
  end
  local text
  local b, e
  if old then
    b, e = old:find("<!%-%- bench:begin.-<!%-%- bench:end %-%->")
  end
  if b then
    text = old:sub(1, b - 1) .. body .. old:sub(e + 1)
  else
    text = "# Benchmarks\n\n" .. body .. "\n"
  end
  f = assert(io.open(OUT, "w"))
  f:write(text)
  f:close()
  io.write("wrote ", OUT, "\n")
end

pin_self()
require("spec.support.fixture").serve({ http = "keepalive_requests 1000000;", worker_connections = 4096 },
  main, "bench")
write_report()

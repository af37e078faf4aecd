-- Issue 9's targets for the host event loops, measured against the fake API
-- (spec/support/fixture.lua) and printed as a markdown section on stdout:
--
--   heymarket.nvim   added latency per request over a blocking call to the
--                    same server (headless Neovim), and what wakes it while a
--                    request waits 1 s on the network
--   heymarket.resty  added latency over a blocking call in the same nginx
--                    worker against servers of 20, 35, 50 and 100 ms; CPU of
--                    1,000 requests waiting in one worker against one blocking
--                    curl-multi wait for the same 1,000 (standalone LuaJIT)
--
-- Run from the checkout after `make LUA=luajit`: lua5.4 tools/bench_hosts.lua
-- (or `make bench-hosts`). The measured processes are pinned to CPU 0 and the
-- fake API to CPU 1 (taskset); figures are medians of alternated pairs.
package.path = "./?.lua;" .. package.path

local fixture = require("spec.support.fixture")
local util = require("spec.support.util")

local root = util.root
local build = root .. "/build/luajit"
local shell_quote = util.shell_quote
local ROUNDS = tonumber(os.getenv("BENCH_ROUNDS") or "") or 21
local MANY = tonumber(os.getenv("BENCH_MANY") or "") or 1000
local CPU_PAIRS = tonumber(os.getenv("BENCH_CPU_PAIRS") or "") or 7

assert(util.read_file(build .. "/heymarket.so"), "run `make LUA=luajit` first")

local function median(list)
  local t = {}
  for i, v in ipairs(list) do t[i] = v end
  table.sort(t)
  local n = #t
  if n == 0 then return 0 / 0 end
  if n % 2 == 1 then return t[(n + 1) / 2] end
  return (t[n / 2] + t[n / 2 + 1]) / 2
end

local function run(cmd)
  local out = util.capture(cmd .. " 2>&1")
  return out or ""
end

local function pin(pid, cpu)
  run("for p in " .. pid .. " $(pgrep -P " .. pid .. "); do taskset -acp " .. cpu
    .. " $p >/dev/null; done")
end

-- the fake API holds all of MANY's connections at once
local srv = fixture.start({ worker_connections = MANY + 1024,
  main = "worker_rlimit_nofile " .. (MANY + 1024) * 2 .. ";" })
local ok, err = pcall(function()
  local master = util.read_file(srv.prefix .. "/logs/nginx.pid")
  if master then pin(master:match("%d+"), 1) end

  local sections = {}
  local function row(what, target, result, verdict)
    sections[#sections + 1] = string.format("| %s | %s | %s | %s |", what, target, result,
      verdict == nil and "" or (verdict and "met" or "**not met**"))
  end

  -- ---- Neovim ---------------------------------------------------------------
  local script, out = os.tmpname(), os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write(string.format([[
package.cpath = %q .. package.cpath
package.path = %q .. package.path
local uv = vim.uv or vim.loop
local heymarket = require("heymarket")
local hm = require("heymarket.nvim")
local R = { blocking = {}, async = {} }
local function client(ms)
  return heymarket.new{ api_key = %q, base_url = %q .. "/t/sleep/" .. ms, max_retries = 0 }
end
local quick = client(20)
local methods = debug.getmetatable(quick).__index
local drive, drives = methods.drive, 0
methods.drive = function(...) drives = drives + 1 return drive(...) end
-- count heymarket.nvim's timer and poll callbacks
local fires = { timer = 0, poll = 0 }
local tcp = uv.new_tcp() tcp:bind("127.0.0.1", 0)
for _, h in ipairs({ uv.new_socket_poll(tcp:fileno()), uv.new_timer() }) do
  local m = debug.getmetatable(h).__index
  local start = m.start
  if not m.__counted then
    m.__counted = true
    m.start = function(self, a, b, c)
      if not debug.getinfo(2, "S").source:match("heymarket/nvim%%.lua$") then
        return start(self, a, b, c)
      end
      if type(b) == "function" then
        return start(self, a, function(...) fires.poll = fires.poll + 1 return b(...) end)
      end
      return start(self, a, b, function(...) fires.timer = fires.timer + 1 return c(...) end)
    end
  end
  h:close()
end
tcp:close()
local function finish()
  local out = assert(io.open(%q, "w"))
  local function list(t) return "{" .. table.concat(t, ",") .. "}" end
  out:write("return { blocking = ", list(R.blocking), ", async = ", list(R.async),
    ", wait_drives = ", R.wait_drives, ", wait_timer = ", R.wait_timer,
    ", wait_poll = ", R.wait_poll, " }\n")
  out:close()
  vim.schedule(function() vim.cmd("qall!") end)
end
local i = 0
local function step()
  i = i + 1
  if i > %d then
    -- one request waiting 1 s: what wakes heymarket.nvim meanwhile
    drives, fires.timer, fires.poll = 0, 0, 0
    hm.team(client(1000), function()
      R.wait_drives, R.wait_timer, R.wait_poll = drives, fires.timer, fires.poll
      finish()
    end)
    return
  end
  local t0 = uv.hrtime()
  assert(quick:team())
  R.blocking[#R.blocking + 1] = (uv.hrtime() - t0) / 1e6
  local t1 = uv.hrtime()
  hm.team(quick, function(team, message)
    assert(team, message)
    R.async[#R.async + 1] = (uv.hrtime() - t1) / 1e6
    vim.defer_fn(step, 0)
  end)
end
step()
]], build .. "/?.so;", root .. "/src/?.lua;" .. root .. "/src/?/init.lua;", srv.key, srv.http,
    out, ROUNDS))
  f:close()
  run("timeout -s KILL 120 taskset -c 0 nvim --headless -n -u NONE -i NONE -c "
    .. shell_quote("luafile " .. script) .. " </dev/null")
  local chunk = loadstring or load
  local nv = chunk(util.read_file(out) or "return nil")()
  os.remove(script)
  os.remove(out)
  sections[#sections + 1] = "| measure | target | result | |"
  sections[#sections + 1] = "| --- | --- | --- | --- |"
  if nv then
    local added = median(nv.async) - median(nv.blocking)
    row("heymarket.nvim: added latency per request (20 ms server, median of "
      .. #nv.async .. ")", "< 1 ms", string.format("%.2f ms (%.2f vs %.2f ms blocking)",
        added, median(nv.async), median(nv.blocking)), added < 1)
    row("heymarket.nvim: wake-ups while one request waits 1 s", "socket events and libcurl's timers only",
      string.format("%d drive() calls: %d socket events, %d timer expiries",
        nv.wait_drives, nv.wait_poll, nv.wait_timer), nv.wait_drives <= 10)
  else
    row("heymarket.nvim", "", "Neovim gave no result", false)
  end

  -- ---- OpenResty ------------------------------------------------------------
  local app = [=[
    lua_package_cpath "]=] .. build .. [=[/?.so;;";
    lua_package_path "]=] .. root .. [=[/src/?.lua;;";
    init_by_lua_block {
      local ffi = require("ffi")
      ffi.cdef[[
        struct hm_timespec { long tv_sec; long tv_nsec; };
        int clock_gettime(int clk, struct hm_timespec *ts);
        struct hm_rusage { long ut_sec, ut_usec, st_sec, st_usec; long pad[14]; };
        int getrusage(int who, struct hm_rusage *usage);
      ]]
    }
    server {
      listen 127.0.0.1:${port1};
      location = /pid { content_by_lua_block { ngx.say(ngx.worker.pid()) } }
      location = /one {
        content_by_lua_block {
          local ffi = require("ffi")
          local heymarket, resty = require("heymarket"), require("heymarket.resty")
          local ts = ffi.new("struct hm_timespec")
          local function now() ffi.C.clock_gettime(1, ts) return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9 end
          CLIENTS = CLIENTS or {}
          local ms = ngx.var.arg_ms
          local c = CLIENTS[ms] or heymarket.new{ api_key = "]=] .. srv.key .. [=[",
            base_url = "]=] .. srv.http .. [=[/t/sleep/" .. ms, max_retries = 0 }
          CLIENTS[ms] = c
          local t0 = now()
          local v, message
          if ngx.var.arg_mode == "blocking" then v, message = c:team() else v, message = resty.team(c) end
          ngx.say(v and string.format("%.6f", (now() - t0) * 1000) or message)
        }
      }
      location = /many {
        content_by_lua_block {
          local ffi = require("ffi")
          local heymarket, resty = require("heymarket"), require("heymarket.resty")
          local n = tonumber(ngx.var.arg_n)
          local c = heymarket.new{ api_key = "]=] .. srv.key .. [=[", base_url = "]=] .. srv.http
            .. [=[/t/sleep/1000", max_retries = 0, max_connections = 1000, timeout = 60 }
          local ru = ffi.new("struct hm_rusage")
          local function cpu()
            ffi.C.getrusage(0, ru)
            return tonumber(ru.ut_sec + ru.st_sec) + tonumber(ru.ut_usec + ru.st_usec) / 1e6
          end
          local c0 = cpu()
          local threads, good = {}, 0
          for i = 1, n do threads[i] = ngx.thread.spawn(resty.team, c) end
          for i = 1, n do local _, v = ngx.thread.wait(threads[i]) if v then good = good + 1 end end
          local used = cpu() - c0
          c:close()
          ngx.say(string.format("%.6f %d", used, good))
        }
      }
    }
  ]=]
  local web = fixture.nginx({ http = app, main = "worker_rlimit_nofile " .. (MANY + 1024) * 2 .. ";" })
  local okw, errw = pcall(function()
    local port = web.ports[1]
    local function get(path)
      return run("curl -s --max-time 120 " .. shell_quote("http://127.0.0.1:" .. port .. path))
    end
    pin(get("/pid"):match("%d+"), 0)
    for _, ms in ipairs({ 20, 35, 50, 100 }) do
      local blocking, resty = {}, {}
      get("/one?mode=blocking&ms=" .. ms) -- warm: connection and client
      get("/one?mode=resty&ms=" .. ms)
      for _ = 1, ROUNDS do
        blocking[#blocking + 1] = tonumber(get("/one?mode=blocking&ms=" .. ms))
        resty[#resty + 1] = tonumber(get("/one?mode=resty&ms=" .. ms))
      end
      local added = median(resty) - median(blocking)
      row(string.format("heymarket.resty: added latency, %d ms server (median of %d)", ms, ROUNDS),
        "< 2 ms", string.format("%.2f ms (%.2f vs %.2f ms blocking)", added, median(resty),
          median(blocking)), added < 2)
    end
    -- the same requests, one blocking curl-multi wait in a standalone LuaJIT
    local base_cmd = "taskset -c 0 luajit -e " .. shell_quote(string.format([=[
      package.cpath = %q .. package.cpath
      local ffi = require("ffi")
      ffi.cdef[[ struct hm_rusage { long ut_sec, ut_usec, st_sec, st_usec; long pad[14]; };
                 int getrusage(int who, struct hm_rusage *usage); ]]
      local ru = ffi.new("struct hm_rusage")
      local function cpu()
        ffi.C.getrusage(0, ru)
        return tonumber(ru.ut_sec + ru.st_sec) + tonumber(ru.ut_usec + ru.st_usec) / 1e6
      end
      local c = require("heymarket").new{ api_key = %q, base_url = %q .. "/t/sleep/1000",
        max_retries = 0, max_connections = 1000, timeout = 60 }
      local c0 = cpu()
      local reqs, good = {}, 0
      for i = 1, %d do reqs[i] = c:team_async() end
      for i = 1, %d do reqs[i]:wait() if reqs[i]:result() then good = good + 1 end end
      print(string.format("%%.6f %%d", cpu() - c0, good))
    ]=], build .. "/?.so;", srv.key, srv.http, MANY, MANY))
    local used, bused, ratios, good, bgood, failed = {}, {}, {}, 0, 0, nil
    for pair = 1, CPU_PAIRS do -- alternated: which of the two goes first
      local u, g, printed
      if pair % 2 == 1 then
        u, g = get("/many?n=" .. MANY):match("^(%S+) (%d+)")
        printed = run(base_cmd)
      else
        printed = run(base_cmd)
        u, g = get("/many?n=" .. MANY):match("^(%S+) (%d+)")
      end
      local b, bg = printed:match("(%d+%.%d+) (%d+)")
      if not (u and b) then
        failed = printed
        break
      end
      used[#used + 1], bused[#bused + 1] = tonumber(u), tonumber(b)
      ratios[#ratios + 1] = tonumber(u) / tonumber(b)
      good, bgood = good + tonumber(g), bgood + tonumber(bg)
    end
    if not failed then
      -- the ratio within each pair, then their median: the machine's swings
      -- move both halves of a pair alike
      local ratio = median(ratios)
      table.sort(ratios)
      row(string.format("heymarket.resty: CPU of %d requests waiting 1 s in one worker "
        .. "(median of %d alternated pairs)", MANY, CPU_PAIRS), "<= 1.5 x one blocking wait",
        string.format("x %.2f (%.2f–%.2f); %.0f ms vs %.0f ms (medians); %d/%d and %d/%d answered",
          ratio, ratios[1], ratios[#ratios], median(used) * 1000, median(bused) * 1000,
          good, CPU_PAIRS * MANY, bgood, CPU_PAIRS * MANY),
        ratio <= 1.5)
    else
      row("heymarket.resty: CPU of waiting requests", "", "no figure: " .. tostring(failed), false)
    end
  end)
  web:stop()
  assert(okw, errw)

  print("## Host event loops")
  print()
  print("`lua5.4 tools/bench_hosts.lua` (`make bench-hosts`); Neovim " ..
    (run("nvim --version"):match("NVIM v([%d%.]+)") or "?") .. ", nginx with ngx_http_lua, "
    .. "measured processes on CPU 0, the fake API on CPU 1.")
  print()
  print(table.concat(sections, "\n"))
end)
srv:stop()
if not ok then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

-- One measured run of `make bench`, in a process of its own (tools/bench.lua
-- starts it, pinned to one CPU, under lua5.4 or luajit):
--
--   LUA tools/bench_child.lua CONTESTANT BASE_URL PATH KEY N P MAXCONN
--
-- CONTESTANT is one of
--   floor      tools/bench_baseline.c (build/bench/<lua>/floor.so): one reused
--              libcurl easy handle, the body decoded by cjson.new().decode;
--              when P > 1, a curl multi handle with P easy handles, each body
--              decoded as its transfer completes (MAXCONN connections per host)
--   heymarket  one client (default options): c:inboxes() (or c:get(PATH)) N
--              times when P is 1; else N / P batches of P get_async requests,
--              waited for in turn
--   sockets    (P > 1) the floor's multi handle driven through libcurl's socket
--              interface (CURLMOPT_SOCKETFUNCTION and TIMERFUNCTION, the sockets
--              polled, curl_multi_socket_action), as heymarket drives it so host
--              event loops can, instead of curl_multi_perform + curl_multi_poll
--   told       the floor sending heymarket's User-Agent, its result then given to
--              floor.told: told where the inboxes' numbers and nulls are, it makes
--              the whole numbers integers (5.3+) and drops the null members, as the
--              contract asks, without searching for them. On 5.3+, the least a
--              client on libcurl and lua-cjson 2.1.0 can do for the contract's
--              integers: a lower bound for heymarket (on LuaJIT a reference only:
--              nulls cost less blanked before decoding). Inbox arrays only; the
--              first result is checked
--   luacurl    Debian's lua-curl (luacurl 0.3, 5.1 ABI only): one reused easy
--              handle, the body collected in a table, then cjson.decode
--   luasocket  socket.http.request with an ltn12 table sink, then cjson.decode
--              (LuaSocket sends "Connection: close": a new connection per call)
--
-- One untimed call (or batch) first. Prints one line:
--   <wall seconds> <process CPU seconds> <items in the last result> <peak RSS kB>
-- Works under Lua 5.1-5.4 and LuaJIT.

package.path = "src/?.lua;src/?/init.lua;" .. package.path
local interpreter = jit and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
-- HEYMARKET_BENCH_BUILD: another build folder to load heymarket from (an
-- older commit's build/, to measure what a change bought).
package.cpath = (os.getenv("HEYMARKET_BENCH_BUILD") or "build") .. "/" .. interpreter .. "/?.so;"
  .. "build/bench/" .. interpreter .. "/?.so;" .. package.cpath

local which, base, path, key = arg[1], arg[2], arg[3], arg[4]
local n, p, maxconn = tonumber(arg[5]), tonumber(arg[6]), tonumber(arg[7])
if not (which and base and path and key and n and p and maxconn) or n % p ~= 0 then
  io.stderr:write("usage: bench_child.lua CONTESTANT BASE_URL PATH KEY N P MAXCONN\n")
  os.exit(2)
end

local now = require("socket.core").gettime

local function peak_rss_kb()
  local f = io.open("/proc/self/status", "r")
  if not f then
    return -1
  end
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or -1
end

local function check(result, msg)
  if result == nil then
    io.stderr:write(which, ": ", tostring(msg), "\n")
    os.exit(1)
  end
  return result
end

-- Each contestant: a function making one call (P = 1) or one batch of P.
local run

if which == "heymarket" then
  local heymarket = require("heymarket")
  local opts = { api_key = key, base_url = base, max_retries = 0 }
  if maxconn > 0 then
    opts.max_connections = maxconn
  end
  local ok, client = pcall(heymarket.new, opts)
  if not ok and tostring(client):find("unknown option", 1, true) then
    opts.max_connections = nil -- a build before max_connections: no limit
    client = heymarket.new(opts)
  elseif not ok then
    error(client, 0)
  end
  if p == 1 then
    if path == "/v1/inboxes" then
      run = function()
        return check(client:inboxes())
      end
    else
      run = function()
        return check(client:get(path))
      end
    end
  else
    local reqs = {}
    run = function()
      for i = 1, p do
        reqs[i] = client:get_async(path)
      end
      local last
      for i = 1, p do
        reqs[i]:wait()
        last = check(reqs[i]:result())
        reqs[i] = nil
      end
      return last
    end
  end
elseif which == "floor" then
  local floor = require("floor") -- tools/bench_baseline.c
  local decode = require("cjson").new().decode
  if p == 1 then
    local e = floor.easy(base .. path, key)
    run = function()
      return decode(e:get())
    end
  else
    local m = floor.multi(base .. path, key, p, maxconn, decode)
    run = function()
      return m:batch()
    end
  end
elseif which == "sockets" then
  -- the floor for requests in flight (P > 1), driven through libcurl's socket
  -- interface as heymarket drives it (so that host event loops can), instead
  -- of curl_multi_perform + curl_multi_poll
  local floor = require("floor")
  local m = floor.multi(base .. path, key, p, maxconn, require("cjson").new().decode, true)
  run = function()
    return m:batch()
  end
elseif which == "told" then
  local floor = require("floor")
  local cjson = require("cjson")
  local decode = cjson.new().decode
  -- heymarket's User-Agent, built the same way (src/heymarket.c)
  local hm_h = assert(io.open("src/hm.h", "r"))
  local version = hm_h:read("*a"):match('#define HM_VERSION "([^"]+)"')
  hm_h:close()
  local ua = string.format("heymarket-lua/%s (%s; libcurl/%s)", version,
    jit and jit.version or _VERSION, floor.curl_version())
  local e = floor.easy(base .. path, key, ua)
  -- an inbox (../shared/api): the keys holding numbers, and the one holding null
  local numbers, nulls = { "id", "team", "members" }, { "forward_number" }
  local told = floor.told
  run = function()
    return told(decode(e:get()), numbers, nulls)
  end
  -- Told wrong, it would be no bound: the first result must hold no whole
  -- float (5.3+) and no null anywhere.
  local function bad(v)
    if v == cjson.null then
      return "a null"
    elseif math.type and math.type(v) == "float" and v == math.floor(v) then
      return "a whole float"
    elseif type(v) == "table" then
      for _, x in pairs(v) do
        local why = bad(x)
        if why then
          return why
        end
      end
    end
  end
  local why = bad(run())
  if why then
    check(nil, "the result still holds " .. why)
  end
elseif which == "luacurl" then
  local curl = require("curl")
  local decode = require("cjson").decode
  local chunks, count = {}, 0
  local e = curl.easy_init()
  e:setopt(curl.OPT_URL, base .. path)
  e:setopt(curl.OPT_HTTPHEADER, { "Authorization: Bearer " .. key, "Accept: application/json" })
  e:setopt(curl.OPT_ACCEPT_ENCODING, "")
  e:setopt(curl.OPT_NOSIGNAL, 1)
  e:setopt(curl.OPT_WRITEFUNCTION, function(s, len) -- luacurl passes (data, length)
    count = count + 1
    chunks[count] = s
    return len
  end)
  run = function()
    for i = count, 1, -1 do
      chunks[i] = nil
    end
    count = 0
    local code, msg = e:perform()
    if code ~= 0 then
      check(nil, msg)
    end
    return decode(table.concat(chunks))
  end
elseif which == "luasocket" then
  local http = require("socket.http")
  local ltn12 = require("ltn12")
  local decode = require("cjson").decode
  local url = base .. path
  local headers = { authorization = "Bearer " .. key, accept = "application/json" }
  run = function()
    local chunks = {}
    local ok, code = http.request({ url = url, headers = headers, sink = ltn12.sink.table(chunks) })
    if not ok or code ~= 200 then
      check(nil, "HTTP " .. tostring(code))
    end
    return decode(table.concat(chunks))
  end
else
  io.stderr:write("unknown contestant ", which, "\n")
  os.exit(2)
end

-- Only the length is kept: like the floor, no result outlives its call.
local items = #run() -- untimed: connects, loads the decoder
collectgarbage("collect")
local w0, c0 = now(), os.clock()
for _ = 1, n / p do
  items = #run()
end
local wall, cpu = now() - w0, os.clock() - c0
io.write(string.format("%.9f %.9f %d %d\n", wall, cpu, items, peak_rss_kb()))

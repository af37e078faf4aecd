-- Instructions a call, by callgrind, for bench contestants whose Lua string
-- hashes are seeded alike (a diagnostic; `make bench` does not run it):
--
--   lua5.4 tools/callgrind_pair.lua [--lua L] [--path P] [--calls A,B] [--seeds S,...] WHO...
--
-- WHO is a contestant of tools/bench_child.lua (heymarket, told, floor, ...).
-- For each seed and contestant, callgrind runs the contestant's child twice,
-- making A and then B calls (after its untimed one), and the count a call is
-- the difference over B - A: what the process does once drops out. Every run
-- has time() fixed to the seed (tools/fixed_time.c, LD_PRELOAD), so runs with
-- one seed lay out lua-cjson's tables alike: with time() free, the count of a
-- 10,000-inbox call moves by about 1% from one process to the next. Lua also
-- mixes a stack address into the seed, which under valgrind moves with the
-- length of the arguments, so every child gets arguments of one length (the
-- counts zero-padded, the contestant's name padded by an argument the child
-- ignores). Take B - A of 15 or more on a large body: with 5, where the
-- collector's cycles begin and end in the window moved the two floors' malloc
-- and free counts by ~1%.
--
-- Defaults: --lua lua5.4, --path /t/many/10000/v1/inboxes, --calls 2,17,
-- --seeds 1000,2000. The callgrind files stay in build/bench/callgrind/ for
-- callgrind_annotate. Needs valgrind, cc, and `make bench`'s builds (run
-- first: make LUA=lua5.4 all build/bench/lua5.4/floor.so); heymarket comes
-- from HEYMARKET_BENCH_BUILD when that is set, as in tools/bench_child.lua.
-- The fixed time() would fail certificate checks: the fixture is plain HTTP.

package.path = "./?.lua;./?/init.lua;" .. package.path

local function usage(msg)
  io.stderr:write("callgrind_pair: ", msg, "\n",
    "usage: lua5.4 tools/callgrind_pair.lua [--lua L] [--path P] [--calls A,B] [--seeds S,...] WHO...\n")
  os.exit(2)
end

local function numbers(s, what)
  local list = {}
  for n in tostring(s):gmatch("[^,]+") do
    local v = tonumber(n)
    if not v or v < 0 or v ~= math.floor(v) then
      usage(what .. " takes whole numbers separated by commas, not " .. tostring(s))
    end
    list[#list + 1] = v
  end
  return list
end

local opts = { lua = "lua5.4", path = "/t/many/10000/v1/inboxes", calls = { 2, 17 }, seeds = { 1000, 2000 } }
local who = {}
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--lua" or a == "--path" then
      opts[a:sub(3)] = arg[i + 1] or usage(a .. " needs a value")
      i = i + 2
    elseif a == "--calls" or a == "--seeds" then
      opts[a:sub(3)] = numbers(arg[i + 1] or usage(a .. " needs a value"), a)
      i = i + 2
    elseif a:sub(1, 2) == "--" then
      usage("unknown option " .. a)
    else
      who[#who + 1] = a
      i = i + 1
    end
  end
end
if #who == 0 then
  usage("name at least one contestant")
end
for _, name in ipairs(who) do
  if #name > 31 then
    usage("contestant names are at most 31 bytes: " .. name)
  end
end
if #opts.calls ~= 2 or opts.calls[2] <= opts.calls[1] then
  usage("--calls takes two counts, the second larger")
end
if #opts.seeds == 0 then
  usage("--seeds takes at least one seed")
end

local util = require("spec.support.util")
local shell_quote = util.shell_quote

local function run(cmd)
  local ok, code = util.execute(cmd)
  return ok, "exit status " .. tostring(code)
end

local DIR = "build/bench/callgrind"
local SHIM = "build/bench/fixed_time.so"
assert(run("mkdir -p " .. DIR))
assert(run("cc -std=c99 -O2 -Wall -Wextra -Werror -fPIC -shared -o " .. SHIM .. " tools/fixed_time.c"),
  "could not build " .. SHIM)
for _, f in ipairs({ "build/" .. opts.lua .. "/heymarket.so", "build/bench/" .. opts.lua .. "/floor.so" }) do
  local h = io.open(f, "r")
  if not h then
    usage(f .. " is missing: make LUA=" .. opts.lua .. " all build/bench/" .. opts.lua .. "/floor.so")
  end
  h:close()
end
local PIN = run("command -v taskset >/dev/null 2>&1") and "taskset -c 0 " or ""

-- The total instructions callgrind counted in one output file.
local function totals(file)
  local text = assert(util.read_file(file), "cannot read " .. file)
  local n = text:match("\ntotals: (%d+)") or text:match("\nsummary: (%d+)")
  return assert(tonumber(n), "no totals in " .. file)
end

local function measure(srv, name, seed)
  local count = {}
  for _, n in ipairs(opts.calls) do
    local out = string.format("%s/%s.%s.%d.%d", DIR, opts.lua, name, seed, n)
    local cmd = string.format(
      "LD_PRELOAD=%s HEYMARKET_FIXED_TIME=%d %svalgrind --tool=callgrind --callgrind-out-file=%s "
        .. "%s tools/bench_child.lua %s %s %s %s %09d 1 8 %s >%s.log 2>&1",
      shell_quote(util.root .. "/" .. SHIM), seed, PIN, shell_quote(out), opts.lua, shell_quote(name),
      shell_quote(srv.http), shell_quote(opts.path), shell_quote(srv.key), n,
      string.rep("x", 32 - #name), shell_quote(out))
    local ok, why = run(cmd)
    if not ok then
      error(string.format("%s (seed %d, %d calls) failed (%s): see %s.log", name, seed, n, why, out))
    end
    count[#count + 1] = totals(out)
  end
  return (count[2] - count[1]) / (opts.calls[2] - opts.calls[1])
end

local function report(srv)
  io.write(string.format("%s, %s, calls %d..%d; instructions a call, and x the first contestant\n\n",
    opts.lua, opts.path, opts.calls[1], opts.calls[2]))
  io.write("| seed | " .. table.concat(who, " | ") .. " |\n")
  io.write("| ---: |" .. string.rep(" ---: |", #who) .. "\n")
  for _, seed in ipairs(opts.seeds) do
    local row, first = {}, nil
    for _, name in ipairs(who) do
      local per = measure(srv, name, seed)
      first = first or per
      local count = per >= 1e7 and string.format("%.2fM", per / 1e6) or string.format("%.1fk", per / 1e3)
      row[#row + 1] = string.format("%s (x %.3f)", count, per / first)
    end
    io.write("| " .. seed .. " | " .. table.concat(row, " | ") .. " |\n")
    io.flush()
  end
end

require("spec.support.fixture").serve({ http = "keepalive_requests 1000000;", worker_connections = 4096 },
  report, "callgrind_pair")
io.write("\ncallgrind files: ", DIR, "/\n")

-- Lua 5.4's collector, forced, with garbage that has finalizers: no
-- heymarket in it. Each call leaves one table with a __gc (about the size
-- of a heymarket request, 20 slots) holding a small result, as an async
-- request does once result() kept its value. Prints the largest heap seen
-- (KB) in each phase of 5,000 calls, where a full collection ends each phase
-- the way tools/bench.lua's memory phases once did it (in generational
-- mode) and the way they do it now (in incremental mode, the interpreter's
-- mode set again after it), and when no phase forces one; then forced in
-- generational mode again, with the same tables and no __gc.
--
--   lua5.4 tools/gc_finalizers.lua
--
-- On Debian's 5.4.4 the first line grows until the heap holds a whole
-- phase's garbage (~4.5 MB); the second stays level (~450 KB), the third
-- at ~80 KB, and the last, without finalizers, at ~30 KB (BENCHMARKS.md,
-- "The memory phases and Lua 5.4's collector").

local finalized = { __gc = function() end }
local plain = {}

local mt = finalized
local function call(i)
  local r = setmetatable({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20 },
    mt)
  r.result = { { id = i, name = "Inbox", team = 7, phone = "14155550001", invited = true } }
end

local function run(name, collect)
  collectgarbage("incremental") -- a fresh start for each line
  collectgarbage("collect")
  collectgarbage("generational")
  local peaks = {}
  for phase = 1, 8 do
    local peak = 0
    for i = 1, 5000 do
      call(i)
      if i % 100 == 0 then
        peak = math.max(peak, collectgarbage("count"))
      end
    end
    peaks[phase] = string.format("%.0f", peak)
    collect()
  end
  print(string.format("%-40s %s", name, table.concat(peaks, " ")))
end

run("forced, generational mode", function()
  collectgarbage("collect")
  collectgarbage("collect")
end)
run("forced, incremental mode, then back", function()
  local mode = collectgarbage("incremental")
  collectgarbage("collect")
  collectgarbage("collect")
  collectgarbage(mode)
end)
run("not forced", function() end)
mt = plain
run("forced, generational mode, no __gc", function()
  collectgarbage("collect")
  collectgarbage("collect")
end)

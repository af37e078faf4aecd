-- Runs inside `nvim --headless` for spec/nvim_spec.lua: collects results in
-- a table, writes it as a Lua chunk (`return {...}`) the spec loads, and
-- quits Neovim. A watchdog quits after a time limit whatever happens, so a
-- script that never finishes still ends nvim (the spec also kills it).
--
--   local H = dofile(".../nvim_harness.lua")
--   H.start(out_file, limit_seconds)
--   H.run(function(H, R, P, uv) ... H.finish() end, params)
--
-- luacheck: read globals vim

local uv = vim.uv or vim.loop

local H = { R = {} }

local out_file
local watchdog
local finished = false

function H.now()
  return uv.hrtime() / 1e9
end

local function serialize(v, indent)
  local t = type(v)
  if t == "string" then
    return string.format("%q", v)
  elseif t == "number" or t == "boolean" or t == "nil" then
    return tostring(v)
  elseif t == "table" then
    indent = indent or ""
    local inner = indent .. "  "
    local parts = {}
    for k, x in pairs(v) do
      local key = type(k) == "string" and string.format("[%q]", k) or "[" .. tostring(k) .. "]"
      parts[#parts + 1] = inner .. key .. " = " .. serialize(x, inner)
    end
    table.sort(parts)
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. indent .. "}"
  end
  return string.format("%q", tostring(v)) -- functions, userdata: their description
end

--- Writes the results (once) and quits Neovim.
function H.finish()
  if finished then
    return
  end
  finished = true
  if watchdog then
    watchdog:stop()
    watchdog:close()
    watchdog = nil
  end
  local f = assert(io.open(out_file, "w"))
  f:write("return ", serialize(H.R), "\n")
  f:close()
  -- vim.cmd is not allowed in a libuv callback; vim.schedule is.
  vim.schedule(function()
    vim.cmd("qall!")
  end)
end

--- Records an error (the first one wins) and finishes.
function H.fail(message)
  if H.R.error == nil then
    H.R.error = tostring(message)
  end
  H.finish()
end

--- fn wrapped so that an error in it ends the run with that error recorded.
function H.guard(fn)
  return function(...)
    local ok, err = xpcall(fn, debug.traceback, ...)
    if not ok then
      H.fail(err)
    end
  end
end

--- Watches the libuv timers made from now on by code in a file whose name
-- matches pattern. Returns a function giving how many of them are active,
-- and how many were made. (uv.walk would list every handle, but aborts on
-- Neovim 0.7's own.)
function H.watch_timers(pattern)
  local made = {}
  local new_timer = uv.new_timer
  uv.new_timer = function(...)
    local t = new_timer(...)
    if debug.getinfo(2, "S").source:match(pattern) then
      made[#made + 1] = t
    end
    return t
  end
  return function()
    local active = 0
    for _, t in ipairs(made) do
      local ok, is_active = pcall(t.is_active, t)
      if ok and is_active then
        active = active + 1
      end
    end
    return active, #made
  end
end

function H.start(file, limit)
  out_file = file
  watchdog = uv.new_timer()
  watchdog:start(math.floor(limit * 1000), 0, function()
    H.R.watchdog = "no result within " .. limit .. " s"
    H.finish()
  end)
end

function H.run(body, params)
  H.guard(body)(H, H.R, params, uv)
end

return H

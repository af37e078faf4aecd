-- Helpers shared by the specs: which Lua runs them, a clock, and running a
-- snippet in a child Lua process with its own environment.
local socket = require("socket")

local util = {}

-- "lua5.1" … "lua5.4" or "luajit": also the name of the build folder.
util.interpreter = jit and "luajit" or ("lua" .. _VERSION:match("%d+%.%d+"))
util.build_dir = "build/" .. util.interpreter

-- The repository's root (the specs run from there), and a file's contents or nil.
util.root = assert(io.popen("pwd")):read("*l")

function util.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function util.now()
  return socket.gettime()
end

function util.shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local shell_quote = util.shell_quote

-- os.execute as (succeeded, exit code) on every version: 5.1 and LuaJIT
-- return the raw wait status, 5.2+ return true|nil, "exit"|"signal", code.
function util.execute(cmd)
  local a, _, c = os.execute(cmd)
  if type(a) == "number" then
    return a == 0, (a >= 256) and math.floor(a / 256) or a
  end
  return a == true, c
end

-- A command's standard output, or nil if it could not be started.
function util.capture(cmd)
  local p = io.popen(cmd, "r")
  if not p then
    return nil
  end
  local out = p:read("*a")
  p:close()
  return out
end

-- Run Lua source in a fresh interpreter of the same version, with env (a
-- table of variable = value, or false to unset). Returns its output and
-- nothing else (Lua 5.1 cannot tell a child's exit status): print what you
-- need to check.
function util.run_lua(source, env)
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write("package.cpath = ", string.format("%q", util.build_dir .. "/?.so;"), " .. package.cpath\n")
  f:write("package.path = 'src/?.lua;src/?/init.lua;' .. package.path\n")
  f:write(source)
  f:close()
  local parts = { "env" }
  for name, value in pairs(env or {}) do
    if value == false then
      parts[#parts + 1] = "-u " .. name
    else
      parts[#parts + 1] = name .. "=" .. shell_quote(value)
    end
  end
  parts[#parts + 1] = util.interpreter .. " " .. file .. " 2>&1"
  local p = assert(io.popen(table.concat(parts, " ")))
  local out = p:read("*a")
  p:close()
  os.remove(file)
  return out
end

-- Everything reachable from v, rendered as text, to search for secrets.
function util.dump(v, seen)
  seen = seen or {}
  if type(v) ~= "table" then return tostring(v) end
  if seen[v] then return "" end
  seen[v] = true
  local parts = {}
  for k, x in pairs(v) do
    parts[#parts + 1] = util.dump(k, seen) .. "=" .. util.dump(x, seen)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- A client of the fake API: base_url is srv.http (or opts.base_url) plus
-- prefix; no retries unless opts asks for them, so failures are quick.
function util.client(srv, prefix, opts)
  local heymarket = require("heymarket")
  local o = { api_key = srv.key, base_url = srv.http .. (prefix or ""), max_retries = 0 }
  for k, v in pairs(opts or {}) do o[k] = v end
  return heymarket.new(o)
end

return util

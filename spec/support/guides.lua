-- Helpers for the specs that follow the README as a user would
-- (spec/release_spec.lua, spec/guides_spec.lua): run a shell command and get
-- its exit status and output, start nginx from examples/nginx.conf itself,
-- and run a Lua script in headless Neovim.
local socket = require("socket")
local util = require("spec.support.util")

local quote, read = util.shell_quote, util.read_file

local M = {}

-- Runs a shell command line (sh -c); env: name = value (false: unset).
-- Returns exit status, stdout, stderr.
function M.sh(command, env)
  local out, err = os.tmpname(), os.tmpname()
  local parts = { "env" }
  for name, value in pairs(env or {}) do
    if value == false then
      parts[#parts + 1] = "-u " .. name
    end
  end
  for name, value in pairs(env or {}) do
    if value ~= false then
      parts[#parts + 1] = name .. "=" .. quote(value)
    end
  end
  parts[#parts + 1] = "sh -c " .. quote(command) .. " >" .. out .. " 2>" .. err .. " </dev/null; echo $?"
  local status = tonumber((util.capture(table.concat(parts, " ")) or ""):match("%d+"))
  local stdout, stderr = read(out) or "", read(err) or ""
  os.remove(out)
  os.remove(err)
  return status, stdout, stderr
end

-- A fresh temporary directory.
function M.tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(util.execute("mkdir -m 755 " .. quote(dir)))
  return dir
end

function M.rmdir(dir)
  if dir and dir:match("^/tmp/") then
    util.execute("rm -rf " .. quote(dir))
  end
end

-- `git status --porcelain --ignored` minus build/: what a command left in the checkout.
function M.checkout_state()
  return util.capture("git status --porcelain --ignored 2>&1 | grep -v '^!! build/$'")
end

local function free_port()
  local s = assert(socket.tcp())
  assert(s:bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- Starts nginx from examples/nginx.conf with only the port and the module
-- paths substituted: cpath_dir replaces /usr/local/lib/lua/5.1, path_dir
-- /usr/local/share/lua/5.1. env: the variables nginx starts with (its `env`
-- lines pass them to the workers). Returns { port, prefix, conf, stop(), log() }.
function M.example_nginx(cpath_dir, path_dir, env)
  local text = assert(read("examples/nginx.conf"))
  local function replace(from, to)
    local count
    text, count = text:gsub(from:gsub("%p", "%%%0"), (to:gsub("%%", "%%%%")))
    assert(count > 0, "examples/nginx.conf no longer holds " .. from)
  end
  local prefix = M.tmpdir()
  assert(util.execute("mkdir -p " .. quote(prefix .. "/logs")))
  local original = text
  for _ = 1, 5 do
    local port = free_port()
    text = original
    replace("127.0.0.1:8080", "127.0.0.1:" .. port)
    replace("/usr/local/lib/lua/5.1/", cpath_dir .. "/")
    replace("/usr/local/share/lua/5.1/", path_dir .. "/")
    local f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(text)
    f:close()
    local status, out, err = M.sh("nginx -p " .. quote(prefix .. "/") .. " -c " .. quote(prefix .. "/nginx.conf"),
      env)
    local h = {
      port = port,
      prefix = prefix,
      log = function() return (read(prefix .. "/logs/error.log") or "") .. out .. err end,
    }
    function h.stop()
      local pid = tonumber(read(prefix .. "/logs/nginx.pid") or "")
      if pid then
        util.execute("kill -QUIT " .. pid)
        local deadline = util.now() + 5
        while util.execute("kill -0 " .. pid .. " 2>/dev/null") and util.now() < deadline do
          socket.sleep(0.02)
        end
        util.execute("kill -KILL " .. pid .. " 2>/dev/null")
      end
      M.rmdir(prefix)
    end
    if status == 0 then
      local deadline = util.now() + 5
      while util.now() < deadline do
        local s = socket.tcp()
        s:settimeout(0.2)
        local ok = s:connect("127.0.0.1", port)
        s:close()
        if ok then return h end
        socket.sleep(0.02)
      end
      local log = h.log()
      h.stop()
      error("nginx from examples/nginx.conf did not listen on " .. port .. ":\n" .. log)
    elseif not (out .. err .. h.log()):find("Address already in use", 1, true) then
      local log = h.log()
      M.rmdir(prefix)
      error("nginx did not start from examples/nginx.conf (status " .. tostring(status) .. "):\n" .. log)
    end
  end
  M.rmdir(prefix)
  error("nginx from examples/nginx.conf: no free port")
end

-- GET http://127.0.0.1:port/path: status, body.
function M.http_get(port, path)
  local chunks = {}
  local _, code = require("socket.http").request({
    url = "http://127.0.0.1:" .. port .. path,
    sink = require("ltn12").sink.table(chunks),
  })
  return code, table.concat(chunks)
end

-- Runs headless Neovim: opts.args (a string of nvim arguments, already
-- quoted), opts.env (see M.sh; LUA_PATH and LUA_CPATH are unset unless
-- given), opts.limit (seconds, default 20). `script` (Lua source) runs first
-- through --cmd, with H = spec/support/nvim_harness.lua started: it should
-- fill H.R and call H.finish(). Returns H.R, and nvim's output.
function M.nvim(script, opts)
  opts = opts or {}
  local file, out = os.tmpname(), os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(("H = dofile(%q)\nH.start(%q, %d)\n"):format(util.root .. "/spec/support/nvim_harness.lua", out,
    (opts.limit or 20) - 5))
  f:write(script, "\n")
  f:close()
  local env = { LUA_PATH = false, LUA_CPATH = false }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local _, stdout, stderr = M.sh("timeout -s KILL " .. (opts.limit or 20) .. " nvim --headless -n -i NONE --cmd "
    .. quote("luafile " .. file) .. " " .. (opts.args or "-u NONE"), env)
  local text = read(out) or ""
  os.remove(file)
  os.remove(out)
  local chunk = text ~= "" and (loadstring or load)(text)
  local results = chunk and chunk()
  if type(results) ~= "table" then
    error("nvim wrote no results; its output:\n" .. stdout .. stderr, 2)
  end
  return results, stdout .. stderr
end

return M

-- A raw HTTP server in a child process, for responses nginx will not send
-- (a reason phrase of our choosing, huge headers, a Content-Length and no
-- body). Each connection gets the same bytes once its request has arrived.
--
--   local canned = require("spec.support.canned")
--   local s = canned.start("HTTP/1.1 401 Nope\r\nContent-Length: 0\r\n\r\n", { hold = 5 })
--   s.url  -- "http://127.0.0.1:<port>"
--   s:stop()
--
-- opts.hold: seconds to keep each connection open after sending (default 0).
local util = require("spec.support.util")

local M = {}

local SERVER = [=[
local socket = require("socket")
local response = assert(io.open(arg[1], "rb")):read("*a")
local hold = tonumber(arg[3]) or 0
local server = assert(socket.bind("127.0.0.1", 0))
local _, port = server:getsockname()
local f = assert(io.open(arg[2] .. ".tmp", "w"))
f:write(port)
f:close()
assert(os.rename(arg[2] .. ".tmp", arg[2]))
while true do
  local c = server:accept()
  if c then
    c:settimeout(5)
    repeat
      local line = c:receive("*l")
    until line == nil or line == ""
    c:send(response)
    if hold > 0 then socket.sleep(hold) end
    c:close()
  end
end
]=]

function M.start(response, opts)
  opts = opts or {}
  local script, body, portfile = os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(portfile)
  local f = assert(io.open(script, "w"))
  f:write(SERVER)
  f:close()
  f = assert(io.open(body, "wb"))
  f:write(response)
  f:close()
  local cmd = string.format("%s %s %s %s %s >/dev/null 2>&1 & echo $!", util.interpreter,
    util.shell_quote(script), util.shell_quote(body), util.shell_quote(portfile),
    tostring(opts.hold or 0))
  local pid = assert(tonumber(util.capture(cmd)), "could not start the canned server")
  local port
  local deadline = util.now() + 5
  repeat
    port = tonumber(util.read_file(portfile) or "")
    if not port then require("socket").sleep(0.01) end
  until port or util.now() > deadline
  local self = { pid = pid, port = port, url = port and ("http://127.0.0.1:" .. port) }
  function self.stop()
    os.execute("kill " .. pid .. " 2>/dev/null")
    os.remove(script)
    os.remove(body)
    os.remove(portfile)
  end
  if not port then
    self.stop()
    error("the canned server did not start")
  end
  return self
end

return M

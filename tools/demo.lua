-- `make demo`: start the bundled fake Heymarket API, run examples/quickstart.lua
-- against it with the Lua 5.4 build, and stop the server.
package.path = "./?.lua;" .. package.path
local fixture = require("spec.support.fixture")

local srv = fixture.start()
local command = table.concat({
  "HEYMARKET_API_KEY=" .. srv.key,
  "HEYMARKET_BASE_URL=" .. srv.http,
  "LUA_CPATH_5_4='build/lua5.4/?.so;;'",
  "lua5.4 examples/quickstart.lua",
}, " ")
print("fake Heymarket API on " .. srv.http)
local a, _, code = os.execute(command)
srv:stop()
if not (a == true or a == 0) then
  os.exit(code or 1)
end

-- The rock: `luarocks make` installs the module into a tree that Lua loads.
local util = require("spec.support.util")

-- Building the rock takes a few seconds: once per `make test`, in the Lua 5.4 pass.
if util.interpreter == "lua5.4" then
  describe("The LuaRock", function()
    it("installs with luarocks make and loads in Lua 5.4 from its tree", function()
      local tree = os.tmpname()
      os.remove(tree)
      local work = os.tmpname()
      os.remove(work)
      -- build in a scratch copy: the builtin backend writes objects into the cwd
      local cmd = table.concat({
        "mkdir -p " .. work,
        "cp -r src rockspec " .. work,
        "cd " .. work,
        "luarocks --lua-version=5.4 make rockspec/heymarket-scm-1.rockspec --deps-mode=none --tree "
          .. tree .. " >build.log 2>&1 || cat build.log",
        "lua5.4 -e \"package.cpath = '" .. tree .. "/lib/lua/5.4/?.so;' .. package.cpath;"
          .. " local h = require('heymarket');"
          .. " print('loaded', h._VERSION, package.searchpath('heymarket', package.cpath))\"",
        "ls " .. tree .. "/share/lua/5.4/heymarket",
      }, " && ")
      local p = assert(io.popen(cmd .. " 2>&1; rm -rf " .. tree .. " " .. work))
      local out = p:read("*a")
      p:close()
      assert.matches("loaded\t" .. require("heymarket")._VERSION .. "\t" .. tree
        .. "/lib/lua/5.4/heymarket.so", out, 1, true)
      assert.matches("nvim.lua\nresty.lua", out, 1, true)
    end)
  end)
end

-- Issue 6 §4: out of memory raises Lua's memory error, never a wrong result.
-- build/oom_host (tools/oom_host.c, built by `make test`) fails the Nth
-- allocation of a Lua 5.4 state for every N across require + new +
-- inboxes() against the fixture, then every large C realloc while a big
-- body is read. It runs in the Lua 5.4 pass, and again under valgrind when
-- valgrind is installed.
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")

if util.interpreter == "lua5.4" then
  describe("Out of memory", function()
    local srv
    setup(function() srv = fixture.start() end)
    teardown(function() if srv then srv:stop() end end)

    local host = util.root .. "/build/oom_host"
    local module_dir = util.root .. "/build/lua5.4"

    local function run(prefix, extra)
      local cmd = table.concat({ prefix, util.shell_quote(host), util.shell_quote(module_dir),
        util.shell_quote(srv.http), util.shell_quote(srv.key), extra or "" }, " ")
      local out = util.capture(cmd .. " 2>&1; echo exit=$?")
      return out, tonumber(out:match("exit=(%d+)%s*$"))
    end

    it("is raised as Lua's memory error at every allocation of a whole call", function()
      assert.is_true(util.execute("test -x " .. util.shell_quote(host)),
        "build/oom_host is missing: make test builds it")
      local out, code = run("")
      assert.is_nil(out:find("WRONG", 1, true), out)
      local points, memory, ok = out:match("points: (%d+), memory errors: (%d+), successes: (%d+)")
      assert.is_not_nil(points, out)
      assert.is_true(tonumber(points) > 100, out)
      assert.is_true(tonumber(memory) > 100, out)
      assert.is_true(tonumber(ok) >= 1, out)
      assert.equals(0, code, out)
    end)

    it("is raised when a C allocation fails while the body is read", function()
      local out, code = run("", "big /t/big/300000/v1/inboxes")
      assert.matches("big: memory error", out, 1, true)
      assert.equals(0, code, out)
    end)

    it("leaves nothing leaked or corrupted under valgrind", function()
      assert.is_true(util.execute("command -v valgrind >/dev/null"), "valgrind is not installed")
      local out, code = run("valgrind -q --error-exitcode=99 --leak-check=full "
        .. "--suppressions=" .. util.shell_quote(util.root .. "/tools/valgrind.supp")
        .. " --errors-for-leak-kinds=definite --show-leak-kinds=definite")
      assert.is_nil(out:find("WRONG", 1, true), out)
      assert.equals(0, code, out)
    end)
  end)
end

-- CONTRACT.md "Loading"
describe("Loading", function()
  local heymarket = require("heymarket")

  it("loads the C module built for this Lua", function()
    assert.is_table(heymarket)
    if package.searchpath then -- 5.2+: make sure it is a build of ours, not an installed copy
      assert.matches("^build/[%w.]+/heymarket%.so$", package.searchpath("heymarket", package.cpath))
    end
    assert.is_function(heymarket.new)
    assert.is_function(heymarket.inboxes)
    assert.is_function(heymarket.team)
  end)

  it("has a semantic version string in _VERSION", function()
    assert.is_string(heymarket._VERSION)
    assert.matches("^%d+%.%d+%.%d+$", heymarket._VERSION)
  end)

  it("has the JSON null sentinel in null, equal to lua-cjson's", function()
    assert.is_not_nil(heymarket.null)
    assert.equals("userdata", type(heymarket.null))
    assert.equals(require("cjson").null, heymarket.null)
  end)

  it("leaves the host's shared cjson settings untouched", function()
    local cjson = require("cjson")
    -- the private instance rejects NaN; the shared one keeps its default
    assert.is_true(pcall(cjson.decode, "[NaN]"))
  end)

  it("returns the same module on a second require", function()
    assert.equals(heymarket, require("heymarket"))
  end)
end)

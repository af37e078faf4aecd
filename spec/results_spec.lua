-- CONTRACT.md "Results"
local fixture = require("spec.support.fixture")
local util = require("spec.support.util")
local heymarket = require("heymarket")

describe("Results", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() if srv then srv:stop() end end)

  it("decode the documented inboxes example", function()
    local inboxes = assert(util.client(srv):inboxes())
    assert.same({
      { id = 413, name = "Support", team = 7, members = { 1, 2, 5 }, phones = { "14155550100" },
        phone = "14155550100", auto_assignable = true, widget_code = "abc123",
        allowed_domains = { "example.com" }, invited = true },
    }, inboxes)
  end)

  it("decode the documented team example", function()
    local team = assert(util.client(srv):team())
    assert.same({
      id = 7, name = "Acme Support", list_size = 10000,
      members = { { id = 1, name = "Alice Smith", role = "admin" },
                  { id = 2, name = "Bob Jones", role = "member" } },
    }, team)
  end)

  if math.type then
    it("make integral numbers Lua integers on 5.3+", function()
      local n = assert(util.client(srv, "/t/numbers/x"):team())
      assert.equals("integer", math.type(n.int))
      assert.equals("413", tostring(n.int))
      assert.equals("integer", math.type(n.neg))
      assert.equals("integer", math.type(n.zero))
      assert.equals("integer", math.type(n.exp))
      assert.equals(1000, n.exp)
      assert.equals("integer", math.type(n.big))
      assert.equals(9007199254740992, n.big)
      assert.equals("float", math.type(n.float))
      assert.equals(1.5, n.float)
      assert.equals("integer", math.type(n.list[1]))
      assert.equals("float", math.type(n.list[2]))
      local inboxes = assert(util.client(srv):inboxes())
      assert.equals("integer", math.type(inboxes[1].id))
      assert.equals("integer", math.type(inboxes[1].members[3]))
    end)
  end

  it("keep numbers as numbers on every Lua", function()
    local n = assert(util.client(srv, "/t/numbers/x"):team())
    assert.equals(413, n.int)
    assert.equals(-7, n.neg)
    assert.equals(1.5, n.float)
    assert.same({ 1, 2.25, 3 }, n.list)
  end)

  it("drop a JSON null in an object, so the key reads as nil", function()
    local inboxes = assert(util.client(srv, "/t/nulls/x"):inboxes())
    assert.is_nil(inboxes[1].forward_number)
    assert.is_nil(inboxes[1].nested.a)
    local has_key = false
    for k in pairs(inboxes[1]) do has_key = has_key or k == "forward_number" end
    assert.is_false(has_key)
  end)

  it("keep a null inside an array as heymarket.null, so lengths hold", function()
    local inboxes = assert(util.client(srv, "/t/nulls/x"):inboxes())
    assert.equals(2, #inboxes)
    assert.equals(heymarket.null, inboxes[2])
    assert.equals(3, #inboxes[1].members)
    assert.equals(heymarket.null, inboxes[1].members[2])
    assert.equals(heymarket.null, inboxes[1].nested.b[1])
    assert.equals(2, inboxes[1].nested.b[2])
  end)

  it("keep nulls in objects as heymarket.null with keep_null = true", function()
    local inboxes = assert(util.client(srv, "/t/nulls/x", { keep_null = true }):inboxes())
    assert.equals(heymarket.null, inboxes[1].forward_number)
    assert.equals(heymarket.null, inboxes[1].nested.a)
    assert.equals(heymarket.null, inboxes[1].members[2])
    assert.same({}, assert(util.client(srv, "/t/nulls/x"):team()).members)
  end)

  it("normalise every element of a long array (nulls dropped, whole numbers integers)", function()
    local inboxes = assert(util.client(srv, "/t/many/300"):inboxes())
    assert.equals(300, #inboxes)
    for i, inbox in ipairs(inboxes) do
      assert.equals(i, inbox.id)
      assert.is_nil(inbox.forward_number)
      assert.same({ 1, 2, 5 }, inbox.members)
      if math.type then
        assert.equals("integer", math.type(inbox.id))
        assert.equals("integer", math.type(inbox.members[3]))
      end
    end
    local kept = assert(util.client(srv, "/t/many/3", { keep_null = true }):inboxes())
    assert.equals(heymarket.null, kept[3].forward_number)
  end)

  it("give each call only its own body, on one client and its reused buffers", function()
    local c = util.client(srv)
    assert.equals(2000, #assert(c:get("/t/many/2000/v1/inboxes")))
    assert.same({ id = 1 }, assert(c:get("/t/wrongshape/x/v1/inboxes")))
    assert.equals(1, #assert(c:inboxes()))
    local big = c:get_async("/t/many/500/v1/inboxes")
    local small = c:get_async("/t/many/2/v1/inboxes")
    assert.is_true(big:wait())
    assert.is_true(small:wait())
    assert.equals(2, #assert(small:result()))
    assert.equals(500, #assert(big:result()))
    assert.is_true(#assert(c:get("/t/gzip/20000/v1/inboxes")) > 10)
    assert.equals("[]", assert(c:get("/t/many/0/v1/inboxes", { raw = true })))
  end)

  it("drop nulls from objects wherever they stand, and nothing else", function()
    local function get(name, opts)
      return assert(util.client(srv, nil, opts):get("/t/json/" .. name))
    end
    assert.same({}, get("alone"))
    assert.same({ b = 1 }, get("first"))
    assert.same({ a = 1 }, get("last"))
    assert.same({ c = "null" }, get("spaced"))
    assert.same({ b = 2 }, get("duplicate")) -- the last of the same key wins, as in lua-cjson
    assert.same({ a = 1 }, get("duplicate_escaped"))
    assert.same({}, get("escaped_then_null")) -- the null is the last `a`
    assert.same({}, get("control_key")) -- lua-cjson takes control bytes in strings
    assert.same({ s = "a\\", q = '":null,', x = { heymarket.null, {} }, o = { w = {} } },
      get("escapes"))
    local kept = get("escapes", { keep_null = true })
    assert.equals(heymarket.null, kept['k"'])
    assert.equals(heymarket.null, kept.n)
    assert.equals(heymarket.null, kept.x[2].y)
    assert.equals(heymarket.null, kept.o.z)
    assert.same({ a = heymarket.null, b = heymarket.null, c = "null" }, get("spaced", { keep_null = true }))
    assert.same({ c = 1 }, get("first_chain"))
    assert.same({}, get("first_chain_end"))
    assert.same({ x = 1 }, get("after_chain"))
    assert.same({ s = "x", o = {}, r = {}, t = true, e = -1500 }, get("after_kinds"))
    assert.same({ a = {}, d = { { f = {} } } }, get("nested_first"))
    assert.same({ u = "a/b", v = { { ["\\"] = 2 } } }, get("escape_elsewhere"))
    local long_p = string.rep('{[n:]}\\"', 12)
    local r = {}
    for i = 1, 20 do
      r[i] = "n:{"
    end
    r[21] = heymarket.null
    assert.same({ p = long_p, q = string.rep("x", 61) .. "\\", r = r }, get("long_strings"))
    assert.same({ s = "}{" }, get("string_brackets"))
    assert.same({ s = '"}{"' }, get("escaped_brackets"))
    assert.same({ p = string.rep("x", 70), q = "}" }, get("long_string_bracket"))
    local kept_long = get("long_strings", { keep_null = true })
    assert.equals(heymarket.null, kept_long.k)
    assert.equals(heymarket.null, kept_long.m)
    assert.equals(heymarket.null, kept_long.z)
  end)

  it("make whole numbers integers wherever they stand, however the keys are written", function()
    local function get(name)
      return assert(util.client(srv):get("/t/json/" .. name))
    end
    -- On 5.3+ no whole float may be left anywhere (lua-cjson 2.1.0 gives floats).
    local function whole_ints(v, where)
      if type(v) == "table" then
        for k, x in pairs(v) do
          whole_ints(x, where .. "." .. tostring(k))
        end
      elseif math.type and math.type(v) == "float" then
        assert(v ~= math.floor(v), "a whole float was left at " .. where)
      end
      return v
    end
    local function check(name, expected)
      local got = whole_ints(get(name), name)
      assert.same(expected, got, name)
    end
    check("escaped_key", { id = 7, n = { 1, { x = 2 } }, s = "id" })
    check("backslash_key", { ["a\\"] = 1, b = { 2 } })
    check("colon_in_string", { ["k,"] = " :1", z = { t = 3 }, u = 'a":4', w = ":5" })
    check("mixed_kinds", { { v = "s" }, { v = 2 }, { v = { w = 3 } }, {}, { w = { 4, { v = 5 } } },
      { v = { 6 } } })
    check("spaced_keys", { a = 1, b = { 2, { c = 3 } } })
    check("null_then_int", { a = 1 }) -- the last of the same key wins, as in lua-cjson
    check("prefix_keys", { { id = 1, a = 2 }, { id = 3, a = 4 }, { xid = 5, id = 6 } })
    check("string_arrays", { { a = { 'x"', ",1" }, b = { "y", 2 } }, { a = {}, f = { "q" } },
      { f = { 3 }, g = { "s", "t" } }, { g = { { h = 4 } }, i = { "\\" } }, { i = { 5 } } })
    check("nested_nulls", { { a = { 1, { c = 2 } } }, { d = { { {} } }, f = { heymarket.null, "g" } } })
    check("kinds_merge", { { i = { 5 }, j = 1 }, { i = { 6 }, j = 2 }, { i = { "s" }, j = 3 } })
    local pad = string.rep("x", 20)
    check("window_keys", {
      { pad = pad, id = 1, fifteen_bytes_k = 2, sixteen_bytes_ke = 3, a_key_of_twenty_four_b = 4,
        allowed_domains = { "a" } },
      { pad = pad, id = 10, fifteen_bytes_k = 6, zsixteen_bytes_ke = 7, b_key_of_twenty_four_b = 8,
        allowed_domains = { "b", 9 } } })
    check("escaped_quote_key", { { pad = pad, id = 1, n = 1 }, { pad = pad, id = 2, n = 2 },
      { pad = pad, ['a"id'] = 3, n = 3 } })
    local many = { {}, { k40 = { k1 = 41 } } }
    for i = 1, 40 do
      many[1]["k" .. i] = i
    end
    check("many_keys", many)
  end)

  it("keep an invalid body invalid, and err.body as it was sent, however nulls are dropped", function()
    local bodies = {
      trailing_comma = '{"a":null,}', member_in_array = '[1,"a":null]', double_colon = '{"a"::null}',
      leading_comma = '{,"b":null}', two_values = '{"a":null null}', nullx = '{"a":nullx}',
      missing_comma = '{"a":null "b":1}', nul_key = '{"a\0":null}', comma_comma = '{"a":null,,"b":1}',
      after_key = '{"x","a":null}', member_after_array = '[{"a":1},"b":null]',
      comma_then_value = '{"a":null,1}',
      -- err.body keeps 4 KiB: what the scan blanked there is put back too
      blank_across_4k = ('{"a":1,' .. string.rep(" ", 5000) .. '"b":null}]'):sub(1, 4096),
      key_across_4k = ('{"' .. string.rep("k", 5000) .. '":null}]'):sub(1, 4096),
    }
    for name, body in pairs(bodies) do
      local res, msg, err = util.client(srv):get("/t/json/" .. name)
      assert.is_nil(res, name)
      assert.equals("decode", err.kind, name)
      assert.matches("invalid JSON", msg, 1, true)
      assert.equals(body, err.body, name)
    end
  end)

  it("require a JSON array for inboxes() and an object for team()", function()
    local c = util.client(srv, "/t/wrongshape/x")
    local res, msg, err = c:inboxes()
    assert.is_nil(res)
    assert.equals("decode", err.kind)
    assert.equals("heymarket: GET /v1/inboxes: decode: expected a JSON array, got an object", msg)
    assert.equals('{"id":1}', err.body)
    res, msg, err = c:team()
    assert.is_nil(res)
    assert.equals("decode", err.kind)
    assert.equals("heymarket: GET /v1/team: decode: expected a JSON object, got an array", msg)
  end)

  it("decode a gzip-encoded body (the route refuses clients that do not ask for gzip)", function()
    local inboxes = assert(util.client(srv, "/t/gzip/20000"):inboxes())
    assert.is_true(#inboxes > 10)
    assert.equals("Inbox 1", inboxes[1].name)
  end)

  it("let get() return any JSON", function()
    local c = util.client(srv, "/t/wrongshape/x")
    assert.same({ id = 1 }, assert(c:get("/v1/inboxes")))
    assert.same({ 1, 2 }, assert(c:get("/v1/team")))
  end)
end)

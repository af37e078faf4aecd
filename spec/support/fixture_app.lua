-- Fake Heymarket API, run inside nginx (ngx_http_lua_module, LuaJIT).
--
-- Loaded by spec/support/fixture.lua through `lua_package_path` and
-- `init_by_lua_block { require "fixture_app" }`; every location calls
-- `require("fixture_app").handle()` from content_by_lua_block.
-- Needs `lua_shared_dict fixture_counts` for the once/times/count scenarios.
--
-- luacheck: std +ngx_lua

local M = {}

local API_KEY = "hm-test-key-7f3a9c"
local EXPECTED_AUTH = "Bearer " .. API_KEY

-- Fixed bodies, written by hand so they are byte-for-byte what the specs expect
-- (an encoder would reorder keys or reformat numbers such as 1e3).
local INBOXES = '[{"id":413,"name":"Support","team":7,"members":[1,2,5],'
  .. '"phones":["14155550100"],"phone":"14155550100","auto_assignable":true,'
  .. '"forward_number":null,"widget_code":"abc123",'
  .. '"allowed_domains":["example.com"],"invited":true}]'

local TEAM = '{"id":7,"name":"Acme Support","list_size":10000,"members":['
  .. '{"id":1,"name":"Alice Smith","role":"admin"},'
  .. '{"id":2,"name":"Bob Jones","role":"member"}]}'

local UNPROCESSABLE = '{"message":"Validation failed: phone is invalid",'
  .. '"errors":{"phone":["is invalid"]}}'

local NULLS_INBOXES = '[{"id":1,"forward_number":null,"members":[1,null,3],'
  .. '"nested":{"a":null,"b":[null,2]}},null]'
local NULLS_TEAM = '{"id":7,"name":null,"members":[]}'

local NUMBERS_TEAM = '{"int":413,"neg":-7,"float":1.5,"exp":1e3,"zero":0,'
  .. '"big":9007199254740992,"list":[1,2.25,3]}'
local NUMBERS_INBOXES = '[{"id":413}]'

-- Bodies with nulls in awkward places (json/<name>/...): members first, last,
-- alone, spaced out, after escaped quotes and backslashes, nested; and
-- invalid bodies that must stay invalid however nulls are dropped.
local JSON_CASES = {
  alone = '{"a":null}',
  first = '{"a":null,"b":1}',
  last = '{"a":1,"b":null}',
  spaced = '{ "a" : null ,\n\t"b" : null , "c" : "null" }',
  escapes = '{"k\\"":null,"s":"a\\\\","n":null,"q":"\\":null,","x":[null,{"y":null}],'
    .. '"o":{"z":null,"w":{}}}',
  duplicate = '{"a":1,"b":2,"a":null}',
  duplicate_escaped = '{"a":null,"\\u0061":1}',
  escaped_then_null = '{"\\u0061":1,"a":null}',
  trailing_comma = '{"a":null,}',
  missing_comma = '{"a":null "b":1}',
  control_key = '{"a\1":null}',
  nul_key = '{"a\0":null}',
  member_in_array = '[1,"a":null]',
  double_colon = '{"a"::null}',
  leading_comma = '{,"b":null}',
  two_values = '{"a":null null}',
  nullx = '{"a":nullx}',
  -- members blanked one after another, and strings that cross the scan's
  -- 64-byte blocks holding what it looks for
  first_chain = '{"a":null,"b":null,"c":1}',
  first_chain_end = '{"a":null , "b":null}',
  after_chain = '{"x":1,"a":null,"b":null}',
  after_kinds = '{"s":"x","a":null,"o":{},"b":null,"r":[],"c":null,"t":true,"d":null,"e":-1.5e3,'
    .. '"f":null}',
  nested_first = '{"a":{"b":null},"c":null,"d":[{"e":null,"f":{}}]}',
  escape_elsewhere = '{"u":"a\\/b","k":null,"v":[{"w":null,"\\\\":2}]}',
  long_strings = '{"p":"' .. string.rep('{[n:]}\\\\\\"', 12) .. '","k":null,"q":"'
    .. string.rep("x", 61) .. '\\\\","m":null,"r":[' .. string.rep('"n:{",', 20) .. 'null],"z":null}',
  string_brackets = '{"a":1,"s":"}{","a":null}',
  escaped_brackets = '{"a":1,"s":"\\"}{\\"","a":null}',
  long_string_bracket = '{"p":"' .. string.rep("x", 70) .. '","k":null,"q":"}"}',
  -- invalid, with a null member that starts within err.body's 4 KiB and
  -- ends after it
  blank_across_4k = '{"a":1,' .. string.rep(" ", 5000) .. '"b":null}]',
  key_across_4k = '{"' .. string.rep("k", 5000) .. '":null}]',
  comma_comma = '{"a":null,,"b":1}',
  after_key = '{"x","a":null}',
  member_after_array = '[{"a":1},"b":null]',
  comma_then_value = '{"a":null,1}',
  -- keys the integer walk must not miss, however they are written
  escaped_key = '{"\\u0069d":7,"n":[1,{"x":2}],"s":"\\u0069d"}',
  backslash_key = '{"a\\\\":1,"b":[2]}',
  colon_in_string = '{"k,":" :1","z":{"t":3},"u":"a\\":4","w":":5"}',
  mixed_kinds = '[{"v":"s"},{"v":2},{"v":{"w":3}},{"v":null},{"w":[4,{"v":5}]},{"v":[6]}]',
  spaced_keys = '{ "a" : 1 ,\n "b"\n:\t[ 2 , { "c" :3 } ] }',
  null_then_int = '{"a":null,"a":1,"b":null}',
  prefix_keys = '[{"id":1,"a":2},{"id":3,"a":4},{"xid":5,"id":6}]',
  string_arrays = '[{"a":["x\\"",",1"],"b":["y",2]},{"a":[],"f":["q"]},'
    .. '{"f":[3],"g":[ "s" , "t" ]},{"g":[{"h":4}],"i":["\\\\"]},{"i":[5]}]',
  nested_nulls = '[{"a":[1,{"b":null,"c":2}]},{"d":[[{"e":null}]],"f":[null,"g"]}]',
  kinds_merge = '[{"i":[5],"j":1},{"i":[6],"j":2},{"i":["s"],"j":3}]',
  -- keys the pass matches by the 16 bytes before their colon (far enough
  -- in): 15 and 16 bytes long, longer ones that end the same, one that ends
  -- as another, an escaped quote before bytes that look like one
  window_keys = '[{"pad":"' .. string.rep("x", 20) .. '","id":1,"fifteen_bytes_k":2,'
    .. '"sixteen_bytes_ke":3,"a_key_of_twenty_four_b":4,"allowed_domains":["a"]},'
    .. '{"pad":"' .. string.rep("x", 20) .. '","id":10,"fifteen_bytes_k" :6,'
    .. '"zsixteen_bytes_ke":7,"b_key_of_twenty_four_b":8,"allowed_domains":["b",9]}]',
  escaped_quote_key = '[{"pad":"' .. string.rep("x", 20) .. '","id":1,"n":1},'
    .. '{"pad":"' .. string.rep("x", 20) .. '","id":2,"n":2},'
    .. '{"pad":"' .. string.rep("x", 20) .. '","a\\"id":3,"n":3}]',
  many_keys = (function()
    local parts = {}
    for i = 1, 40 do
      parts[i] = string.format('"k%d":%d', i, i)
    end
    return "[{" .. table.concat(parts, ",") .. '},{"k40":{"k1":41}}]'
  end)(),
}

local SHORT_BODY = '[{"id":413,"name":"Supp'

local REASONS = {
  [200] = "OK", [201] = "Created", [202] = "Accepted", [204] = "No Content",
  [301] = "Moved Permanently", [302] = "Found", [303] = "See Other",
  [304] = "Not Modified", [307] = "Temporary Redirect", [308] = "Permanent Redirect",
  [400] = "Bad Request", [401] = "Unauthorized", [402] = "Payment Required",
  [403] = "Forbidden", [404] = "Not Found", [405] = "Method Not Allowed",
  [406] = "Not Acceptable", [408] = "Request Timeout", [409] = "Conflict",
  [410] = "Gone", [411] = "Length Required", [412] = "Precondition Failed",
  [413] = "Payload Too Large", [414] = "URI Too Long", [415] = "Unsupported Media Type",
  [418] = "I'm a teapot", [422] = "Unprocessable Entity", [423] = "Locked",
  [425] = "Too Early", [429] = "Too Many Requests",
  [500] = "Internal Server Error", [501] = "Not Implemented", [502] = "Bad Gateway",
  [503] = "Service Unavailable", [504] = "Gateway Timeout",
  [505] = "HTTP Version Not Supported",
}

local function reason(code)
  return REASONS[code] or ("HTTP " .. code)
end

-- The JSON "error" text for a status: the reason phrase, except 401 which is
-- what the real API says for a bad key.
local function error_text(code)
  if code == 401 then
    return "Invalid API key"
  end
  return reason(code)
end

---------------------------------------------------------------------------
-- Minimal JSON encoder (strings, numbers, booleans, arrays, objects, M.null)
---------------------------------------------------------------------------

M.null = setmetatable({}, { __tostring = function() return "null" end })

local escapes = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t",
}

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return escapes[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local encode

local function is_array(t)
  local n = 0
  for k in pairs(t) do
    if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then
      return false
    end
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then
      return false
    end
  end
  return true, n
end

encode = function(v)
  local tv = type(v)
  if v == nil or v == M.null then
    return "null"
  elseif tv == "boolean" then
    return v and "true" or "false"
  elseif tv == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return "null"
    end
    if v % 1 == 0 and v > -2^53 and v < 2^53 then
      return string.format("%d", v)
    end
    local s = string.format("%.14g", v)
    if tonumber(s) ~= v then
      s = string.format("%.17g", v)
    end
    return s
  elseif tv == "string" then
    return encode_string(v)
  elseif tv == "table" then
    local arr, n = is_array(v)
    local parts = {}
    if arr and n > 0 then
      for i = 1, n do
        parts[i] = encode(v[i])
      end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    local keys = {}
    for k in pairs(v) do
      keys[#keys + 1] = tostring(k)
    end
    table.sort(keys)
    for i, k in ipairs(keys) do
      local val = v[k]
      if val == nil then
        val = v[tonumber(k)]
      end
      parts[i] = encode_string(k) .. ":" .. encode(val)
    end
    if arr then -- empty table
      return "[]"
    end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return encode_string(tostring(v))
end

M.encode = encode

---------------------------------------------------------------------------
-- Response helpers
---------------------------------------------------------------------------

local function send(code, body, content_type)
  ngx.status = code
  ngx.header["Content-Type"] = content_type or "application/json"
  if code == 204 or code == 304 then
    -- no body and no Content-Length allowed
    return ngx.exit(ngx.HTTP_OK)
  elseif body == nil or body == "" then
    ngx.header["Content-Length"] = 0
  else
    ngx.header["Content-Length"] = #body
    ngx.print(body)
  end
  return ngx.exit(ngx.HTTP_OK)
end

local function send_error(code)
  return send(code, '{"error":' .. encode_string(error_text(code)) .. '}')
end

local function not_found()
  return send(404, '{"error":"Not Found"}')
end

local function bad_arg(what)
  return send(400, '{"error":' .. encode_string("bad scenario argument: " .. what) .. '}')
end

local function status_code(s)
  local n = tonumber(s)
  if not n or n % 1 ~= 0 or n < 200 or n > 599 then
    return nil
  end
  return n
end

-- The plain API: answer `rest` ("v1/inboxes", "v1/team") or 404.
local function normal(rest)
  if rest == "v1/inboxes" then
    return send(200, INBOXES)
  elseif rest == "v1/team" then
    return send(200, TEAM)
  end
  return not_found()
end

local function counts()
  local dict = ngx.shared.fixture_counts
  if not dict then
    error("fixture_app needs `lua_shared_dict fixture_counts 1m;` in the http block")
  end
  return dict
end

-- Increments and returns the hit counter for `key` (1 on the first call).
local function hit(key)
  local n, err = counts():incr(key, 1, 0)
  if not n then
    error("shared dict incr failed: " .. tostring(err))
  end
  return n
end

local function bearer_token()
  local auth = ngx.var.http_authorization or ""
  return (auth:gsub("^[Bb]earer%s+", "", 1))
end

-- The i-th of the generated inbox-like objects, `sep` before it.
local function big_inbox(i, sep)
  return string.format(
    '%s{"id":%d,"name":"Inbox %d","team":7,"members":[1,2,5],'
      .. '"phones":["1415555%04d"],"phone":"1415555%04d","auto_assignable":%s,'
      .. '"forward_number":null,"widget_code":"w%08d","allowed_domains":["example.com"],'
      .. '"invited":true}',
    sep, i, i, i % 10000, i % 10000, (i % 2 == 0) and "true" or "false", i)
end

-- Inbox-like objects until the encoded array is at least `bytes` long.
-- Streams in chunks so large sizes do not build one giant string.
local function send_big(bytes)
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  local chunk, i = {}, 0
  local first = true
  ngx.print("[")
  local total = 1
  repeat
    i = i + 1
    local obj = big_inbox(i, first and "" or ",")
    first = false
    chunk[#chunk + 1] = obj
    total = total + #obj
    if #chunk >= 256 then
      ngx.print(chunk)
      chunk = {}
    end
  until total + 1 >= bytes
  chunk[#chunk + 1] = "]"
  ngx.print(chunk)
  return ngx.exit(ngx.HTTP_OK)
end

local function request_headers_json()
  local function num(v)
    return tonumber(v) or M.null
  end
  local function str(v)
    if v == nil then
      return M.null
    end
    if type(v) == "table" then -- repeated header
      return table.concat(v, ", ")
    end
    return v
  end
  local h = ngx.req.get_headers(200)
  ngx.req.read_body()
  local body = ngx.req.get_body_data()
  local all = {}
  for k, v in pairs(h) do
    all[k] = v
  end
  return encode({
    user_agent = str(h["user-agent"]),
    accept = str(h["accept"]),
    accept_encoding = str(h["accept-encoding"]),
    authorization = str(h["authorization"]),
    content_type = str(h["content-type"]),
    method = ngx.req.get_method(),
    uri = ngx.var.request_uri,
    http_version = num(ngx.req.http_version()),
    connection = num(ngx.var.connection),
    connection_requests = num(ngx.var.connection_requests),
    body = body or M.null,
    headers = all,
  })
end

---------------------------------------------------------------------------
-- Scenarios: handler(arg, rest)
---------------------------------------------------------------------------

local scenarios = {}

scenarios.ok = function(_, rest)
  return normal(rest)
end

scenarios.status = function(arg)
  local code = status_code(arg)
  if not code then
    return bad_arg(arg)
  end
  return send_error(code)
end

scenarios.unprocessable = function()
  return send(422, UNPROCESSABLE)
end

scenarios.once = function(arg, rest)
  local code, token = arg:match("^(%d+)%-(.+)$")
  code = status_code(code)
  if not code then
    return bad_arg(arg)
  end
  if hit("once:" .. token) == 1 then
    if code == 429 then
      ngx.header["Retry-After"] = "1"
    end
    return send_error(code)
  end
  return normal(rest)
end

scenarios.times = function(arg, rest)
  local n, code, token = arg:match("^(%d+)%-(%d+)%-(.+)$")
  code = status_code(code)
  if not code then
    return bad_arg(arg)
  end
  if hit("times:" .. token) <= tonumber(n) then
    return send_error(code)
  end
  return normal(rest)
end

scenarios.retryafter = function(arg)
  local value = arg
  local secs = arg:match("^date(%-?%d+)$")
  if secs then
    value = ngx.http_time(ngx.time() + tonumber(secs))
  end
  ngx.header["Retry-After"] = value
  return send_error(429)
end

-- count/<token> is handled before the key check (see M.handle) so that
-- requests rejected with 401 are counted too.
scenarios.count = function(_, rest)
  return normal(rest)
end

scenarios.redirect = function()
  local location = string.format("%s://127.0.0.1:%s/v1/inboxes",
    ngx.var.scheme, ngx.var.server_port)
  ngx.header["Location"] = location
  return send(302, '<html><head><title>302 Found</title></head><body>'
    .. '<a href="' .. location .. '">moved</a></body></html>', "text/html")
end

scenarios.badjson = function()
  return send(200, '{"id": 1,')
end

scenarios.html = function(arg)
  local code = status_code(arg)
  if not code then
    return bad_arg(arg)
  end
  local r = reason(code)
  return send(code, string.format(
    "<html><head><title>%d %s</title></head><body><h1>%s</h1></body></html>",
    code, r, r), "text/html")
end

scenarios.wrongshape = function(_, rest)
  if rest == "v1/inboxes" then
    return send(200, '{"id":1}')
  elseif rest == "v1/team" then
    return send(200, "[1,2]")
  end
  return not_found()
end

-- Declares 1000 bytes, sends a prefix, then the connection is closed: the
-- location for /t/short/ has keepalive_timeout 0, so nginx closes after
-- finishing the (short) response.
scenarios.short = function()
  ngx.status = 200
  ngx.header["Content-Type"] = "application/json"
  ngx.header["Content-Length"] = 1000
  ngx.print(SHORT_BODY)
  ngx.flush(true)
  return ngx.exit(ngx.HTTP_OK)
end

scenarios.reset = function()
  return ngx.exit(444)
end

scenarios.sleep = function(arg, rest)
  local ms = tonumber(arg)
  if not ms or ms < 0 then
    return bad_arg(arg)
  end
  ngx.sleep(ms / 1000)
  return normal(rest)
end

scenarios.big = function(arg)
  local bytes = tonumber(arg)
  if not bytes or bytes < 0 then
    return bad_arg(arg)
  end
  return send_big(bytes)
end

-- Exactly `count` inbox objects (the ones /t/big/ streams), with a
-- Content-Length; each body is built once per worker and kept, so serving it
-- costs the server little (make bench: 10,000 inboxes are about 2.4 MB).
local many_cache = {}
scenarios.many = function(arg)
  local count = tonumber(arg)
  if not count or count < 0 or count % 1 ~= 0 or count > 1000000 then
    return bad_arg(arg)
  end
  local body = many_cache[count]
  if not body then
    local parts = {}
    for i = 1, count do
      parts[i] = big_inbox(i, i == 1 and "" or ",")
    end
    body = "[" .. table.concat(parts) .. "]"
    many_cache[count] = body
  end
  return send(200, body)
end

-- The /t/gzip/ location has `gzip on` for application/json; nginx's gzip
-- filter compresses the output when the client accepts gzip.
scenarios.gzip = function(arg)
  local bytes = tonumber(arg)
  if not bytes or bytes < 0 then
    return bad_arg(arg)
  end
  local ae = (ngx.var.http_accept_encoding or ""):lower()
  if not ae:find("gzip", 1, true) then
    return send(406, '{"error":"gzip required"}')
  end
  return send_big(bytes)
end

scenarios.leak = function()
  local token = bearer_token()
  ngx.header["X-Echo"] = token
  return send(401, '{"error":' .. encode_string("Invalid API key: " .. token) .. '}')
end

scenarios.headers = function()
  return send(200, request_headers_json())
end

-- After arg milliseconds: which connection (nginx's serial number) and which
-- protocol carried the request, to count the connections a client opens.
scenarios.conn = function(arg)
  local ms = tonumber(arg)
  if not ms or ms < 0 then
    return bad_arg(arg)
  end
  ngx.sleep(ms / 1000)
  return send(200, string.format('{"connection":%d,"protocol":%s}',
    tonumber(ngx.var.connection), encode_string(ngx.var.server_protocol or "")))
end

scenarios.requestid = function(arg)
  local code = status_code(arg)
  if not code then
    return bad_arg(arg)
  end
  ngx.header["X-Request-Id"] = "req-abc-123"
  return send_error(code)
end

scenarios.nulls = function(_, rest)
  if rest == "v1/inboxes" then
    return send(200, NULLS_INBOXES)
  elseif rest == "v1/team" then
    return send(200, NULLS_TEAM)
  end
  return not_found()
end

scenarios.numbers = function(_, rest)
  if rest == "v1/inboxes" then
    return send(200, NUMBERS_INBOXES)
  elseif rest == "v1/team" then
    return send(200, NUMBERS_TEAM)
  end
  return not_found()
end

scenarios.json = function(arg)
  local body = JSON_CASES[arg]
  if not body then
    return bad_arg(arg)
  end
  return send(200, body)
end

scenarios.message = function(arg)
  local code = status_code(arg)
  if not code then
    return bad_arg(arg)
  end
  return send(code, '{"message":"Message field used"}')
end

scenarios.empty = function(arg)
  local code = status_code(arg)
  if not code then
    return bad_arg(arg)
  end
  return send(code, "")
end

M.scenarios = scenarios

---------------------------------------------------------------------------
-- Entry point
---------------------------------------------------------------------------

function M.handle()
  local uri = ngx.var.uri
  local scenario, arg, rest = uri:match("^/t/([^/]+)/([^/]+)/?(.*)$")

  -- Scenarios that must run before (or instead of) the key check.
  if scenario == "leak" then
    return scenarios.leak(arg, rest)
  end
  if scenario == "count" then
    hit("count:" .. arg)
  end

  if ngx.var.http_authorization ~= EXPECTED_AUTH then
    return send(401, '{"error":"Invalid API key"}')
  end

  if scenario then
    local handler = scenarios[scenario]
    if handler then
      return handler(arg, rest)
    end
    return not_found()
  end

  local token = uri:match("^/count/([^/]+)/?$")
  if token then
    local n = counts():get("count:" .. token) or 0
    return send(200, '{"hits":' .. string.format("%d", n) .. '}')
  end

  return normal(uri:match("^/(.*)$") or "")
end

return M

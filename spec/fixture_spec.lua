-- Self-test of the nginx test fixture (spec/support/fixture.lua).
-- luacheck: std +busted

local socket = require("socket")
local http = require("socket.http")
local ltn12 = require("ltn12")
local fixture = require("spec.support.fixture")

local INBOXES = '[{"id":413,"name":"Support","team":7,"members":[1,2,5],'
  .. '"phones":["14155550100"],"phone":"14155550100","auto_assignable":true,'
  .. '"forward_number":null,"widget_code":"abc123",'
  .. '"allowed_domains":["example.com"],"invited":true}]'

local util = require("spec.support.util")
local quote, capture = util.shell_quote, util.capture

-- exit code of a shell command
local function run(cmd)
  local _, code = util.execute(cmd)
  return code
end

local function have(tool)
  return run("command -v " .. tool .. " >/dev/null 2>&1") == 0
end

local function dir_exists(path)
  return run("test -d " .. quote(path)) == 0
end

-- pgrep -f pattern matching `path` literally but not the shell running pgrep
-- (its own command line holds the pattern, which "[x]yz" does not match).
local function pgrep_pattern(path)
  local esc = path:gsub("[%^%$%.%*%+%?%(%)%[%]{}|\\]", "\\%0")
  return "[" .. esc:sub(1, 1) .. "]" .. esc:sub(2)
end

local function get(url, headers)
  local chunks = {}
  local ok, code, hdrs = http.request({
    url = url,
    headers = headers,
    sink = ltn12.sink.table(chunks),
  })
  if not ok then
    return nil, code
  end
  return code, table.concat(chunks), hdrs
end

-- Raw HTTP/1.1 exchange: returns everything the server sent until it closed
-- the connection, or nil, "timeout" if it did not close within 2 s.
local function raw(port, path, key)
  local s = assert(socket.tcp())
  s:settimeout(2)
  assert(s:connect("127.0.0.1", port))
  assert(s:send("GET " .. path .. " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    .. "Authorization: Bearer " .. key .. "\r\n\r\n"))
  -- "*a" reads until the peer closes; with nothing received at all it
  -- reports nil, "closed", ""
  local data, err, partial = s:receive("*a")
  s:close()
  if err == "closed" then
    err = nil
  end
  return data or partial, err
end

describe("fixture", function()
  local srv
  local auth

  setup(function()
    srv = fixture.start()
    auth = { authorization = "Bearer " .. srv.key }
  end)

  teardown(function()
    if srv then
      srv:stop()
    end
  end)

  it("exposes URLs, ports, key and CA paths", function()
    assert.are.equal("hm-test-key-7f3a9c", srv.key)
    assert.matches("^http://127%.0%.0%.1:%d+$", srv.http)
    assert.matches("^https://127%.0%.0%.1:%d+$", srv.https)
    assert.matches("^https://127%.0%.0%.1:%d+$", srv.https_wrong_host)
    assert.are.equal(3, #srv.ports)
    local f = assert(io.open(srv.ca_file, "rb"))
    local pem = f:read("*a")
    f:close()
    assert.matches("BEGIN CERTIFICATE", pem)
    local hash = capture("openssl x509 -hash -noout -in " .. quote(srv.ca_file)):gsub("%s", "")
    local g = assert(io.open(srv.ca_path .. "/" .. hash .. ".0", "rb"))
    assert.are.equal(pem, g:read("*a"))
    g:close()
  end)

  it("hands out unique tokens", function()
    local a, b = srv:token(), srv:token()
    assert.are_not.equal(a, b)
    assert.matches("^t%d+_%x+$", a)
  end)

  it("serves GET /v1/inboxes with the key", function()
    local code, body, headers = get(srv.http .. "/v1/inboxes", auth)
    assert.are.equal(200, code)
    assert.are.equal(INBOXES, body)
    assert.are.equal("application/json", headers["content-type"])
  end)

  it("serves GET /v1/team", function()
    local code, body = get(srv.http .. "/v1/team", auth)
    assert.are.equal(200, code)
    assert.matches('"name":"Acme Support"', body, 1, true)
  end)

  it("answers 401 without or with a wrong key", function()
    local code, body, headers = get(srv.http .. "/v1/inboxes")
    assert.are.equal(401, code)
    assert.are.equal('{"error":"Invalid API key"}', body)
    assert.are.equal("application/json", headers["content-type"])
    code = get(srv.http .. "/v1/inboxes", { authorization = "Bearer nope" })
    assert.are.equal(401, code)
  end)

  it("answers 404 for unknown paths", function()
    local code, body = get(srv.http .. "/v2/nothing", auth)
    assert.are.equal(404, code)
    assert.are.equal('{"error":"Not Found"}', body)
  end)

  it("serves the scenario prefix ok/<any>", function()
    local code, body = get(srv.http .. "/t/ok/x/v1/inboxes", auth)
    assert.are.equal(200, code)
    assert.are.equal(INBOXES, body)
    assert.are.equal(404, (get(srv.http .. "/t/ok/x/v1/other", auth)))
  end)

  it("status/<code>", function()
    local code, body = get(srv.http .. "/t/status/404/v1/inboxes", auth)
    assert.are.equal(404, code)
    assert.are.equal('{"error":"Not Found"}', body)
    code, body = get(srv.http .. "/t/status/500/v1/inboxes", auth)
    assert.are.equal(500, code)
    assert.are.equal('{"error":"Internal Server Error"}', body)
    code, body = get(srv.http .. "/t/status/401/v1/inboxes", auth)
    assert.are.equal(401, code)
    assert.are.equal('{"error":"Invalid API key"}', body)
  end)

  it("once/<code>-<token> fails once, then is normal", function()
    local url = srv.http .. "/t/once/503-" .. srv:token() .. "/v1/inboxes"
    local code, body = get(url, auth)
    assert.are.equal(503, code)
    assert.are.equal('{"error":"Service Unavailable"}', body)
    code, body = get(url, auth)
    assert.are.equal(200, code)
    assert.are.equal(INBOXES, body)
  end)

  it("once/429 carries Retry-After: 1", function()
    local url = srv.http .. "/t/once/429-" .. srv:token() .. "/v1/team"
    local code, _, headers = get(url, auth)
    assert.are.equal(429, code)
    assert.are.equal("1", headers["retry-after"])
    assert.are.equal(200, (get(url, auth)))
  end)

  it("times/<n>-<code>-<token>", function()
    local url = srv.http .. "/t/times/2-500-" .. srv:token() .. "/v1/team"
    assert.are.equal(500, (get(url, auth)))
    assert.are.equal(500, (get(url, auth)))
    assert.are.equal(200, (get(url, auth)))
  end)

  it("count/<token> counts every request", function()
    local token = srv:token()
    assert.are.equal(0, srv:hits(token))
    for _ = 1, 3 do
      assert.are.equal(200, (get(srv.http .. "/t/count/" .. token .. "/v1/inboxes", auth)))
    end
    -- rejected requests are counted too
    assert.are.equal(401, (get(srv.http .. "/t/count/" .. token .. "/v1/inboxes")))
    local code, body = get(srv.http .. "/count/" .. token, auth)
    assert.are.equal(200, code)
    assert.are.equal('{"hits":4}', body)
    assert.are.equal(4, srv:hits(token))
    assert.are.equal(401, (get(srv.http .. "/count/" .. token)))
  end)

  it("short/<any> declares 1000 bytes, sends fewer and closes", function()
    local data, err = raw(srv.ports[1], "/t/short/x/v1/inboxes", srv.key)
    assert.is_nil(err)
    local head, body = data:match("^(.-)\r\n\r\n(.*)$")
    assert.matches("^HTTP/1%.1 200", head)
    assert.matches("\r\n[Cc]ontent%-[Ll]ength: 1000\r\n", head .. "\r\n")
    assert.are.equal('[{"id":413,"name":"Supp', body)
    -- luasocket notices the truncation too
    local code, e = get(srv.http .. "/t/short/x/v1/inboxes", auth)
    assert.is_nil(code)
    assert.are.equal("closed", e)
  end)

  it("reset/<any> closes without any response", function()
    local data, err = raw(srv.ports[1], "/t/reset/x/v1/inboxes", srv.key)
    assert.is_nil(err)
    assert.are.equal("", data)
  end)

  -- path, expected status, expected body (exact string or function(body)),
  -- expected headers (value or Lua pattern prefixed with "~")
  local cases = {
    { "/t/unprocessable/x/v1/inboxes", 422,
      '{"message":"Validation failed: phone is invalid","errors":{"phone":["is invalid"]}}' },
    { "/t/retryafter/7/v1/inboxes", 429, '{"error":"Too Many Requests"}',
      { ["retry-after"] = "7" } },
    { "/t/retryafter/date30/v1/inboxes", 429, nil,
      { ["retry-after"] = "~^%a%a%a, %d%d %a%a%a %d%d%d%d %d%d:%d%d:%d%d GMT$" } },
    { "/t/html/502/v1/inboxes", 502,
      "<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>",
      { ["content-type"] = "~^text/html" } },
    { "/t/badjson/x/v1/inboxes", 200, '{"id": 1,' },
    { "/t/wrongshape/x/v1/inboxes", 200, '{"id":1}' },
    { "/t/wrongshape/x/v1/team", 200, "[1,2]" },
    { "/t/leak/x/v1/team", 401, '{"error":"Invalid API key: hm-test-key-7f3a9c"}',
      { ["x-echo"] = "hm-test-key-7f3a9c" } },
    { "/t/nulls/x/v1/team", 200, '{"id":7,"name":null,"members":[]}' },
    { "/t/numbers/x/v1/inboxes", 200, '[{"id":413}]' },
    { "/t/numbers/x/v1/team", 200, '{"int":413,"neg":-7,"float":1.5,"exp":1e3,"zero":0,'
      .. '"big":9007199254740992,"list":[1,2.25,3]}' },
    { "/t/requestid/503/v1/team", 503, '{"error":"Service Unavailable"}',
      { ["x-request-id"] = "req-abc-123" } },
    { "/t/message/400/v1/team", 400, '{"message":"Message field used"}' },
    { "/t/empty/500/v1/team", 500, "" },
    { "/t/empty/204/v1/team", 204, "" },
    { "/t/sleep/50/v1/team", 200, function(body)
        return body:find('"Acme Support"', 1, true) ~= nil
      end },
    { "/t/big/5000/v1/inboxes", 200, function(body)
        return #body >= 5000 and body:match("^%[{.*}%]$") ~= nil
      end },
    { "/t/many/3/v1/inboxes", 200, function(body)
        local _, objects = body:gsub('"invited":true}', "")
        return objects == 3 and body:match('^%[{"id":1,.*{"id":3,[^{]*}%]$') ~= nil
      end, { ["content-length"] = "~^%d+$" } },
    { "/t/many/0/v1/inboxes", 200, "[]" },
    { "/t/many/x/v1/inboxes", 400 },
    { "/t/gzip/100/v1/inboxes", 406, '{"error":"gzip required"}' },
    { "/t/no-such-scenario/x/v1/inboxes", 404, '{"error":"Not Found"}' },
  }

  for _, case in ipairs(cases) do
    local path, want_code, want_body, want_headers = case[1], case[2], case[3], case[4]
    it("serves " .. path, function()
      local code, body, headers = get(srv.http .. path, auth)
      assert.are.equal(want_code, code)
      if type(want_body) == "function" then
        assert.is_true(want_body(body))
      elseif want_body then
        assert.are.equal(want_body, body)
      end
      for name, want in pairs(want_headers or {}) do
        if want:sub(1, 1) == "~" then
          assert.matches(want:sub(2), headers[name])
        else
          assert.are.equal(want, headers[name])
        end
      end
    end)
  end

  it("headers/<any> echoes the request", function()
    local code, body = get(srv.http .. "/t/headers/x/v1/inboxes",
      { authorization = auth.authorization, ["user-agent"] = "fixture-spec/1" })
    assert.are.equal(200, code)
    assert.matches('"user_agent":"fixture-spec/1"', body, 1, true)
    assert.matches('"authorization":"Bearer hm-test-key-7f3a9c"', body, 1, true)
    assert.matches('"method":"GET"', body, 1, true)
    assert.matches('"uri":"/t/headers/x/v1/inboxes"', body, 1, true)
    assert.matches('"connection":%d+[,}]', body)
    assert.matches('"connection_requests":%d+[,}]', body)
  end)

  it("redirect/<any> points at the same scheme and port", function()
    local chunks = {}
    local ok, code, h = http.request({
      url = srv.http .. "/t/redirect/x/v1/inboxes",
      headers = auth,
      redirect = false,
      sink = ltn12.sink.table(chunks),
    })
    assert.is_truthy(ok)
    assert.are.equal(302, code)
    assert.are.equal(srv.http .. "/v1/inboxes", h.location)
  end)

  describe("TLS", function()
    local function s_client(port, extra)
      return run("openssl s_client -connect 127.0.0.1:" .. port
        .. " -CAfile " .. quote(srv.ca_file) .. " -verify_return_error " .. extra
        .. " </dev/null >/dev/null 2>&1")
    end

    it("the https port verifies for localhost and 127.0.0.1", function()
      assert.are.equal(0, s_client(srv.ports[2], "-verify_hostname localhost"))
      assert.are.equal(0, s_client(srv.ports[2], "-verify_ip 127.0.0.1"))
    end)

    it("the wrong-host port is signed by the CA but fails host checks", function()
      assert.are.equal(0, s_client(srv.ports[3], ""))
      assert.are_not.equal(0, s_client(srv.ports[3], "-verify_ip 127.0.0.1"))
      assert.are_not.equal(0, s_client(srv.ports[3], "-verify_hostname localhost"))
    end)

    it("works with the curl command line tool", function()
      assert.is_true(have("curl"), "curl is not installed (make test installs it)")
      local h = " -H " .. quote("Authorization: Bearer " .. srv.key)
      local body = capture("curl -sS --cacert " .. quote(srv.ca_file) .. h .. " "
        .. srv.https .. "/v1/inboxes")
      assert.are.equal(INBOXES, body)
      body = capture("curl -sS --capath " .. quote(srv.ca_path) .. h .. " "
        .. srv.https .. "/v1/inboxes")
      assert.are.equal(INBOXES, body)
      -- CURLE_PEER_FAILED_VERIFICATION
      assert.are.equal(60, run("curl -sS -o /dev/null --cacert " .. quote(srv.ca_file)
        .. h .. " " .. srv.https_wrong_host .. "/v1/inboxes 2>/dev/null"))
      -- CURLE_PARTIAL_FILE, over TLS as well (HTTP/1.1: over HTTP/2 the
      -- same cut is a stream error, 92)
      assert.are.equal(18, run("curl -sS --http1.1 -o /dev/null --cacert " .. quote(srv.ca_file)
        .. h .. " " .. srv.https .. "/t/short/x/v1/inboxes 2>/dev/null"))
      assert.are.equal(18, run("curl -sS -o /dev/null" .. h .. " " .. srv.http
        .. "/t/short/x/v1/inboxes 2>/dev/null"))
      -- CURLE_GOT_NOTHING
      assert.are.equal(52, run("curl -sS -o /dev/null" .. h .. " " .. srv.http
        .. "/t/reset/x/v1/inboxes 2>/dev/null"))
      -- gzip really is gzip
      local out = capture("curl -sS --compressed -D - --cacert " .. quote(srv.ca_file) .. h
        .. " " .. srv.https .. "/t/gzip/20000/v1/inboxes")
      assert.matches("\r\n[Cc]ontent%-[Ee]ncoding: gzip\r\n", out)
      assert.matches("%]$", out)
    end)
  end)

  describe("fixture.nginx", function()
    it("starts a custom config on several ports and substitutes ${prefix}", function()
      local h = fixture.nginx({
        ports = 2,
        http = [[
          server {
            listen 127.0.0.1:${port1};
            listen 127.0.0.1:${port2};
            location / { return 200 "prefix=${prefix}"; }
          }
        ]],
      })
      assert.are.equal(2, #h.ports)
      assert.are_not.equal(h.ports[1], h.ports[2])
      for i = 1, 2 do
        local code, body = get("http://127.0.0.1:" .. h.ports[i] .. "/")
        assert.are.equal(200, code)
        assert.are.equal("prefix=" .. h.prefix, body)
      end
      assert.is_string(h:error_log())
      assert.is_true(h:stop())
      assert.is_true(h:stop()) -- second call is a no-op
      assert.is_false(dir_exists(h.prefix))
      assert.is_nil((get("http://127.0.0.1:" .. h.ports[1] .. "/")))
    end)

    it("raises an error with the error log tail on a bad config", function()
      local ok, err = pcall(fixture.nginx, { http = "no_such_directive_here on;" })
      assert.is_false(ok)
      assert.matches("no_such_directive_here", tostring(err), 1, true)
      local prefix = tostring(err):match("prefix (%S+)%)")
      assert.is_string(prefix)
      assert.is_false(dir_exists(prefix))
    end)
  end)

  -- keep this last: stops the server and checks nothing is left behind
  it("stops cleanly and leaves no nginx behind", function()
    local pid = srv.nginx.pid
    local workers = capture("pgrep -P " .. pid):gsub("%s+$", "")
    assert.are_not.equal("", workers)
    local pattern = quote(pgrep_pattern(srv.prefix))
    -- positive control: the pattern does find the running master
    assert.matches("^" .. pid .. "%s*$", capture("pgrep -f " .. pattern))
    local t0 = socket.gettime()
    assert.is_true(srv:stop())
    assert.is_true(socket.gettime() - t0 < 5)
    assert.is_true(srv:stop())
    assert.are.equal("", capture("pgrep -f " .. pattern))
    for w in workers:gmatch("%d+") do
      local stat = io.open("/proc/" .. w .. "/stat")
      local state = stat and stat:read("*a"):match("%)%s+(%a)")
      if stat then
        stat:close()
      end
      assert.is_true(state == nil or state == "Z" or state == "X")
    end
    assert.is_false(dir_exists(srv.prefix))
    assert.is_nil((get(srv.http .. "/v1/inboxes", auth)))
  end)
end)

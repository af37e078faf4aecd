-- Test fixture: runs a real nginx (with ngx_http_lua_module) on 127.0.0.1.
--
-- Works unchanged under Lua 5.1, 5.2, 5.3, 5.4 and LuaJIT. Depends only on the
-- standard library and LuaSocket; shells out (os.execute / io.popen) to
-- nginx, openssl and a few POSIX tools (mkdir, rm, cat, kill, pgrep).
--
--   local fixture = require("spec.support.fixture")
--
--   -- low level: any nginx configuration
--   local h = fixture.nginx{ http = "...${port1}...${prefix}...", ports = 1, main = "env FOO;" }
--   (also worker_connections = N for either, default 1024; main = "worker_rlimit_nofile N;" to match)
--   h.prefix, h.ports[1], h.pid, h:error_log(), h:stop()
--
--   -- high level: the fake Heymarket API (see fixture_app.lua for the routes)
--   local srv = fixture.start()
--   srv.http, srv.https, srv.https_wrong_host, srv.ca_file, srv.ca_path, srv.key
--   srv:token(), srv:hits(token), srv:error_log(), srv:stop()
--
-- Environment knobs:
--   NGINX                  nginx binary (default: `nginx` on PATH, else /usr/sbin/nginx)
--   OPENSSL                openssl binary (default: openssl)
--   TMPDIR                 where the temporary prefix directories go (default /tmp)
--   HEYMARKET_FIXTURE_KEEP if set to 1, stop() leaves the prefix directory in place

local socket = require("socket")

local M = {}

M.API_KEY = "hm-test-key-7f3a9c"

-- Module files candidates; only those that exist get a load_module line, so a
-- build with the Lua module compiled in (OpenResty) works too.
M.MODULES = {
  "/usr/share/nginx/modules/ndk_http_module.so",
  "/usr/share/nginx/modules/ngx_http_lua_module.so",
}

local START_TIMEOUT = 5    -- seconds to wait for pid file + ports
local STOP_TIMEOUT = 5     -- seconds to wait for the master to exit after TERM
local START_ATTEMPTS = 5

---------------------------------------------------------------------------
-- Small portable helpers
---------------------------------------------------------------------------

local util = require("spec.support.util")
local quote, execute, read_file = util.shell_quote, util.execute, util.read_file

local function write_file(path, content)
  local f, err = io.open(path, "wb")
  if not f then
    error("cannot write " .. path .. ": " .. tostring(err), 2)
  end
  f:write(content)
  f:close()
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then
    f:close()
    return true
  end
  return false
end

local capture = util.capture

local function trim(s)
  return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

local function tail(text, max_lines)
  if not text or text == "" then
    return "(empty)"
  end
  local lines = {}
  for line in text:gmatch("[^\n]+") do
    lines[#lines + 1] = line
  end
  local first = math.max(1, #lines - (max_lines or 20) + 1)
  return table.concat(lines, "\n", first)
end

local function random_hex(nbytes)
  local f = io.open("/dev/urandom", "rb")
  local raw = f and f:read(nbytes)
  if f then
    f:close()
  end
  local out = {}
  for i = 1, nbytes do
    local b = raw and raw:byte(i) or math.random(0, 255)
    out[i] = string.format("%02x", b)
  end
  return table.concat(out)
end

local function substitute(text, vars)
  return (text:gsub("%${([%w_]+)}", function(name)
    local v = vars[name]
    if v == nil then
      return nil -- leave unknown placeholders alone
    end
    return tostring(v)
  end))
end

local cwd_cache
local function cwd()
  if not cwd_cache then
    cwd_cache = trim(capture("pwd") or "")
  end
  return cwd_cache
end

local function absolute(path)
  if path:sub(1, 1) == "/" then
    return path
  end
  path = path:gsub("^%./", "")
  return cwd() .. "/" .. path
end

-- Directory of this file (absolute), used to find fixture_app.lua.
local function support_dir()
  local src = debug.getinfo(1, "S").source
  local dir = src:match("^@(.*)/[^/]*$")
  if not dir then
    dir = "spec/support"
  end
  return absolute(dir)
end

---------------------------------------------------------------------------
-- Processes
---------------------------------------------------------------------------

local has_proc = exists("/proc/self/stat")

local function alive(pid)
  if not pid then
    return false
  end
  if has_proc then
    local stat = read_file("/proc/" .. pid .. "/stat")
    if not stat then
      return false
    end
    -- state is the first field after the parenthesised command name;
    -- a zombie (Z) or dead (X) master counts as gone.
    local state = stat:match("%)%s+(%a)")
    return state ~= "Z" and state ~= "X"
  end
  return (execute("kill -0 " .. pid .. " 2>/dev/null"))
end

local function children(pid)
  local out = capture("pgrep -P " .. pid .. " 2>/dev/null") or ""
  local list = {}
  for p in out:gmatch("%d+") do
    list[#list + 1] = tonumber(p)
  end
  return list
end

local function signal(pid, sig)
  execute("kill -" .. sig .. " " .. pid .. " 2>/dev/null")
end

local function wait_gone(pid, timeout)
  local deadline = socket.gettime() + timeout
  while alive(pid) do
    if socket.gettime() > deadline then
      return false
    end
    socket.sleep(0.01)
  end
  return true
end

local function free_ports(n)
  local socks, ports = {}, {}
  for i = 1, n do
    local s = assert(socket.tcp())
    assert(s:bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    socks[i], ports[i] = s, tonumber(port)
  end
  for i = 1, n do
    socks[i]:close()
  end
  return ports
end

local function port_open(port)
  local s = socket.tcp()
  s:settimeout(0.25)
  local ok = s:connect("127.0.0.1", port)
  s:close()
  return ok == 1 or ok == true
end

---------------------------------------------------------------------------
-- nginx binary / build information
---------------------------------------------------------------------------

local nginx_bin_cache
local function nginx_bin()
  if nginx_bin_cache then
    return nginx_bin_cache
  end
  local bin = os.getenv("NGINX")
  if not bin or bin == "" then
    local found = trim(capture("command -v nginx 2>/dev/null") or "")
    if found ~= "" then
      bin = found
    else
      for _, p in ipairs({ "/usr/sbin/nginx", "/usr/local/sbin/nginx",
                           "/usr/local/openresty/nginx/sbin/nginx" }) do
        if exists(p) then
          bin = p
          break
        end
      end
    end
  end
  if not bin then
    error("nginx not found (set NGINX=/path/to/nginx)", 3)
  end
  nginx_bin_cache = bin
  return bin
end

local build_info_cache
local function build_info()
  if not build_info_cache then
    build_info_cache = capture(quote(nginx_bin()) .. " -V 2>&1") or ""
  end
  return build_info_cache
end

local function has_module(name)
  return not build_info():find("--without-http_" .. name .. "_module", 1, true)
end

local running_as_root
local function is_root()
  if running_as_root == nil then
    running_as_root = trim(capture("id -u 2>/dev/null") or "") == "0"
  end
  return running_as_root
end

---------------------------------------------------------------------------
-- Registry: stop whatever is still running when the Lua state closes
-- (busted exits with os.exit(code, true), which closes the state on 5.2+;
-- Lua 5.1/LuaJIT's os.exit does not, so there only a normal end of the
-- script or a full collection of everything triggers it). Best effort: a
-- test that forgets stop() should still not leave nginx behind.
---------------------------------------------------------------------------

local running = {}

local function stop_all()
  for h in pairs(running) do
    pcall(h.stop, h)
  end
end

if _VERSION == "Lua 5.1" and newproxy then -- Lua 5.1 / LuaJIT
  local proxy = newproxy(true)
  getmetatable(proxy).__gc = stop_all
  M._sentinel = proxy
else
  M._sentinel = setmetatable({}, { __gc = stop_all })
end

---------------------------------------------------------------------------
-- Low level: fixture.nginx{ http = ..., ports = n, main = ... }
---------------------------------------------------------------------------

local Nginx = {}
Nginx.__index = Nginx

local function make_prefix()
  local base = os.getenv("TMPDIR")
  if not base or base == "" then
    base = "/tmp"
  end
  base = base:gsub("/+$", "")
  for _ = 1, 10 do
    local dir = base .. "/heymarket-nginx-" .. random_hex(6)
    if execute("mkdir -m 700 " .. quote(dir) .. " 2>/dev/null") then
      assert(execute("mkdir " .. quote(dir .. "/conf") .. " " .. quote(dir .. "/logs")
        .. " " .. quote(dir .. "/tmp")), "cannot create directories in " .. dir)
      return dir
    end
  end
  error("cannot create a temporary directory under " .. base, 3)
end

local function remove_dir(dir)
  -- only ever remove what make_prefix created
  if dir and dir:match("/heymarket%-nginx%-%x+$") then
    execute("rm -rf " .. quote(dir))
  end
end

-- nginx configuration string literal (paths may contain spaces)
local function q(s)
  return '"' .. tostring(s):gsub('[\\"]', "\\%0") .. '"'
end

local function build_conf(opts, prefix, ports)
  local vars = { prefix = prefix }
  for i, p in ipairs(ports) do
    vars["port" .. i] = p
  end
  local out = {}
  local function add(s)
    out[#out + 1] = s
  end
  local modules = opts.modules
  if modules == nil then
    modules = M.MODULES
  end
  for _, mod in ipairs(modules or {}) do
    if exists(mod) then
      add("load_module " .. q(mod) .. ";")
    end
  end
  if is_root() then
    -- workers would otherwise run as nobody and might not read files under
    -- the caller's directories; a test server may as well stay root.
    add("user root root;")
  end
  add("worker_processes 1;")
  add("daemon on;")
  add("master_process on;")
  add("pid " .. q(prefix .. "/logs/nginx.pid") .. ";")
  add("error_log " .. q(prefix .. "/logs/error.log") .. " " .. (opts.log_level or "warn") .. ";")
  if opts.main then
    add(substitute(opts.main, vars))
  end
  add("events {")
  add("  worker_connections " .. (opts.worker_connections or 1024) .. ";")
  add("}")
  add("http {")
  add("  access_log off;")
  add("  client_body_temp_path " .. q(prefix .. "/tmp/client_body") .. ";")
  if has_module("proxy") then
    add("  proxy_temp_path " .. q(prefix .. "/tmp/proxy") .. ";")
  end
  if has_module("fastcgi") then
    add("  fastcgi_temp_path " .. q(prefix .. "/tmp/fastcgi") .. ";")
  end
  if has_module("uwsgi") then
    add("  uwsgi_temp_path " .. q(prefix .. "/tmp/uwsgi") .. ";")
  end
  if has_module("scgi") then
    add("  scgi_temp_path " .. q(prefix .. "/tmp/scgi") .. ";")
  end
  add(substitute(opts.http, vars))
  add("}")
  return table.concat(out, "\n") .. "\n"
end

-- What nginx said: the error log, or its stderr when the log is empty (it
-- writes start-up errors to both).
local function startup_log(out_path, log_path)
  local log = read_file(log_path) or ""
  if log:find("%S") then
    return log
  end
  return read_file(out_path) or ""
end

local function looks_like_port_clash(log)
  return log:find("Address already in use", 1, true) ~= nil
      or log:find("bind() to", 1, true) ~= nil
end

--- Starts nginx; returns a handle. See the header of this file.
-- Extra options beyond the brief:
--   setup = function(prefix) ... end   called once, before the first start
--   log_level = "warn"                 error_log level
--   modules = { ... }                  load_module candidates (false: none)
--   timeout = 5                        seconds to wait for readiness
function M.nginx(opts)
  assert(type(opts) == "table", "fixture.nginx{...} expects a table")
  assert(type(opts.http) == "string", "fixture.nginx: `http` (string) is required")
  local nports = opts.ports or 1
  local timeout = opts.timeout or START_TIMEOUT
  local bin = nginx_bin()
  local prefix = make_prefix()
  local function fail(msg)
    remove_dir(prefix)
    error(msg, 3)
  end

  if opts.setup then
    local ok, err = pcall(opts.setup, prefix)
    if not ok then
      fail("fixture.nginx: setup failed: " .. tostring(err))
    end
  end

  local conf_path = prefix .. "/conf/nginx.conf"
  local log_path = prefix .. "/logs/error.log"
  local pid_path = prefix .. "/logs/nginx.pid"
  local out_path = prefix .. "/logs/startup.out"
  local last_error

  for attempt = 1, START_ATTEMPTS do
    local ports = free_ports(nports)
    write_file(conf_path, build_conf(opts, prefix, ports))
    os.remove(log_path)
    os.remove(pid_path)
    local cmd = quote(bin) .. " -p " .. quote(prefix .. "/") .. " -c conf/nginx.conf -e "
      .. quote(log_path) .. " >" .. quote(out_path) .. " 2>&1"
    local ok, code = execute(cmd)
    local log = startup_log(out_path, log_path)
    if ok then
      -- the daemonised master writes its pid file right after forking
      local deadline = socket.gettime() + timeout
      local pid
      while true do
        pid = tonumber(read_file(pid_path) or "")
        if pid or socket.gettime() > deadline then
          break
        end
        socket.sleep(0.005)
      end
      if not pid then
        last_error = "nginx did not write its pid file within " .. timeout .. "s"
      else
        local pending = {}
        for i = 1, nports do
          pending[i] = ports[i]
        end
        while #pending > 0 and alive(pid) and socket.gettime() <= deadline do
          if port_open(pending[#pending]) then
            pending[#pending] = nil
          else
            socket.sleep(0.01)
          end
        end
        if #pending == 0 and alive(pid) then
          local h = setmetatable({
            prefix = prefix,
            ports = ports,
            pid = pid,
            conf = conf_path,
            log_path = log_path,
            pid_path = pid_path,
            keep = os.getenv("HEYMARKET_FIXTURE_KEEP") == "1" or opts.keep,
            -- keeps the sentinel alive as long as any handle is reachable
            _sentinel = M._sentinel,
          }, Nginx)
          running[h] = true
          return h
        end
        -- clean up the half-started server before retrying
        signal(pid, "TERM")
        if not wait_gone(pid, 2) then
          signal(pid, "KILL")
          wait_gone(pid, 1)
        end
        log = startup_log(out_path, log_path)
        last_error = alive(pid) and "nginx is stuck" or
          ("nginx did not accept connections on ports " .. table.concat(ports, ", ")
           .. " within " .. timeout .. "s")
      end
    else
      last_error = "nginx exited with status " .. tostring(code)
    end
    last_error = last_error .. " (attempt " .. attempt .. "/" .. START_ATTEMPTS
      .. ", prefix " .. prefix .. ")\n--- error log tail ---\n" .. tail(log, 30)
    if ok or not looks_like_port_clash(log) then
      -- only a port taken between probing and binding is worth a retry; a
      -- configuration error or a port nginx does not listen on stays.
      break
    end
  end
  fail("fixture.nginx: could not start nginx: " .. last_error)
end

function Nginx:error_log()
  if self.final_log then
    return self.final_log
  end
  return read_file(self.log_path) or ""
end

function Nginx:running()
  return not self.stopped and alive(self.pid)
end

--- Stops nginx (TERM, then KILL after a bounded wait) and removes the prefix.
-- Safe to call more than once. Returns true if nginx exited cleanly.
function Nginx:stop()
  if self.stopped then
    return self.clean
  end
  self.stopped = true
  running[self] = nil
  local pid = self.pid
  local clean = true
  if alive(pid) then
    local kids = children(pid)
    signal(pid, "TERM")
    if not wait_gone(pid, STOP_TIMEOUT) then
      clean = false
      kids = children(pid)
      signal(pid, "KILL")
      wait_gone(pid, 2)
    end
    -- workers normally exit before the master; make sure after a KILL
    for _, k in ipairs(kids) do
      if alive(k) then
        clean = false
        signal(k, "KILL")
        wait_gone(k, 1)
      end
    end
  end
  self.final_log = read_file(self.log_path) or ""
  if not self.keep then
    remove_dir(self.prefix)
  end
  self.clean = clean
  return clean
end

---------------------------------------------------------------------------
-- Certificates
---------------------------------------------------------------------------

local OPENSSL_CNF = [[
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always

[wrong_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
]]

-- Creates <dir>/ca.pem, ca.key, server.pem/.key, wrong.pem/.key and
-- <dir>/capath/<hash>.0. One shell, the two leaf certificates in parallel.
function M.make_certs(dir)
  local openssl = os.getenv("OPENSSL")
  if not openssl or openssl == "" then
    openssl = "openssl"
  end
  assert(execute("mkdir -p " .. quote(dir .. "/capath")), "cannot create " .. dir)
  write_file(dir .. "/openssl.cnf", OPENSSL_CNF)
  local o = quote(openssl)
  local newkey = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local function leaf(name, cn, serial)
    return o .. " req -new -config openssl.cnf " .. newkey .. " -keyout " .. name
      .. ".key -out " .. name .. ".csr -subj /CN=" .. cn .. " && "
      .. o .. " x509 -req -in " .. name .. ".csr -CA ca.pem -CAkey ca.key -set_serial "
      .. serial .. " -days 7 -sha256 -extfile openssl.cnf -extensions " .. name
      .. "_ext -out " .. name .. ".pem"
  end
  local script = table.concat({
    "set -e",
    "cd " .. quote(dir),
    o .. " req -x509 -config openssl.cnf -extensions ca_ext " .. newkey
      .. " -keyout ca.key -out ca.pem -subj '/CN=Heymarket Test CA' -days 7 -sha256",
    "( " .. leaf("server", "localhost", 2) .. " ) > server.log 2>&1 &",
    "s=$!",
    "( " .. leaf("wrong", "wrong.example", 3) .. " ) > wrong.log 2>&1 &",
    "w=$!",
    "wait $s || { cat server.log; exit 1; }",
    "wait $w || { cat wrong.log; exit 1; }",
    o .. " x509 -hash -noout -in ca.pem > ca.hash",
  }, "\n") .. "\n"
  write_file(dir .. "/gen.sh", script)
  local log = dir .. "/gen.log"
  local ok = execute("sh " .. quote(dir .. "/gen.sh") .. " >" .. quote(log) .. " 2>&1")
  if not ok then
    error("openssl certificate generation failed:\n" .. tail(read_file(log), 30), 2)
  end
  local hash = trim(read_file(dir .. "/ca.hash") or "")
  assert(hash:match("^%x+$"), "openssl x509 -hash gave no hash")
  write_file(dir .. "/capath/" .. hash .. ".0", assert(read_file(dir .. "/ca.pem")))
  return {
    ca_file = dir .. "/ca.pem",
    ca_path = dir .. "/capath",
    server_cert = dir .. "/server.pem",
    server_key = dir .. "/server.key",
    wrong_cert = dir .. "/wrong.pem",
    wrong_key = dir .. "/wrong.key",
  }
end

---------------------------------------------------------------------------
-- High level: the fake Heymarket API
---------------------------------------------------------------------------

local function api_locations()
  local handle = "content_by_lua_block { require(\"fixture_app\").handle() }"
  return table.concat({
    "    default_type application/json;",
    "    location / { " .. handle .. " }",
    -- nginx closes the connection after this (short) response
    "    location ~ ^/t/short/ { keepalive_timeout 0; " .. handle .. " }",
    "    location ~ ^/t/gzip/ {",
    "      gzip on; gzip_types application/json; gzip_min_length 1;",
    "      gzip_proxied any; gzip_vary on; gzip_http_version 1.0;",
    "      " .. handle,
    "    }",
  }, "\n")
end

local Server = {}
Server.__index = Server

function M.start(opts)
  opts = opts or {}
  local lua_dir = support_dir()
  local locations = api_locations()
  local http = table.concat({
    'lua_package_path "' .. lua_dir .. '/?.lua;;";',
    "lua_shared_dict fixture_counts 1m;",
    'init_by_lua_block { require "fixture_app" }',
    "server {",
    "    listen 127.0.0.1:${port1};",
    locations,
    "}",
    "server {",
    "    listen 127.0.0.1:${port2} ssl http2;",
    "    ssl_certificate \"${prefix}/certs/server.pem\";",
    "    ssl_certificate_key \"${prefix}/certs/server.key\";",
    locations,
    "}",
    "server {",
    "    listen 127.0.0.1:${port3} ssl;",
    "    ssl_certificate \"${prefix}/certs/wrong.pem\";",
    "    ssl_certificate_key \"${prefix}/certs/wrong.key\";",
    locations,
    "}",
    opts.http or "",
  }, "\n")

  local certs
  local h = M.nginx({
    http = http,
    ports = 3,
    main = opts.main,
    worker_connections = opts.worker_connections,
    log_level = opts.log_level,
    timeout = opts.timeout,
    setup = function(prefix)
      certs = M.make_certs(prefix .. "/certs")
    end,
  })
  local p = h.ports
  return setmetatable({
    nginx = h,
    prefix = h.prefix,
    ports = p,
    http = "http://127.0.0.1:" .. p[1],
    https = "https://127.0.0.1:" .. p[2],
    https_wrong_host = "https://127.0.0.1:" .. p[3],
    ca_file = certs.ca_file,
    ca_path = certs.ca_path,
    key = M.API_KEY,
    seq = 0,
    salt = random_hex(3),
  }, Server)
end

--- A fresh unique token, e.g. "t1_a3f09c" (URL-safe, no "/" or "-").
function Server:token()
  self.seq = self.seq + 1
  return "t" .. self.seq .. "_" .. self.salt .. random_hex(2)
end

--- Number of requests the server saw for count/<token> (via GET /count/<token>).
function Server:hits(token)
  local http = require("socket.http")
  local chunks = {}
  local ok, code = http.request({
    url = self.http .. "/count/" .. token,
    headers = { authorization = "Bearer " .. self.key },
    sink = require("ltn12").sink.table(chunks),
  })
  if not ok or code ~= 200 then
    error("GET /count/" .. token .. " failed: " .. tostring(code), 2)
  end
  return tonumber(table.concat(chunks):match('"hits":(%d+)'))
end

function Server:error_log()
  return self.nginx:error_log()
end

function Server:stop()
  return self.nginx:stop()
end

-- For the tools: start the fake API (M.start(opts)), call fn(srv), and stop
-- it whatever fn did; if fn raised, write "<what> failed: <traceback>" to
-- stderr and exit 1.
function M.serve(opts, fn, what)
  local srv
  local ok, err = xpcall(function()
    srv = M.start(opts)
    fn(srv)
  end, debug.traceback)
  if srv then
    pcall(srv.stop, srv)
  end
  if not ok then
    io.stderr:write(what, " failed: ", tostring(err), "\n")
    os.exit(1)
  end
end

return M

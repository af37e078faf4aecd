-- heymarket.resty: Heymarket requests inside OpenResty / ngx_lua without
-- blocking the nginx worker.
--
--   local hm = require("heymarket.resty")
--   local inboxes, message, err = hm.inboxes([client])
--   local team, message, err = hm.team([client])
--   local value, message, err = hm.get([client,] "/v1/team")
--
-- Each call returns exactly what the blocking client call returns, but
-- while the request is in flight it sleeps with ngx.sleep between polls, so
-- the worker goes on serving other requests. That needs a phase that may
-- yield: rewrite, access, content or a timer; any other phase raises at
-- once rather than stall the worker.
--
-- Without a client, each worker makes a default one with heymarket.new() on
-- first use and keeps it. nginx clears the environment of its processes, so
-- that needs `env HEYMARKET_API_KEY;` (and `env HEYMARKET_BASE_URL;` if you
-- set that) at the main level of nginx.conf.
--
-- A client made before nginx forks (init_by_lua) may be used in the workers:
-- the C module gives each process its own connections.
--
-- luacheck: read globals ngx

local heymarket = require("heymarket")

if type(ngx) ~= "table" or type(ngx.sleep) ~= "function" then
  error("heymarket.resty: needs OpenResty / ngx_lua (no global `ngx`)", 2)
end

-- Sleeps between polls grow from FIRST_SLEEP, doubling, to MAX_SLEEP (in
-- seconds): a quick answer is seen within a millisecond or two, and a slow
-- one costs the worker no more than 1 / MAX_SLEEP wake-ups a second.
local FIRST_SLEEP = 0.001
local MAX_SLEEP = 0.02

local CAN_WAIT = { rewrite = true, access = true, content = true, timer = true }

local M = {}

local default_client

local function is_client(v)
  return type(v) == "userdata" and getmetatable(v) == "heymarket.Client"
end

local function check_phase()
  local phase = ngx.get_phase()
  if not CAN_WAIT[phase] then
    error(string.format('heymarket.resty: cannot wait in the "%s" phase '
      .. "(use rewrite, access, content or a timer)", tostring(phase)), 3)
  end
end

local function resolve_client(name, client)
  if client == nil then
    default_client = default_client or heymarket.new()
    return default_client
  end
  if not is_client(client) then
    error(string.format("heymarket.resty.%s: first argument must be a heymarket client (got %s)",
      name, type(client)), 3)
  end
  return client
end

-- If the request handler is aborted while we sleep, this coroutine is never
-- resumed: the request object then becomes garbage and its __gc frees the
-- transfer. If ngx.sleep raises instead, cancel before passing the error on.
local function await(req)
  local delay = FIRST_SLEEP
  while not req:poll() do
    local ok, err = pcall(ngx.sleep, delay)
    if not ok then
      req:cancel()
      error(err, 0)
    end
    delay = delay * 2
    if delay > MAX_SLEEP then
      delay = MAX_SLEEP
    end
  end
  return req:result()
end

--- inboxes([client]): the inbox array, or nil, message, err.
function M.inboxes(client)
  check_phase()
  client = resolve_client("inboxes", client)
  return await(client:inboxes_async())
end

--- team([client]): the team table, or nil, message, err.
function M.team(client)
  check_phase()
  client = resolve_client("team", client)
  return await(client:team_async())
end

--- get([client,] path): the decoded JSON at path, or nil, message, err.
function M.get(...)
  local client, path
  if select("#", ...) >= 2 or is_client((...)) then
    client, path = ...
  else
    path = ...
  end
  check_phase()
  if type(path) ~= "string" then
    error(string.format("heymarket.resty.get: path must be a string (got %s)",
      path == nil and "no value" or type(path)), 2)
  end
  client = resolve_client("get", client)
  return await(client:get_async(path))
end

return M

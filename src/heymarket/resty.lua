-- heymarket.resty: Heymarket requests inside OpenResty / ngx_lua without
-- blocking the nginx worker.
--
--   local hm = require("heymarket.resty")
--   local inboxes, message, err = hm.inboxes([client])
--   local team, message, err = hm.team([client])
--   local value, message, err = hm.get([client,] "/v1/team")
--
-- Each call returns exactly what the blocking client call returns, but
-- while the request is in flight the calling request handler waits on a
-- semaphore, so the worker goes on serving other requests. nginx cannot
-- watch the sockets of another library, so one poller per worker (an
-- ngx.timer that exists only while something waits) drives every client
-- with requests in flight once a millisecond and wakes the handlers whose
-- requests finished: the cost is per worker, not per waiting request.
-- Waiting needs a phase that may yield: rewrite, access, content or a
-- timer; any other phase raises at once rather than stall the worker.
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

local shared = require("heymarket._client")

if type(ngx) ~= "table" or type(ngx.sleep) ~= "function" then
  error("heymarket.resty: needs OpenResty / ngx_lua (no global `ngx`)", 2)
end

local has_semaphore, semaphore = pcall(require, "ngx.semaphore")

-- The poller's period in seconds: a finished request is noticed within
-- about this long.
local TICK = 0.001
-- A waiting handler also looks for itself this often (seconds), should the
-- poller ever have stopped.
local SELF_CHECK = 2

-- Without ngx.semaphore or a timer: each request polls for itself, its
-- sleeps growing from FIRST_SLEEP, doubling, to MAX_SLEEP (in seconds).
local FIRST_SLEEP = 0.001
local MAX_SLEEP = 0.02

local CAN_WAIT = { rewrite = true, access = true, content = true, timer = true }

local M = {}

local waiting = {}   -- request -> { sema =, client =, error = }
local n_waiting = 0
local clients = {}   -- client -> how many of the waiting requests are on it
local running = false

local function check_phase()
  local phase = ngx.get_phase()
  if not CAN_WAIT[phase] then
    error(string.format('heymarket.resty: cannot wait in the "%s" phase '
      .. "(use rewrite, access, content or a timer)", tostring(phase)), 3)
  end
end

local function forget(req)
  local w = waiting[req]
  if w then
    waiting[req] = nil
    n_waiting = n_waiting - 1
    local left = clients[w.client] - 1
    clients[w.client] = left > 0 and left or nil
  end
  return w
end

-- Wake the handlers of client's finished requests (of every request of
-- client with raised as the error to pass on, or every request at all when
-- client is nil).
local function wake(client, raised)
  for req, w in pairs(waiting) do
    if client == nil or w.client == client then
      local ok, done = true, raised ~= nil
      if raised == nil then
        -- poll() raises only when out of memory: that request's handler
        -- gets the error, the poller and the others go on
        ok, done = pcall(req.poll, req)
      end
      if raised ~= nil or not ok then
        w.error = raised ~= nil and raised or done
        forget(req)
        w.sema:post(1)
      elseif done then
        forget(req)
        w.sema:post(1)
      end
    end
  end
end

local function poller(premature)
  if premature then
    running = false
    wake(nil, "heymarket.resty: the nginx worker is exiting")
    return
  end
  while n_waiting > 0 do
    for client in pairs(clients) do
      local ok, finished = pcall(client.drive, client)
      if not ok then
        wake(client, finished)
      elseif finished > 0 then
        wake(client)
      end
    end
    if n_waiting == 0 then
      break
    end
    local ok, err = pcall(ngx.sleep, TICK)
    if not ok then
      wake(nil, err)
      break
    end
  end
  running = false
end

local function ensure_poller()
  if running then
    return true
  end
  local ok = ngx.timer.at(0, poller)
  running = ok and true or false
  return running
end

-- Each request polls for itself. If the handler is aborted while it sleeps,
-- its coroutine is never resumed: the request object then becomes garbage and
-- its __gc frees the transfer. If ngx.sleep raises instead, cancel before
-- passing the error on.
local function await_alone(req)
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

-- Wait on a semaphore the poller posts once req has finished. An error
-- while waiting (the poller could not sleep, the worker is exiting, the wait
-- itself failed) cancels the request and is passed on.
local function await(client, req)
  if req:poll() then
    return req:result()
  end
  if not has_semaphore then
    return await_alone(req)
  end
  local w = { sema = semaphore.new(0), client = client }
  waiting[req] = w
  n_waiting = n_waiting + 1
  clients[client] = (clients[client] or 0) + 1
  if not ensure_poller() then
    forget(req)
    return await_alone(req)
  end
  while true do
    local ok, posted = pcall(w.sema.wait, w.sema, SELF_CHECK)
    if not ok then
      forget(req)
      req:cancel()
      error(posted, 0)
    end
    if w.error ~= nil then
      req:cancel()
      error(w.error, 0)
    end
    if posted or waiting[req] == nil then
      break
    end
    if req:poll() then
      forget(req)
      break
    end
    if not ensure_poller() then
      forget(req)
      return await_alone(req)
    end
  end
  return req:result()
end

--- inboxes([client]): the inbox array, or nil, message, err.
function M.inboxes(client)
  check_phase()
  client = shared.resolve("heymarket.resty.inboxes", client, 2)
  return await(client, client:inboxes_async())
end

--- team([client]): the team table, or nil, message, err.
function M.team(client)
  check_phase()
  client = shared.resolve("heymarket.resty.team", client, 2)
  return await(client, client:team_async())
end

--- get([client,] path): the decoded JSON at path, or nil, message, err.
function M.get(...)
  local client, path
  if select("#", ...) >= 2 or shared.is_client((...)) then
    client, path = ...
  else
    path = ...
  end
  check_phase()
  if type(path) ~= "string" then
    error(string.format("heymarket.resty.get: path must be a string (got %s)",
      path == nil and "no value" or type(path)), 2)
  end
  client = shared.resolve("heymarket.resty.get", client, 2)
  return await(client, client:get_async(path))
end

return M

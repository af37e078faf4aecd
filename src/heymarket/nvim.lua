-- heymarket.nvim: Heymarket requests that never block Neovim.
--
--   local hm = require("heymarket.nvim")
--   hm.inboxes(function(inboxes, message, err) ... end)
--   hm.team([client,] callback)
--   hm.get([client,] "/v1/team", callback)
--
-- Each call starts a request on the client's curl multi handle and returns
-- the request object at once (req:cancel() works on it). Nothing polls:
-- the sockets libcurl works on are watched with libuv poll handles and
-- libcurl's own timeouts run on one libuv timer (client:sockets(),
-- client:timeout() and client:drive(), see the README), so Neovim wakes up
-- only when there is something to do, and the timer exists only while a
-- request is in flight. The callback gets what the blocking call returns,
-- through vim.schedule, so it may call vim.api freely (an error in it is
-- Neovim's to report, like any scheduled callback's, and touches no other
-- request). req:cancel() makes the callback run with nil, message, err of
-- kind "cancelled".
--
-- Without a client, a default one is made on first use with heymarket.new()
-- (HEYMARKET_API_KEY, HEYMARKET_BASE_URL) and kept.
--
-- luacheck: read globals vim

local shared = require("heymarket._client")

if type(vim) ~= "table" then
  error("heymarket.nvim: needs Neovim (no global `vim`)", 2)
end

local uv = vim.uv or vim.loop
local unpack = table.unpack or unpack

local M = {}

local jobs = {}    -- in flight, in order: { req =, callback =, path =, client = }
local clients = {} -- client -> how many of jobs are on it
local watched = {} -- fd -> { handle = libuv poll handle, client =, events = "r"|"w"|"rw" }
local timer        -- the libuv timer, only while jobs is not empty

local function pack(...)
  return { n = select("#", ...), ... }
end

local function deliver(callback, results)
  vim.schedule(function()
    callback(unpack(results, 1, results.n))
  end)
end

-- poll(), result() and drive() raise only for a mistake or exhaustion inside
-- the module (out of memory, say), never for the network. Such an error must
-- not strand the other requests: the request is cancelled and its callback
-- gets nil, message, err like any failure, with the kind "internal" (not one
-- of the network kinds, so it is not mistaken for one) and the raised error
-- as err.message.
local function internal_failure(job, raised)
  pcall(job.req.cancel, job.req)
  local detail = tostring(raised)
  return {
    n = 3,
    nil,
    "heymarket: GET " .. job.path .. ": internal: " .. detail,
    { kind = "internal", message = detail, method = "GET", path = job.path,
      retryable = false },
  }
end

local function unwatch(fd)
  local w = watched[fd]
  if w then
    watched[fd] = nil
    w.handle:stop()
    w.handle:close()
  end
end

local sync

local function finish(job, results)
  clients[job.client] = clients[job.client] - 1
  deliver(job.callback, results)
end

-- Deliver every finished job of client (of every client when nil), or with
-- raised, end them all with that error (drive() or sockets() failed).
local function reap(client, raised)
  local list, still = jobs, {}
  jobs = still
  for _, job in ipairs(list) do
    if client ~= nil and job.client ~= client then
      still[#still + 1] = job
    elseif raised ~= nil then
      finish(job, internal_failure(job, raised))
    else
      local ok, done = pcall(job.req.poll, job.req)
      if not ok then
        finish(job, internal_failure(job, done))
      elseif done then
        local results = pack(pcall(job.req.result, job.req))
        if results[1] then
          finish(job, pack(unpack(results, 2, results.n)))
        else
          finish(job, internal_failure(job, results[2]))
        end
      else
        still[#still + 1] = job
      end
    end
  end
end

-- After an event on client: deliver what finished, then watch what libcurl
-- wants now.
local function after(client, ok, finished)
  if not ok then
    reap(client, finished)
  elseif finished > 0 then
    reap(client)
  end
  sync(client)
end

local function on_timer()
  for client in pairs(clients) do
    local due = client:timeout()
    if due ~= nil and due <= 0.001 then
      after(client, pcall(client.drive, client))
    end
  end
  sync()
end

local function rearm()
  if not timer then
    return
  end
  local soonest
  for client in pairs(clients) do
    local due = client:timeout()
    if due ~= nil and (soonest == nil or due < soonest) then
      soonest = due
    end
  end
  if soonest == nil then
    timer:stop()
  else
    timer:start(math.ceil(soonest * 1000), 0, on_timer)
  end
end

local function watch(client, fd, events)
  local w = watched[fd]
  if w and w.client ~= client then
    unwatch(fd) -- a descriptor another client let go of, now reused
    w = nil
  end
  if not w then
    local handle, err = uv.new_socket_poll(fd)
    if not handle then
      error("cannot watch socket " .. fd .. ": " .. tostring(err), 0)
    end
    w = { handle = handle, client = client }
    watched[fd] = w
  end
  if w.events ~= events then
    w.events = events
    w.handle:start(events, function(err, ready)
      after(client, pcall(client.drive, client, fd, err and "rw" or ready))
    end)
  end
end

-- Make the poll handles match what client wants (every client when nil);
-- a client with nothing in flight is no longer watched. Then the timer.
sync = function(client)
  if client == nil then
    for c in pairs(clients) do
      sync(c)
    end
    return
  end
  if (clients[client] or 0) <= 0 then
    clients[client] = nil
    for fd, w in pairs(watched) do
      if w.client == client then
        unwatch(fd)
      end
    end
    pcall(client.sockets, client) -- lets it close what it had to keep open for us
  else
    local ok, wanted = pcall(client.sockets, client)
    if not ok then
      reap(client, wanted)
      return sync(client)
    end
    for fd, w in pairs(watched) do
      if w.client == client and wanted[fd] == nil then
        unwatch(fd)
      end
    end
    for fd, events in pairs(wanted) do
      local watched_ok, err = pcall(watch, client, fd, events)
      if not watched_ok then
        reap(client, err)
        return sync(client)
      end
    end
  end
  if next(clients) == nil then
    if timer then
      timer:stop()
      timer:close()
      timer = nil
    end
  else
    rearm()
  end
end

local function track(client, req, path, callback)
  jobs[#jobs + 1] = { req = req, callback = callback, path = path, client = client }
  clients[client] = (clients[client] or 0) + 1
  if not timer then
    timer = uv.new_timer()
  end
  sync(client)
  return req
end

local function check_callback(name, callback)
  if type(callback) ~= "function" then
    error(string.format("heymarket.nvim.%s: callback must be a function (got %s)",
      name, callback == nil and "no value" or type(callback)), 3)
  end
end

-- inboxes([client,] callback) and team([client,] callback)
local function fixed_path(name, path)
  local start = name .. "_async"
  return function(...)
    local client, callback
    if select("#", ...) >= 2 or shared.is_client((...)) then
      client, callback = ...
    else
      callback = ...
    end
    check_callback(name, callback)
    client = shared.resolve("heymarket.nvim." .. name, client, 2)
    return track(client, client[start](client), path, callback)
  end
end

M.inboxes = fixed_path("inboxes", "/v1/inboxes")
M.team = fixed_path("team", "/v1/team")

--- get([client,] path, callback)
function M.get(...)
  local client, path, callback
  if select("#", ...) >= 3 or shared.is_client((...)) then
    client, path, callback = ...
  else
    path, callback = ...
  end
  check_callback("get", callback)
  if type(path) ~= "string" then
    error(string.format("heymarket.nvim.get: path must be a string (got %s)",
      path == nil and "no value" or type(path)), 2)
  end
  client = shared.resolve("heymarket.nvim.get", client, 2)
  return track(client, client:get_async(path), path, callback)
end

return M

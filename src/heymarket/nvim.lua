-- heymarket.nvim: Heymarket requests that never block Neovim.
--
--   local hm = require("heymarket.nvim")
--   hm.inboxes(function(inboxes, message, err) ... end)
--   hm.team([client,] callback)
--   hm.get([client,] "/v1/team", callback)
--
-- Each call starts a request on the client's curl multi handle and returns
-- the request object at once (req:cancel() works on it). One libuv timer
-- polls every request in flight and exists only while there is one; the
-- callback gets what the blocking call returns, through vim.schedule, so it
-- may call vim.api freely (an error in it is Neovim's to report, like any
-- scheduled callback's, and touches no other request). req:cancel() makes
-- the callback run with nil, message, err of kind "cancelled".
--
-- Without a client, a default one is made on first use with heymarket.new()
-- (HEYMARKET_API_KEY, HEYMARKET_BASE_URL) and kept.
--
-- luacheck: read globals vim

local heymarket = require("heymarket")

if type(vim) ~= "table" then
  error("heymarket.nvim: needs Neovim (no global `vim`)", 2)
end

local uv = vim.uv or vim.loop
local unpack = table.unpack or unpack

-- How often the timer polls while requests are in flight, in milliseconds:
-- at most this much latency is added, and nothing runs when idle.
local INTERVAL = 10

local M = {}

local in_flight = {} -- { req = request, callback = function, path = string }
local timer          -- the libuv timer, only while in_flight is not empty
local default_client

local function is_client(v)
  return type(v) == "userdata" and getmetatable(v) == "heymarket.Client"
end

local function pack(...)
  return { n = select("#", ...), ... }
end

local function deliver(callback, results)
  vim.schedule(function()
    callback(unpack(results, 1, results.n))
  end)
end

-- poll() and result() raise only for a mistake or exhaustion inside the
-- module (out of memory, say), never for the network. Such an error must
-- neither stop the timer nor strand the other requests: the request is
-- cancelled and its callback gets nil, message, err like any failure, with
-- the kind "internal" (not one of the network kinds, so it is not mistaken
-- for one) and the raised error as err.message.
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

local function stop_timer()
  if timer then
    timer:stop()
    timer:close()
    timer = nil
  end
end

local function tick()
  -- Callbacks never run from here (vim.schedule), but swap the list anyway
  -- so that a request started meanwhile could not be lost.
  local jobs, still = in_flight, {}
  in_flight = still
  for _, job in ipairs(jobs) do
    local ok, done = pcall(job.req.poll, job.req)
    if not ok then
      deliver(job.callback, internal_failure(job, done))
    elseif done then
      local results = pack(pcall(job.req.result, job.req))
      if results[1] then
        deliver(job.callback, pack(unpack(results, 2, results.n)))
      else
        deliver(job.callback, internal_failure(job, results[2]))
      end
    else
      still[#still + 1] = job
    end
  end
  if #in_flight == 0 then
    stop_timer()
  end
end

local function track(req, path, callback)
  in_flight[#in_flight + 1] = { req = req, callback = callback, path = path }
  if not timer then
    timer = uv.new_timer()
    timer:start(INTERVAL, INTERVAL, tick)
  end
  return req
end

local function check_callback(name, callback)
  if type(callback) ~= "function" then
    error(string.format("heymarket.nvim.%s: callback must be a function (got %s)",
      name, callback == nil and "no value" or type(callback)), 3)
  end
end

local function resolve_client(name, client)
  if client == nil then
    default_client = default_client or heymarket.new()
    return default_client
  end
  if not is_client(client) then
    error(string.format("heymarket.nvim.%s: first argument must be a heymarket client (got %s)",
      name, type(client)), 3)
  end
  return client
end

-- inboxes([client,] callback) and team([client,] callback)
local function fixed_path(name, path)
  local start = name .. "_async"
  return function(...)
    local client, callback
    if select("#", ...) >= 2 or is_client((...)) then
      client, callback = ...
    else
      callback = ...
    end
    check_callback(name, callback)
    client = resolve_client(name, client)
    return track(client[start](client), path, callback)
  end
end

M.inboxes = fixed_path("inboxes", "/v1/inboxes")
M.team = fixed_path("team", "/v1/team")

--- get([client,] path, callback)
function M.get(...)
  local client, path, callback
  if select("#", ...) >= 3 or is_client((...)) then
    client, path, callback = ...
  else
    path, callback = ...
  end
  check_callback("get", callback)
  if type(path) ~= "string" then
    error(string.format("heymarket.nvim.get: path must be a string (got %s)",
      path == nil and "no value" or type(path)), 2)
  end
  client = resolve_client("get", client)
  return track(client:get_async(path), path, callback)
end

return M

-- Handlers for the nginx that spec/resty_spec.lua starts: each location
-- calls heymarket.resty in one phase and answers with what it saw, as
-- `name=value` lines.
--
-- Needs `lua_shared_dict resty_spec 1m;` and
-- `init_by_lua_block { require("resty_app").init{ http = ..., key = ... } }`.
--
-- luacheck: std +ngx_lua

local heymarket = require("heymarket")
local resty = require("heymarket.resty")

local M = {}

local settings    -- { http = fake API, key = its key }
local clients = {} -- per process, made on first use
local forked      -- made in init_by_lua, before nginx forks its worker
local init = {}   -- what init_by_lua saw, inherited by the worker

local function dict()
  return ngx.shared.resty_spec
end

local function pid()
  local f = assert(io.open("/proc/self/stat", "r"))
  local stat = f:read("*l")
  f:close()
  return tonumber(stat:match("^(%d+)"))
end

-- "ok": the plain API; "slow": every answer after 1 s; "bad": a wrong key.
local function client(name)
  if not clients[name] then
    local key, base = settings.key, settings.http
    if name == "slow" then
      base = base .. "/t/sleep/1000"
    elseif name == "bad" then
      key = key .. "x"
    end
    clients[name] = heymarket.new{ api_key = key, base_url = base, max_retries = 0 }
  end
  return clients[name]
end

-- The error raised by f(...), or "no error".
local function raised(f, ...)
  local ok, err = pcall(f, ...)
  return ok and "no error" or tostring(err)
end

local function say(name, value)
  ngx.say(name, "=", tostring(value))
end

local function say_outcome(value, message, err)
  say("message", message)
  say("kind", err and err.kind)
  say("status", err and err.status)
  return value
end

function M.init(opts)
  settings = opts
  -- Used here, in the process that forks, so it owns a multi handle and a
  -- kept-alive connection by the time the worker inherits it.
  forked = heymarket.new{ api_key = opts.key, base_url = opts.http, max_retries = 0 }
  local team, message = forked:team()
  init.team = team and team.name or message
  init.pid = pid()
  init.phase_error = raised(resty.inboxes, forked)
end

function M.init_worker()
  init.worker_phase_error = raised(resty.team, client("ok"))
end

-- content: the inboxes after a 1 s wait; marks the wait in the shared dict
function M.slow()
  local t0 = ngx.now()
  dict():set("slow_waiting", true)
  local inboxes, message = resty.inboxes(client("slow"))
  dict():set("slow_waiting", false)
  ngx.update_time()
  say("name", inboxes and inboxes[1].name)
  say("message", message)
  say("elapsed", ngx.now() - t0)
  say("pid", ngx.worker.pid())
end

-- content: answers at once, saying whether the slow request is waiting
function M.quick()
  say("waiting", dict():get("slow_waiting"))
  say("pid", ngx.worker.pid())
end

function M.team()
  local team = say_outcome(resty.team(client("ok")))
  say("name", team and team.name)
end

function M.get()
  local team = say_outcome(resty.get(client("ok"), "/v1/team"))
  say("list_size", team and team.list_size)
end

-- the default client, from HEYMARKET_API_KEY and HEYMARKET_BASE_URL
function M.default_get()
  local inboxes = say_outcome(resty.get("/v1/inboxes"))
  say("name", inboxes and inboxes[1].name)
end

function M.unauthorized()
  local value = say_outcome(resty.inboxes(client("bad")))
  say("value", value)
end

function M.bad_arguments()
  say("not_client", raised(resty.team, {}))
  say("get_no_path", raised(resty.get, client("ok")))
  say("get_bad_path", raised(resty.get, client("ok"), "v1/team"))
end

-- rewrite or access: answers from that phase
function M.early()
  say("phase", ngx.get_phase())
  local team = say_outcome(resty.team(client("ok")))
  say("name", team and team.name)
  return ngx.exit(ngx.HTTP_OK)
end

-- content: runs the request in a timer and reports what the timer got
function M.timer()
  local key = "timer_" .. ngx.worker.pid() .. "_" .. ngx.now()
  local ok, err = ngx.timer.at(0, function(premature)
    if premature then return end
    local phase = ngx.get_phase()
    local inboxes, message = resty.inboxes(client("ok"))
    dict():set(key, phase .. " " .. tostring(inboxes and inboxes[1].name or message))
  end)
  if not ok then
    say("error", err)
    return
  end
  local deadline = ngx.now() + 3
  while not dict():get(key) and ngx.now() < deadline do
    ngx.sleep(0.01)
    ngx.update_time()
  end
  say("timer", dict():get(key))
end

-- set_by_lua: the error becomes the variable's value
function M.set_phase()
  return raised(resty.inboxes, client("ok"))
end

function M.header_filter()
  ngx.header["X-Phase-Error"] = raised(resty.inboxes, client("ok"))
end

function M.log()
  dict():set("log_phase_error", raised(resty.team, client("ok")))
end

-- what the phases without a response of their own saw
function M.phases()
  say("init", init.phase_error)
  say("init_worker", init.worker_phase_error)
  say("log", dict():get("log_phase_error"))
end

-- content: the client made before the fork, used in the worker
function M.fork()
  say("init_team", init.team)
  say("forked", init.pid ~= pid())
  local inboxes = say_outcome(resty.inboxes(forked))
  say("name", inboxes and inboxes[1].name)
  local team = resty.team(forked)
  say("team", team and team.name)
end

-- content: ngx.sleep raises while a request waits; the request is cancelled
function M.sleep_error()
  local c = client("slow")
  local methods = debug.getmetatable(c).__index
  local real_async, real_sleep = methods.inboxes_async, ngx.sleep
  local req
  methods.inboxes_async = function(self)
    req = real_async(self)
    return req
  end
  ngx.sleep = function() error("simulated sleep failure", 0) end -- luacheck: ignore 122
  local message = raised(resty.inboxes, c)
  ngx.sleep, methods.inboxes_async = real_sleep, real_async -- luacheck: ignore 122
  say("raised", message)
  say("request", req)
  say_outcome(req:result())
end

-- content: ?n=N requests at once on the slow client, each in its own light
-- thread; says how many times heymarket.resty slept meanwhile and what each
-- request got
function M.many()
  local n = tonumber(ngx.var.arg_n) or 1
  local real_sleep = ngx.sleep
  local sleeps = 0
  ngx.sleep = function(seconds) -- luacheck: ignore 122
    local caller = debug.getinfo(2, "S") -- or pcall's caller
    if caller.what == "C" then caller = debug.getinfo(3, "S") end
    if caller.source:match("heymarket/resty%.lua$") then
      sleeps = sleeps + 1
    end
    return real_sleep(seconds)
  end
  local threads, names = {}, {}
  for i = 1, n do
    threads[i] = ngx.thread.spawn(function()
      local inboxes, message = resty.inboxes(client("slow"))
      return inboxes and inboxes[1].name or message
    end)
  end
  for i = 1, n do
    local _, name = ngx.thread.wait(threads[i])
    names[#names + 1] = tostring(name)
  end
  ngx.sleep = real_sleep -- luacheck: ignore 122
  say("sleeps", sleeps)
  say("names", table.concat(names, ","))
end

return M

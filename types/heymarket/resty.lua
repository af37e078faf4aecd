---@meta heymarket.resty
-- Type definitions for lua-language-server: `require("heymarket.resty")`.
-- See types/heymarket.lua for the shared classes.

---Blocking-style calls that yield to nginx while waiting (rewrite, access,
---content and timer phases).
---@class heymarket.resty
local resty = {}

---@param client? heymarket.Client  default: the worker's default client
---@return heymarket.Inbox[]? inboxes, string? message, heymarket.Error? err
function resty.inboxes(client) end

---@param client? heymarket.Client
---@return heymarket.Team? team, string? message, heymarket.Error? err
function resty.team(client) end

---`get([client,] path)`
---@param client heymarket.Client|string
---@param path? string            starts with "/", may carry a query
---@return any value, string? message, heymarket.Error? err
function resty.get(client, path) end

return resty

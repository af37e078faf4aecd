---@meta heymarket.nvim
-- Type definitions for lua-language-server: `require("heymarket.nvim")`.
-- See types/heymarket.lua for the shared classes.

---@alias heymarket.nvim.Callback fun(result: any, message: string?, err: heymarket.Error?)

---Requests that never block Neovim; callbacks run through vim.schedule.
---@class heymarket.nvim
local nvim = {}

---`inboxes([client,] callback)`: the callback gets the inboxes, or nil, message, err.
---@param client heymarket.Client|fun(inboxes: heymarket.Inbox[]?, message: string?, err: heymarket.Error?)
---@param callback? fun(inboxes: heymarket.Inbox[]?, message: string?, err: heymarket.Error?)
---@return heymarket.Request
function nvim.inboxes(client, callback) end

---`team([client,] callback)`: the callback gets the team, or nil, message, err.
---@param client heymarket.Client|fun(team: heymarket.Team?, message: string?, err: heymarket.Error?)
---@param callback? fun(team: heymarket.Team?, message: string?, err: heymarket.Error?)
---@return heymarket.Request
function nvim.team(client, callback) end

---`get([client,] path, callback)`: the callback gets the decoded JSON, or nil, message, err.
---@param client heymarket.Client|string
---@param path string|heymarket.nvim.Callback
---@param callback? heymarket.nvim.Callback
---@return heymarket.Request
function nvim.get(client, path, callback) end

return nvim

---@meta heymarket
-- Type definitions for editors (lua-language-server): add this folder to
-- `Lua.workspace.library`. Nothing here runs; the module is C.

---@class heymarket.Options
---@field api_key? string         Bearer key; default env HEYMARKET_API_KEY
---@field base_url? string        default env HEYMARKET_BASE_URL, else https://api.heymarket.com
---@field timeout? number         seconds for one attempt (30)
---@field connect_timeout? number seconds to connect (10)
---@field max_retries? integer    retries after the first attempt (2)
---@field max_retry_wait? number  longest Retry-After worth waiting for, seconds (60)
---@field max_response? integer   largest body in bytes, after decompression (32 MiB)
---@field ca_file? string
---@field ca_path? string
---@field proxy? string
---@field user_agent? string      appended to the library's own User-Agent
---@field keep_null? boolean      keep JSON null in objects as heymarket.null

---@class heymarket.Error
---@field kind "http"|"timeout"|"network"|"tls"|"decode"|"too_large"|"cancelled"|"internal"
---@field status? integer
---@field message string
---@field method string
---@field path string
---@field body? string            at most 4 KiB
---@field request_id? string
---@field retry_after? number
---@field location? string
---@field attempts integer
---@field curl_code? integer
---@field retryable boolean

---@class heymarket.Inbox
---@field id integer
---@field name string
---@field team integer
---@field members integer[]
---@field phones string[]
---@field phone string
---@field auto_assignable boolean
---@field forward_number? string
---@field widget_code? string
---@field widget_settings? table
---@field allowed_domains? string[]
---@field invited boolean

---@class heymarket.Member
---@field id integer
---@field name string
---@field role string

---@class heymarket.Team
---@field id integer
---@field name string
---@field list_size integer
---@field members heymarket.Member[]

---@class heymarket.Request
local Request = {}
---@return boolean finished
function Request:poll() end
---@param seconds? number
---@return boolean finished
function Request:wait(seconds) end
---@return any value, string? message, heymarket.Error? err
function Request:result() end
function Request:cancel() end

---@class heymarket.Client
local Client = {}
---@return heymarket.Inbox[]? inboxes, string? message, heymarket.Error? err
function Client:inboxes() end
---@return heymarket.Team? team, string? message, heymarket.Error? err
function Client:team() end
---@param path string starts with "/", may carry a query
---@return any value, string? message, heymarket.Error? err
function Client:get(path) end
---@return heymarket.Request
function Client:inboxes_async() end
---@return heymarket.Request
function Client:team_async() end
---@param path string
---@return heymarket.Request
function Client:get_async(path) end
function Client:close() end

---@class heymarket
---@field _VERSION string
---@field null lightuserdata
local heymarket = {}
---@param options? heymarket.Options
---@return heymarket.Client
function heymarket.new(options) end
---@param options? heymarket.Options
---@return heymarket.Inbox[]? inboxes, string? message, heymarket.Error? err
function heymarket.inboxes(options) end
---@param options? heymarket.Options
---@return heymarket.Team? team, string? message, heymarket.Error? err
function heymarket.team(options) end

return heymarket

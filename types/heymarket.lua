---@meta heymarket
-- Type definitions for lua-language-server: `require("heymarket")`.
-- Nothing here runs (the module is C). Installed by the rock into
-- <rock dir>/types; README.md, "Editor types", shows how to point the
-- language server at them. spec/types_spec.lua fails when a function or field
-- the real module exports is missing here, or one described here is not
-- exported.
--
-- Fields that the API may send as null (a null drops the key, see "Results"
-- in README.md) or may leave out are optional (`?`).

---@class heymarket.Options
---@field api_key? string         Bearer key; default env HEYMARKET_API_KEY
---@field base_url? string        default env HEYMARKET_BASE_URL, else https://api.heymarket.com
---@field timeout? number         seconds for one attempt (30)
---@field connect_timeout? number seconds to connect (10)
---@field max_retries? integer    retries after the first attempt (2)
---@field max_retry_wait? number  longest Retry-After worth waiting for, seconds (60)
---@field max_response? integer   largest body in bytes, after decompression (32 MiB)
---@field max_connections? integer most connections open at once to one host (8)
---@field ca_file? string         CA bundle for TLS (default: the system's trust store)
---@field ca_path? string         CA directory for TLS
---@field proxy? string           e.g. "http://proxy:3128" (default: libcurl's proxy variables)
---@field user_agent? string      appended to the library's own User-Agent
---@field keep_null? boolean      keep JSON null in objects as heymarket.null

---@class heymarket.GetOptions
---@field raw? boolean            true: the body as the server sent it, as a string

---@alias heymarket.ErrorKind "http"|"timeout"|"network"|"tls"|"decode"|"too_large"|"cancelled"|"internal"

---@class heymarket.Error
---@field kind heymarket.ErrorKind
---@field status? integer         the HTTP status, when a response arrived
---@field message string          the server's own message, else the transport's description
---@field method string           "GET"
---@field path string             e.g. "/v1/inboxes"
---@field body? string            the raw response body, at most 4 KiB
---@field request_id? string
---@field retry_after? number     seconds, when the server sent Retry-After
---@field location? string        for a 3xx: the Location header
---@field attempts integer
---@field curl_code? integer      for transport failures
---@field retryable boolean

---@class heymarket.Inbox
---@field id integer
---@field name? string
---@field team? integer
---@field members? integer[]      user ids
---@field phones? string[]
---@field phone? string           the primary number
---@field auto_assignable? boolean
---@field forward_number? string
---@field widget_code? string
---@field widget_settings? table
---@field allowed_domains? string[]
---@field invited? boolean

---@class heymarket.Member
---@field id integer
---@field name? string
---@field role? string

---@class heymarket.Team
---@field id integer
---@field name? string
---@field list_size? integer
---@field members? heymarket.Member[]

---A request started by a client's `*_async` method.
---@class heymarket.Request
local Request = {}

---Does any ready work; never blocks.
---@return boolean finished
function Request:poll() end

---Blocks until the request has finished or `seconds` have passed (no limit when nil).
---@param seconds? number
---@return boolean finished
function Request:wait(seconds) end

---What the blocking call would have returned; raises if not finished.
---@return any value, string? message, heymarket.Error? err
function Request:result() end

---Finishes the request with kind "cancelled".
function Request:cancel() end

---@class heymarket.Client
local Client = {}

---@return heymarket.Inbox[]? inboxes, string? message, heymarket.Error? err
function Client:inboxes() end

---@return heymarket.Team? team, string? message, heymarket.Error? err
function Client:team() end

---Any decoded JSON (or with `{ raw = true }` the body as sent) from GET <base_url><path>.
---@param path string             starts with "/", may carry a query
---@param options? heymarket.GetOptions
---@return any value, string? message, heymarket.Error? err
function Client:get(path, options) end

---@return heymarket.Request
function Client:inboxes_async() end

---@return heymarket.Request
function Client:team_async() end

---@param path string             starts with "/", may carry a query
---@param options? heymarket.GetOptions
---@return heymarket.Request
function Client:get_async(path, options) end

---Frees the connections now; later calls raise. Closing twice is harmless.
function Client:close() end

---For a host event loop (README "Event loops"): the sockets to watch now and
---for what, "r" readable, "w" writable, "rw" both. May hold a descriptor of
---the client's own that turns readable when a request finishes outside
---drive(). A closed client lists nothing.
---@return table<integer, "r"|"w"|"rw"> sockets
function Client:sockets() end

---Seconds until drive() is due even with no socket ready (libcurl's timers,
---a retry's wait), or nil when nothing is scheduled.
---@return number? seconds
function Client:timeout() end

---Does the ready work: fd is ready for events, or (without fd) the timer
---fired and every watched socket is checked without waiting.
---@param fd? integer
---@param events? "r"|"w"|"rw"
---@return integer finished        requests finished since the last drive()
function Client:drive(fd, events) end

---@class heymarket
---@field _VERSION string         e.g. "0.1.0"
---@field null lightuserdata      the JSON null sentinel
local heymarket = {}

---A client; every option is optional.
---@param options? heymarket.Options
---@return heymarket.Client
function heymarket.new(options) end

---Through the default client (made from the environment), or a client made from `options`.
---@param options? heymarket.Options
---@return heymarket.Inbox[]? inboxes, string? message, heymarket.Error? err
function heymarket.inboxes(options) end

---@param options? heymarket.Options
---@return heymarket.Team? team, string? message, heymarket.Error? err
function heymarket.team(options) end

---@param path string             starts with "/", may carry a query
---@param options? heymarket.Options
---@return any value, string? message, heymarket.Error? err
function heymarket.get(path, options) end

return heymarket

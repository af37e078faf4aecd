-- heymarket._client: "the given client, or the default one" for the host
-- wrappers (heymarket.nvim, heymarket.resty). Internal; not an interface.

local heymarket = require("heymarket")

local M = {}

local default_client

--- Whether v is a heymarket client.
function M.is_client(v)
  return type(v) == "userdata" and getmetatable(v) == "heymarket.Client"
end

--- client, or when it is nil the default client (made on first use with
-- heymarket.new(), so from HEYMARKET_API_KEY and HEYMARKET_BASE_URL, and
-- kept). Anything else raises "<who>: first argument must be a heymarket
-- client" at the given level (1 = the caller of resolve).
function M.resolve(who, client, level)
  if client == nil then
    default_client = default_client or heymarket.new()
    return default_client
  end
  if not M.is_client(client) then
    error(string.format("%s: first argument must be a heymarket client (got %s)",
      who, type(client)), (level or 1) + 1)
  end
  return client
end

return M

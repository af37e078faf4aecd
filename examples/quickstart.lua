-- Print your Heymarket inboxes and team.
--   HEYMARKET_API_KEY=... lua examples/quickstart.lua
-- (`make demo` runs it against the bundled fake API.)
local heymarket = require("heymarket")

local inboxes, message = heymarket.inboxes()
if not inboxes then
  io.stderr:write(message, "\n")
  os.exit(1)
end

print(("%d inbox(es)"):format(#inboxes))
for _, inbox in ipairs(inboxes) do
  print(("  #%d %s, phone %s, %d member(s)%s"):format(
    inbox.id, inbox.name, inbox.phone or "-", #(inbox.members or {}),
    inbox.forward_number and (", calls forwarded to " .. inbox.forward_number) or ""))
end

local team, err_message = heymarket.team()
if not team then
  io.stderr:write(err_message, "\n")
  os.exit(1)
end

print(("Team #%d %s (lists up to %d contacts)"):format(team.id, team.name, team.list_size))
for _, member in ipairs(team.members or {}) do
  print(("  #%d %s (%s)"):format(member.id, member.name, member.role))
end

-- examples/init.lua: Heymarket in Neovim. Copy into your init.lua (or
-- `:luafile` it); it adds :HeymarketInboxes, which lists your inboxes in a
-- picker without blocking the editor. Start Neovim with HEYMARKET_API_KEY set.
local hm = require("heymarket.nvim")

vim.api.nvim_create_user_command("HeymarketInboxes", function()
  hm.inboxes(function(inboxes, message)
    if not inboxes then
      vim.notify(message, vim.log.levels.ERROR)
      return
    end
    vim.ui.select(inboxes, {
      prompt = "Heymarket inbox",
      format_item = function(inbox)
        return ("%s  %s"):format(inbox.name, inbox.phone or "-")
      end,
    }, function(inbox)
      if inbox then
        vim.notify(("Using inbox %s (%d)"):format(inbox.name, inbox.id))
      end
    end)
  end)
end, { desc = "Pick one of your Heymarket inboxes" })

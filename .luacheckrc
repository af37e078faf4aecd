-- luacheck configuration: `make lint`
std = "max"
max_line_length = 120
files["spec"] = { std = "+busted" }
files["spec/support/fixture_app.lua"] = { std = "+ngx_lua" }
files["src/heymarket/resty.lua"] = { std = "+ngx_lua" }
files["src/heymarket/nvim.lua"] = { read_globals = { "vim" } }
files["examples/init.lua"] = { read_globals = { "vim" } }
-- type stubs for editors: empty bodies with named arguments
files["types"] = { ignore = { "212", "241" } }

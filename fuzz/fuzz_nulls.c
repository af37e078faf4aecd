/* libFuzzer target, built against Lua 5.1, where heymarket drops the nulls of
 * objects by blanking `"key": null` members in the body text before lua-cjson
 * decodes it, or, where blanking gives up, by looking them up under the keys
 * a pass over the body found (json.c). A differential check against
 * lua-cjson itself: the
 * first byte picks keep_null, the rest is the body, and
 *   - heymarket's decode succeeds exactly when lua-cjson's does (blanking
 *     never makes an invalid body valid, nor a valid one invalid);
 *   - on success the two values agree once lua-cjson's object nulls are
 *     dropped (or, with keep_null, kept: cjson.null is heymarket.null);
 *   - on failure the body is as it was sent (err.body shows it).
 * Build and run: make fuzz */
#include "../src/hm.h"
#include "fuzz_state.h"

#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* reference(body, ok, value, keep_null): raises where heymarket and lua-cjson
 * disagree. */
static const char REFERENCE[] =
    "local cjson = require('cjson')\n"
    "local plain = cjson.new()\n"
    "plain.decode_invalid_numbers(false)\n"
    "local function dropped(v, keep)\n"
    "  if type(v) ~= 'table' then return v end\n"
    "  local out = {}\n"
    "  for k, x in pairs(v) do\n"
    "    if not (x == cjson.null and type(k) == 'string' and not keep) then\n"
    "      out[k] = dropped(x, keep)\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local function same(a, b)\n"
    "  if type(a) ~= type(b) then return false end\n"
    "  if type(a) ~= 'table' then return a == b or (a ~= a and b ~= b) end\n"
    "  for k, x in pairs(a) do if not same(x, b[k]) then return false end end\n"
    "  for k in pairs(b) do if a[k] == nil then return false end end\n"
    "  return true\n"
    "end\n"
    "return function(body, ok, value, keep)\n"
    "  local cjson_ok, expected = pcall(plain.decode, body)\n"
    "  if cjson_ok ~= ok then\n"
    "    error(('lua-cjson %s, heymarket %s'):format(tostring(cjson_ok), tostring(ok)))\n"
    "  end\n"
    "  if ok and type(expected) == 'table' and not same(dropped(expected, keep), value) then\n"
    "    error('the decoded values differ')\n"
    "  end\n"
    "end\n";

static int decode(lua_State *L)
{
    hm_request *req = lua_touserdata(L, 1);
    int keep_null = lua_toboolean(L, 2), ok;
    lua_settop(L, 0);
    ok = hm_json_decode(L, req, 0, keep_null);
    lua_pushboolean(L, ok);
    lua_insert(L, 1);
    return 2;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    hm_request req;
    char *body;
    int keep_null, ok;
    if (L == NULL) {
        L = fuzz_state(decode, "decode");
        if (luaL_loadstring(L, REFERENCE) != 0 || lua_pcall(L, 0, 1, 0) != 0) {
            fprintf(stderr, "reference: %s\n", lua_tostring(L, -1));
            abort();
        }
        lua_setglobal(L, "reference");
    }
    if (size == 0)
        return 0;
    keep_null = data[0] & 1;
    body = malloc(size); /* heymarket blanks in place: never the fuzzer's input */
    if (body == NULL)
        return 0;
    memcpy(body, data + 1, size - 1);
    memset(&req, 0, sizeof req);
    req.shape = HM_SHAPE_ANY;
    req.body.data = body;
    req.body.len = size - 1;

    lua_getglobal(L, "reference");
    lua_pushlstring(L, (const char *)data + 1, size - 1);
    lua_getglobal(L, "decode");
    lua_pushlightuserdata(L, &req);
    lua_pushboolean(L, keep_null);
    if (lua_pcall(L, 2, 2, 0) != 0) {
        fprintf(stderr, "decoding raised: %s\n", lua_tostring(L, -1));
        abort();
    }
    ok = lua_toboolean(L, -2);
    lua_pushboolean(L, keep_null);
    if (lua_pcall(L, 4, 0, 0) != 0) {
        fprintf(stderr, "%s\n", lua_tostring(L, -1));
        abort();
    }
    if (!ok && memcmp(body, data + 1, size - 1 < HM_BODY_IN_ERROR ? size - 1 : HM_BODY_IN_ERROR) != 0) {
        fprintf(stderr, "a body that failed to decode was not put back as sent\n");
        abort();
    }
    free(body);
    lua_settop(L, 0);
    return 0;
}

/* libFuzzer target for decoding and normalising arbitrary bytes as a
 * response body: the first byte picks the expected shape and keep_null,
 * the rest is the body. Properties checked beyond memory safety: decoding
 * never raises (a bad body is a `decode` failure), and a decoded value is
 * normalised: on Lua 5.3+ no integral float is left, and without keep_null
 * no null is left under a string key.
 * Build and run: make fuzz */
#include "../src/hm.h"

#include <lualib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(lua_State *L, int keep_null, int depth)
{
    int t = lua_gettop(L);
    if (depth > 2000 || !lua_checkstack(L, 4))
        abort();
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        if (lua_type(L, -1) == LUA_TTABLE)
            check(L, keep_null, depth + 1);
        else if (lua_type(L, -1) == LUA_TLIGHTUSERDATA && !keep_null
                 && lua_type(L, -2) == LUA_TSTRING) {
            fprintf(stderr, "a null was left under key %s\n", lua_tostring(L, -2));
            abort();
        }
#if HM_HAS_INTEGERS
        else if (lua_type(L, -1) == LUA_TNUMBER && !lua_isinteger(L, -1)) {
            lua_Number x = lua_tonumber(L, -1);
            lua_Integer i;
            if (x == floor(x) && lua_numbertointeger(x, &i)) {
                fprintf(stderr, "an integral float was left: %.17g\n", (double)x);
                abort();
            }
        }
#endif
        lua_pop(L, 1);
    }
}

static int decode(lua_State *L)
{
    hm_request *req = lua_touserdata(L, 1);
    int keep_null = lua_toboolean(L, 2);
    lua_settop(L, 0);
    if (hm_json_decode(L, req, keep_null) && lua_istable(L, -1))
        check(L, keep_null, 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    hm_request req;
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
        lua_newtable(L);
        if (!hm_json_setup(L))
            abort();
        lua_pushcclosure(L, decode, 1);
        lua_setglobal(L, "decode");
    }
    if (size == 0)
        return 0;
    memset(&req, 0, sizeof req);
    req.shape = (hm_shape)(data[0] % 3);
    req.body.data = (char *)data + 1;
    req.body.len = size - 1;
    lua_getglobal(L, "decode");
    lua_pushlightuserdata(L, &req);
    lua_pushboolean(L, data[0] & 4);
    if (lua_pcall(L, 2, 0, 0) != 0) {
        fprintf(stderr, "decoding raised: %s\n", lua_tostring(L, -1));
        abort();
    }
    return 0;
}

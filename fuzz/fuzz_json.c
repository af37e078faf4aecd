/* libFuzzer target for decoding and normalising arbitrary bytes as a
 * response body: the first byte picks the expected shape and keep_null,
 * the rest is the body. Properties checked beyond memory safety: decoding
 * never raises (a bad body is a `decode` failure), a decoded value is
 * normalised (on Lua 5.3+ no integral float is left, and without keep_null
 * no null is left under a string key), and it is what lua-cjson itself
 * decodes, changed only that way (nothing else added, dropped or changed,
 * whichever way the walk found the values to fix).
 * Build and run: make fuzz */
#include "../src/hm.h"
#include "fuzz_state.h"

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

/* Is ours (at index a) what lua-cjson's value (at b) becomes: whole floats
 * integers (5.3+), nulls under string keys dropped unless keep_null? */
static int same(lua_State *L, int a, int b, int keep_null, int depth)
{
    int count = 0, dropped = 0;
    if (depth > 2000 || !lua_checkstack(L, 6))
        abort();
#if HM_HAS_INTEGERS
    if (lua_type(L, b) == LUA_TNUMBER && !lua_isinteger(L, b)) {
        lua_Number x = lua_tonumber(L, b);
        lua_Integer i;
        if (x == floor(x) && lua_numbertointeger(x, &i))
            return lua_isinteger(L, a) && lua_tointeger(L, a) == i;
        return lua_type(L, a) == LUA_TNUMBER && !lua_isinteger(L, a) && lua_rawequal(L, a, b);
    }
#endif
    if (lua_type(L, b) != LUA_TTABLE)
        return lua_rawequal(L, a, b);
    if (lua_type(L, a) != LUA_TTABLE)
        return 0;
    lua_pushnil(L);
    while (lua_next(L, b) != 0) {
        int v = lua_gettop(L);
        lua_pushvalue(L, v - 1);
        lua_rawget(L, a);
        if (lua_type(L, v - 1) == LUA_TSTRING && !keep_null
            && lua_type(L, v) == LUA_TLIGHTUSERDATA && lua_touserdata(L, v) == NULL) {
            if (!lua_isnil(L, -1))
                return 0;
            dropped++;
        } else if (!same(L, v + 1, v, keep_null, depth + 1))
            return 0;
        lua_settop(L, v - 1);
        count++;
    }
    lua_pushnil(L);
    while (lua_next(L, a) != 0) {
        lua_pop(L, 1);
        count--;
    }
    return count == dropped;
}

static int decode(lua_State *L)
{
    hm_request *req = lua_touserdata(L, 1);
    int keep_null = lua_toboolean(L, 2);
    lua_settop(L, 0);
    /* lua-cjson's own value first: the body may be changed in place */
    lua_getfield(L, lua_upvalueindex(1), HM_STATE_DECODE);
    lua_pushlstring(L, req->body.data, req->body.len);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        lua_pop(L, 1);
        lua_pushnil(L); /* lua-cjson refused it: so must we (compared below) */
    }
    if (hm_json_decode(L, req, 0, keep_null)) {
        if (lua_istable(L, -1))
            check(L, keep_null, 0);
        if (!same(L, 2, 1, keep_null, 0)) {
            fprintf(stderr, "the decoded value is not lua-cjson's, normalised\n");
            abort();
        }
    } else if (!lua_isnil(L, 1) && strncmp(lua_tostring(L, -1), "invalid JSON", 12) == 0) {
        /* the same decoder refused what it took as sent: the body was changed */
        fprintf(stderr, "lua-cjson decodes the body, heymarket said: %s\n", lua_tostring(L, -1));
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    hm_request req;
    if (L == NULL)
        L = fuzz_state(decode, "decode");
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

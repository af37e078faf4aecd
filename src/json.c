/* JSON through a private lua-cjson instance (or Neovim's vim.json), then
 * normalised the way the contract promises: integers on 5.3+, nulls dropped
 * from objects (or heymarket.null), heymarket.null inside arrays. */
#include "hm.h"

#include <math.h>
#include <string.h>

#define MAX_DEPTH 1000 /* cjson's own default limit; we recurse no deeper */

/* lua_pcall for the setup steps: a memory error (or an error while handling
 * one) is raised on, never taken for "this decoder is missing". */
static int setup_pcall(lua_State *L, int nargs, int nresults)
{
    int status = lua_pcall(L, nargs, nresults, 0);
    if (status != 0 && status != LUA_ERRRUN)
        lua_error(L);
    return status;
}

/* If the table at the top has a decode function, store it as the state's
 * decoder and return 1; the stack is left as it was either way. */
static int take_decoder(lua_State *L, int state)
{
    int found;
    lua_getfield(L, -1, "decode");
    found = lua_isfunction(L, -1);
    if (found)
        lua_setfield(L, state, HM_STATE_DECODE);
    else
        lua_pop(L, 1);
    return found;
}

/* With the state table at the top: find a decoder and store it there.
 * Returns 0 when neither lua-cjson nor vim.json is available. */
int hm_json_setup(lua_State *L)
{
    int state = lua_gettop(L);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "cjson");
    if (setup_pcall(L, 1, 1) == 0 && lua_istable(L, -1)) {
        int cjson = lua_gettop(L);
        lua_getfield(L, cjson, "null");
        lua_setfield(L, state, HM_STATE_JNULL);
        /* A private instance: the host's shared cjson settings stay untouched. */
        lua_getfield(L, cjson, "new");
        if (setup_pcall(L, 0, 1) == 0 && lua_istable(L, -1)) {
            lua_getfield(L, -1, "decode_invalid_numbers");
            if (lua_isfunction(L, -1)) {
                lua_pushboolean(L, 0);
                if (setup_pcall(L, 1, 0) != 0)
                    lua_pop(L, 1);
            } else {
                lua_pop(L, 1);
            }
            if (take_decoder(L, state)) {
                lua_settop(L, state);
                return 1;
            }
        }
    }
    lua_settop(L, state);
    /* Inside Neovim cjson may be missing from package.cpath; vim.json is not. */
    lua_getglobal(L, "vim");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "NIL");
        lua_setfield(L, state, HM_STATE_JNULL);
        lua_getfield(L, -1, "json");
        if (lua_istable(L, -1) && take_decoder(L, state)) {
            lua_settop(L, state);
            return 1;
        }
    }
    lua_settop(L, state);
    return 0;
}

static const char *shape_name(char first)
{
    switch (first) {
    case '{': return "an object";
    case '[': return "an array";
    case '"': return "a string";
    case 't': case 'f': return "a boolean";
    case 'n': return "null";
    default: return "a number";
    }
}

#if HM_HAS_INTEGERS
/* cjson 2.1.0 decodes every number as a float; a whole one within
 * lua_Integer's range becomes an integer. */
static int integral(lua_State *L, int idx, lua_Integer *out)
{
    lua_Number n;
    if (lua_type(L, idx) != LUA_TNUMBER || lua_isinteger(L, idx))
        return 0;
    n = lua_tonumber(L, idx);
    return n == floor(n) && lua_numbertointeger(n, out);
}
#endif

/* Normalise the table at the top of the stack in place. jnull is the stack
 * index of the decoder's null. Only existing fields are assigned (or
 * cleared), which lua_next allows during traversal. Returns 0, with the
 * table still at the top, when it is nested too deeply (vim.json has no
 * depth limit of its own). */
static int normalise(lua_State *L, int jnull, int keep_null, int depth)
{
    int t = lua_gettop(L);
#if HM_HAS_INTEGERS
    lua_Integer i;
#endif
    if (depth > MAX_DEPTH || !lua_checkstack(L, 4))
        return 0;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        if (lua_type(L, -1) == LUA_TTABLE) {
            if (!normalise(L, jnull, keep_null, depth + 1)) {
                lua_settop(L, t);
                return 0;
            }
        } else if (lua_rawequal(L, -1, jnull)) {
            lua_pushvalue(L, -2);
            if (lua_type(L, -3) == LUA_TSTRING && !keep_null)
                lua_pushnil(L);
            else
                lua_pushlightuserdata(L, NULL); /* heymarket.null */
            lua_rawset(L, t);
        }
#if HM_HAS_INTEGERS
        else if (integral(L, -1, &i)) {
            lua_pushvalue(L, -2);
            lua_pushinteger(L, i);
            lua_rawset(L, t);
        }
#endif
        lua_pop(L, 1);
    }
    return 1;
}

/* Is the error at the top the decoder's own verdict on its input? lua-cjson
 * (and Neovim's vim.json, built from it) says "Expected ... but found ...",
 * "Found too many nested data structures ..." or "JSON parser does not
 * support UTF-16 or UTF-32". Anything else (an interrupt raised by a debug
 * hook, a memory error) belongs to the caller. make fuzz checks that no
 * body makes the decoder say something else. */
static int decoder_verdict(lua_State *L, int status)
{
    const char *why;
    if (status != LUA_ERRRUN || lua_type(L, -1) != LUA_TSTRING)
        return 0;
    why = lua_tostring(L, -1);
    return strncmp(why, "Expected ", 9) == 0 || strncmp(why, "Found ", 6) == 0
        || strncmp(why, "JSON parser ", 12) == 0;
}

/* Decode s (n bytes) with the module's decoder: push the value and return
 * 1, or push the decoder's complaint and return 0. Any other error is
 * raised on. */
int hm_json_decode_string(lua_State *L, const char *s, size_t n)
{
    int status;
    lua_getfield(L, HM_STATE_IDX, HM_STATE_DECODE);
    lua_pushlstring(L, s != NULL ? s : "", n);
    status = lua_pcall(L, 1, 1, 0);
    if (status == 0)
        return 1;
    if (!decoder_verdict(L, status))
        lua_error(L);
    return 0;
}

/* Decode req's body. On success push the value and return 1; on failure
 * push a description and return 0. */
int hm_json_decode(lua_State *L, hm_request *req, int keep_null)
{
    const char *p = req->body.data ? req->body.data : "";
    size_t i = 0, n = req->body.len;
    int top = lua_gettop(L), jnull;

    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i == n) {
        lua_pushliteral(L, "empty response body, expected JSON");
        return 0;
    }
    if ((req->shape == HM_SHAPE_ARRAY && p[i] != '[')
        || (req->shape == HM_SHAPE_OBJECT && p[i] != '{')) {
        if (p[i] != '[' && p[i] != '{' && p[i] != '"' && p[i] != '-' && p[i] != 't'
            && p[i] != 'f' && p[i] != 'n' && !(p[i] >= '0' && p[i] <= '9'))
            lua_pushliteral(L, "response is not JSON");
        else
            lua_pushfstring(L, "expected a JSON %s, got %s",
                            req->shape == HM_SHAPE_ARRAY ? "array" : "object", shape_name(p[i]));
        return 0;
    }

    lua_getfield(L, HM_STATE_IDX, HM_STATE_JNULL);
    jnull = lua_gettop(L);
    if (!hm_json_decode_string(L, p, n)) {
        lua_pushfstring(L, "invalid JSON: %s", lua_tostring(L, -1));
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
        return 0;
    }
    if (lua_istable(L, -1)) {
        if (!normalise(L, jnull, keep_null, 1)) {
            lua_pushliteral(L, "JSON nested too deeply");
            lua_replace(L, top + 1);
            lua_settop(L, top + 1);
            return 0;
        }
    } else if (lua_rawequal(L, -1, jnull)) {
        lua_pop(L, 1);
        lua_pushlightuserdata(L, NULL);
    }
#if HM_HAS_INTEGERS
    else {
        lua_Integer whole;
        if (integral(L, -1, &whole)) {
            lua_pop(L, 1);
            lua_pushinteger(L, whole);
        }
    }
#endif
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
    return 1;
}

/* The heymarket module: registration and the module-level calls. */
#include "hm.h"

#include <string.h>

static int m_new(lua_State *L)
{
    lua_settop(L, 1);
    hm_client_new(L, 1);
    return 1;
}

/* Push the client a module-level call uses: without options (nil at idx)
 * the default client, made from the environment on first use and kept;
 * with options, a client made from them for this call only (*temporary). */
static hm_client *push_client(lua_State *L, int idx, int *temporary)
{
    *temporary = !lua_isnil(L, idx);
    if (*temporary)
        return hm_client_new(L, idx);
    lua_getfield(L, HM_STATE_IDX, HM_STATE_DEFAULT);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        hm_client_new(L, 0);
        lua_pushvalue(L, -1);
        lua_setfield(L, HM_STATE_IDX, HM_STATE_DEFAULT);
    }
    return luaL_checkudata(L, -1, HM_CLIENT_MT);
}

/* heymarket.inboxes([options]) and heymarket.team([options]) */
static int module_call(lua_State *L, const char *path, hm_shape shape)
{
    int temporary, n;
    hm_client *c;
    lua_settop(L, 1);
    c = push_client(L, 1, &temporary);
    n = hm_client_call(L, c, 2, path, shape);
    if (temporary)
        hm_client_close(c); /* on an error, the collector closes it */
    return n;
}

static int m_inboxes(lua_State *L)
{
    return module_call(L, "/v1/inboxes", HM_SHAPE_ARRAY);
}

static int m_team(lua_State *L)
{
    return module_call(L, "/v1/team", HM_SHAPE_OBJECT);
}

/* heymarket.get(path[, options]): the path is checked by client:get. */
static int m_get(lua_State *L)
{
    int temporary;
    hm_client *c;
    lua_settop(L, 2);
    if (lua_type(L, 1) != LUA_TSTRING)
        luaL_argerror(L, 1, lua_pushfstring(L, "path must be a string, got %s",
                                            luaL_typename(L, 1)));
    c = push_client(L, 2, &temporary);
    lua_getfield(L, -1, "get");
    lua_insert(L, 3);
    lua_pushvalue(L, 1);
    lua_call(L, 2, LUA_MULTRET);
    if (temporary)
        hm_client_close(c);
    return lua_gettop(L) - 2;
}

/* "heymarket-lua/V (Lua V; libcurl/V)"; LuaJIT names itself. */
static void push_user_agent(lua_State *L)
{
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    const char *lua_version = LUA_VERSION;
    lua_getglobal(L, "jit");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "version");
        if (lua_type(L, -1) == LUA_TSTRING)
            lua_version = lua_tostring(L, -1);
    }
    lua_pushfstring(L, "heymarket-lua/%s (%s; libcurl/%s)", HM_VERSION, lua_version,
                    info && info->version ? info->version : "unknown");
}

int luaopen_heymarket(lua_State *L)
{
    static const luaL_Reg functions[] = {
        {"new", m_new},
        {"inboxes", m_inboxes},
        {"team", m_team},
        {"get", m_get},
        {NULL, NULL}
    };
    static int curl_ready = 0;
    int state, top;

    /* Once per process, never cleaned up: other users of libcurl in the
     * host (nginx modules, other rocks) may still need it. */
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
            return luaL_error(L, "heymarket: curl_global_init failed");
        curl_ready = 1;
    }

    lua_newtable(L);
    state = lua_gettop(L);
    if (!hm_json_setup(L))
        return luaL_error(L, "heymarket: needs lua-cjson (require \"cjson\" failed) or Neovim's vim.json");
    top = lua_gettop(L);
    push_user_agent(L);
    lua_setfield(L, state, HM_STATE_UA);
    lua_settop(L, top);

    hm_client_open(L);
    hm_request_open(L);
    hm_loop_open(L);

    lua_newtable(L);
    lua_pushvalue(L, state);
    hm_setfuncs(L, functions, 1);
    lua_pushliteral(L, HM_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}

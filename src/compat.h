/* Lua version differences, as prefixed shims. LuaJIT already defines several
 * 5.2 functions, so nothing here redefines a lua_ or luaL_ name. */
#ifndef HM_COMPAT_H
#define HM_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM >= 503
#define HM_HAS_INTEGERS 1
#else
#define HM_HAS_INTEGERS 0
#endif

#if LUA_VERSION_NUM >= 502
#define hm_setfuncs(L, l, nup) luaL_setfuncs((L), (l), (nup))
#define hm_rawlen(L, i) lua_rawlen((L), (i))
#else
/* Register l into the table below the nup upvalues on the stack, each
 * function sharing those upvalues; pops the upvalues. */
static inline void hm_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#define hm_rawlen(L, i) lua_objlen((L), (i))
#endif

/* Two Lua values hang off a userdata, in slots 1 and 2 (uv_set pops the
 * value at the top into slot n of the userdata at the absolute index idx,
 * uv_get pushes it). Lua 5.4 gives a userdata values of its own; before,
 * its one value is a table holding them (5.1 and LuaJIT call it the
 * environment, and 5.2 accepts nothing else), made by hm_newuserdata2. */
#if LUA_VERSION_NUM >= 504
#define hm_newuserdata2(L, size) lua_newuserdatauv((L), (size), 2)
#define hm_uv_set(L, idx, n) ((void)lua_setiuservalue((L), (idx), (n)))
#define hm_uv_get(L, idx, n) ((void)lua_getiuservalue((L), (idx), (n)))
#else
#if LUA_VERSION_NUM >= 502
#define hm_setuservalue(L, idx) lua_setuservalue((L), (idx))
#define hm_getuservalue(L, idx) ((void)lua_getuservalue((L), (idx)))
#else
#define hm_setuservalue(L, idx) ((void)lua_setfenv((L), (idx)))
#define hm_getuservalue(L, idx) lua_getfenv((L), (idx))
#endif
static inline void *hm_newuserdata2(lua_State *L, size_t size)
{
    void *p = lua_newuserdata(L, size);
    lua_createtable(L, 2, 0);
    hm_setuservalue(L, -2);
    return p;
}
static inline void hm_uv_set(lua_State *L, int idx, int n)
{
    hm_getuservalue(L, idx);
    lua_insert(L, -2);
    lua_rawseti(L, -2, n);
    lua_pop(L, 1);
}
static inline void hm_uv_get(lua_State *L, int idx, int n)
{
    hm_getuservalue(L, idx);
    lua_rawgeti(L, -1, n);
    lua_remove(L, -2);
}
#endif

#endif

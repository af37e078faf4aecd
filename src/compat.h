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

/* One Lua value hangs off a userdata (a table on every version: 5.1 and
 * LuaJIT call it the environment, and 5.2 accepts nothing else). */
#if LUA_VERSION_NUM >= 504
#define hm_newuserdata(L, size) lua_newuserdatauv((L), (size), 1)
#define hm_setuservalue(L, idx) ((void)lua_setiuservalue((L), (idx), 1))
#define hm_getuservalue(L, idx) ((void)lua_getiuservalue((L), (idx), 1))
#elif LUA_VERSION_NUM >= 502
#define hm_newuserdata(L, size) lua_newuserdata((L), (size))
#define hm_setuservalue(L, idx) lua_setuservalue((L), (idx))
#define hm_getuservalue(L, idx) ((void)lua_getuservalue((L), (idx)))
#else
#define hm_newuserdata(L, size) lua_newuserdata((L), (size))
#define hm_setuservalue(L, idx) ((void)lua_setfenv((L), (idx)))
#define hm_getuservalue(L, idx) lua_getfenv((L), (idx))
#endif

#endif

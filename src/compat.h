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

#endif

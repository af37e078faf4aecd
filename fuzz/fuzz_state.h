/* The Lua state every fuzz target starts from: the standard libraries, the
 * module's decoder set up in a state table, and f (closed over that table)
 * as the global name. Included by each fuzz/fuzz_*.c after ../src/hm.h. */
#ifndef FUZZ_STATE_H
#define FUZZ_STATE_H

#include <lualib.h>
#include <stdlib.h>

static lua_State *fuzz_state(lua_CFunction f, const char *name)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_newtable(L);
    if (!hm_json_setup(L))
        abort();
    lua_pushcclosure(L, f, 1);
    lua_setglobal(L, name);
    return L;
}

#endif

/* The allocation-failure host: runs `require "heymarket"`, `new` and
 * `inboxes()` against a server in fresh Lua 5.4 states whose allocator fails
 * the Nth allocation, for N = 1, 2, ... until a run needs fewer than N.
 * Lua retries a failed allocation once after an emergency collection, so
 * the (N+1)th fails too: each N is a memory error Lua cannot hide.
 * Every run must end in the expected inboxes or in Lua's memory error; any
 * other result (a `nil, message, err`, another error) is a failure.
 *
 *   oom_host MODULE_DIR BASE_URL KEY            the sweep
 *   oom_host MODULE_DIR BASE_URL KEY big PATH   C-side: every realloc of
 *       64 KiB or more fails while `client:get(PATH)` runs (the body buffer)
 *
 * Prints one line per kind of outcome and exits 0 only when all were right. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

static long allocations, fail_at = -2; /* -2: no Lua allocation fails */
static int fail_big;

/* Interposes the process's realloc, for the C-side mode; the next one in
 * line is libc's (or valgrind's). */
void *realloc(void *p, size_t n)
{
    static void *(*next)(void *, size_t);
    if (next == NULL)
        *(void **)&next = dlsym(RTLD_NEXT, "realloc");
    if (fail_big && n >= 65536)
        return NULL;
    return next(p, n);
}

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (ptr == NULL || nsize > osize) {
        ++allocations;
        if (allocations == fail_at || allocations == fail_at + 1)
            return NULL;
    }
    return realloc(ptr, nsize);
}

static const char SCRIPT[] =
    "local dir, url, key, path = ...\n"
    "package.cpath = dir .. '/?.so;' .. package.cpath\n"
    "local heymarket = require('heymarket')\n"
    "local c = heymarket.new({ api_key = key, base_url = url, max_retries = 0 })\n"
    "local a, b, c3\n"
    "if path then arm() a, b, c3 = c:get(path) else a, b, c3 = c:inboxes() end\n"
    "c:close()\n"
    "return a, b, c3\n";

enum outcome { OK, MEMORY, WRONG };

struct args {
    const char *dir, *url, *key, *path;
};

/* arm(): from now on, large reallocs fail (the C-side mode). */
static int arm(lua_State *L)
{
    (void)L;
    fail_big = 1;
    return 0;
}

/* Everything runs protected: the libraries, the chunk and its arguments. */
static int whole_call(lua_State *L)
{
    const struct args *a = lua_touserdata(L, 1);
    luaL_openlibs(L);
    lua_register(L, "arm", arm);
    if (luaL_loadstring(L, SCRIPT) != LUA_OK)
        return lua_error(L);
    lua_pushstring(L, a->dir);
    lua_pushstring(L, a->url);
    lua_pushstring(L, a->key);
    if (a->path != NULL)
        lua_pushstring(L, a->path);
    else
        lua_pushnil(L);
    lua_call(L, 4, 3);
    return 3;
}

static enum outcome run_once(const char *dir, const char *url, const char *key,
                             const char *path, char *why, size_t why_size)
{
    lua_State *L = lua_newstate(failing_alloc, NULL);
    struct args a;
    enum outcome result = WRONG;
    int status;
    if (L == NULL)
        return MEMORY;
    a.dir = dir;
    a.url = url;
    a.key = key;
    a.path = path;
    lua_pushcfunction(L, whole_call);
    lua_pushlightuserdata(L, &a);
    status = lua_pcall(L, 1, 3, 0);
    if (status == LUA_ERRMEM)
        result = MEMORY;
    else if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg != NULL && strstr(msg, "not enough memory") != NULL)
            result = MEMORY;
        else
            snprintf(why, why_size, "raised: %s", msg ? msg : "(not a string)");
    } else if (lua_istable(L, -3)) {
        result = OK;
    } else {
        const char *msg = lua_tostring(L, -2);
        snprintf(why, why_size, "returned: %s", msg ? msg : "(no message)");
    }
    lua_close(L);
    return result;
}

int main(int argc, char **argv)
{
    char why[512];
    long ok = 0, memory = 0, wrong = 0, n;
    if (argc != 4 && !(argc == 6 && strcmp(argv[4], "big") == 0)) {
        fprintf(stderr, "usage: %s MODULE_DIR BASE_URL KEY [big PATH]\n", argv[0]);
        return 2;
    }
    if (argc == 6) {
        enum outcome o;
        why[0] = '\0';
        o = run_once(argv[1], argv[2], argv[3], argv[5], why, sizeof why);
        fail_big = 0;
        printf("big: %s %s\n", o == MEMORY ? "memory error" : o == OK ? "succeeded" : "WRONG", why);
        return o == MEMORY ? 0 : 1;
    }
    for (n = 1;; n++) {
        enum outcome o;
        allocations = 0;
        fail_at = n;
        why[0] = '\0';
        o = run_once(argv[1], argv[2], argv[3], NULL, why, sizeof why);
        if (o == OK)
            ok++;
        else if (o == MEMORY)
            memory++;
        else {
            wrong++;
            printf("WRONG at allocation %ld: %s\n", n, why);
        }
        if (allocations < n)
            break; /* this run never reached its failing allocation */
    }
    printf("points: %ld, memory errors: %ld, successes: %ld, wrong: %ld\n", n, memory, ok, wrong);
    return wrong == 0 && ok > 0 ? 0 : 1;
}

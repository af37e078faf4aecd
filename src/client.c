/* heymarket.Client: making, closing and naming clients, and their methods. */
#include "hm.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char *dup_string(const char *s)
{
    size_t n;
    char *d;
    if (s == NULL)
        return NULL;
    n = strlen(s) + 1;
    d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

/* Zero a secret before freeing it; volatile so the stores are not elided. */
static void free_secret(char *s)
{
    if (s != NULL) {
        volatile char *p = s;
        while (*p)
            *p++ = '\0';
        free(s);
    }
}

hm_client *hm_check_client(lua_State *L, int idx)
{
    hm_client *c = luaL_checkudata(L, idx, HM_CLIENT_MT);
    if (c->closed)
        luaL_error(L, "heymarket: client is closed");
    return c;
}

static long to_ms(double seconds)
{
    double ms = ceil(seconds * 1000.0);
    return ms < (double)(LONG_MAX / 2) ? (long)ms : LONG_MAX / 2;
}

static int append_header(hm_client *c, const char *line)
{
    struct curl_slist *more = curl_slist_append(c->headers, line);
    if (more == NULL)
        return 0;
    c->headers = more;
    return 1;
}

/* The Accept-Encoding header CURLOPT_ACCEPT_ENCODING "" makes libcurl send
 * (the option stays set: libcurl decodes only then), into line: every
 * encoding this libcurl can decode, in libcurl's order. */
static void accept_encoding(char line[64])
{
    static const struct {
        int feature;
        const char *names;
    } encodings[] = {
        {CURL_VERSION_LIBZ, "deflate, gzip"},
#ifdef CURL_VERSION_BROTLI
        {CURL_VERSION_BROTLI, "br"},
#endif
#ifdef CURL_VERSION_ZSTD
        {CURL_VERSION_ZSTD, "zstd"},
#endif
    };
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    int features = v != NULL ? v->features : 0;
    const char *sep = "";
    size_t i;
    strcpy(line, "Accept-Encoding: ");
    for (i = 0; i < sizeof encodings / sizeof encodings[0]; i++) {
        if (features & encodings[i].feature) {
            strcat(line, sep);
            strcat(line, encodings[i].names);
            sep = ", ";
        }
    }
    if (sep[0] == '\0')
        strcat(line, "identity");
}

/* Push a new client made from the options at opts_idx (0: none). */
hm_client *hm_client_new(lua_State *L, int opts_idx)
{
    hm_options o;
    hm_client *c;
    size_t n;
    char *auth, encodings[64];

    hm_read_options(L, opts_idx, &o);

    /* The userdata first, zeroed and with its metatable: whatever fails
     * after this point leaves __gc to free what was made. */
#if LUA_VERSION_NUM >= 504
    c = lua_newuserdatauv(L, sizeof *c, 1); /* user value 1: see hold_body in json.c */
#else
    c = lua_newuserdata(L, sizeof *c);
#endif
    memset(c, 0, sizeof *c);
    luaL_getmetatable(L, HM_CLIENT_MT);
    lua_setmetatable(L, -2);

    c->fork_gen = hm_fork_generation();
    c->pid = getpid();
    c->timeout_ms = to_ms(o.timeout);
    c->connect_timeout_ms = to_ms(o.connect_timeout);
    c->max_retries = o.max_retries;
    c->max_connections = o.max_connections;
    c->max_retry_wait = o.max_retry_wait;
    c->max_response = o.max_response < (double)SIZE_MAX ? (size_t)o.max_response : SIZE_MAX;
    c->keep_null = o.keep_null;
    lua_getglobal(L, "ngx");
    c->in_nginx = lua_istable(L, -1);
    lua_pop(L, 1);
    c->rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)c->pid ^ (uint64_t)(uintptr_t)c;
    if (c->rng == 0)
        c->rng = 1;

    c->base_url = dup_string(o.base_url);
    c->api_key = dup_string(o.api_key);
    c->ca_file = dup_string(o.ca_file);
    c->ca_path = dup_string(o.ca_path);
    c->proxy = dup_string(o.proxy);
    lua_getfield(L, HM_STATE_IDX, HM_STATE_UA);
    if (o.user_agent != NULL && o.user_agent[0] != '\0')
        lua_pushfstring(L, "%s %s", lua_tostring(L, -1), o.user_agent);
    else
        lua_pushvalue(L, -1);
    c->user_agent = dup_string(lua_tostring(L, -1));
    lua_pop(L, 2);
    if (c->base_url == NULL || c->api_key == NULL || c->user_agent == NULL
        || (o.ca_file && !c->ca_file) || (o.ca_path && !c->ca_path) || (o.proxy && !c->proxy))
        hm_raise_memory(L);

    n = strlen(c->base_url);
    while (n > 0 && c->base_url[n - 1] == '/')
        c->base_url[--n] = '\0';

    n = strlen("Authorization: Bearer ") + strlen(c->api_key) + 1;
    auth = malloc(n);
    if (auth == NULL)
        hm_raise_memory(L);
    strcpy(auth, "Authorization: Bearer ");
    strcat(auth, c->api_key);
    c->headers = curl_slist_append(NULL, auth);
    free_secret(auth);
    if (c->headers == NULL)
        hm_raise_memory(L);
    /* User-Agent and Accept-Encoding are written once here: set only as
     * options, libcurl would format both again for every request. */
    accept_encoding(encodings);
    lua_pushfstring(L, "User-Agent: %s", c->user_agent);
    if (!append_header(c, "Accept: application/json") || !append_header(c, lua_tostring(L, -1))
        || !append_header(c, encodings))
        hm_raise_memory(L);
    lua_pop(L, 1);
    return c;
}

static void wipe_headers(hm_client *c)
{
    struct curl_slist *h;
    for (h = c->headers; h != NULL; h = h->next) {
        volatile char *p = h->data;
        while (*p)
            *p++ = '\0';
    }
    curl_slist_free_all(c->headers);
    c->headers = NULL;
}

/* Free connections and the request headers; safe to run twice, and at any
 * moment (a finalizer may close a client in the middle of one of its calls:
 * that call then ends as cancelled). base_url stays for tostring, and the
 * key for redacting the failures of requests still held, until the userdata
 * itself goes. */
void hm_client_close(hm_client *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    hm_client_shutdown(c);
    wipe_headers(c);
    free(c->user_agent);
    free(c->ca_file);
    free(c->ca_path);
    free(c->proxy);
    c->user_agent = c->ca_file = c->ca_path = c->proxy = NULL;
}

static int client_close(lua_State *L)
{
    hm_client *c = luaL_checkudata(L, 1, HM_CLIENT_MT);
    hm_client_close(c);
    hm_json_drop_held(L, c, 1);
    return 0;
}

static int client_gc(lua_State *L)
{
    hm_client *c = luaL_checkudata(L, 1, HM_CLIENT_MT);
    hm_client_close(c);
    hm_json_drop_held(L, c, 1);
    hm_loop_free(c);
    free(c->base_url);
    free_secret(c->api_key);
    c->base_url = c->api_key = NULL;
    return 0;
}

static int client_tostring(lua_State *L)
{
    hm_client *c = luaL_checkudata(L, 1, HM_CLIENT_MT);
    lua_pushfstring(L, "heymarket.Client (%s%s)", c->base_url ? c->base_url : "?",
                    c->closed ? ", closed" : "");
    return 1;
}

/* ---- the calls ---------------------------------------------------------- */

static const char *check_path(lua_State *L, int idx)
{
    const char *path, *p;
    if (lua_type(L, idx) != LUA_TSTRING)
        luaL_argerror(L, idx, lua_pushfstring(L, "path must be a string, got %s",
                                              luaL_typename(L, idx)));
    path = lua_tostring(L, idx);
    if (path[0] != '/')
        luaL_argerror(L, idx, "path must start with '/'");
    for (p = path; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p == 0x7f)
            luaL_argerror(L, idx, "path must not contain spaces or control characters");
    if ((size_t)(p - path) != hm_rawlen(L, idx))
        luaL_argerror(L, idx, "path must not contain a NUL byte");
    return path;
}

/* get's optional second argument: { raw = boolean }. */
static hm_shape check_get_options(lua_State *L, int idx)
{
    hm_shape shape = HM_SHAPE_ANY;
    if (lua_isnoneornil(L, idx))
        return shape;
    if (!lua_istable(L, idx))
        luaL_argerror(L, idx, lua_pushfstring(L, "options must be a table, got %s",
                                              luaL_typename(L, idx)));
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "raw") == 0
            && hm_rawlen(L, -2) == 3) {
            if (!lua_isboolean(L, -1))
                luaL_argerror(L, idx, lua_pushfstring(L, "option 'raw' must be a boolean (got %s)",
                                                      luaL_typename(L, -1)));
            if (lua_toboolean(L, -1))
                shape = HM_SHAPE_RAW;
        } else if (lua_type(L, -2) == LUA_TSTRING)
            luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", lua_tostring(L, -2)));
        else
            luaL_argerror(L, idx, "option names must be strings");
        lua_pop(L, 1);
    }
    return shape;
}

static int client_inboxes(lua_State *L)
{
    return hm_client_call(L, hm_check_client(L, 1), 1, "/v1/inboxes", HM_SHAPE_ARRAY);
}

static int client_team(lua_State *L)
{
    return hm_client_call(L, hm_check_client(L, 1), 1, "/v1/team", HM_SHAPE_OBJECT);
}

static int client_get(lua_State *L)
{
    hm_client *c = hm_check_client(L, 1);
    const char *path = check_path(L, 2);
    return hm_client_call(L, c, 1, path, check_get_options(L, 3));
}

static int client_inboxes_async(lua_State *L)
{
    hm_request_push(L, hm_check_client(L, 1), 1, "/v1/inboxes", HM_SHAPE_ARRAY);
    return 1;
}

static int client_team_async(lua_State *L)
{
    hm_request_push(L, hm_check_client(L, 1), 1, "/v1/team", HM_SHAPE_OBJECT);
    return 1;
}

static int client_get_async(lua_State *L)
{
    hm_client *c = hm_check_client(L, 1);
    const char *path = check_path(L, 2);
    hm_request_push(L, c, 1, path, check_get_options(L, 3));
    return 1;
}

/* Register metatable name with its metamethods and an __index of methods,
 * every function sharing the state table (at index state) as its upvalue. */
void hm_new_metatable(lua_State *L, int state, const char *name, const luaL_Reg *meta,
                      const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    lua_pushvalue(L, state);
    hm_setfuncs(L, meta, 1);
    lua_newtable(L);
    lua_pushvalue(L, state);
    hm_setfuncs(L, methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name); /* getmetatable() answers the type's name */
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 1);
}

/* With the module state table at the top: the Client metatable, every
 * function sharing the state as its upvalue. */
void hm_client_open(lua_State *L)
{
    static const luaL_Reg client_methods[] = {
        {"inboxes", client_inboxes},
        {"team", client_team},
        {"get", client_get},
        {"inboxes_async", client_inboxes_async},
        {"team_async", client_team_async},
        {"get_async", client_get_async},
        {"close", client_close},
        {NULL, NULL}
    };
    static const luaL_Reg client_meta[] = {
        {"__gc", client_gc},
        {"__close", client_close},
        {"__tostring", client_tostring},
        {NULL, NULL}
    };
    hm_new_metatable(L, lua_gettop(L), HM_CLIENT_MT, client_meta, client_methods);
}

/* heymarket.Client and heymarket.Request: options, lifetimes, methods. */
#include "hm.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_BASE_URL "https://api.heymarket.com"
#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_CONNECT_TIMEOUT 10.0
#define DEFAULT_MAX_RETRIES 2
#define DEFAULT_MAX_RETRY_WAIT 60.0
#define DEFAULT_MAX_RESPONSE (32.0 * 1024 * 1024)
#define MAX_WHOLE 9007199254740992.0 /* 2^53: larger whole numbers are not exact */
#define NO_KEY_MESSAGE "heymarket: no API key (pass api_key or set HEYMARKET_API_KEY)"

typedef struct hm_options {
    const char *api_key, *base_url, *ca_file, *ca_path, *proxy, *user_agent;
    double timeout, connect_timeout, max_retry_wait, max_retries, max_response;
    int keep_null;
} hm_options;

/* ---- small helpers ------------------------------------------------------ */

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

static int has_control_chars(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return 1;
    return 0;
}

static int is_loopback_host(const char *host)
{
    static const char localhost[] = "localhost";
    int parts = 0, i;
    const char *p;
    for (i = 0; host[i] != '\0' && localhost[i] != '\0'; i++)
        if ((host[i] | 0x20) != localhost[i])
            break;
    if ((host[i] == '\0' && localhost[i] == '\0') || strcmp(host, "[::1]") == 0)
        return 1;
    if (strncmp(host, "127.", 4) != 0)
        return 0;
    /* 127.a.b.c, each part a decimal number below 256 */
    for (p = host; *p; ) {
        int value = 0, digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 4) {
            value = value * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || value > 255)
            return 0;
        parts++;
        if (*p == '.')
            p++;
        else if (*p != '\0')
            return 0;
    }
    return parts == 4;
}

/* "http:///x": libcurl would take "x" for the host. */
static int empty_authority(const char *url)
{
    const char *p = strstr(url, "://");
    return p != NULL && p[3] == '/';
}

/* NULL when url is an acceptable base_url, else why not. */
static const char *check_base_url(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL, *query = NULL,
         *fragment = NULL;
    const char *why = NULL;
    CURLUcode rc;

    if (u == NULL)
        return "out of memory";
    rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (rc == CURLUE_NO_HOST || empty_authority(url))
        why = "base_url has no host";
    else if (rc != CURLUE_OK)
        why = "base_url is not a URL of the form scheme://host[:port][/prefix]";
    else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK
             || (strcmp(scheme, "https") != 0 && strcmp(scheme, "http") != 0))
        why = "base_url must use https:// (or http:// for a loopback host)";
    else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || host[0] == '\0')
        why = "base_url has no host";
    else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK
             || curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK)
        why = "base_url must not carry credentials (pass api_key instead)";
    else if (curl_url_get(u, CURLUPART_QUERY, &query, 0) == CURLUE_OK
             || curl_url_get(u, CURLUPART_FRAGMENT, &fragment, 0) == CURLUE_OK)
        why = "base_url must not have a query or fragment";
    else if (strcmp(scheme, "http") == 0 && !is_loopback_host(host))
        why = "base_url uses http:// for a host that is not loopback (use https://)";
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_free(password);
    curl_free(query);
    curl_free(fragment);
    curl_url_cleanup(u);
    return why;
}

/* ---- options ------------------------------------------------------------ */

static void option_type_error(lua_State *L, const char *name, const char *expected, int idx)
{
    luaL_error(L, "heymarket: option '%s' must be %s (got %s)", name, expected,
               luaL_typename(L, idx));
}

static const char *opt_string(lua_State *L, const char *name, int idx)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        option_type_error(L, name, "a string", idx);
    return lua_tostring(L, idx);
}

static double opt_number(lua_State *L, const char *name, int idx)
{
    if (lua_type(L, idx) != LUA_TNUMBER)
        option_type_error(L, name, "a number", idx);
    return (double)lua_tonumber(L, idx);
}

static double opt_seconds(lua_State *L, const char *name, int idx, int zero_ok)
{
    double v = opt_number(L, name, idx);
    if (!(v > 0 || (zero_ok && v == 0)) || v > 1e9)
        luaL_error(L, "heymarket: option '%s' must be a %s number of seconds", name,
                   zero_ok ? "non-negative" : "positive");
    return v;
}

static double opt_whole(lua_State *L, const char *name, int idx, double min)
{
    double v = opt_number(L, name, idx);
    if (!(v >= min) || v != floor(v) || v > MAX_WHOLE)
        luaL_error(L, "heymarket: option '%s' must be a whole number >= %d", name, (int)min);
    return v;
}

/* Read the options table at idx (or none) into o; raises on any mistake. */
static void read_options(lua_State *L, int idx, hm_options *o)
{
    memset(o, 0, sizeof *o);
    o->timeout = DEFAULT_TIMEOUT;
    o->connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    o->max_retries = DEFAULT_MAX_RETRIES;
    o->max_retry_wait = DEFAULT_MAX_RETRY_WAIT;
    o->max_response = DEFAULT_MAX_RESPONSE;

    if (idx != 0 && !lua_isnoneornil(L, idx)) {
        if (!lua_istable(L, idx))
            luaL_error(L, "heymarket: options must be a table (got %s)", luaL_typename(L, idx));
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            const char *name;
            int v = lua_gettop(L);
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "heymarket: option names must be strings (got %s)",
                           luaL_typename(L, -2));
            name = lua_tostring(L, -2);
            if (strcmp(name, "api_key") == 0) {
                o->api_key = opt_string(L, name, v);
                if (o->api_key[0] == '\0')
                    luaL_error(L, NO_KEY_MESSAGE);
                if (has_control_chars(o->api_key))
                    luaL_error(L, "heymarket: option 'api_key' contains control characters");
            } else if (strcmp(name, "base_url") == 0)
                o->base_url = opt_string(L, name, v);
            else if (strcmp(name, "timeout") == 0)
                o->timeout = opt_seconds(L, name, v, 0);
            else if (strcmp(name, "connect_timeout") == 0)
                o->connect_timeout = opt_seconds(L, name, v, 0);
            else if (strcmp(name, "max_retries") == 0)
                o->max_retries = opt_whole(L, name, v, 0);
            else if (strcmp(name, "max_retry_wait") == 0)
                o->max_retry_wait = opt_seconds(L, name, v, 1);
            else if (strcmp(name, "max_response") == 0)
                o->max_response = opt_whole(L, name, v, 1);
            else if (strcmp(name, "ca_file") == 0)
                o->ca_file = opt_string(L, name, v);
            else if (strcmp(name, "ca_path") == 0)
                o->ca_path = opt_string(L, name, v);
            else if (strcmp(name, "proxy") == 0)
                o->proxy = opt_string(L, name, v);
            else if (strcmp(name, "user_agent") == 0) {
                o->user_agent = opt_string(L, name, v);
                if (has_control_chars(o->user_agent))
                    luaL_error(L, "heymarket: option 'user_agent' contains control characters");
            } else if (strcmp(name, "keep_null") == 0) {
                if (!lua_isboolean(L, v))
                    option_type_error(L, name, "a boolean", v);
                o->keep_null = lua_toboolean(L, v);
            } else
                luaL_error(L, "heymarket: unknown option '%s'", name);
            lua_pop(L, 1);
        }
    }
    if (o->api_key == NULL) {
        const char *env = getenv("HEYMARKET_API_KEY");
        if (env != NULL && env[0] != '\0') {
            if (has_control_chars(env))
                luaL_error(L, "heymarket: HEYMARKET_API_KEY contains control characters");
            o->api_key = env;
        }
    }
    if (o->api_key == NULL)
        luaL_error(L, NO_KEY_MESSAGE);
    if (o->base_url == NULL) {
        const char *env = getenv("HEYMARKET_BASE_URL");
        o->base_url = (env != NULL && env[0] != '\0') ? env : DEFAULT_BASE_URL;
    }
    {
        const char *why = check_base_url(o->base_url);
        if (why != NULL)
            luaL_error(L, "heymarket: %s", why);
    }
}

/* ---- the client --------------------------------------------------------- */

static hm_client *check_client(lua_State *L, int idx)
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

/* Push a new client made from the options at opts_idx (0: none). */
hm_client *hm_client_new(lua_State *L, int opts_idx)
{
    hm_options o;
    hm_client *c;
    size_t n;
    char *auth;

    read_options(L, opts_idx, &o);

    /* The userdata first, zeroed and with its metatable: whatever fails
     * after this point leaves __gc to free what was made. */
    c = lua_newuserdata(L, sizeof *c);
    memset(c, 0, sizeof *c);
    luaL_getmetatable(L, HM_CLIENT_MT);
    lua_setmetatable(L, -2);

    c->pid = getpid();
    c->timeout_ms = to_ms(o.timeout);
    c->connect_timeout_ms = to_ms(o.connect_timeout);
    c->max_retries = (int)(o.max_retries > 1000 ? 1000 : o.max_retries);
    c->max_retry_wait = o.max_retry_wait;
    c->max_response = o.max_response < (double)SIZE_MAX ? (size_t)o.max_response : SIZE_MAX;
    c->keep_null = o.keep_null;
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
        luaL_error(L, "heymarket: out of memory");

    n = strlen(c->base_url);
    while (n > 0 && c->base_url[n - 1] == '/')
        c->base_url[--n] = '\0';

    n = strlen("Authorization: Bearer ") + strlen(c->api_key) + 1;
    auth = malloc(n);
    if (auth == NULL)
        luaL_error(L, "heymarket: out of memory");
    strcpy(auth, "Authorization: Bearer ");
    strcat(auth, c->api_key);
    c->headers = curl_slist_append(NULL, auth);
    free_secret(auth);
    if (c->headers != NULL) {
        struct curl_slist *more = curl_slist_append(c->headers, "Accept: application/json");
        if (more == NULL)
            luaL_error(L, "heymarket: out of memory");
        c->headers = more;
    } else
        luaL_error(L, "heymarket: out of memory");
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

/* Free connections and secrets; safe to run twice. base_url stays for
 * tostring until the userdata itself goes. */
void hm_client_close(hm_client *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    hm_client_shutdown(c);
    wipe_headers(c);
    free_secret(c->api_key);
    free(c->user_agent);
    free(c->ca_file);
    free(c->ca_path);
    free(c->proxy);
    c->api_key = c->user_agent = c->ca_file = c->ca_path = c->proxy = NULL;
}

static int client_close(lua_State *L)
{
    hm_client_close(luaL_checkudata(L, 1, HM_CLIENT_MT));
    return 0;
}

static int client_gc(lua_State *L)
{
    hm_client *c = luaL_checkudata(L, 1, HM_CLIENT_MT);
    hm_client_close(c);
    free(c->base_url);
    c->base_url = NULL;
    return 0;
}

static int client_tostring(lua_State *L)
{
    hm_client *c = luaL_checkudata(L, 1, HM_CLIENT_MT);
    lua_pushfstring(L, "heymarket.Client (%s%s)", c->base_url ? c->base_url : "?",
                    c->closed ? ", closed" : "");
    return 1;
}

/* ---- requests ----------------------------------------------------------- */

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

/* Push a started request for c (the client userdata at client_idx). */
static hm_request *push_request(lua_State *L, hm_client *c, int client_idx, const char *path,
                                hm_shape shape)
{
    hm_request *req = hm_newuserdata(L, sizeof *req);
    size_t n;
    memset(req, 0, sizeof *req);
    req->retry_after = -1;
    luaL_getmetatable(L, HM_REQUEST_MT);
    lua_setmetatable(L, -2);

    /* The user value {client, result}: the client lives as long as the request. */
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, client_idx);
    lua_rawseti(L, -2, 1);
    hm_setuservalue(L, -2);
    req->client = c;
    req->shape = shape;
    req->path = dup_string(path);
    n = strlen(c->base_url) + strlen(path) + 1;
    req->url = malloc(n);
    if (req->path == NULL || req->url == NULL)
        luaL_error(L, "heymarket: out of memory");
    strcpy(req->url, c->base_url);
    strcat(req->url, path);
    hm_request_begin(req);
    return req;
}

/* Push what the blocking call returns for a finished request. */
static int push_outcome(lua_State *L, hm_request *req)
{
    if (req->kind != HM_OK)
        return hm_push_failure(L, req, req->kind, req->detail);
    if (hm_json_decode(L, req, req->client->keep_null))
        return 1;
    {
        /* A 2xx attempt was never retryable; the decoder's words become detail. */
        char why[256];
        strncpy(why, lua_tostring(L, -1), sizeof why - 1);
        why[sizeof why - 1] = '\0';
        lua_pop(L, 1);
        return hm_push_failure(L, req, HM_KIND_DECODE, why);
    }
}

int hm_client_call(lua_State *L, hm_client *c, int client_idx, const char *path, hm_shape shape)
{
    hm_request *req = push_request(L, c, client_idx, path, shape);
    int n;
    hm_client_wait(c, req, -1);
    n = push_outcome(L, req);
    hm_request_release(req); /* the body now, not when the collector comes */
    return n;
}

static int client_inboxes(lua_State *L)
{
    return hm_client_call(L, check_client(L, 1), 1, "/v1/inboxes", HM_SHAPE_ARRAY);
}

static int client_team(lua_State *L)
{
    return hm_client_call(L, check_client(L, 1), 1, "/v1/team", HM_SHAPE_OBJECT);
}

static int client_get(lua_State *L)
{
    hm_client *c = check_client(L, 1);
    return hm_client_call(L, c, 1, check_path(L, 2), HM_SHAPE_ANY);
}

static int client_inboxes_async(lua_State *L)
{
    push_request(L, check_client(L, 1), 1, "/v1/inboxes", HM_SHAPE_ARRAY);
    return 1;
}

static int client_team_async(lua_State *L)
{
    push_request(L, check_client(L, 1), 1, "/v1/team", HM_SHAPE_OBJECT);
    return 1;
}

static int client_get_async(lua_State *L)
{
    hm_client *c = check_client(L, 1);
    push_request(L, c, 1, check_path(L, 2), HM_SHAPE_ANY);
    return 1;
}

static hm_request *check_request(lua_State *L)
{
    return luaL_checkudata(L, 1, HM_REQUEST_MT);
}

/* Stepping the client moves every request of it. Polling many requests in
 * turn steps once per round: a request steps the client only when no step
 * has happened since its own last poll. */
static int request_poll(lua_State *L)
{
    hm_request *req = check_request(L);
    hm_client *c = req->client;
    if (req->state != HM_DONE && !c->closed && req->seen_step == c->steps)
        hm_client_step(c);
    req->seen_step = c->steps;
    lua_pushboolean(L, req->state == HM_DONE);
    return 1;
}

static int request_wait(lua_State *L)
{
    hm_request *req = check_request(L);
    double deadline = -1;
    if (!lua_isnoneornil(L, 2)) {
        double seconds = luaL_checknumber(L, 2);
        if (!(seconds >= 0))
            luaL_argerror(L, 2, "seconds must be a number >= 0");
        deadline = hm_now() + seconds;
    }
    if (req->state != HM_DONE && !req->client->closed)
        hm_client_wait(req->client, req, deadline);
    lua_pushboolean(L, req->state == HM_DONE);
    return 1;
}

static int request_result(lua_State *L)
{
    hm_request *req = check_request(L);
    int i, n;
    if (req->state != HM_DONE)
        luaL_error(L, "heymarket: request is not finished (call wait() or poll() until true)");
    lua_settop(L, 1);
    hm_getuservalue(L, 1);
    if (!req->has_result) {
        /* Decode once, keep the values with the request for later calls. */
        n = push_outcome(L, req);
        lua_createtable(L, n, 1);
        for (i = 1; i <= n; i++) {
            lua_pushvalue(L, 2 + i);
            lua_rawseti(L, -2, i);
        }
        lua_pushinteger(L, n);
        lua_setfield(L, -2, "n");
        lua_rawseti(L, 2, 2);
        req->has_result = 1;
        free(req->body.data);
        req->body.data = NULL;
        req->body.len = req->body.cap = 0;
        return n;
    }
    lua_rawgeti(L, 2, 2);
    lua_getfield(L, 3, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    for (i = 1; i <= n; i++)
        lua_rawgeti(L, 3, i);
    return n;
}

static int request_cancel(lua_State *L)
{
    hm_request *req = check_request(L);
    if (req->state != HM_DONE)
        hm_request_finish(req, HM_KIND_CANCELLED, "the request was cancelled");
    return 0;
}

static int request_gc(lua_State *L)
{
    hm_request *req = check_request(L);
    hm_request_release(req);
    /* A finalizer elsewhere may resurrect the request: leave it finished.
     * req->client stays valid, the user value still holds the client. */
    if (req->state != HM_DONE) {
        req->state = HM_DONE;
        req->kind = HM_KIND_CANCELLED;
        strcpy(req->detail, "the request was garbage-collected");
    }
    return 0;
}

static int request_tostring(lua_State *L)
{
    hm_request *req = check_request(L);
    static const char *const states[] = {"queued", "running", "done"};
    lua_pushfstring(L, "heymarket.Request (GET %s, %s)", req->path ? req->path : "?",
                    states[req->state]);
    return 1;
}

/* Register metatable name with its metamethods and an __index of methods,
 * every function sharing the state table (at index state) as its upvalue. */
static void new_metatable(lua_State *L, int state, const char *name, const luaL_Reg *meta,
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

/* With the module state table at the top: create both metatables, every
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
    static const luaL_Reg request_methods[] = {
        {"poll", request_poll},
        {"wait", request_wait},
        {"result", request_result},
        {"cancel", request_cancel},
        {NULL, NULL}
    };
    static const luaL_Reg request_meta[] = {
        {"__gc", request_gc},
        {"__tostring", request_tostring},
        {NULL, NULL}
    };
    int state = lua_gettop(L);
    new_metatable(L, state, HM_CLIENT_MT, client_meta, client_methods);
    new_metatable(L, state, HM_REQUEST_MT, request_meta, request_methods);
}

/* The floor of `make bench`: what plain libcurl plus lua-cjson cost for the
 * same GETs heymarket makes, with nothing of heymarket in the way. A Lua C
 * module (build/bench/<lua>/floor.so), loaded by tools/bench_child.lua into
 * the very interpreter heymarket runs in, so the decoding happens in the same
 * Lua build, state and GC mode (lua5.4 runs scripts generational).
 *
 *   local floor = require("floor")
 *   local e = floor.easy(url, key)        one easy handle, reused (keep-alive)
 *   e:get()                               -> the body, a string (raises on failure)
 *   local e = floor.easy(url, key, ua)    ...also sending User-Agent: ua (CURLOPT_USERAGENT)
 *   floor.told(t, numbers, nulls)         -> t, after the least work the contract asks of
 *                                            a decoded body (see told() below)
 *   floor.curl_version()                  -> libcurl's version, for a User-Agent
 *   local m = floor.multi(url, key, p, maxconn, decode[, sockets])
 *   m:batch()                             -> P requests in flight at once, each body
 *                                            given to decode as its transfer completes;
 *                                            returns the last decoded value; with
 *                                            sockets true, driven through libcurl's
 *                                            socket interface (the sockets and timer
 *                                            it asks for, polled here) instead of
 *                                            curl_multi_perform and curl_multi_poll
 *
 * Both send the headers heymarket sends (Authorization: Bearer KEY, Accept:
 * application/json, Accept-Encoding as CURLOPT_ACCEPT_ENCODING ""), and keep
 * each body in one reused buffer per handle. MAXCONN > 0 caps the connections
 * per host (CURLMOPT_MAX_HOST_CONNECTIONS and CURLMOPT_MAXCONNECTS), as a
 * heymarket client does. Handles live until the process exits: the bench
 * child makes one object and exits. */
#define _POSIX_C_SOURCE 200809L

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>

int luaopen_floor(lua_State *L);

#if LUA_VERSION_NUM >= 502
#define lua_objlen_compat(L, i) lua_rawlen((L), (i))
#else
#define lua_objlen_compat(L, i) lua_objlen((L), (i))
#endif

typedef struct buffer {
    char *data;
    size_t len, cap;
} buffer;

/* The sockets libcurl asks to have watched, and its timer, for a multi
 * handle driven through its socket interface (floor.multi(..., true)). */
#define WATCH_MAX 1024
typedef struct watched {
    struct pollfd pfd[WATCH_MAX];
    int n;
    int timer_on;
    double timer_at; /* monotonic seconds */
} watched;

typedef struct floor_t {
    CURLM *multi;
    CURL **easy;
    buffer *bodies;
    long p;
    struct curl_slist *headers;
    watched *w;      /* NULL: driven by curl_multi_perform and curl_multi_poll */
} floor_t;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    buffer *b = ud;
    size_t n = size * nmemb;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        char *grown;
        while (cap - b->len < n)
            cap *= 2;
        grown = realloc(b->data, cap);
        if (grown == NULL)
            return 0;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
    return n;
}

static CURL *make_easy(const char *url, struct curl_slist *headers, buffer *body)
{
    CURL *e = curl_easy_init();
    if (e == NULL)
        return NULL;
    if (curl_easy_setopt(e, CURLOPT_URL, url) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_WRITEDATA, body) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_PRIVATE, body) != CURLE_OK) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

static void check_done(lua_State *L, CURL *e, CURLcode code)
{
    long status = 0;
    if (code != CURLE_OK)
        luaL_error(L, "floor: %s", curl_easy_strerror(code));
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200)
        luaL_error(L, "floor: HTTP status %d", (int)status);
}

/* floor.easy(url, key[, ua]) / floor.multi(url, key, p, maxconn, decode) */
static floor_t *new_floor(lua_State *L, long p, const char *mt, const char *ua)
{
    const char *url = luaL_checkstring(L, 1), *key = luaL_checkstring(L, 2);
    floor_t *f = lua_newuserdata(L, sizeof *f);
    struct curl_slist *more;
    long i;
    memset(f, 0, sizeof *f);
    luaL_getmetatable(L, mt);
    lua_setmetatable(L, -2);
    lua_pushfstring(L, "Authorization: Bearer %s", key);
    f->headers = curl_slist_append(NULL, lua_tostring(L, -1));
    lua_pop(L, 1);
    more = f->headers ? curl_slist_append(f->headers, "Accept: application/json") : NULL;
    f->easy = calloc((size_t)p, sizeof *f->easy);
    f->bodies = calloc((size_t)p, sizeof *f->bodies);
    if (more == NULL || f->easy == NULL || f->bodies == NULL)
        luaL_error(L, "floor: out of memory");
    f->headers = more;
    f->p = p;
    for (i = 0; i < p; i++) {
        f->easy[i] = make_easy(url, f->headers, &f->bodies[i]);
        if (f->easy[i] == NULL)
            luaL_error(L, "floor: could not set up a curl handle");
        if (ua != NULL && curl_easy_setopt(f->easy[i], CURLOPT_USERAGENT, ua) != CURLE_OK)
            luaL_error(L, "floor: could not set the User-Agent");
    }
    return f;
}

static int f_easy(lua_State *L)
{
    new_floor(L, 1, "floor.easy", luaL_optstring(L, 3, NULL));
    return 1;
}

static int easy_get(lua_State *L)
{
    floor_t *f = luaL_checkudata(L, 1, "floor.easy");
    f->bodies[0].len = 0;
    check_done(L, f->easy[0], curl_easy_perform(f->easy[0]));
    lua_pushlstring(L, f->bodies[0].data ? f->bodies[0].data : "", f->bodies[0].len);
    return 1;
}

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    watched *w = userp;
    int i;
    (void)e;
    (void)socketp;
    for (i = 0; i < w->n && w->pfd[i].fd != fd; i++)
        ;
    if (what == CURL_POLL_REMOVE) {
        if (i < w->n)
            w->pfd[i] = w->pfd[--w->n];
        return 0;
    }
    if (i == w->n) {
        if (w->n == WATCH_MAX)
            return -1;
        w->n++;
        w->pfd[i].fd = fd;
    }
    w->pfd[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) | ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    return 0;
}

static int on_timer(CURLM *multi, long ms, void *userp)
{
    watched *w = userp;
    (void)multi;
    w->timer_on = ms >= 0;
    if (ms >= 0)
        w->timer_at = mono_now() + (double)ms / 1000.0;
    return 0;
}

static int f_multi(lua_State *L)
{
    long p = (long)luaL_checkinteger(L, 3), maxconn = (long)luaL_checkinteger(L, 4);
    int sockets = lua_toboolean(L, 6);
    floor_t *f;
    luaL_checktype(L, 5, LUA_TFUNCTION);
    luaL_argcheck(L, p >= 1, 3, "at least one");
    f = new_floor(L, p, "floor.multi", NULL);
    f->multi = curl_multi_init();
    if (f->multi == NULL)
        luaL_error(L, "floor: could not make a multi handle");
    if (maxconn > 0) {
        curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxconn);
        curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, maxconn);
    }
    if (sockets) {
        f->w = calloc(1, sizeof *f->w);
        if (f->w == NULL)
            return luaL_error(L, "floor: out of memory");
        curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
        curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f->w);
        curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_timer);
        curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f->w);
    }
    /* the decoder travels with the object */
    lua_createtable(L, 1, 0);
    lua_pushvalue(L, 5);
    lua_rawseti(L, -2, 1);
#if LUA_VERSION_NUM >= 502
    lua_setuservalue(L, -2);
#else
    lua_setfenv(L, -2);
#endif
    return 1;
}

/* One batch: every handle in flight at once, each body decoded (by the
 * decoder at stack index 2) as its transfer completes. */
static int multi_batch(lua_State *L)
{
    floor_t *f = luaL_checkudata(L, 1, "floor.multi");
    long i, done = 0;
    int running = 1;
    lua_settop(L, 1);
#if LUA_VERSION_NUM >= 502
    lua_getuservalue(L, 1);
#else
    lua_getfenv(L, 1);
#endif
    lua_rawgeti(L, 2, 1);
    lua_replace(L, 2);
    lua_pushnil(L); /* 3: the last decoded value */
    for (i = 0; i < f->p; i++) {
        f->bodies[i].len = 0;
        if (curl_multi_add_handle(f->multi, f->easy[i]) != CURLM_OK)
            return luaL_error(L, "floor: curl_multi_add_handle failed");
    }
    while (done < f->p) {
        CURLMsg *msg;
        int left;
        if (f->w != NULL) {
            /* libcurl's socket interface, as a host event loop drives it:
             * poll what it asked for until its timer, then tell it what
             * happened */
            watched *w = f->w;
            double now = mono_now(), wait = 1.0;
            int got, k;
            if (w->timer_on && w->timer_at - now < wait)
                wait = w->timer_at > now ? w->timer_at - now : 0;
            got = poll(w->pfd, (nfds_t)w->n, (int)(wait * 1000.0 + 0.999));
            for (k = 0; got > 0 && k < w->n; k++) {
                short re = w->pfd[k].revents;
                if (re != 0) {
                    got--;
                    curl_multi_socket_action(f->multi, w->pfd[k].fd,
                        ((re & (POLLIN | POLLHUP)) ? CURL_CSELECT_IN : 0)
                        | ((re & POLLOUT) ? CURL_CSELECT_OUT : 0)
                        | ((re & POLLERR) ? CURL_CSELECT_ERR : 0), &running);
                    w->pfd[k].revents = 0;
                }
            }
            if (w->timer_on && w->timer_at <= mono_now())
                curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        } else if (curl_multi_perform(f->multi, &running) != CURLM_OK)
            return luaL_error(L, "floor: curl_multi_perform failed");
        while ((msg = curl_multi_info_read(f->multi, &left)) != NULL) {
            buffer *body = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&body);
            check_done(L, msg->easy_handle, msg->data.result);
            curl_multi_remove_handle(f->multi, msg->easy_handle);
            done++;
            lua_pushvalue(L, 2);
            lua_pushlstring(L, body->data ? body->data : "", body->len);
            lua_call(L, 1, 1);
            lua_replace(L, 3);
        }
        if (done < f->p && f->w == NULL && curl_multi_poll(f->multi, NULL, 0, 1000, NULL) != CURLM_OK)
            return luaL_error(L, "floor: curl_multi_poll failed");
    }
    return 1;
}

/* ---- told: a lower bound for the contract's work on a decoded body ----
 *
 * The contract returns whole numbers as integers on Lua 5.3+ (lua-cjson
 * 2.1.0 decodes every number as a float) and drops object members whose
 * value is null. told(t, numbers, nulls) does that for a body whose shape
 * it is told: t is an array of objects (or one object); in each object, the
 * value under each key of the array `numbers` is a number, or an array of
 * numbers, to make integers of (5.3+ only: before, Lua has no integers), and
 * the member under each key of `nulls` is dropped when it is cjson.null (a
 * light userdata). It never searches. lua-cjson 2.1.0 makes every number a
 * float, so on 5.3+ no client built on it can return the contract's
 * integers for less: there this is a lower bound. (Nulls cost less blanked
 * in the text before decoding, as heymarket does on 5.1, 5.2 and LuaJIT.) */

#if LUA_VERSION_NUM >= 503
/* The number at the top: a whole float in range is stored as an integer,
 * under the key at key_idx of the table at t (key_idx 0: index i). */
static void told_number(lua_State *L, int t, int key_idx, lua_Integer i)
{
    lua_Number n;
    lua_Integer v;
    if (lua_isinteger(L, -1))
        return;
    n = lua_tonumber(L, -1);
    if (!lua_numbertointeger(n, &v) || (lua_Number)v != n)
        return;
    if (key_idx != 0) {
        lua_pushvalue(L, key_idx);
        lua_pushinteger(L, v);
        lua_rawset(L, t);
    } else {
        lua_pushinteger(L, v);
        lua_rawseti(L, t, i);
    }
}
#endif

/* One object at o; the key strings at numbers..numbers+nn-1 and
 * nulls..nulls+nz-1. */
static void told_object(lua_State *L, int o, int numbers, int nn, int nulls, int nz)
{
    int k;
#if LUA_VERSION_NUM >= 503
    for (k = numbers; k < numbers + nn; k++) {
        lua_pushvalue(L, k);
        lua_rawget(L, o);
        if (lua_type(L, -1) == LUA_TNUMBER)
            told_number(L, o, k, 0);
        else if (lua_type(L, -1) == LUA_TTABLE) {
            int a = lua_gettop(L);
            lua_Integer i, n = (lua_Integer)lua_rawlen(L, a);
            for (i = 1; i <= n; i++) {
                lua_rawgeti(L, a, i);
                if (lua_type(L, -1) == LUA_TNUMBER)
                    told_number(L, a, 0, i);
                lua_settop(L, a);
            }
        }
        lua_settop(L, o);
    }
#else
    (void)numbers;
    (void)nn;
#endif
    for (k = nulls; k < nulls + nz; k++) {
        lua_pushvalue(L, k);
        lua_rawget(L, o);
        if (lua_type(L, -1) == LUA_TLIGHTUSERDATA) {
            lua_pushvalue(L, k);
            lua_pushnil(L);
            lua_rawset(L, o);
        }
        lua_settop(L, o);
    }
}

static int f_told(lua_State *L)
{
    int numbers, nulls, nn, nz, k;
    size_t i, n;
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    nn = (int)lua_objlen_compat(L, 2);
    nz = (int)lua_objlen_compat(L, 3);
    luaL_checkstack(L, nn + nz + 8, "told: too many keys");
    lua_settop(L, 3);
    numbers = 4;
    for (k = 1; k <= nn; k++)
        lua_rawgeti(L, 2, k);
    nulls = lua_gettop(L) + 1;
    for (k = 1; k <= nz; k++)
        lua_rawgeti(L, 3, k);
    n = lua_objlen_compat(L, 1);
    if (n == 0) {
        lua_pushvalue(L, 1);
        told_object(L, lua_gettop(L), numbers, nn, nulls, nz);
    }
    for (i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, (int)i);
        if (lua_type(L, -1) == LUA_TTABLE)
            told_object(L, lua_gettop(L), numbers, nn, nulls, nz);
        lua_pop(L, 1);
    }
    lua_settop(L, 1);
    return 1;
}

static int f_curl_version(lua_State *L)
{
    const curl_version_info_data *info = curl_version_info(CURLVERSION_NOW);
    lua_pushstring(L, info && info->version ? info->version : "unknown");
    return 1;
}

static void new_type(lua_State *L, const char *name, const char *method, lua_CFunction fn)
{
    luaL_newmetatable(L, name);
    lua_newtable(L);
    lua_pushcfunction(L, fn);
    lua_setfield(L, -2, method);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

int luaopen_floor(lua_State *L)
{
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return luaL_error(L, "floor: curl_global_init failed");
    new_type(L, "floor.easy", "get", easy_get);
    new_type(L, "floor.multi", "batch", multi_batch);
    lua_newtable(L);
    lua_pushcfunction(L, f_easy);
    lua_setfield(L, -2, "easy");
    lua_pushcfunction(L, f_multi);
    lua_setfield(L, -2, "multi");
    lua_pushcfunction(L, f_told);
    lua_setfield(L, -2, "told");
    lua_pushcfunction(L, f_curl_version);
    lua_setfield(L, -2, "curl_version");
    return 1;
}

/* heymarket.Request: one GET on a client, started at once and finished by
 * the client's transfers; blocking calls are a request waited for. */
#include "hm.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Push a started request for c (the client userdata at client_idx). Its
 * path and URL live in the userdata itself, so they stay readable whatever
 * happens to the request (even after its finalizer). */
hm_request *hm_request_push(lua_State *L, hm_client *c, int client_idx, const char *path,
                            hm_shape shape)
{
    size_t plen = strlen(path), blen = strlen(c->base_url);
    hm_request *req = hm_newuserdata2(L, sizeof *req + plen + 1 + blen + plen + 1);
    char *text = (char *)(req + 1);
    memset(req, 0, sizeof *req);
    req->retry_after = -1;
    memcpy(text, path, plen + 1);
    req->path = text;
    memcpy(text + plen + 1, c->base_url, blen);
    memcpy(text + plen + 1 + blen, path, plen + 1);
    req->url = text + plen + 1;
    req->client = c;
    req->shape = shape;
    luaL_getmetatable(L, HM_REQUEST_MT);
    lua_setmetatable(L, -2);

    /* User values: the client (it lives as long as the request), and later
     * the result. */
    lua_pushvalue(L, client_idx);
    hm_uv_set(L, lua_gettop(L) - 1, 1);
    /* Allocating above may have run a finalizer that closed the client:
     * then the request ends at once, unsent (start_attempt checks). */
    hm_request_begin(req);
    return req;
}

/* push_outcome, with the body guarded. */
static int push_outcome_now(lua_State *L, hm_request *req, int ridx)
{
    if (req->kind != HM_OK)
        return hm_push_failure(L, req, req->kind, req->detail);
    if (req->shape == HM_SHAPE_RAW) {
        lua_pushlstring(L, req->body.data ? req->body.data : "", req->body.len);
        return 1;
    }
    if (hm_json_decode(L, req, ridx, req->client->keep_null))
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

/* Push what the blocking call returns for a finished request. Anything that
 * allocates can run a finalizer, and a finalizer can call this request's
 * result() again: the inner call then leaves the body to this one (reading
 * stays raised if this raises; the body is then freed by __gc). The request
 * is at stack index ridx. */
static int push_outcome(lua_State *L, hm_request *req, int ridx)
{
    int n;
    if (req->kind == HM_KIND_NOMEM)
        return hm_raise_memory(L);
    req->reading++;
    n = push_outcome_now(L, req, ridx);
    req->reading--;
    return n;
}

/* A blocking call in an nginx worker stalls every request the worker
 * serves. Say so in the error log, once per worker process. */
static void warn_if_in_nginx(lua_State *L, const char *path)
{
    static pid_t warned = 0;
    pid_t pid = getpid();
    int top = lua_gettop(L);
    if (warned == pid)
        return;
    lua_getglobal(L, "ngx");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "get_phase");
        if (lua_isfunction(L, -1)) {
            lua_call(L, 0, 1);
            if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "init") != 0) {
                warned = pid;
                lua_getfield(L, top + 1, "log");
                lua_getfield(L, top + 1, "WARN");
                lua_pushfstring(L, "heymarket: a blocking call (GET %s) stalls this nginx worker "
                                   "until it returns; use require(\"heymarket.resty\") instead, "
                                   "which yields to nginx (logged once per worker)", path);
                if (lua_isfunction(L, -3))
                    lua_call(L, 2, 0);
            }
        }
    }
    lua_settop(L, top);
}

int hm_client_call(lua_State *L, hm_client *c, int client_idx, const char *path, hm_shape shape)
{
    hm_request *req;
    int n, ridx;
    if (c->in_nginx)
        warn_if_in_nginx(L, path);
    req = hm_request_push(L, c, client_idx, path, shape);
    ridx = lua_gettop(L);
    hm_client_wait(L, c, req, -1);
    n = push_outcome(L, req, ridx);
    hm_request_release(req); /* the body now, not when the collector comes */
    /* Released, and never handed to Lua code: nothing is left for its __gc,
     * which is there for an error raised above (an interrupt, out of
     * memory). Without a metatable the collector frees it without calling
     * a finalizer (LuaJIT, 5.1) or finds none to call (5.2+): one inbox on
     * LuaJIT, ~1-3k instructions a call less (callgrind). */
    lua_pushnil(L);
    lua_setmetatable(L, ridx);
    return n;
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
        hm_client_wait(L, req->client, req, deadline);
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
    if (!req->has_result) {
        /* Decode once, keep the values with the request (user value 2) for
         * later calls. */
        n = push_outcome(L, req, 1);
        if (n == 1) {
            /* A success: the value itself, no table around it. */
            lua_pushvalue(L, 2);
            hm_uv_set(L, 1, 2);
            req->has_result = 1;
        } else {
            lua_createtable(L, n, 1);
            for (i = 1; i <= n; i++) {
                lua_pushvalue(L, 1 + i);
                lua_rawseti(L, -2, i);
            }
            lua_pushinteger(L, n);
            lua_setfield(L, -2, "n");
            hm_uv_set(L, 1, 2);
            req->has_result = 2;
        }
        if (req->reading == 0) /* else an outer call is still reading it */
            hm_request_drop_body(req);
        return n;
    }
    hm_uv_get(L, 1, 2);
    if (req->has_result == 1)
        return 1;
    lua_getfield(L, 2, "n");
    n = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    for (i = 1; i <= n; i++)
        lua_rawgeti(L, 2, i);
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
    /* A finalizer elsewhere may resurrect the request: leave it finished as
     * cancelled (its body is gone) unless its result is already kept.
     * req->client stays valid, the user value still holds the client. */
    if (!req->has_result) {
        req->state = HM_DONE;
        req->kind = HM_KIND_CANCELLED;
        req->status = 0;
        hm_request_set_detail(req, "the request was garbage-collected", 0);
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

/* With the module state table at the top: the Request metatable. */
void hm_request_open(lua_State *L)
{
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
    hm_new_metatable(L, lua_gettop(L), HM_REQUEST_MT, request_meta, request_methods);
}

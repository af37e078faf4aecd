/* Failures from the network or the server: the nil, message, err triple. */
#include "hm.h"

#include <math.h>
#include <string.h>

#define SERVER_MESSAGE_MAX 300 /* longest server message kept in the one-line message */

/* Where a failed response repeats the API key (an echoing error page, say),
 * it is replaced before anything reaches Lua, and before anything is cut:
 * a key cut in half would still leak most of it. */
static const char REDACTED[] = "[redacted]";

static const char *hm_kind_name(hm_kind kind)
{
    switch (kind) {
    case HM_KIND_HTTP: return "http";
    case HM_KIND_TIMEOUT: return "timeout";
    case HM_KIND_NETWORK: return "network";
    case HM_KIND_TLS: return "tls";
    case HM_KIND_DECODE: return "decode";
    case HM_KIND_TOO_LARGE: return "too_large";
    case HM_KIND_CANCELLED: return "cancelled";
    default: return "ok";
    }
}

static const char *standard_reason(long status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 422: return "Unprocessable Entity";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return NULL;
    }
}

static unsigned char printable(unsigned char ch)
{
    return (ch < 0x20 || ch == 0x7f) ? ' ' : ch;
}

/* Push at most max bytes of s (n bytes) with every occurrence of key
 * replaced, and, for one_line, control characters turned into spaces first
 * (the key holds none, so an echoed key is still found). */
static void push_clean(lua_State *L, const char *s, size_t n, const char *key, size_t max,
                       int one_line)
{
    size_t k = key != NULL ? strlen(key) : 0, i = 0, out = 0;
    luaL_Buffer b;
    if (s == NULL)
        n = 0;
    /* No cut of the input: a replacement is shorter than a long key, so a
     * key may start before the output's end and end past any input cut.
     * Each round writes a byte, so at most max rounds run. */
    luaL_buffinit(L, &b);
    while (i < n && out < max) {
        unsigned char ch = (unsigned char)s[i];
        if (one_line)
            ch = printable(ch);
        if (k > 0 && ch == (unsigned char)key[0] && n - i >= k) {
            size_t j = 1;
            while (j < k && (one_line ? printable((unsigned char)s[i + j])
                                      : (unsigned char)s[i + j]) == (unsigned char)key[j])
                j++;
            if (j == k) {
                size_t m = sizeof REDACTED - 1;
                if (m > max - out)
                    m = max - out;
                luaL_addlstring(&b, REDACTED, m);
                out += m;
                i += k;
                continue;
            }
        }
        luaL_addchar(&b, (char)ch);
        out++;
        i++;
    }
    luaL_pushresult(&b);
}

static const char *api_key(const hm_request *req)
{
    return req->client != NULL ? req->client->api_key : NULL;
}

/* The server's own message: a JSON object's "error" (a string, or an object
 * with a "message"), else its "message". Pushes it, or nothing. */
static int push_server_message(lua_State *L, const hm_request *req)
{
    size_t i = 0;
    int top = lua_gettop(L), found = 0;
    while (i < req->body.len && (req->body.data[i] == ' ' || req->body.data[i] == '\t'
                                 || req->body.data[i] == '\r' || req->body.data[i] == '\n'))
        i++;
    if (i == req->body.len || req->body.data[i] != '{')
        return 0;
    if (!hm_json_decode_string(L, req->body.data, req->body.len, NULL, 0) || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return 0;
    }
    lua_getfield(L, -1, "error");
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "message");
        lua_remove(L, -2);
    }
    if (lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_getfield(L, -1, "message");
    }
    if (lua_type(L, -1) == LUA_TSTRING) {
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        push_clean(L, s, n, api_key(req), SERVER_MESSAGE_MAX, 1);
        found = 1;
    }
    lua_replace(L, top + 1);
    lua_settop(L, top + found);
    return found;
}

static void set_string(lua_State *L, const char *field, const char *value)
{
    if (value == NULL)
        return;
    lua_pushstring(L, value);
    lua_setfield(L, -2, field);
}

/* A header value the server chose: redacted, then cut to HM_FIELD_MAX. */
static void set_server_string(lua_State *L, const hm_request *req, const char *field,
                              const char *value)
{
    if (value == NULL)
        return;
    push_clean(L, value, strlen(value), api_key(req), HM_FIELD_MAX, 0);
    lua_setfield(L, -2, field);
}

static void set_number(lua_State *L, const char *field, double value)
{
#if HM_HAS_INTEGERS
    lua_Integer whole;
    if (value == floor(value) && lua_numbertointeger(value, &whole)) {
        lua_pushinteger(L, whole);
        lua_setfield(L, -2, field);
        return;
    }
#endif
    lua_pushnumber(L, value);
    lua_setfield(L, -2, field);
}

/* Push nil, message, err for a request that failed with kind. detail is the
 * transport's or decoder's description (NULL for http). Returns 3. */
int hm_push_failure(lua_State *L, hm_request *req, hm_kind kind, const char *detail)
{
    int has_response = req->status > 0 && kind != HM_KIND_CANCELLED;
    int err_idx;

    lua_pushnil(L);
    lua_pushnil(L); /* the message, filled in last */
    lua_newtable(L);
    err_idx = lua_gettop(L);

    set_string(L, "kind", hm_kind_name(kind));
    set_string(L, "method", "GET");
    set_string(L, "path", req->path);
    set_number(L, "attempts", req->attempts);
    lua_pushboolean(L, kind != HM_KIND_CANCELLED && req->retryable);
    lua_setfield(L, err_idx, "retryable");

    if (has_response) {
        set_number(L, "status", (double)req->status);
        set_server_string(L, req, "request_id", req->request_id);
        if (req->status >= 300 && req->status < 400)
            set_server_string(L, req, "location", req->location);
        push_clean(L, req->body.data, req->body.len, api_key(req), HM_BODY_IN_ERROR, 0);
        lua_setfield(L, err_idx, "body");
    }
    if (req->retry_after >= 0 && has_response)
        set_number(L, "retry_after", req->retry_after);
    if (req->curl_code != CURLE_OK && kind != HM_KIND_CANCELLED) {
        set_number(L, "curl_code", (double)req->curl_code);
    }

    /* err.message: the server's words for http, else the description. */
    if (kind == HM_KIND_HTTP) {
        const char *reason = req->reason != NULL && req->reason[0] ? req->reason
                                                                   : standard_reason(req->status);
        if (!push_server_message(L, req)) {
            if (reason != NULL)
                push_clean(L, reason, strlen(reason), api_key(req), SERVER_MESSAGE_MAX, 1);
            else
                lua_pushfstring(L, "HTTP %d", (int)req->status);
        }
    } else {
        const char *text = detail ? detail : hm_kind_name(kind);
        push_clean(L, text, strlen(text), api_key(req), SERVER_MESSAGE_MAX, 1);
    }
    lua_setfield(L, err_idx, "message");

    /* The one-line message. */
    {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        lua_pushfstring(L, "heymarket: GET %s: ", req->path);
        luaL_addvalue(&b);
        if (kind == HM_KIND_HTTP)
            lua_pushfstring(L, "HTTP %d: ", (int)req->status);
        else
            lua_pushfstring(L, "%s: ", hm_kind_name(kind));
        luaL_addvalue(&b);
        lua_getfield(L, err_idx, "message");
        luaL_addvalue(&b);
        if (kind == HM_KIND_HTTP && req->status >= 300 && req->status < 400 && req->location) {
            lua_pushliteral(L, " (redirect to ");
            luaL_addvalue(&b);
            push_clean(L, req->location, strlen(req->location), api_key(req),
                       SERVER_MESSAGE_MAX, 1);
            luaL_addvalue(&b);
            lua_pushliteral(L, " not followed)");
            luaL_addvalue(&b);
        }
        if (req->attempts > 1) {
            lua_pushfstring(L, " (after %d attempts)", req->attempts);
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
    }
    lua_replace(L, err_idx - 1);
    return 3;
}

int hm_raise_memory(lua_State *L)
{
    lua_pushliteral(L, "not enough memory");
    return lua_error(L);
}

/* Client options: reading, checking and defaulting the table given to
 * heymarket.new(). Every mistake raises, naming the option. */
#include "hm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_BASE_URL "https://api.heymarket.com"
#define DEFAULT_TIMEOUT 30.0
#define DEFAULT_CONNECT_TIMEOUT 10.0
#define DEFAULT_MAX_RETRIES 2
#define DEFAULT_MAX_RETRY_WAIT 60.0
#define DEFAULT_MAX_RESPONSE (32.0 * 1024 * 1024)
#define DEFAULT_MAX_CONNECTIONS 8
#define MAX_WHOLE 9007199254740992.0 /* 2^53: larger whole numbers are not exact */
#define NO_KEY_MESSAGE "heymarket: no API key (pass api_key or set HEYMARKET_API_KEY)"

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

/* NULL when url is an acceptable base_url, else why not; raises when out of
 * memory. */
static const char *check_base_url(lua_State *L, const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL, *query = NULL,
         *fragment = NULL;
    const char *why = NULL;
    CURLUcode rc;

    if (u == NULL)
        hm_raise_memory(L);
    rc = curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
    if (rc == CURLUE_OUT_OF_MEMORY) {
        curl_url_cleanup(u);
        hm_raise_memory(L);
    }
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

static void option_type_error(lua_State *L, const char *name, const char *expected, int idx)
{
    luaL_error(L, "heymarket: option '%s' must be %s (got %s)", name, expected,
               luaL_typename(L, idx));
}

/* A string option: a NUL byte inside would silently cut it in C. */
static const char *opt_string(lua_State *L, const char *name, int idx)
{
    size_t n;
    const char *s;
    if (lua_type(L, idx) != LUA_TSTRING)
        option_type_error(L, name, "a string", idx);
    s = lua_tolstring(L, idx, &n);
    if (strlen(s) != n)
        luaL_error(L, "heymarket: option '%s' must not contain a NUL byte", name);
    return s;
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
        luaL_error(L, "heymarket: option '%s' must be a %s number of seconds",
                   name, zero_ok ? "non-negative" : "positive");
    return v;
}

/* A whole number in [min, max]; out of range raises, nothing is clamped. */
static double opt_whole(lua_State *L, const char *name, int idx, double min, double max)
{
    double v = opt_number(L, name, idx);
    if (!(v >= min) || v != floor(v) || v > max) {
        if (max >= MAX_WHOLE)
            luaL_error(L, "heymarket: option '%s' must be a whole number >= %d", name, (int)min);
        luaL_error(L, "heymarket: option '%s' must be a whole number from %d to %d", name,
                   (int)min, (int)max);
    }
    return v;
}

/* Read the options table at idx (0 or nil: none) into o; raises on any
 * mistake. The strings in o belong to the Lua values (or the environment). */
void hm_read_options(lua_State *L, int idx, hm_options *o)
{
    memset(o, 0, sizeof *o);
    o->timeout = DEFAULT_TIMEOUT;
    o->connect_timeout = DEFAULT_CONNECT_TIMEOUT;
    o->max_retries = DEFAULT_MAX_RETRIES;
    o->max_retry_wait = DEFAULT_MAX_RETRY_WAIT;
    o->max_response = DEFAULT_MAX_RESPONSE;
    o->max_connections = DEFAULT_MAX_CONNECTIONS;

    if (idx != 0 && !lua_isnoneornil(L, idx)) {
        if (!lua_istable(L, idx))
            luaL_error(L, "heymarket: options must be a table (got %s)", luaL_typename(L, idx));
        lua_pushnil(L);
        while (lua_next(L, idx) != 0) {
            const char *name;
            size_t name_len;
            int v = lua_gettop(L);
            if (lua_type(L, -2) != LUA_TSTRING)
                luaL_error(L, "heymarket: option names must be strings (got %s)",
                           luaL_typename(L, -2));
            name = lua_tolstring(L, -2, &name_len);
            if (strlen(name) != name_len)
                luaL_error(L, "heymarket: unknown option '%s' (its name holds a NUL byte)", name);
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
                o->max_retries = (int)opt_whole(L, name, v, 0, HM_MAX_RETRIES);
            else if (strcmp(name, "max_retry_wait") == 0)
                o->max_retry_wait = opt_seconds(L, name, v, 1);
            else if (strcmp(name, "max_response") == 0)
                o->max_response = opt_whole(L, name, v, 1, MAX_WHOLE);
            else if (strcmp(name, "max_connections") == 0)
                o->max_connections = (int)opt_whole(L, name, v, 1, HM_MAX_CONNECTIONS);
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
        const char *why = check_base_url(L, o->base_url);
        if (why != NULL)
            luaL_error(L, "heymarket: %s", why);
    }
}

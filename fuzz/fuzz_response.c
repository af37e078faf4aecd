/* libFuzzer target for what a server controls before Lua sees it on a
 * failure: header lines (status line and reason phrase, Location, request
 * ids, Retry-After as seconds or an HTTP-date), the body, and the nil,
 * message, err triple built from them. The property checked beyond memory
 * safety: the API key never appears in the message or in any err field.
 * It includes transfer.c to reach its static callbacks.
 * Build and run: make fuzz */
#include "../src/transfer.c"
#include "fuzz_state.h"

#include <lualib.h>
#include <stdio.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char KEY[] = "hm-fuzz-key";

static int contains(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle), i;
    for (i = 0; i + k <= n; i++)
        if (memcmp(s + i, needle, k) == 0)
            return 1;
    return 0;
}

static void check_clean(lua_State *L, int idx, const char *what)
{
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    if (s != NULL && contains(s, n, KEY)) {
        fprintf(stderr, "the key leaked into %s: %s\n", what, s);
        abort();
    }
}

/* push_failure(req): nil, message, err; then every string in err is checked. */
static int failure(lua_State *L)
{
    hm_request *req = lua_touserdata(L, 1);
    hm_push_failure(L, req, req->kind, req->detail != NULL && req->detail[0] ? req->detail : NULL);
    check_clean(L, -2, "the message");
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        if (lua_type(L, -1) == LUA_TSTRING)
            check_clean(L, -1, lua_tostring(L, -2));
        lua_pop(L, 1);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static lua_State *L;
    static hm_client client;
    hm_request req;
    const char *p = (const char *)data, *end = p + size;
    char key[sizeof KEY];
    char detail[HM_DETAIL_MAX + 1];

    if (L == NULL)
        L = fuzz_state(failure, "failure");
    memcpy(key, KEY, sizeof KEY);
    memset(&req, 0, sizeof req);
    client.api_key = key;
    client.max_response = 1 << 16;
    req.client = &client;
    req.retry_after = -1;
    req.path = "/v1/inboxes";

    /* Each line of the input is a header line; the whole input is also a body. */
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
        char *line = malloc(n + 1);
        if (line == NULL)
            break;
        memcpy(line, p, n);
        line[n] = '\0';
        on_header(line, 1, n, &req);
        free(line);
        p += n;
    }
    on_body((char *)data, 1, size, &req);
    req.status = size > 0 ? 100 + data[0] * 2 : 500;
    req.kind = req.status >= 200 && req.status < 300 ? HM_KIND_DECODE : HM_KIND_HTTP;
    memset(detail, 0, sizeof detail);
    memcpy(detail, data, size < sizeof detail ? size : sizeof detail - 1);
    req.detail = detail; /* not owned: never freed */

    lua_getglobal(L, "failure");
    lua_pushlightuserdata(L, &req);
    if (lua_pcall(L, 1, 0, 0) != 0) {
        fprintf(stderr, "push_failure raised: %s\n", lua_tostring(L, -1));
        abort();
    }
    reset_response_headers(&req);
    free(req.body.data);
    return 0;
}

/* The floor of `make bench`: what plain libcurl plus lua-cjson cost for the
 * same GETs heymarket makes, with nothing of heymarket in the way. Built once
 * per Lua (build/bench/floor-lua5.4, build/bench/floor-luajit): the bodies are
 * decoded by cjson.new().decode in a Lua state of that version, with the GC
 * mode its interpreter gives scripts (lua5.4 runs them generational).
 *
 *   floor URL KEY N P MAXCONN DECODE
 *
 * Sends the headers heymarket sends (Authorization: Bearer KEY, Accept:
 * application/json, Accept-Encoding as CURLOPT_ACCEPT_ENCODING ""), collects
 * each body into one reused buffer per handle, decodes it when DECODE is 1,
 * and prints one line:
 *
 *   <wall seconds> <process CPU seconds> <bytes of the last body> <peak RSS kB>
 *
 * P = 1: one easy handle, reused (keep-alive), N requests one after another
 * with curl_easy_perform.
 * P > 1: P easy handles in one multi handle, all P requests in flight at once,
 * each body decoded as its transfer completes, N / P such batches; the handles
 * and the multi's connections are reused. MAXCONN > 0 caps the connections
 * per host (CURLMOPT_MAX_HOST_CONNECTIONS), as a heymarket client does.
 *
 * One untimed request (or batch) first opens the connection(s). Exits non-zero
 * on any transfer error, a status other than 200 or a decoding error. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

typedef struct buffer {
    char *data;
    size_t len, cap;
} buffer;

static lua_State *L;
static int decode_bodies;

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

static double seconds(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long peak_rss_kb(void)
{
    char line[256];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    fclose(f);
    return kb;
}

/* cjson.new().decode(body), the result dropped at once; the decoder sits at
 * stack index 1. */
static int decode(const buffer *b)
{
    if (!decode_bodies)
        return 1;
    lua_pushvalue(L, 1);
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    if (lua_pcall(L, 1, 1, 0) != 0) {
        fprintf(stderr, "floor: decode failed: %s\n", lua_tostring(L, -1));
        return 0;
    }
    lua_pop(L, 1);
    return 1;
}

static int setup_lua(void)
{
    L = luaL_newstate();
    if (L == NULL)
        return 0;
    luaL_openlibs(L);
#ifdef LUA_GCGEN
    lua_gc(L, LUA_GCGEN, 0, 0); /* what lua.c does for every script in 5.4 */
#endif
    if (luaL_dostring(L, "return require('cjson').new().decode") != 0) {
        fprintf(stderr, "floor: %s\n", lua_tostring(L, -1));
        return 0;
    }
    return 1;
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

static int check_done(CURL *e, CURLcode code)
{
    long status = 0;
    if (code != CURLE_OK) {
        fprintf(stderr, "floor: %s\n", curl_easy_strerror(code));
        return 0;
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        fprintf(stderr, "floor: HTTP status %ld\n", status);
        return 0;
    }
    return 1;
}

/* P = 1: n requests on one easy handle. */
static int run_serial(CURL *e, buffer *body, long n)
{
    long i;
    for (i = 0; i < n; i++) {
        body->len = 0;
        if (!check_done(e, curl_easy_perform(e)) || !decode(body))
            return 0;
    }
    return 1;
}

/* P > 1: one batch, every handle in flight at once, driven to completion. */
static int run_batch(CURLM *multi, CURL **easy, buffer *bodies, long p)
{
    long i, done = 0;
    int running = 1, ok = 1;
    for (i = 0; i < p; i++) {
        bodies[i].len = 0;
        if (curl_multi_add_handle(multi, easy[i]) != CURLM_OK) {
            fprintf(stderr, "floor: curl_multi_add_handle failed\n");
            return 0;
        }
    }
    while (done < p) {
        CURLMsg *msg;
        int left;
        if (curl_multi_perform(multi, &running) != CURLM_OK) {
            fprintf(stderr, "floor: curl_multi_perform failed\n");
            return 0;
        }
        while ((msg = curl_multi_info_read(multi, &left)) != NULL) {
            buffer *body = NULL;
            if (msg->msg != CURLMSG_DONE)
                continue;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&body);
            if (!check_done(msg->easy_handle, msg->data.result) || !decode(body))
                ok = 0;
            curl_multi_remove_handle(multi, msg->easy_handle);
            done++;
        }
        if (done < p && curl_multi_poll(multi, NULL, 0, 1000, NULL) != CURLM_OK) {
            fprintf(stderr, "floor: curl_multi_poll failed\n");
            return 0;
        }
    }
    return ok;
}

int main(int argc, char **argv)
{
    const char *url, *key;
    long n, p, maxconn, i, batches;
    char *auth;
    struct curl_slist *headers = NULL, *more;
    CURL **easy;
    CURLM *multi = NULL;
    buffer *bodies;
    double wall, cpu;
    int ok;

    if (argc != 7) {
        fprintf(stderr, "usage: %s URL KEY N PARALLEL MAXCONN DECODE\n", argv[0]);
        return 2;
    }
    url = argv[1];
    key = argv[2];
    n = strtol(argv[3], NULL, 10);
    p = strtol(argv[4], NULL, 10);
    maxconn = strtol(argv[5], NULL, 10);
    decode_bodies = strcmp(argv[6], "1") == 0;
    if (n < 1 || p < 1 || n % p != 0 || maxconn < 0) {
        fprintf(stderr, "floor: N and PARALLEL must be positive, N a multiple of PARALLEL\n");
        return 2;
    }
    if (!setup_lua() || curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return 1;

    auth = malloc(strlen("Authorization: Bearer ") + strlen(key) + 1);
    if (auth == NULL)
        return 1;
    strcpy(auth, "Authorization: Bearer ");
    strcat(auth, key);
    headers = curl_slist_append(NULL, auth);
    free(auth);
    more = headers ? curl_slist_append(headers, "Accept: application/json") : NULL;
    if (more == NULL)
        return 1;
    headers = more;

    easy = calloc((size_t)p, sizeof *easy);
    bodies = calloc((size_t)p, sizeof *bodies);
    if (easy == NULL || bodies == NULL)
        return 1;
    for (i = 0; i < p; i++) {
        easy[i] = make_easy(url, headers, &bodies[i]);
        if (easy[i] == NULL) {
            fprintf(stderr, "floor: could not set up a curl handle\n");
            return 1;
        }
    }

    batches = n / p;
    if (p == 1) {
        ok = run_serial(easy[0], &bodies[0], 1); /* warm-up: connect */
        wall = seconds(CLOCK_MONOTONIC);
        cpu = seconds(CLOCK_PROCESS_CPUTIME_ID);
        ok = ok && run_serial(easy[0], &bodies[0], n);
    } else {
        multi = curl_multi_init();
        if (multi == NULL)
            return 1;
        if (maxconn > 0)
            curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxconn);
        ok = run_batch(multi, easy, bodies, p); /* warm-up: connect */
        wall = seconds(CLOCK_MONOTONIC);
        cpu = seconds(CLOCK_PROCESS_CPUTIME_ID);
        for (i = 0; ok && i < batches; i++)
            ok = run_batch(multi, easy, bodies, p);
    }
    wall = seconds(CLOCK_MONOTONIC) - wall;
    cpu = seconds(CLOCK_PROCESS_CPUTIME_ID) - cpu;

    if (ok)
        printf("%.9f %.9f %lu %ld\n", wall, cpu, (unsigned long)bodies[0].len, peak_rss_kb());

    for (i = 0; i < p; i++) {
        curl_easy_cleanup(easy[i]);
        free(bodies[i].data);
    }
    if (multi != NULL)
        curl_multi_cleanup(multi);
    free(easy);
    free(bodies);
    curl_slist_free_all(headers);
    curl_global_cleanup();
    lua_close(L);
    return ok ? 0 : 1;
}

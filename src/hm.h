/* heymarket internal header: the types every part of the C module shares.
 * Include it first in every source file (it sets the feature macros). */
#ifndef HM_H
#define HM_H

#define _POSIX_C_SOURCE 200809L

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <curl/curl.h>

#include "compat.h"

#define HM_VERSION "0.1.0"
#define HM_CLIENT_MT "heymarket.Client"
#define HM_REQUEST_MT "heymarket.Request"

/* Only luaopen_heymarket is exported; the rest of the shared functions stay
 * inside the shared object. */
#if defined(__GNUC__)
#define HM_INTERNAL __attribute__((visibility("hidden")))
#else
#define HM_INTERNAL
#endif

#define HM_BODY_IN_ERROR 4096 /* err.body keeps at most this much */
#define HM_FIELD_MAX 1024     /* err.request_id and err.location keep at most this much */
#define HM_IDLE_MAX 1024      /* finished easy handles a client keeps for reuse, at most */
#define HM_IDLE_KEEP 16       /* how many it keeps however long they go unused */
#define HM_IDLE_SECONDS 5.0   /* beyond those, a handle unused this long is freed */
#define HM_URL_CACHE 4        /* parsed request URLs a client keeps (CURLOPT_CURLU) */
#define HM_SPARE_MAX (8u << 20) /* a client keeps a finished body buffer up to this size */
#define HM_HOLD_MIN (64u << 10) /* and the string of a body this large (json.c, hold_body) */
#define HM_MAX_RETRIES 1000   /* the largest max_retries accepted */
#define HM_MAX_CONNECTIONS 1000 /* the largest max_connections accepted */

/* Slots of the module state table, the upvalue every C function shares. */
#define HM_STATE_DECODE "decode"     /* private cjson.decode (or vim.json.decode) */
#define HM_STATE_JNULL "decoder_null" /* the decoder's null sentinel */
#define HM_STATE_UA "ua"             /* "heymarket-lua/V (Lua V; libcurl/V)" */
#define HM_STATE_DEFAULT "default"   /* the default client, made on first use */
#define HM_STATE_IDX lua_upvalueindex(1)

typedef struct hm_buf {
    char *data;
    size_t len, cap;
} hm_buf;

typedef enum hm_kind {
    HM_OK = 0,
    HM_KIND_HTTP,
    HM_KIND_TIMEOUT,
    HM_KIND_NETWORK,
    HM_KIND_TLS,
    HM_KIND_DECODE,
    HM_KIND_TOO_LARGE,
    HM_KIND_CANCELLED,
    HM_KIND_NOMEM       /* never reported: taking the result raises a memory error */
} hm_kind;

typedef enum hm_shape {
    HM_SHAPE_ANY = 0,
    HM_SHAPE_ARRAY,
    HM_SHAPE_OBJECT,
    HM_SHAPE_RAW        /* the body as a string, undecoded */
} hm_shape;

/* What heymarket.new() was given, checked and defaulted (options.c). */
typedef struct hm_options {
    const char *api_key, *base_url, *ca_file, *ca_path, *proxy, *user_agent;
    double timeout, connect_timeout, max_retry_wait, max_response;
    int max_retries, max_connections;
    int keep_null;
} hm_options;

typedef enum hm_state {
    HM_QUEUED,  /* waiting for its start time (first attempt or a retry) */
    HM_RUNNING, /* its easy handle is in the multi handle */
    HM_DONE
} hm_state;

typedef struct hm_client hm_client;
typedef struct hm_request hm_request;

struct hm_client {
    CURLM *multi;             /* made lazily, so a client built before fork() has none */
    pid_t pid;                /* the process that owns multi */
    unsigned long fork_gen;   /* hm_fork_generation() when pid was last checked */
    int closed;
    char *base_url;           /* without trailing '/'; kept until __gc for tostring */
    char *api_key;            /* zeroed before it is freed */
    char *user_agent;
    char *ca_file, *ca_path, *proxy;
    struct curl_slist *headers; /* Authorization and Accept */
    long timeout_ms, connect_timeout_ms;
    int max_retries;
    int max_connections;      /* per host: CURLMOPT_MAX_HOST_CONNECTIONS */
    double max_retry_wait;
    size_t max_response;
    int keep_null;
    int in_nginx;             /* made where the global ngx exists (OpenResty) */
    uint64_t rng;
    hm_request *active;       /* requests not yet done, linked through next/prev */
    unsigned n_queued;        /* how many of them are HM_QUEUED: the drive loop walks
                                 the list for due starts only when some are */
    struct hm_idle {
        CURL *easy;           /* set up for this client, not in use */
        char *errbuf;         /* its CURLOPT_ERRORBUFFER, kept with it */
        double since;         /* hm_now() when it was put back */
    } *idle;                  /* the most recently used last */
    int n_idle, cap_idle;
    hm_buf spare;             /* a finished request's body buffer, for the next one */
    int holding;              /* Lua 5.4: its user value 1 holds its last large body's string */
    struct hm_url {
        CURLU *parsed;        /* handed to libcurl, so it need not parse url again */
        char *url;
        int users;            /* easy handles set to it: it stays while any is */
    } urls[HM_URL_CACHE];
    int url_next;             /* the slot to replace next */
    unsigned long steps;      /* how many times the client has been stepped */

    /* loop.c: what libcurl asked to have watched, for the client's own
     * waits and for a host event loop (client:sockets(), timeout(), drive()) */
    struct hm_watch *watch;   /* sockets and the directions libcurl wants */
    int n_watch, cap_watch;
    struct pollfd *pfd;       /* scratch for poll() */
    int cap_pfd;
    int timer_on;             /* libcurl's timer is set ... */
    double timer_at;          /* ... to expire at this monotonic time */
    int timer_changed;        /* libcurl called the timer callback */
    int watch_oom;            /* a socket could not be recorded for lack of memory */
    int host;                 /* a host loop reads sockets(): closing is deferred */
    int *closing;             /* sockets libcurl closed, closed for real at sockets() */
    int n_closing, cap_closing;
    int *reported;            /* the sockets the last sockets() handed the host */
    int n_reported, cap_reported;
    int notify_open;          /* the pipe below exists */
    int notify[2];            /* readable when a request finished outside drive() */
    int notified;             /* a byte is in the pipe */
    int driving;              /* inside drive() */
    unsigned long finished;   /* requests finished that drive() has not reported */
    int epoll_open;           /* Linux: epfd mirrors watch, so a step costs what is ready */
    int epfd;
};

struct hm_request {
    hm_client *client;        /* stays valid: the request's user value holds the client */
    int reading;              /* push_outcome is reading the body (a finalizer run
                               * meanwhile may call result() again: that inner call
                               * must leave the body alone) */
    int has_result;           /* its result is cached in the user value, slot 2: the
                               * value itself (1), or a table of n values (2) */
    int linked;               /* in client->active */
    hm_request *next, *prev;
    hm_state state;
    hm_shape shape;
    const char *path;         /* as the caller named it, e.g. "/v1/inboxes" */
    const char *url;          /* path and url live in the userdata, after the struct */
    CURL *easy;
    int url_slot;             /* 1 + the client's urls slot easy is set to, or 0 */
    double start_at;          /* monotonic seconds: when a queued attempt may start */
    unsigned long seen_step;  /* client->steps when this request last polled */
    int attempts;

    /* What the latest attempt saw. */
    hm_buf body;
    int too_large;
    int out_of_memory;
    int socket_errno;         /* why libcurl could not open a socket, or 0 */
    long status;
    char *reason;             /* the status line's reason phrase, whole */
    char *request_id;
    char *location;
    double retry_after;       /* seconds, or < 0 when absent */
    CURLcode curl_code;
    char *errbuf;             /* easy's CURLOPT_ERRORBUFFER: goes with the handle */

    /* The outcome, once done. */
    hm_kind kind;
    int retryable;
    const char *detail;       /* transport description, for non-http failures */
    int detail_owned;         /* detail was allocated for this request */
};

/* heymarket.c: the one exported symbol */
int luaopen_heymarket(lua_State *L);

/* transfer.c: the request state machine driven by the client's multi handle */
HM_INTERNAL double hm_now(void);
HM_INTERNAL unsigned long hm_fork_generation(void);
HM_INTERNAL void hm_request_begin(hm_request *req);
HM_INTERNAL void hm_check_fork(hm_client *c);
HM_INTERNAL void hm_loop_forked(hm_client *c);
HM_INTERNAL void hm_attempt_start(hm_request *req);
HM_INTERNAL void hm_attempt_complete(hm_request *req, CURLcode code);
HM_INTERNAL void hm_request_finish(hm_request *req, hm_kind kind, const char *detail);
#define HM_DETAIL_MAX 255 /* a failure description is cut to this many bytes */
HM_INTERNAL void hm_request_set_detail(hm_request *req, const char *detail, int copy);
HM_INTERNAL void hm_request_release(hm_request *req);
HM_INTERNAL void hm_request_drop_body(hm_request *req);
HM_INTERNAL void hm_client_shutdown(hm_client *c);

/* loop.c: driving a client's transfers, by itself or from a host event loop */
HM_INTERNAL void hm_loop_attach(hm_client *c);
HM_INTERNAL int hm_loop_setup_easy(hm_client *c, CURL *e);
HM_INTERNAL void hm_loop_finished(hm_client *c);
HM_INTERNAL void hm_loop_shutdown(hm_client *c);
HM_INTERNAL void hm_loop_free(hm_client *c);
HM_INTERNAL void hm_loop_open(lua_State *L);
HM_INTERNAL void hm_client_step(hm_client *c);
HM_INTERNAL void hm_client_wait(lua_State *L, hm_client *c, hm_request *req, double deadline);

/* options.c: the options table of heymarket.new() */
HM_INTERNAL void hm_read_options(lua_State *L, int idx, hm_options *o);

/* client.c: the Client userdata */
HM_INTERNAL void hm_client_open(lua_State *L);
HM_INTERNAL hm_client *hm_client_new(lua_State *L, int opts_idx);
HM_INTERNAL void hm_client_close(hm_client *c);
HM_INTERNAL hm_client *hm_check_client(lua_State *L, int idx);
HM_INTERNAL void hm_new_metatable(lua_State *L, int state, const char *name,
                                  const luaL_Reg *meta, const luaL_Reg *methods);

/* request.c: the Request userdata; blocking calls */
HM_INTERNAL void hm_request_open(lua_State *L);
HM_INTERNAL hm_request *hm_request_push(lua_State *L, hm_client *c, int client_idx,
                                        const char *path, hm_shape shape);
HM_INTERNAL int hm_client_call(lua_State *L, hm_client *c, int client_idx,
                               const char *path, hm_shape shape);

/* json.c: decoding and normalising */
HM_INTERNAL int hm_json_setup(lua_State *L);
HM_INTERNAL int hm_json_decode(lua_State *L, hm_request *req, int ridx, int keep_null);
HM_INTERNAL int hm_json_decode_string(lua_State *L, const char *s, size_t n,
                                      hm_request *req, int ridx);
HM_INTERNAL void hm_json_drop_held(lua_State *L, hm_client *c, int cidx);

/* errors.c: the nil, message, err triple */
HM_INTERNAL int hm_push_failure(lua_State *L, hm_request *req, hm_kind kind,
                                const char *detail);
/* Raise Lua's "not enough memory" (for a failed malloc outside Lua). */
HM_INTERNAL int hm_raise_memory(lua_State *L);

#endif

/* The request state machine: every request of a client is driven by the
 * client's curl multi handle. Blocking calls start a request and wait for it;
 * the non-blocking API steps the same machine without waiting.
 * No Lua runs here: libcurl callbacks only copy bytes into C buffers. */
#include "hm.h"

#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BACKOFF_BASE 0.5 /* seconds */
#define BACKOFF_CAP 8.0

double hm_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int buf_append(hm_buf *b, const char *p, size_t n)
{
    if (n == 0)
        return 1;
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        char *grown;
        while (cap - b->len < n) {
            if (cap > ((size_t)-1) / 2)
                return 0;
            cap *= 2;
        }
        grown = realloc(b->data, cap);
        if (grown == NULL)
            return 0;
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 1;
}

static int ascii_lower(int ch)
{
    return (ch >= 'A' && ch <= 'Z') ? ch - 'A' + 'a' : ch;
}

/* Does the header line start with name (lower case, including ':')? */
static int header_is(const char *line, size_t len, const char *name, size_t n)
{
    size_t i;
    if (len < n)
        return 0;
    for (i = 0; i < n; i++)
        if (ascii_lower((unsigned char)line[i]) != name[i])
            return 0;
    return 1;
}
#define HEADER_IS(line, len, name) header_is((line), (len), (name), sizeof(name) - 1)

static char *dup_trimmed(const char *p, size_t n)
{
    char *s;
    while (n > 0 && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n > 0 && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

/* Retry-After is delta-seconds or an HTTP-date; returns seconds, < 0 if unreadable. */
static double parse_retry_after(const char *value)
{
    const char *p = value;
    if (*p == '\0')
        return -1;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == '\0')
        return strtod(value, NULL);
    {
        time_t when = curl_getdate(value, NULL);
        struct timespec now;
        double delta;
        if (when == (time_t)-1)
            return -1;
        /* Not time(): it reads a coarse clock that may lag a second behind
         * the server's (on this machine, nginx's gettimeofday). */
        clock_gettime(CLOCK_REALTIME, &now);
        delta = difftime(when, now.tv_sec);
        return delta > 0 ? delta : 0;
    }
}

/* libcurl's socket, opened here to learn why it could not be: out of file
 * descriptors must not pass for "Couldn't connect". Close-on-exec, so the
 * host's child processes (Neovim jobs, say) do not inherit connections. */
static curl_socket_t open_socket(void *ud, curlsocktype purpose, struct curl_sockaddr *a)
{
    hm_request *req = ud;
    curl_socket_t fd;
    (void)purpose;
    fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd == CURL_SOCKET_BAD && req != NULL)
        req->socket_errno = errno;
    return fd;
}

static void reset_response_headers(hm_request *req)
{
    free(req->request_id);
    free(req->location);
    free(req->reason);
    req->request_id = NULL;
    req->location = NULL;
    req->reason = NULL;
    req->retry_after = -1;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud)
{
    hm_request *req = ud;
    size_t total = size * nitems, len = total;
    char **slot = NULL;
    size_t skip = 0;

    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    switch (len > 0 ? ascii_lower((unsigned char)line[0]) : 0) {
    case 'h': case 'x': case 'r': case 'l':
        break;
    default:
        return total; /* none of the lines read below (most headers) */
    }
    if (HEADER_IS(line, len, "http/")) {
        /* A new response (after 100 Continue, or a proxy's CONNECT). */
        /* Kept whole: errors.c redacts the key before it cuts anything. */
        const char *sp = memchr(line, ' ', len);
        reset_response_headers(req);
        if (sp != NULL)
            sp = memchr(sp + 1, ' ', len - (size_t)(sp + 1 - line));
        if (sp != NULL && (req->reason = dup_trimmed(sp + 1, len - (size_t)(sp + 1 - line))) == NULL)
            req->out_of_memory = 1;
        return total;
    }
    if (HEADER_IS(line, len, "x-request-id:")) {
        slot = &req->request_id;
        skip = 13;
    } else if (HEADER_IS(line, len, "request-id:")) {
        slot = &req->request_id;
        skip = 11;
    } else if (HEADER_IS(line, len, "location:")) {
        slot = &req->location;
        skip = 9;
    } else if (HEADER_IS(line, len, "retry-after:")) {
        char *value = dup_trimmed(line + 12, len - 12);
        if (value == NULL)
            req->out_of_memory = 1;
        else {
            req->retry_after = parse_retry_after(value);
            free(value);
        }
        return total;
    }
    if (slot != NULL) {
        free(*slot);
        *slot = dup_trimmed(line + skip, len - skip);
        if (*slot == NULL)
            req->out_of_memory = 1;
    }
    return total;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud)
{
    hm_request *req = ud;
    size_t n = size * nmemb;
    if (n > req->client->max_response - req->body.len) {
        req->too_large = 1;
        return 0;
    }
    if (req->body.len == 0) {
        /* Room for the whole body at once when its length is known (the
         * compressed length only, for a compressed one: then it grows). */
        curl_off_t whole = -1;
        if (req->easy != NULL
            && curl_easy_getinfo(req->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &whole) == CURLE_OK
            && whole > 0 && (uint64_t)whole > req->body.cap
            && (uint64_t)whole <= req->client->max_response) {
            char *room = realloc(req->body.data, (size_t)whole);
            if (room != NULL) {
                req->body.data = room;
                req->body.cap = (size_t)whole;
            }
        }
    }
    if (!buf_append(&req->body, data, n)) {
        req->out_of_memory = 1;
        return 0;
    }
    return n;
}

static uint64_t next_random(hm_client *c)
{
    /* xorshift64*: enough for jitter, and private to the client */
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * UINT64_C(2685821657736338717);
}

/* Full jitter: a uniform wait in [0, min(cap, base * 2^(retry - 1))]. */
static double backoff(hm_client *c, int retry)
{
    double ceiling = BACKOFF_BASE * ldexp(1.0, retry - 1);
    if (ceiling > BACKOFF_CAP)
        ceiling = BACKOFF_CAP;
    return ceiling * ((double)(next_random(c) >> 11) / 9007199254740992.0);
}

/* Forks are noticed without a getpid() system call on every check: a
 * handler registered with pthread_atfork bumps a counter in each child, and
 * only a changed counter makes check_fork ask for the pid. (glibc drops the
 * handler when the module is unloaded.) Without the handler, every check
 * asks. */
static unsigned long fork_generation;
static int fork_watched;

static void on_fork_child(void)
{
    fork_generation++;
}

unsigned long hm_fork_generation(void)
{
    if (!fork_watched && pthread_atfork(NULL, NULL, on_fork_child) == 0)
        fork_watched = 1;
    return fork_generation;
}

/* A client used in a process other than the one that made its handles (a
 * fork, as nginx does after init_by_lua) abandons them: cleaning them up would
 * close the parent's sockets. */
static void check_fork(hm_client *c)
{
    pid_t pid;
    hm_request *r;
    int i;
    if (fork_watched && c->fork_gen == fork_generation)
        return;
    c->fork_gen = fork_generation;
    pid = getpid();
    if (c->pid == pid)
        return;
    c->multi = NULL;
    /* The handles hold the parent's sockets and are abandoned; their error
     * buffers are plain memory. */
    while (c->n_idle > 0)
        free(c->idle[--c->n_idle].errbuf);
    for (i = 0; i < HM_URL_CACHE; i++)
        c->urls[i].users = 0; /* the handles set to them are abandoned */
    c->pid = pid;
    hm_loop_forked(c); /* before any request below reports its end */
    c->rng ^= (uint64_t)pid << 17; /* forked workers must not retry in step */
    if (c->rng == 0)
        c->rng = 1;
    while ((r = c->active) != NULL) {
        r->easy = NULL;
        free(r->errbuf);
        r->errbuf = NULL;
        hm_request_finish(r, HM_KIND_CANCELLED, "the process forked while the request was in flight");
    }
}

/* The client's multi handle, made on first use. At most max_connections
 * connections to a host, and as many kept idle; more transfers wait inside
 * libcurl for a free connection (or share one over HTTP/2). */
static int ensure_multi(hm_client *c)
{
    check_fork(c);
    if (c->multi == NULL) {
        c->multi = curl_multi_init();
        if (c->multi == NULL)
            return 0;
        if (curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->max_connections)
                != CURLM_OK
            || curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->max_connections)
                != CURLM_OK
            || curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX) != CURLM_OK) {
            curl_multi_cleanup(c->multi);
            c->multi = NULL;
            return 0;
        }
        hm_loop_attach(c);
    }
    return 1;
}

/* libcurl parses the URL of every transfer again (~10,000 instructions)
 * unless it is given parsed (CURLOPT_CURLU). A client keeps the last few
 * URLs it used, parsed; a slot is replaced only while no easy handle is set
 * to it (libcurl reads it until the transfer has a connection). The slot
 * number for url, or -1 when none is free (then libcurl parses it). */
static int url_slot(hm_client *c, const char *url)
{
    int i, slot = -1;
    CURLU *parsed;
    char *copy;
    for (i = 0; i < HM_URL_CACHE; i++)
        if (c->urls[i].url != NULL && strcmp(c->urls[i].url, url) == 0)
            return i;
    for (i = 0; i < HM_URL_CACHE && slot < 0; i++) {
        int k = (c->url_next + i) % HM_URL_CACHE;
        if (c->urls[k].users == 0)
            slot = k;
    }
    if (slot < 0)
        return -1;
    parsed = curl_url();
    copy = malloc(strlen(url) + 1);
    if (parsed == NULL || copy == NULL
        || curl_url_set(parsed, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK) {
        curl_url_cleanup(parsed);
        free(copy);
        return -1;
    }
    strcpy(copy, url);
    curl_url_cleanup(c->urls[slot].parsed);
    free(c->urls[slot].url);
    c->urls[slot].parsed = parsed;
    c->urls[slot].url = copy;
    c->url_next = (slot + 1) % HM_URL_CACHE;
    return slot;
}

static void free_urls(hm_client *c)
{
    int i;
    for (i = 0; i < HM_URL_CACHE; i++) {
        curl_url_cleanup(c->urls[i].parsed);
        free(c->urls[i].url);
        c->urls[i].parsed = NULL;
        c->urls[i].url = NULL;
        c->urls[i].users = 0;
    }
}

/* req's easy handle is no longer set to its URL slot. */
static void release_url(hm_request *req)
{
    if (req->url_slot > 0) {
        req->client->urls[req->url_slot - 1].users--;
        req->url_slot = 0;
    }
}

/* Point e at req's URL: parsed from the client's slots, else as a string. */
static int set_url(hm_request *req, CURL *e)
{
    hm_client *c = req->client;
    int slot = url_slot(c, req->url);
    if (slot >= 0 && curl_easy_setopt(e, CURLOPT_CURLU, c->urls[slot].parsed) == CURLE_OK) {
        c->urls[slot].users++;
        req->url_slot = slot + 1;
        return 1;
    }
    return curl_easy_setopt(e, CURLOPT_CURLU, NULL) == CURLE_OK
        && curl_easy_setopt(e, CURLOPT_URL, req->url) == CURLE_OK;
}

/* Free the kept handles beyond HM_IDLE_KEEP that went unused for
 * HM_IDLE_SECONDS (the oldest are first). */
static void trim_idle(hm_client *c)
{
    double old = hm_now() - HM_IDLE_SECONDS;
    int n = 0, i;
    while (c->n_idle - n > HM_IDLE_KEEP && c->idle[n].since < old) {
        curl_easy_cleanup(c->idle[n].easy);
        free(c->idle[n++].errbuf);
    }
    if (n > 0) {
        for (i = n; i < c->n_idle; i++)
            c->idle[i - n] = c->idle[i];
        c->n_idle -= n;
    }
}

/* Is there room to keep one more finished handle? A client keeps as many as
 * it had in use at once (up to HM_IDLE_MAX), so a burst of requests can
 * reuse them all next time instead of setting up new ones. */
static int keep_idle(hm_client *c)
{
    trim_idle(c);
    if (c->n_idle == c->cap_idle) {
        int cap = c->cap_idle ? c->cap_idle * 2 : HM_IDLE_KEEP;
        struct hm_idle *grown;
        if (cap > HM_IDLE_MAX)
            return 0;
        grown = realloc(c->idle, (size_t)cap * sizeof *grown);
        if (grown == NULL)
            return 0;
        c->idle = grown;
        c->cap_idle = cap;
    }
    return 1;
}

/* Take the request's easy handle out of the multi handle and keep it for the
 * next request (its connection stays in the multi handle's pool either way).
 * In a forked child the inherited handles are abandoned instead. */
static void drop_easy(hm_request *req)
{
    hm_client *c = req->client;
    if (req->easy == NULL)
        return;
    check_fork(c); /* cancel() and __gc come here straight from Lua */
    if (req->easy == NULL)
        return;
    release_url(req);
    if (c->multi != NULL)
        curl_multi_remove_handle(c->multi, req->easy);
    if (!c->closed && keep_idle(c)) {
        /* Nothing of the finished request may stay reachable from the handle. */
        curl_easy_setopt(req->easy, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(req->easy, CURLOPT_WRITEDATA, NULL);
        curl_easy_setopt(req->easy, CURLOPT_HEADERDATA, NULL);
        curl_easy_setopt(req->easy, CURLOPT_OPENSOCKETDATA, NULL);
        curl_easy_setopt(req->easy, CURLOPT_PRIVATE, NULL);
        c->idle[c->n_idle].easy = req->easy;
        c->idle[c->n_idle].errbuf = req->errbuf;
        c->idle[c->n_idle].since = hm_now();
        c->n_idle++;
    } else {
        curl_easy_cleanup(req->easy);
        free(req->errbuf);
    }
    req->easy = NULL;
    req->errbuf = NULL;
}

static void unlink_request(hm_request *req)
{
    hm_client *c = req->client;
    if (!req->linked)
        return;
    if (req->state == HM_QUEUED)
        c->n_queued--;
    if (req->prev != NULL)
        req->prev->next = req->next;
    else
        c->active = req->next;
    if (req->next != NULL)
        req->next->prev = req->prev;
    req->next = req->prev = NULL;
    req->linked = 0;
}

void hm_request_finish(hm_request *req, hm_kind kind, const char *detail)
{
    check_fork(req->client); /* a finish in a child must not touch the parent's loop */
    drop_easy(req);
    unlink_request(req);
    req->state = HM_DONE;
    req->kind = kind;
    hm_loop_finished(req->client);
    hm_request_set_detail(req, detail, 1);
}

/* Set req's failure description: a copy of detail (cut to HM_DETAIL_MAX
 * bytes), or detail itself when it is a literal that outlives the request.
 * Without memory for a copy, none: the kind's name is said instead. */
void hm_request_set_detail(hm_request *req, const char *detail, int copy)
{
    if (detail != NULL && detail == req->detail)
        return; /* already so */
    if (req->detail_owned)
        free((char *)req->detail);
    req->detail = NULL;
    req->detail_owned = 0;
    if (detail == NULL || !copy) {
        req->detail = detail;
        return;
    }
    {
        size_t n = strlen(detail);
        char *mine;
        if (n > HM_DETAIL_MAX)
            n = HM_DETAIL_MAX;
        mine = malloc(n + 1);
        if (mine != NULL) {
            memcpy(mine, detail, n);
            mine[n] = '\0';
            req->detail = mine;
            req->detail_owned = 1;
        }
    }
}

/* The options every request of the client shares. */
static int setup_easy(hm_client *c, CURL *e)
{
    return curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_USERAGENT, c->user_agent) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "") == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, c->timeout_ms) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms) == CURLE_OK
#if LIBCURL_VERSION_NUM >= 0x075500 /* 7.85 */
      && curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") == CURLE_OK
#else
      && curl_easy_setopt(e, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS)) == CURLE_OK
#endif
      && curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK
      /* Over TLS, wait to learn whether a connection multiplexes (HTTP/2)
       * before opening another; plain HTTP is HTTP/1.1 here, never waits. */
      && curl_easy_setopt(e, CURLOPT_PIPEWAIT, strncmp(c->base_url, "https:", 6) == 0 ? 1L : 0L)
             == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE,
                          (curl_off_t)(c->max_response < (size_t)INT64_MAX ? c->max_response
                                                                           : (size_t)INT64_MAX)) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket) == CURLE_OK
      && curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK
      && hm_loop_setup_easy(c, e)
      && (c->ca_file == NULL || curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file) == CURLE_OK)
      && (c->ca_path == NULL || curl_easy_setopt(e, CURLOPT_CAPATH, c->ca_path) == CURLE_OK)
      && (c->proxy == NULL || curl_easy_setopt(e, CURLOPT_PROXY, c->proxy) == CURLE_OK);
}

/* An easy handle for req: a kept one when there is one, else a new one. */
static CURL *make_easy(hm_request *req)
{
    hm_client *c = req->client;
    CURL *e;
    char *errbuf;
    if (c->n_idle > 0) {
        c->n_idle--;
        e = c->idle[c->n_idle].easy;
        errbuf = c->idle[c->n_idle].errbuf;
    } else {
        e = curl_easy_init();
        errbuf = malloc(CURL_ERROR_SIZE);
        if (e == NULL || errbuf == NULL || !setup_easy(c, e)) {
            curl_easy_cleanup(e);
            free(errbuf);
            return NULL;
        }
    }
    errbuf[0] = '\0';
    req->errbuf = errbuf;
    if (!set_url(req, e)
        || curl_easy_setopt(e, CURLOPT_WRITEDATA, req) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_HEADERDATA, req) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, req) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->errbuf) != CURLE_OK
        || curl_easy_setopt(e, CURLOPT_PRIVATE, req) != CURLE_OK) {
        release_url(req);
        curl_easy_cleanup(e);
        free(errbuf);
        req->errbuf = NULL;
        return NULL;
    }
    return e;
}

static void start_attempt(hm_request *req)
{
    hm_client *c = req->client;
    reset_response_headers(req);
    req->body.len = 0;
    req->too_large = req->out_of_memory = req->socket_errno = 0;
    req->status = 0;
    req->curl_code = CURLE_OK;
    /* A closed client never sends: its headers (the key) are gone. (A
     * finalizer may have closed it while its request was being made.) */
    if (c->closed) {
        hm_request_finish(req, HM_KIND_CANCELLED, "the client was closed");
        return;
    }
    req->attempts++;
    if (req->body.data == NULL && c->spare.data != NULL) {
        req->body = c->spare;
        c->spare.data = NULL;
        c->spare.len = c->spare.cap = 0;
    }
    /* libcurl fails these only when out of memory. */
    if (!ensure_multi(c)) {
        hm_request_finish(req, HM_KIND_NOMEM, "could not create a curl multi handle");
        return;
    }
    req->easy = make_easy(req);
    if (req->easy == NULL) {
        hm_request_finish(req, HM_KIND_NOMEM, "could not set up a curl handle");
        return;
    }
    if (curl_multi_add_handle(c->multi, req->easy) != CURLM_OK) {
        release_url(req);
        curl_easy_cleanup(req->easy);
        req->easy = NULL;
        free(req->errbuf);
        req->errbuf = NULL;
        hm_request_finish(req, HM_KIND_NOMEM, "could not add the transfer to the multi handle");
        return;
    }
    if (req->state == HM_QUEUED)
        c->n_queued--;
    req->state = HM_RUNNING;
}

static int is_tls_error(CURLcode code)
{
    switch (code) {
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_CLIENTCERT:
        return 1;
    default:
        return 0;
    }
}

static int is_retryable_status(long status)
{
    return status == 408 || status == 429 || status == 500 || status == 502
        || status == 503 || status == 504;
}

/* Classify a finished attempt; either queue a retry or finish the request. */
static void complete_attempt(hm_request *req, CURLcode code)
{
    hm_client *c = req->client;
    hm_kind kind = HM_OK;
    int retryable = 0;
    const char *detail = NULL;
    double wait;
    char curl_words[CURL_ERROR_SIZE]; /* the error buffer goes with the handle */

    int os_errno = req->socket_errno;

    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &req->status);
    req->curl_code = code;
    curl_words[0] = '\0';
    if (code != CURLE_OK && req->errbuf != NULL) {
        strncpy(curl_words, req->errbuf, sizeof curl_words - 1);
        curl_words[sizeof curl_words - 1] = '\0';
    }
    drop_easy(req);

    if (req->out_of_memory || code == CURLE_OUT_OF_MEMORY) {
        /* Raised as Lua's memory error when the result is taken. */
        hm_request_finish(req, HM_KIND_NOMEM, "out of memory while reading the response");
        return;
    } else if (req->too_large || code == CURLE_FILESIZE_EXCEEDED) {
        kind = HM_KIND_TOO_LARGE;
        detail = "response body is larger than max_response";
    } else if (code == CURLE_COULDNT_CONNECT && (os_errno == EMFILE || os_errno == ENFILE)) {
        /* Not the server's fault: say so, instead of "Couldn't connect". */
        kind = HM_KIND_NETWORK;
        retryable = 1;
        detail = os_errno == EMFILE
            ? "out of file descriptors: the process has too many open files (see ulimit -n)"
            : "out of file descriptors: the system has too many open files";
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
        kind = HM_KIND_TIMEOUT;
        retryable = 1;
    } else if (is_tls_error(code)) {
        /* A handshake cut short may succeed later; a certificate that fails
         * verification will not. */
        kind = HM_KIND_TLS;
        retryable = code == CURLE_SSL_CONNECT_ERROR;
    } else if (code != CURLE_OK) {
        kind = HM_KIND_NETWORK;
        retryable = code != CURLE_UNSUPPORTED_PROTOCOL && code != CURLE_URL_MALFORMAT
                 && code != CURLE_NOT_BUILT_IN && code != CURLE_BAD_FUNCTION_ARGUMENT;
    } else if (req->status < 200 || req->status > 299) {
        kind = HM_KIND_HTTP;
        retryable = is_retryable_status(req->status);
    }
    if (code != CURLE_OK && detail == NULL)
        detail = curl_words[0] ? curl_words : curl_easy_strerror(code);
    req->retryable = retryable;

    if (!retryable || req->attempts > c->max_retries
        || (req->retry_after >= 0 && req->retry_after > c->max_retry_wait)) {
        hm_request_finish(req, kind, detail);
        return;
    }
    wait = req->retry_after >= 0 ? req->retry_after : backoff(c, req->attempts);
    req->state = HM_QUEUED;
    c->n_queued++;
    req->start_at = hm_now() + wait;
}

void hm_request_begin(hm_request *req)
{
    hm_client *c = req->client;
    check_fork(c);
    req->next = c->active;
    req->prev = NULL;
    if (c->active != NULL)
        c->active->prev = req;
    c->active = req;
    req->linked = 1;
    req->state = HM_QUEUED;
    c->n_queued++;
    req->start_at = hm_now();
    req->seen_step = c->steps;
    /* Only hand the transfer to the multi handle: driving every transfer
     * here would make starting N requests cost O(N^2). */
    start_attempt(req);
}

/* For the drive loop (loop.c), which lives in its own file. */
void hm_check_fork(hm_client *c)
{
    check_fork(c);
}

void hm_attempt_start(hm_request *req)
{
    start_attempt(req);
}

void hm_attempt_complete(hm_request *req, CURLcode code)
{
    complete_attempt(req, code);
}

/* Called by __gc: whatever state the request is in, let go of it. */
void hm_request_release(hm_request *req)
{
    if (req->client != NULL) {
        check_fork(req->client);
        drop_easy(req);
        unlink_request(req);
    }
    reset_response_headers(req);
    hm_request_drop_body(req);
    hm_request_set_detail(req, NULL, 0);
}

/* Done with req's body: the client keeps the buffer for its next request
 * (one buffer, up to HM_SPARE_MAX bytes), so a run of calls does not grow
 * a buffer from nothing each time; otherwise it is freed. */
void hm_request_drop_body(hm_request *req)
{
    hm_client *c = req->client;
    if (req->body.data != NULL && c != NULL && !c->closed && c->spare.data == NULL
        && req->body.cap <= HM_SPARE_MAX) {
        c->spare.data = req->body.data;
        c->spare.cap = req->body.cap;
        c->spare.len = 0;
    } else
        free(req->body.data);
    req->body.data = NULL;
    req->body.len = req->body.cap = 0;
}

/* Finish every request of the client as cancelled and free its handles. */
void hm_client_shutdown(hm_client *c)
{
    hm_request *r;
    check_fork(c);
    while ((r = c->active) != NULL)
        hm_request_finish(r, HM_KIND_CANCELLED, "the client was closed");
    while (c->n_idle > 0) {
        c->n_idle--;
        curl_easy_cleanup(c->idle[c->n_idle].easy);
        free(c->idle[c->n_idle].errbuf);
    }
    free(c->idle);
    c->idle = NULL;
    c->cap_idle = 0;
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi);
    c->multi = NULL;
    hm_loop_shutdown(c);
    free(c->spare.data);
    c->spare.data = NULL;
    c->spare.len = c->spare.cap = 0;
    free_urls(c);
}

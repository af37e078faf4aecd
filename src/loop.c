/* Driving a client's transfers through libcurl's socket interface.
 *
 * libcurl tells the client which sockets it wants watched, in which
 * directions (on_socket), and when it next needs a call on a timer
 * (on_timer). The client's own waits (blocking calls, req:wait()) poll()
 * exactly those sockets until the earliest of libcurl's timer, a queued
 * retry and the caller's deadline; req:poll() looks at them without waiting.
 * A host event loop (Neovim's libuv, luv, cqueues, ...) reads the same
 * information with client:sockets() and client:timeout() and hands events
 * back with client:drive(), so nothing wakes up unless a socket is ready or
 * a timer is due.
 *
 * Ctrl-C: the standalone interpreters' SIGINT handler installs a debug hook.
 * A wait notices the hook change (poll() returns EINTR), finishes the request
 * as cancelled and returns, and the hook then fires in the interpreter as
 * usual ("interrupted!"). The hook is never called from here. */
#define _GNU_SOURCE /* ppoll */
#include "hm.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__linux__)
#define HM_HAVE_PPOLL 1
#include <sys/epoll.h>
#define HM_HAVE_EPOLL 1
#else
#define HM_HAVE_EPOLL 0
#define HM_HAVE_PPOLL 0
#define HM_POLL_CAP 0.1 /* without ppoll, a SIGINT can slip in before poll() */
#endif

#define WAIT_CAP 1.0 /* seconds: the longest a blocking wait sleeps at once */
#define ROUNDS 4      /* work rounds per step: a retry due at once starts in the same step */

struct hm_watch {
    curl_socket_t fd;
    int what; /* CURL_POLL_IN, _OUT or _INOUT */
};

/* ---- what libcurl asks for ---------------------------------------------- */

static int find_watch(hm_client *c, curl_socket_t fd)
{
    int i;
    for (i = 0; i < c->n_watch; i++)
        if (c->watch[i].fd == fd)
            return i;
    return -1;
}

#if HM_HAVE_EPOLL
static void epoll_drop(hm_client *c)
{
    if (c->epoll_open) {
        close(c->epfd);
        c->epoll_open = 0;
    }
}

/* Mirror one socket's wish into the epoll set; on any surprise, give the set
 * up (steps then poll() the watched sockets). */
static void epoll_set(hm_client *c, curl_socket_t fd, int what)
{
    struct epoll_event ev;
    if (!c->epoll_open)
        return;
    memset(&ev, 0, sizeof ev);
    ev.data.fd = fd;
    if (what == CURL_POLL_REMOVE) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, fd, &ev);
        return;
    }
    ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
    if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, fd, &ev) != 0
        && epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
        epoll_drop(c);
}

static void epoll_start(hm_client *c)
{
    int i;
    if (c->epoll_open)
        return;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (c->epfd < 0)
        return;
    c->epoll_open = 1;
    for (i = 0; i < c->n_watch && c->epoll_open; i++)
        epoll_set(c, c->watch[i].fd, c->watch[i].what);
}
#else
static void epoll_drop(hm_client *c)
{
    (void)c;
}
#endif

static int on_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    hm_client *c = userp;
    int i = find_watch(c, fd);
    (void)easy;
    (void)socketp;
#if HM_HAVE_EPOLL
    epoll_set(c, fd, what);
#endif
    if (what == CURL_POLL_REMOVE) {
        if (i >= 0)
            c->watch[i] = c->watch[--c->n_watch];
        return 0;
    }
    if (i < 0) {
        if (c->n_watch == c->cap_watch) {
            int cap = c->cap_watch ? c->cap_watch * 2 : 16;
            struct hm_watch *grown = realloc(c->watch, (size_t)cap * sizeof *grown);
            if (grown == NULL) {
                c->watch_oom = 1;
                epoll_drop(c);
                return 0;
            }
            c->watch = grown;
            c->cap_watch = cap;
        }
        i = c->n_watch++;
        c->watch[i].fd = fd;
    }
    c->watch[i].what = what;
    return 0;
}

static int on_timer(CURLM *multi, long ms, void *userp)
{
    hm_client *c = userp;
    (void)multi;
    c->timer_changed = 1;
    c->timer_on = ms >= 0;
    if (ms >= 0)
        c->timer_at = hm_now() + (double)ms / 1000.0;
    return 0;
}

/* A host loop may still watch a socket libcurl has just let go of; if the
 * number were reused at once by a new socket, its watcher would silently
 * point at the wrong thing (epoll forgets a closed descriptor). So while a
 * host reads sockets(), closing waits until the host has seen the socket go. */
static int was_reported(const hm_client *c, curl_socket_t fd)
{
    int i;
    for (i = 0; i < c->n_reported; i++)
        if (c->reported[i] == (int)fd)
            return 1;
    return 0;
}

static int on_close(void *clientp, curl_socket_t fd)
{
    hm_client *c = clientp;
    /* Only a socket the host was told about may still be watched by it. */
    if (c->host && was_reported(c, fd)) {
        if (c->n_closing == c->cap_closing) {
            int cap = c->cap_closing ? c->cap_closing * 2 : 16;
            int *grown = realloc(c->closing, (size_t)cap * sizeof *grown);
            if (grown == NULL)
                return close(fd);
            c->closing = grown;
            c->cap_closing = cap;
        }
        c->closing[c->n_closing++] = fd;
        return 0;
    }
    return close(fd);
}

static void flush_closing(hm_client *c)
{
    while (c->n_closing > 0)
        close(c->closing[--c->n_closing]);
}

static void close_notify(hm_client *c)
{
    if (c->notify_open) {
        close(c->notify[0]);
        close(c->notify[1]);
        c->notify_open = c->notified = 0;
    }
}

/* In a forked child everything here belongs to the parent: the child's
 * copies of the descriptors are closed (that leaves the parent's alone).
 * transfer.c's check_fork, the one place that notices a fork, calls this. */
void hm_loop_forked(hm_client *c)
{
    flush_closing(c);
    close_notify(c);
    epoll_drop(c);
    c->n_watch = 0;
    c->timer_on = 0;
    c->host = 0;
}

void hm_loop_attach(hm_client *c)
{
    epoll_drop(c);
    c->n_watch = 0;
    c->timer_on = 0;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
}

int hm_loop_setup_easy(hm_client *c, CURL *e)
{
    return curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close) == CURLE_OK
        && curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c) == CURLE_OK;
}

/* A request finished. Outside drive() a host loop would not know: the
 * notification pipe tells it. */
void hm_loop_finished(hm_client *c)
{
    c->finished++;
    if (c->notify_open && !c->driving && !c->notified) {
        char byte = 1;
        if (write(c->notify[1], &byte, 1) == 1)
            c->notified = 1;
    }
}

/* The multi handle is gone: nothing is watched any more. What a host loop
 * still watches (the pipe, sockets waiting to be closed) stays until it next
 * reads sockets() or the client is collected. */
void hm_loop_shutdown(hm_client *c)
{
    epoll_drop(c);
    c->n_watch = 0;
    c->timer_on = 0;
    free(c->watch);
    free(c->pfd);
    c->watch = NULL;
    c->pfd = NULL;
    c->cap_watch = c->cap_pfd = 0;
    if (!c->host) {
        flush_closing(c);
        close_notify(c);
    }
}

void hm_loop_free(hm_client *c)
{
    hm_check_fork(c);
    hm_loop_shutdown(c);
    flush_closing(c);
    close_notify(c);
    free(c->closing);
    free(c->reported);
    c->closing = NULL;
    c->reported = NULL;
    c->cap_closing = c->n_reported = c->cap_reported = 0;
}

/* ---- doing what is due -------------------------------------------------- */

static void act(hm_client *c, curl_socket_t fd, int mask)
{
    int running;
    if (c->multi != NULL)
        curl_multi_socket_action(c->multi, fd, mask, &running);
}

static int mask_of(short revents)
{
    int mask = 0;
    if (revents & (POLLIN | POLLHUP))
        mask |= CURL_CSELECT_IN;
    if (revents & POLLOUT)
        mask |= CURL_CSELECT_OUT;
    if (revents & POLLERR)
        mask |= CURL_CSELECT_ERR;
    return mask;
}

/* HM_CHECK_INVARIANTS (make asan): c->n_queued is what the list holds. */
static void check_queued(const hm_client *c)
{
#ifdef HM_CHECK_INVARIANTS
    const hm_request *r;
    unsigned n = 0;
    for (r = c->active; r != NULL; r = r->next)
        n += r->state == HM_QUEUED;
    if (n != c->n_queued) {
        fprintf(stderr, "heymarket: %u requests queued, the count says %u\n", n, c->n_queued);
        abort();
    }
#else
    (void)c;
#endif
}

/* Where a walk for queued requests starts: the request list, or NULL when
 * none is queued. With 1,000 requests running, a walk over them at every
 * wake was 12% of a resty worker's time. */
static hm_request *queued_walk(const hm_client *c)
{
    return c->n_queued > 0 ? c->active : NULL;
}

static int queued_due(hm_client *c, double now)
{
    hm_request *r;
    for (r = queued_walk(c); r != NULL; r = r->next)
        if (r->state == HM_QUEUED && r->start_at <= now)
            return 1;
    return 0;
}

/* libcurl's timer, if it has expired. Should libcurl find nothing due (the
 * timer was rounded down), it does not set the timer again: look again in a
 * millisecond rather than lose it. */
static void fire_timer(hm_client *c)
{
    double now = hm_now();
    if (!c->timer_on || c->timer_at > now)
        return;
    c->timer_changed = 0;
    act(c, CURL_SOCKET_TIMEOUT, 0);
    if (!c->timer_changed)
        c->timer_at = now + 0.001;
}

static void collect(hm_client *c)
{
    CURLMsg *msg;
    int left;
    if (c->multi == NULL)
        return;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        hm_request *done = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&done);
        if (done != NULL)
            hm_attempt_complete(done, msg->data.result);
    }
}

/* Everything due now: the ready sockets in pfd (n of them, as poll() left
 * them), queued attempts whose time has come, libcurl's expired timer, and
 * finished transfers. */
static void run_due(hm_client *c, const struct pollfd *pfd, int n)
{
    int rounds, i;
    for (i = 0; i < n; i++)
        if (pfd[i].revents != 0 && !(pfd[i].revents & POLLNVAL))
            act(c, pfd[i].fd, mask_of(pfd[i].revents));
    for (rounds = 0; rounds < ROUNDS; rounds++) {
        double now = hm_now();
        hm_request *r, *next;
        check_queued(c);
        for (r = queued_walk(c); r != NULL; r = next) {
            next = r->next;
            if (r->state == HM_QUEUED && r->start_at <= now)
                hm_attempt_start(r);
        }
        fire_timer(c);
        collect(c);
        now = hm_now();
        if (!queued_due(c, now) && !(c->timer_on && c->timer_at <= now))
            break;
    }
}

/* Copy the watched sockets into c->pfd; returns how many, or -1 without
 * memory. */
static int fill_pfd(hm_client *c)
{
    int i;
    if (c->cap_pfd < c->n_watch) {
        struct pollfd *grown = realloc(c->pfd, (size_t)c->cap_watch * sizeof *grown);
        if (grown == NULL)
            return -1;
        c->pfd = grown;
        c->cap_pfd = c->cap_watch;
    }
    for (i = 0; i < c->n_watch; i++) {
        c->pfd[i].fd = c->watch[i].fd;
        c->pfd[i].events = (short)(((c->watch[i].what & CURL_POLL_IN) ? POLLIN : 0)
                                   | ((c->watch[i].what & CURL_POLL_OUT) ? POLLOUT : 0));
        c->pfd[i].revents = 0;
    }
    return c->n_watch;
}

/* A socket libcurl asked for could not be recorded (no memory): nothing
 * would ever watch it, so every request of the client in flight ends, and
 * taking their results raises the memory error. */
static void fail_watch_oom(hm_client *c)
{
    hm_request *r, *next;
    c->watch_oom = 0;
    for (r = c->active; r != NULL; r = next) {
        next = r->next;
        if (r->state == HM_RUNNING)
            hm_request_finish(r, HM_KIND_NOMEM, "out of memory");
    }
}

static void enter(hm_client *c)
{
    hm_check_fork(c);
}

/* Do whatever is ready for every request of the client, without waiting. */
void hm_client_step(hm_client *c)
{
    int n;
    enter(c);
    c->steps++;
#if HM_HAVE_EPOLL
    /* Many sockets and a step a millisecond (heymarket.resty): the epoll set
     * finds the ready ones without looking at every socket. */
    if (c->n_watch >= 8)
        epoll_start(c);
    if (c->epoll_open) {
        struct epoll_event ev[64];
        int got, i, rounds = 0;
        do {
            got = epoll_wait(c->epfd, ev, 64, 0);
            for (i = 0; i < got; i++)
                act(c, ev[i].data.fd,
                    ((ev[i].events & (EPOLLIN | EPOLLHUP)) ? CURL_CSELECT_IN : 0)
                    | ((ev[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0)
                    | ((ev[i].events & EPOLLERR) ? CURL_CSELECT_ERR : 0));
        } while (got == 64 && ++rounds < 64 && c->epoll_open);
        run_due(c, NULL, 0);
        if (c->watch_oom)
            fail_watch_oom(c);
        return;
    }
#endif
    n = fill_pfd(c);
    if (n > 0 && poll(c->pfd, (nfds_t)n, 0) <= 0)
        n = 0;
    run_due(c, c->pfd, n < 0 ? 0 : n);
    if (c->watch_oom)
        fail_watch_oom(c);
}

/* Seconds until something is due without any socket being ready: libcurl's
 * timer or a queued attempt; < 0 when nothing is. */
static double next_due(hm_client *c, double now)
{
    double at = -1;
    hm_request *r;
    if (c->timer_on)
        at = c->timer_at;
    for (r = queued_walk(c); r != NULL; r = r->next)
        if (r->state == HM_QUEUED && (at < 0 || r->start_at < at))
            at = r->start_at;
    if (at < 0)
        return -1;
    return at > now ? at - now : 0;
}

/* ---- waiting, and Ctrl-C ------------------------------------------------ */

static char main_thread_key; /* 5.1 and LuaJIT: registry[&key] = the main thread */

/* The thread whose hook the interpreter's SIGINT handler sets. On 5.1 it is
 * noted by luaopen or, if the module was first required in a coroutine, by
 * the first call made on the main thread. */
static lua_State *main_thread(lua_State *L)
{
    lua_State *T;
#if LUA_VERSION_NUM >= 502
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
#else
    lua_pushlightuserdata(L, &main_thread_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        if (lua_pushthread(L)) {
            lua_pushlightuserdata(L, &main_thread_key);
            lua_pushvalue(L, -2);
            lua_rawset(L, LUA_REGISTRYINDEX);
        }
    }
#endif
    T = lua_tothread(L, -1);
    lua_pop(L, 1);
    return T != NULL ? T : L;
}

typedef struct hook_state {
    lua_State *L, *T; /* the calling thread and the main thread */
    lua_Hook hook;
    int mask;
    int pending;      /* the main thread already had a hook the caller lacks */
} hook_state;

static void hook_save(hook_state *h, lua_State *L)
{
    h->L = L;
    h->T = main_thread(L);
    h->hook = lua_gethook(h->T);
    h->mask = lua_gethookmask(h->T);
    /* In a coroutine, a Ctrl-C may have come while Lua ran before this
     * call: the main thread then holds the interpreter's hook already. */
    h->pending = h->T != L && h->hook != NULL && lua_gethook(L) != h->hook;
}

/* Has a hook been set on the main thread since hook_save? Then the caller
 * gets the same hook (in a coroutine it would otherwise only fire once the
 * main thread runs again). */
static int hook_changed(hook_state *h)
{
    lua_Hook now = lua_gethook(h->T);
    int mask = lua_gethookmask(h->T);
    if (now == h->hook && mask == h->mask && !h->pending)
        return 0;
    h->pending = 0;
    if (h->T != h->L && now != NULL
        && (lua_gethook(h->L) != now || lua_gethookmask(h->L) != mask))
        lua_sethook(h->L, now, mask, lua_gethookcount(h->T));
    return 1;
}

/* A hook was set while waiting: run an empty Lua function, so the hook
 * runs as the interpreter meant it to. If it raises (the standalone
 * interpreters' "interrupted!"), return 1 with its error on the stack. A
 * hook that does not raise (another signal handler's, a debugger's) leaves
 * the wait going on. */
static int hook_raises(lua_State *L)
{
    if (luaL_loadstring(L, "return") != 0)
        return lua_error(L);
    if (lua_pcall(L, 0, 0, 0) == 0)
        return 0;
    return 1;
}

/* poll() the n sockets in c->pfd for at most wait seconds; 0 on EINTR or a
 * timeout. SIGINT is let in only inside ppoll(), so a Ctrl-C that comes just
 * before it still ends it at once. */
static int wait_sockets(hm_client *c, int n, double wait, hook_state *h, int *stop)
{
    int rc;
#if HM_HAVE_PPOLL
    sigset_t block, old;
    struct timespec ts;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    if (hook_changed(h)) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        *stop = 1;
        return 0;
    }
    ts.tv_sec = (time_t)wait;
    ts.tv_nsec = (long)((wait - (double)ts.tv_sec) * 1e9);
    rc = ppoll(c->pfd, (nfds_t)n, &ts, &old);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
#else
    if (wait > HM_POLL_CAP)
        wait = HM_POLL_CAP;
    if (hook_changed(h)) {
        *stop = 1;
        return 0;
    }
    rc = poll(c->pfd, (nfds_t)n, (int)ceil(wait * 1000.0));
#endif
    if (hook_changed(h))
        *stop = 1;
    return rc > 0 ? rc : 0;
}

/* Drive the client until req is done or the monotonic deadline (< 0: none)
 * passes. Other requests of the client make progress too. An interrupt (a
 * debug hook set meanwhile that raises) finishes req as cancelled and is
 * raised on. */
void hm_client_wait(lua_State *L, hm_client *c, hm_request *req, double deadline)
{
    hook_state h;
    int n = 0;
    hook_save(&h, L);
    enter(c);
    for (;;) {
        double now, wait = WAIT_CAP, due;
        int stop = 0;

        c->steps++;
        run_due(c, c->pfd, n);
        if (req->state == HM_DONE)
            return;
        if (c->watch_oom) {
            fail_watch_oom(c);
            hm_raise_memory(L);
        }
        now = hm_now();
        if (deadline >= 0) {
            if (now >= deadline)
                return;
            if (deadline - now < wait)
                wait = deadline - now;
        }
        due = next_due(c, now);
        if (due >= 0 && due < wait)
            wait = due;
        n = fill_pfd(c);
        if (n < 0) {
            hm_request_finish(req, HM_KIND_NOMEM, "out of memory");
            hm_raise_memory(L);
        }
        n = wait_sockets(c, n, wait, &h, &stop) > 0 ? n : 0;
        enter(c);
        if (stop) {
            if (hook_raises(L)) {
                /* The request ends; the interrupt goes on up. */
                if (req->state != HM_DONE)
                    hm_request_finish(req, HM_KIND_CANCELLED, "interrupted");
                lua_error(L);
            }
            hook_save(&h, L);
        }
    }
}

/* ---- the interface for host event loops --------------------------------- */

static hm_client *loop_client(lua_State *L)
{
    hm_client *c = luaL_checkudata(L, 1, HM_CLIENT_MT);
    enter(c);
    return c;
}

static int open_notify(hm_client *c)
{
    int i;
    if (c->notify_open)
        return 1;
    if (pipe(c->notify) != 0)
        return 0;
    for (i = 0; i < 2; i++) {
        fcntl(c->notify[i], F_SETFL, fcntl(c->notify[i], F_GETFL) | O_NONBLOCK);
        fcntl(c->notify[i], F_SETFD, FD_CLOEXEC);
    }
    c->notify_open = 1;
    c->notified = 0;
    return 1;
}

static void drain_notify(hm_client *c)
{
    char buf[64];
    if (!c->notify_open)
        return;
    while (read(c->notify[0], buf, sizeof buf) > 0)
        ;
    c->notified = 0;
}

/* client:sockets() -> { [fd] = "r" | "w" | "rw" } */
static int client_sockets(lua_State *L)
{
    hm_client *c = loop_client(L);
    int i;
    c->host = 1;
    flush_closing(c);
    if (c->closed) {
        close_notify(c);
        c->host = 0;
        lua_newtable(L);
        return 1;
    }
    if (!open_notify(c))
        return luaL_error(L, "heymarket: cannot create a pipe: %s", strerror(errno));
    if (c->cap_reported < c->n_watch) {
        int *grown = realloc(c->reported, (size_t)c->n_watch * sizeof *grown);
        if (grown == NULL)
            return hm_raise_memory(L);
        c->reported = grown;
        c->cap_reported = c->n_watch;
    }
    c->n_reported = 0;
    lua_createtable(L, 0, c->n_watch + 1);
    for (i = 0; i < c->n_watch; i++) {
        int what = c->watch[i].what;
        c->reported[c->n_reported++] = (int)c->watch[i].fd;
        lua_pushstring(L, what == CURL_POLL_INOUT ? "rw" : what == CURL_POLL_OUT ? "w" : "r");
        lua_rawseti(L, -2, (int)c->watch[i].fd);
    }
    lua_pushliteral(L, "r");
    lua_rawseti(L, -2, c->notify[0]);
    return 1;
}

/* client:timeout() -> seconds until drive() is due anyway, or nil */
static int client_timeout(lua_State *L)
{
    hm_client *c = loop_client(L);
    double due;
    if (c->finished > 0)
        due = 0;
    else if (c->closed)
        due = -1;
    else
        due = next_due(c, hm_now());
    if (due < 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, due);
    return 1;
}

static int events_mask(const char *events)
{
    int mask = 0;
    if (strchr(events, 'r') != NULL || strchr(events, 'd') != NULL)
        mask |= CURL_CSELECT_IN;
    if (strchr(events, 'w') != NULL)
        mask |= CURL_CSELECT_OUT;
    if (strchr(events, 'e') != NULL)
        mask |= CURL_CSELECT_ERR;
    return mask;
}

/* client:drive([fd, events]) -> how many requests finished since the last
 * drive() */
static int client_drive(lua_State *L)
{
    hm_client *c = loop_client(L);
    unsigned long finished;
    if (!lua_isnoneornil(L, 2)) {
        lua_Number fd = luaL_checknumber(L, 2);
        const char *events = luaL_optstring(L, 3, "");
        if (fd != floor(fd) || fd < 0 || fd > 2147483647.0)
            luaL_argerror(L, 2, "a socket descriptor must be a whole number >= 0");
        if (!c->closed) {
            c->driving = 1;
            c->steps++;
            if (c->notify_open && (int)fd == c->notify[0])
                drain_notify(c);
            else
                act(c, (curl_socket_t)fd, events_mask(events));
            run_due(c, NULL, 0);
            if (c->watch_oom)
                fail_watch_oom(c);
            c->driving = 0;
        } else if (c->notify_open && (int)fd == c->notify[0])
            drain_notify(c);
    } else if (!c->closed) {
        c->driving = 1;
        hm_client_step(c);
        c->driving = 0;
    }
    finished = c->finished;
    c->finished = 0;
    lua_pushinteger(L, (lua_Integer)(finished > 2147483647UL ? 2147483647UL : finished));
    return 1;
}

/* With the module state table at the top: add the host-loop methods to the
 * Client type (hm_client_open made it) and note the main thread. */
void hm_loop_open(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"sockets", client_sockets},
        {"timeout", client_timeout},
        {"drive", client_drive},
        {NULL, NULL}
    };
    int state = lua_gettop(L);
#if LUA_VERSION_NUM < 502
    if (lua_pushthread(L)) {
        lua_pushlightuserdata(L, &main_thread_key);
        lua_insert(L, -2);
        lua_rawset(L, LUA_REGISTRYINDEX);
    } else
        lua_pop(L, 1);
#else
    (void)main_thread_key;
#endif
    luaL_getmetatable(L, HM_CLIENT_MT);
    lua_getfield(L, -1, "__index");
    lua_pushvalue(L, state);
    hm_setfuncs(L, methods, 1);
    lua_pop(L, 2);
}

/*
 * http.c - the HTTP side, on libmicrohttpd: one thread per connection,
 * request bodies gathered up to SERVE_MAX_BODY, the API key checked, the
 * route run, its reply sent.
 *
 * A connection thread may wait minutes for its job (the A1111 calls are
 * synchronous); while it waits it watches its socket, so a client that
 * hangs up has its job cancelled instead of holding the queue.
 */
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "serve.h"

struct http_server {
    struct MHD_Daemon *daemon;
    serve_config config;
    int port;
    atomic_int in_flight; /* requests begun and not yet answered */
    int listen_fd;        /* after quiescing: ours to close, after the daemon stops */
};

/* per request: the body as it arrives */
typedef struct request_ctx {
    char *body;
    size_t len, cap;
    int too_large;
    double started;
} request_ctx;

/* ---- replies ---- */

void reply_json(http_reply *reply, int status, json_t *json)
{
    json_decref(reply->json);
    reply->status = status;
    reply->json = json;
}

void reply_error(http_reply *reply, int status, const char *kind, const char *field, json_t *allowed,
                 const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    json_t *o = json_pack("{s:s, s:s, s:s}", "error", kind, "detail", detail, "field", field ? field : "");
    if (!field)
        json_object_set_new(o, "field", json_null());
    if (allowed)
        json_object_set_new(o, "allowed", allowed);
    reply_json(reply, status, o);
}

void reply_api_error(http_reply *reply, api_error *err)
{
    reply_error(reply, err->status, err->kind, err->field[0] ? err->field : NULL, err->allowed, "%s", err->detail);
    err->allowed = NULL;
}

static enum MHD_Result send_reply(struct MHD_Connection *c, http_reply *reply)
{
    struct MHD_Response *r;
    const char *type = reply->content_type;
    if (reply->json) {
        char *text = json_dumps(reply->json, JSON_COMPACT);
        if (!text)
            return MHD_NO;
        r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
        if (!r)
            free(text);
        type = "application/json";
    } else {
        r = MHD_create_response_from_buffer(reply->size, (void *)reply->data,
                                            reply->data_owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (r)
            reply->data_owned = 0; /* MHD frees it now */
    }
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type ? type : "application/octet-stream");
    MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, reply->cacheable ? "max-age=60" : "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    if (reply->retry_after[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, reply->retry_after);
    if (reply->disposition[0])
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_DISPOSITION, reply->disposition);
    if (reply->status == 401)
        MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"kiln\"");
    if (reply->status == 413)
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)reply->status, r);
    MHD_destroy_response(r);
    return ok;
}

static void reply_clear(http_reply *reply)
{
    json_decref(reply->json);
    if (reply->data_owned)
        free((void *)reply->data);
    memset(reply, 0, sizeof *reply);
}

/* ---- helpers ---- */

/* Compares in time independent of where the strings differ. */
static int same_secret(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = la != lb;
    for (size_t i = 0; i < la; i++)
        diff |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return diff == 0;
}

static int authorized(struct MHD_Connection *c, const char *key)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return 0;
    h += 7;
    while (*h == ' ')
        h++;
    return same_secret(h, key);
}

/* The client hung up: its socket reads end-of-file or an error. */
static int client_gone(void *ctx)
{
    struct MHD_Connection *c = ctx;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci)
        return 0;
    struct pollfd p = {.fd = ci->connect_fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0)
        return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP))
        return 1;
    if (p.revents & POLLIN) {
        char b;
        ssize_t n = recv(ci->connect_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
    }
    return 0;
}

/* ---- the handler ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    http_server *s = cls;
    request_ctx *ctx = *con_cls;
    http_reply reply;
    memset(&reply, 0, sizeof reply);

    if (!ctx) { /* headers only so far */
        ctx = calloc(1, sizeof *ctx);
        if (!ctx)
            return MHD_NO;
        ctx->started = clock_now();
        *con_cls = ctx;
        atomic_fetch_add(&s->in_flight, 1);
        const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull(length, NULL, 10) > SERVE_MAX_BODY) {
            /* answered before the body is read; MHD closes the connection after */
            reply_error(&reply, 413, "body_too_large", NULL, json_pack("{s:I}", "max_bytes", (json_int_t)SERVE_MAX_BODY),
                        "the request body is %s bytes; at most %u are accepted", length, SERVE_MAX_BODY);
            enum MHD_Result r = send_reply(c, &reply);
            reply_clear(&reply);
            fprintf(stderr, "kiln serve: %s %s 413\n", method, url);
            return r;
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (ctx->too_large)
            return MHD_YES;
        if (ctx->len + n > SERVE_MAX_BODY) { /* chunked, or a lying Content-Length: drop it, answer at the end */
            ctx->too_large = 1;
            free(ctx->body);
            ctx->body = NULL;
            ctx->len = ctx->cap = 0;
            return MHD_YES;
        }
        if (ctx->len + n + 1 > ctx->cap) {
            size_t cap = ctx->cap ? ctx->cap : 4096;
            while (cap < ctx->len + n + 1)
                cap *= 2;
            char *b = realloc(ctx->body, cap);
            if (!b)
                return MHD_NO;
            ctx->body = b;
            ctx->cap = cap;
        }
        memcpy(ctx->body + ctx->len, upload_data, n);
        ctx->len += n;
        ctx->body[ctx->len] = '\0';
        return MHD_YES;
    }

    /* the whole request is here */
    const serve_config *cfg = &s->config;
    int method_ok = 0;
    const route *rt = api_route(method, url, &method_ok);
    if (ctx->too_large) {
        reply_error(&reply, 413, "body_too_large", NULL, json_pack("{s:I}", "max_bytes", (json_int_t)SERVE_MAX_BODY),
                    "the request body is over %u bytes", SERVE_MAX_BODY);
    } else if (!rt && method_ok) {
        reply_error(&reply, 405, "method_not_allowed", NULL, NULL, "%s is not allowed on %s", method, url);
    } else if (!rt) {
        reply_error(&reply, 404, "not_found", NULL, NULL, "no such path: %s", url);
    } else if (cfg->api_key && api_route_needs_auth(rt) && !authorized(c, cfg->api_key)) {
        reply_error(&reply, 401, "unauthorized", NULL, NULL,
                    "this server needs the header 'Authorization: Bearer KEY' (the key given to kiln serve --api-key)");
    } else {
        http_request req = {.method = method,
                            .path = url,
                            .query_limit = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit"),
                            .body = ctx->body ? ctx->body : "",
                            .body_len = ctx->len,
                            .client_gone = client_gone,
                            .gone_ctx = c,
                            .config = cfg};
        api_run(rt, &req, &reply);
    }
    if (!reply.status)
        reply_error(&reply, 500, "internal", NULL, NULL, "the route gave no answer");
    /* a line per job-changing call and per refusal; GETs (the page polling) stay quiet */
    if (strcmp(method, "GET") != 0 || reply.status >= 400)
        fprintf(stderr, "kiln serve: %s %s %d %.3fs\n", method, url, reply.status, clock_now() - ctx->started);
    enum MHD_Result r = send_reply(c, &reply);
    reply_clear(&reply);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    http_server *s = cls;
    request_ctx *ctx = *con_cls;
    if (ctx) {
        atomic_fetch_sub(&s->in_flight, 1);
        free(ctx->body);
        free(ctx);
        *con_cls = NULL;
    }
}

static void on_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = '\0';
    fprintf(stderr, "kiln serve: http: %s\n", line);
}

/* ---- start and stop ---- */

http_server *http_start(const serve_config *c)
{
    http_server *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->config = *c;

    char port[16];
    snprintf(port, sizeof port, "%d", c->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    int gai = getaddrinfo(c->host, port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "kiln serve: cannot use --host %s: %s\n", c->host, gai_strerror(gai));
        free(s);
        return NULL;
    }
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC; /* ITC: so the daemon can be quiesced */
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    s->daemon = MHD_start_daemon(flags, (uint16_t)c->port, NULL, NULL, on_request, s,
                                 MHD_OPTION_EXTERNAL_LOGGER, on_log, s, /* first, or MHD complains */
                                 MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                 MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
                                 MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                                 MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                 MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon) {
        fprintf(stderr, "kiln serve: cannot listen on %s port %d: %s\n", c->host, c->port,
                errno ? strerror(errno) : "libmicrohttpd refused");
        free(s);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : c->port;
    s->listen_fd = -1;
    return s;
}

int http_port(const http_server *s)
{
    return s->port;
}

void http_drain(http_server *s, double timeout_s)
{
    if (!s)
        return;
    if (s->listen_fd < 0)
        s->listen_fd = MHD_quiesce_daemon(s->daemon);
    double until = clock_now() + timeout_s;
    while (atomic_load(&s->in_flight) > 0 && clock_now() < until)
        usleep(20 * 1000);
}

void http_stop(http_server *s)
{
    if (!s)
        return;
    MHD_stop_daemon(s->daemon);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    free(s);
}

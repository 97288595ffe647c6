/* fuzz_fcgi.c - libFuzzer target for the worker's request path, in process.
 *
 * The seam: each input becomes the byte stream of one FastCGI connection. It
 * is written to a unix socket the target listens on, and the real worker code
 * takes it from there exactly as in production: libfcgi's FCGX_Accept_r on a
 * non-blocking listening socket, then http_request_init + webhook_handle
 * (http_content_length, the max-body check, endpoint lookup, http_read_body,
 * sig_parse/sig_verify, event_parse, the JSON responses), FCGX_Finish_r.
 * Only two things are stubbed:
 *   - the database: the store's next connection attempt lies in the far
 *     future, so store_ingest/store_ping answer "unavailable" without any
 *     I/O; a request that gets that far is answered 503;
 *   - the endpoint table: three endpoints built here (one disabled, one with
 *     two secrets), never reloaded;
 * and calls to log_line go to a checker instead (-Wl,--wrap=log_line). The
 * shared counters are real (anonymous shared memory), and so is
 * GET /paddle/metrics.
 *
 * Input format, byte 0 = flags:
 *   bit 0  raw: the rest is sent as is (any framing, for libfcgi's reader);
 *   otherwise the rest is "NAME=VALUE" lines, an empty line, then the body,
 *   encoded as nginx would (BEGIN_REQUEST, PARAMS, STDIN records), and
 *   bit 1  sign: add HTTP_PADDLE_SIGNATURE, valid now, for ep_fuzz's secret;
 *   bit 2  add CONTENT_LENGTH = the body's length;
 *   bit 3  FCGI_KEEP_CONN in BEGIN_REQUEST;
 *   bit 4  leave out the empty STDIN record (a truncated request);
 *   bits 5-7  STDIN record size: 0 = 65535, k = 4^k bytes.
 *
 * Properties checked on every request the worker handles:
 *   - never 500, never 200 but for /paddle/metrics (there is no database),
 *     and the answer is one of the contract's statuses;
 *   - nothing gets past the signature check without a valid signature: on a
 *     webhook path, a JSON error, unsupported_json or database_unavailable
 *     is only allowed when this target signed the request itself;
 *   - every log line is one line of printable ASCII, shorter than the real
 *     logger's buffer, and contains no endpoint secret.
 */
#include <errno.h>
#include <stddef.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <fcgiapp.h>
#include <sodium.h>

#include "http.h"
#include "log.h"
#include "sig.h"
#include "stats.h"
#include "webhook.h"
#include "worker.h"

#define FUZZ_MAX_BODY 16384
#define FUZZ_MAX_STREAM 180000
#define FUZZ_MAX_REQUESTS 64

#define SECRET_FUZZ "pdl_ntfset_01j00000000000000000000000_fuzzfuzzfuzzfuzzfuzzfuzzfuzz"
#define SECRET_LIVE1 "pdl_ntfset_01j11111111111111111111111_liveliveliveliveliveliveliv1"
#define SECRET_LIVE2 "pdl_ntfset_01j22222222222222222222222_liveliveliveliveliveliveliv2"
#define SECRET_OFF "pdl_ntfset_01j33333333333333333333333_offoffoffoffoffoffoffoffoff"

#define CHECK(cond, ...)                                                       \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz_fcgi: property violated: " __VA_ARGS__);    \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct config cfg;
static struct worker w;
static struct endpoint eps[3];
static crypto_auth_hmacsha256_state keyed[3 * MAX_SECRETS_PER_ENDPOINT];
static FCGX_Request fcgx;
static int listen_fd = -1;
static char sock_name[64];
static int signed_now;     /* this target signed the current request */
static int requests_seen;  /* "event=request" log lines for the current input */
static int verbose;        /* FUZZ_FCGI_VERBOSE=1: print the log lines */
static const uint8_t *cur_input; /* the current input, for the log checker */
static size_t cur_size;

/* ---- log_line: the checker (linked with -Wl,--wrap=log_line) ---------- */

void __wrap_log_line(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static const char *field(const char *line, const char *key, char *buf, size_t cap)
{
    const char *p = strstr(line, key);
    size_t n = 0;
    if (p == NULL) return NULL;
    p += strlen(key);
    while (p[n] && p[n] != ' ' && n + 1 < cap) n++;
    memcpy(buf, p, n);
    buf[n] = '\0';
    return buf;
}

void __wrap_log_line(enum log_level level, const char *fmt, ...)
{
    static const char *secrets[] = {SECRET_FUZZ, SECRET_LIVE1, SECRET_LIVE2, SECRET_OFF};
    char line[1024];
    va_list ap;
    int n;

    (void)level;
    va_start(ap, fmt);
    n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (verbose) fprintf(stderr, "log: %s\n", line);
    /* The real logger prefixes ~70 bytes and truncates at 1022. */
    CHECK(n >= 0 && n < 900, "log line of %d bytes: %.200s", n, line);
    for (const char *p = line; *p; p++)
        CHECK((unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f,
              "log line with byte 0x%02x: %.200s", (unsigned char)*p, line);
    /* A secret the input itself carries (the fuzzer learns them from these
     * very comparisons) may come back as, say, the unknown endpoint id. */
    for (size_t i = 0; i < sizeof secrets / sizeof *secrets; i++)
        if (memmem(cur_input, cur_size, secrets[i] + 40, strlen(secrets[i] + 40)) == NULL)
            CHECK(strstr(line, secrets[i]) == NULL && strstr(line, secrets[i] + 40) == NULL,
                  "secret in log line: %s", line);

    if (strncmp(line, "event=request ", 14) == 0) {
        static const char *after_signature[] = {
            "malformed_json", "nesting_too_deep", "missing_field", "invalid_field",
            "unsupported_json", "database_unavailable", "internal_error", "stored", "duplicate"};
        static const int allowed[] = {200, 400, 401, 404, 405, 410, 411, 413, 503};
        char ep[80], st[16], outcome[64];
        int status, ok = 0;

        requests_seen++;
        CHECK(field(line, " endpoint=", ep, sizeof ep) && field(line, " status=", st, sizeof st) &&
                  field(line, " outcome=", outcome, sizeof outcome),
              "request line without endpoint/status/outcome: %s", line);
        status = atoi(st);
        for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++) ok |= status == allowed[i];
        CHECK(ok, "status %d is impossible without a database: %s", status, line);
        CHECK(status != 200 || (strcmp(outcome, "ok") == 0 && strcmp(ep, "-") == 0),
              "a 200 other than /paddle/metrics without a database: %s", line);
        if (strcmp(ep, "-") != 0 && !signed_now)
            for (size_t i = 0; i < sizeof after_signature / sizeof *after_signature; i++)
                CHECK(strcmp(outcome, after_signature[i]) != 0,
                      "unsigned request got past the signature check: %s", line);
    }
}

/* ---- FastCGI encoding --------------------------------------------------- */

struct sb {
    unsigned char *p;
    size_t len, cap;
};

static void sb_add(struct sb *b, const void *s, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (b->p == NULL) abort();
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void put_record(struct sb *b, int type, const unsigned char *content, size_t len)
{
    unsigned char h[8] = {1, (unsigned char)type, 0, 1, (unsigned char)(len >> 8), (unsigned char)len, 0, 0};
    sb_add(b, h, 8);
    sb_add(b, content, len);
}

static void put_stream(struct sb *b, int type, const unsigned char *s, size_t len, size_t chunk, int close)
{
    for (size_t off = 0; off < len; off += chunk)
        put_record(b, type, s + off, len - off < chunk ? len - off : chunk);
    if (close) put_record(b, type, NULL, 0);
}

static void put_len(struct sb *b, size_t n)
{
    if (n < 128) {
        unsigned char c = (unsigned char)n;
        sb_add(b, &c, 1);
    } else {
        unsigned char c[4] = {(unsigned char)(0x80 | (n >> 24)), (unsigned char)(n >> 16),
                              (unsigned char)(n >> 8), (unsigned char)n};
        sb_add(b, c, 4);
    }
}

static void put_pair(struct sb *params, const char *name, size_t nlen, const char *value, size_t vlen)
{
    put_len(params, nlen);
    put_len(params, vlen);
    sb_add(params, name, nlen);
    sb_add(params, value, vlen);
}

/* Structured input -> the records nginx would send. */
static void encode(const uint8_t *data, size_t size, struct sb *out)
{
    unsigned flags = data[0];
    const char *p = (const char *)data + 1, *end = (const char *)data + size, *body = end;
    struct sb params = {0};
    static const size_t chunks[] = {65535, 4, 16, 64, 256, 1024, 4096, 16384};
    size_t chunk = chunks[(flags >> 5) & 7];
    unsigned char begin[8] = {0, 1, (unsigned char)(flags & 8 ? 1 : 0), 0, 0, 0, 0, 0};

    /* Find the end of the parameter lines first: the body may be signed. */
    const char *pend = end;
    for (const char *q = p; q < end; q++) {
        if (*q == '\n' && (q == p || q[-1] == '\n')) {
            pend = q == p ? p : q - 1;
            body = q + 1;
            break;
        }
    }
    size_t blen = (size_t)(end - body);
    if (flags & 2) {
        struct sig_secret s = {.key = SECRET_FUZZ, .len = sizeof SECRET_FUZZ - 1};
        char sig[SIG_HEADER_BUF];
        sig_format(&s, (int64_t)time(NULL), (const unsigned char *)body, blen, sig);
        put_pair(&params, "HTTP_PADDLE_SIGNATURE", 21, sig, strlen(sig));
        signed_now = 1;
    }
    if (flags & 4) {
        char cl[32];
        int n = snprintf(cl, sizeof cl, "%zu", blen);
        put_pair(&params, "CONTENT_LENGTH", 14, cl, (size_t)n);
    }
    while (p < pend) {
        const char *nl = memchr(p, '\n', (size_t)(pend - p));
        const char *line_end = nl ? nl : pend;
        const char *eq = memchr(p, '=', (size_t)(line_end - p));
        if (eq) put_pair(&params, p, (size_t)(eq - p), eq + 1, (size_t)(line_end - eq - 1));
        else put_pair(&params, p, (size_t)(line_end - p), "", 0);
        p = line_end + 1;
    }
    put_record(out, 1 /* BEGIN_REQUEST */, begin, sizeof begin);
    put_stream(out, 4 /* PARAMS */, params.p, params.len, 65535, 1);
    put_stream(out, 5 /* STDIN */, (const unsigned char *)body, blen, chunk, !(flags & 16));
    free(params.p);
}

/* ---- a known libfcgi defect, survived ------------------------------------ */

/* libfcgi 2.4.2 (Debian 12, 2.4.2-2+deb12u1) computes nameLen + valueLen + 2
 * of a FastCGI name-value pair in int and asserts that malloc succeeded: a
 * pair declaring lengths near 2^31 aborts the worker (SIGABRT; the supervisor
 * starts a new one). Only a peer that can connect to the worker socket can
 * send that, and nginx never does; docs/security.md, "Open issues". So that
 * fuzzing goes on into paddlehook's own code, malloc may return NULL here
 * (allocator_may_return_null) and that one assertion, raised inside
 * FCGX_Accept_r, abandons the connection instead of the process; the
 * reproducer is tests/fuzz/corpus/fcgi/libfcgi-params-length-abort. Any other
 * failed assertion still aborts. */
static jmp_buf libfcgi_assert;
static volatile int in_accept;
static volatile int libfcgi_asserts;

const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "allocator_may_return_null=1"; }

void __assert_fail(const char *assertion, const char *file, unsigned int line, const char *function)
    __attribute__((noreturn));
void __assert_fail(const char *assertion, const char *file, unsigned int line, const char *function)
{
    if (in_accept && strstr(file, "fcgiapp.c") && strstr(function, "Malloc")) {
        libfcgi_asserts++;
        if (verbose) fprintf(stderr, "libfcgi: %s:%u: `%s' (connection abandoned)\n", file, line, assertion);
        longjmp(libfcgi_assert, 1);
    }
    fprintf(stderr, "%s:%u: %s: Assertion `%s' failed.\n", file, line, function, assertion);
    abort();
}

/* On some malformed streams LeakSanitizer sees two 24-byte blocks of libfcgi
 * unreachable after this target's accept loop; the real worker fed the same
 * stream 50 times under valgrind loses nothing (they belong to libfcgi's
 * request state, which the worker keeps). Only libfcgi's own blocks are
 * exempt: paddlehook's allocations are still leak-checked. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfcgi.so\n"; }

/* ---- set-up ------------------------------------------------------------- */

/* An abstract unix socket: nothing is left in the file system, even when a
 * finding ends the process. */
static socklen_t socket_address(struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    snprintf(sa->sun_path + 1, sizeof sa->sun_path - 1, "%s", sock_name);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sock_name));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    static const struct endpoint init[3] = {
        {.id = "ep_disabled", .environment = "sandbox", .tolerance = 300, .enabled = 0, .n_secrets = 1,
         .secrets = {{.key = SECRET_OFF, .len = sizeof SECRET_OFF - 1}}},
        {.id = "ep_fuzz", .environment = "sandbox", .tolerance = 300, .enabled = 1, .n_secrets = 1,
         .secrets = {{.key = SECRET_FUZZ, .len = sizeof SECRET_FUZZ - 1}}},
        {.id = "ep_live", .environment = "live", .tolerance = 5, .enabled = 1, .n_secrets = 2,
         .secrets = {{.key = SECRET_LIVE1, .len = sizeof SECRET_LIVE1 - 1},
                     {.key = SECRET_LIVE2, .len = sizeof SECRET_LIVE2 - 1}}},
    };
    const char *note = NULL;

    (void)argc;
    (void)argv;
    if (sodium_init() < 0) abort();
    signal(SIGPIPE, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);

    verbose = getenv("FUZZ_FCGI_VERBOSE") != NULL;
    memcpy(eps, init, sizeof eps);
    /* Keyed HMAC states, as endpoints.c prepares them when it loads secrets. */
    for (size_t i = 0, k = 0; i < sizeof eps / sizeof eps[0]; i++)
        for (size_t j = 0; j < eps[i].n_secrets; j++) sig_prepare(&eps[i].secrets[j], &keyed[k++]);
    cfg.max_body = FUZZ_MAX_BODY;
    cfg.workers = 1;
    w.cfg = &cfg;
    w.body = malloc(cfg.max_body + 1);
    w.stats = stats_create(NULL, &note); /* anonymous shared memory */
    if (w.stats == NULL) abort();
    store_init(&w.store, "host=/nonexistent", w.stats);
    w.store.next_attempt_ms = INT64_MAX; /* never connect */
    w.endpoints.items = eps;
    w.endpoints.n = 3;
    w.endpoints_loaded = 1;
    w.next_reload_ms = INT64_MAX;        /* never reload */

    snprintf(sock_name, sizeof sock_name, "paddlehook-fuzz-fcgi-%ld", (long)getpid());
    if (FCGX_Init() != 0) abort();
    {
        struct sockaddr_un sa;
        socklen_t sa_len = socket_address(&sa);
        listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sa_len) != 0 || listen(listen_fd, 16) != 0) {
            perror("listening socket");
            abort();
        }
    }
    if (FCGX_InitRequest(&fcgx, listen_fd, 0) != 0) abort();
    return 0;
}

static int connect_client(void)
{
    struct sockaddr_un sa;
    socklen_t sa_len = socket_address(&sa);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sa_len) != 0) {
        perror("connect");
        abort();
    }
    return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sb stream = {0};
    const unsigned char *bytes;
    size_t len, off = 0;
    int client;
    volatile int handled = 0;
    char sink[65536];

    if (size == 0) return 0;
    cur_input = data;
    cur_size = size;
    signed_now = 0;
    requests_seen = 0;
    if (data[0] & 1) {
        bytes = data + 1;
        len = size - 1;
    } else {
        encode(data, size, &stream);
        bytes = stream.p;
        len = stream.len;
    }
    if (len > FUZZ_MAX_STREAM) goto out;

    client = connect_client();
    while (off < len) {
        ssize_t n = write(client, bytes + off, len - off);
        if (n <= 0) break; /* socket buffer full: the rest is cut, the same way every run */
        off += (size_t)n;
    }
    shutdown(client, SHUT_WR);

    /* Every request on the connection (FCGI_KEEP_CONN), then EAGAIN. */
    if (setjmp(libfcgi_assert) != 0) {
        in_accept = 0;
        FCGX_Free(&fcgx, 1); /* what FCGX_Accept_r does with a broken connection */
        goto drained;
    }
    for (;;) {
        int accepted;
        if (handled >= FUZZ_MAX_REQUESTS) break;
        in_accept = 1;
        accepted = FCGX_Accept_r(&fcgx);
        in_accept = 0;
        if (accepted < 0) break;
        struct http_request req;
        struct webhook_outcome outcome;
        http_request_init(&req, &fcgx);
        webhook_handle(&w, &req, &outcome);
        FCGX_Finish_r(&fcgx);
        handled++;
        CHECK(requests_seen == handled, "%d requests handled but %d request log lines", handled,
              requests_seen);
        /* Drain answers so a long keep-alive stream never fills the socket. */
        while (read(client, sink, sizeof sink) > 0) {}
    }
drained:
    while (read(client, sink, sizeof sink) > 0) {}
    if (fcgx.ipcFd >= 0) FCGX_Free(&fcgx, 1); /* cut off at FUZZ_MAX_REQUESTS */
    close(client);
out:
    free(stream.p);
    return 0;
}

/* mkseeds.c - writes the fuzzers' seed corpora and dictionaries.
 *
 *     mkseeds FIXTURES_DIR SCENARIOS_DIR OUT_DIR
 *
 * FIXTURES_DIR is paddle-fixtures (signature-vectors.json, signed/,
 * envelopes/); SCENARIOS_DIR is fcgi/scenarios. Writes OUT_DIR/seeds/<target>/
 * and OUT_DIR/<target>.dict for the targets sig, event, template and fcgi.
 * Missing fixtures only mean fewer seeds (a warning, not an error).
 *
 * fcgi seeds use fuzz_fcgi.c's input format: flag byte, NAME=VALUE lines, an
 * empty line, the body. Raw-mode seeds (flag bit 0) carry complete FastCGI
 * streams signed with ts=1, so they can never pass the timestamp check.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>
#include <yajl/yajl_tree.h>

#include "sig.h"

#define FCGI_MAX_BODY 16384 /* FUZZ_MAX_BODY in fuzz_fcgi.c */
#define SECRET_FUZZ "pdl_ntfset_01j00000000000000000000000_fuzzfuzzfuzzfuzzfuzzfuzzfuzz"

static const char *out_dir;
static int n_written;

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long size;

    if (f == NULL) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)size + 1)) != NULL) {
        *len = fread(buf, 1, (size_t)size, f);
        buf[*len] = '\0';
    }
    fclose(f);
    return buf;
}

static void mkdirs(const char *target)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/seeds", out_dir);
    mkdir(out_dir, 0755);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/seeds/%s", out_dir, target);
    mkdir(path, 0755);
}

static void seed(const char *target, const char *name, const void *a, size_t alen, const void *b,
                 size_t blen)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof path, "%s/seeds/%s/%s", out_dir, target, name);
    f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "mkseeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    fwrite(a, 1, alen, f);
    if (blen) fwrite(b, 1, blen, f);
    fclose(f);
    n_written++;
}

/* Calls fn(name, bytes, len) for each regular file in dir. */
static void each_file(const char *dir, void (*fn)(const char *, const char *, size_t))
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (d == NULL) {
        fprintf(stderr, "mkseeds: warning: %s: %s (fewer seeds)\n", dir, strerror(errno));
        return;
    }
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        size_t len = 0;
        char *buf;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if ((buf = read_file(path, &len)) != NULL) {
            fn(e->d_name, buf, len);
            free(buf);
        }
    }
    closedir(d);
}

/* ---- sig ---------------------------------------------------------------- */

static const char *fixtures;

static void sig_vectors(void)
{
    char path[4096], err[256], name[64];
    size_t len = 0;
    char *text;
    yajl_val top, vectors;
    const char *vpath[] = {"vectors", NULL};

    snprintf(path, sizeof path, "%s/signature-vectors.json", fixtures);
    if ((text = read_file(path, &len)) == NULL) {
        fprintf(stderr, "mkseeds: warning: %s missing (fewer seeds)\n", path);
        return;
    }
    top = yajl_tree_parse(text, err, sizeof err);
    vectors = top ? yajl_tree_get(top, vpath, yajl_t_array) : NULL;
    for (size_t i = 0; vectors && i < vectors->u.array.len; i++) {
        yajl_val v = vectors->u.array.values[i];
        const char *hp[] = {"header", NULL}, *bp[] = {"body", NULL}, *fp[] = {"body_file", NULL};
        yajl_val h = yajl_tree_get(v, hp, yajl_t_string), b = yajl_tree_get(v, bp, yajl_t_string),
                 f = yajl_tree_get(v, fp, yajl_t_string);
        char *body = NULL;
        size_t blen = 0;

        if (h == NULL) continue;
        if (b && YAJL_GET_STRING(b)) {
            const char *text_body = YAJL_GET_STRING(b);
            blen = strlen(text_body);
            body = malloc(blen + 1);
            memcpy(body, text_body, blen + 1);
        } else if (f) {
            snprintf(path, sizeof path, "%s/signed/%s", fixtures, YAJL_GET_STRING(f));
            body = read_file(path, &blen);
        }
        snprintf(name, sizeof name, "vector-%02zu", i);
        {
            const char *hs = YAJL_GET_STRING(h);
            size_t hl = strlen(hs);
            char *all = malloc(hl + 1 + blen);
            memcpy(all, hs, hl);
            all[hl] = '\n';
            if (blen) memcpy(all + hl + 1, body, blen);
            seed("sig", name, all, hl + 1 + blen, NULL, 0);
            if (body) seed("event", name, body, blen, NULL, 0);
            free(all);
        }
        free(body);
    }
    if (top) yajl_tree_free(top);
    free(text);
}

static void sig_builtin(void)
{
    static const char *headers[] = {
        "ts=1;h1=0000000000000000000000000000000000000000000000000000000000000000\n{}",
        " h1=0000000000000000000000000000000000000000000000000000000000000000 ;\tts=1700000000 \nx",
        "ts=1;h1=00;h1=0000000000000000000000000000000000000000000000000000000000000000;v2=x\n",
        "ts=999999999999;h1=ABCDEF0000000000000000000000000000000000000000000000000000000000\n",
        "ts=1,ts=2\n",
        "",
    };
    char name[32];
    for (size_t i = 0; i < sizeof headers / sizeof *headers; i++) {
        snprintf(name, sizeof name, "builtin-%02zu", i);
        seed("sig", name, headers[i], strlen(headers[i]), NULL, 0);
    }
}

/* ---- event / template / fcgi -------------------------------------------- */

static void event_file(const char *name, const char *bytes, size_t len)
{
    char n[300];
    snprintf(n, sizeof n, "fx-%s", name);
    seed("event", n, bytes, len, NULL, 0);
}

static void template_file(const char *name, const char *bytes, size_t len)
{
    char n[300];
    snprintf(n, sizeof n, "sc-%s", name);
    seed("template", n, bytes, len, NULL, 0);
}

static void fcgi_structured(const char *name, unsigned flags, const char *params, const char *body,
                            size_t blen)
{
    unsigned char f = (unsigned char)flags;
    size_t plen = strlen(params);
    size_t sep = plen ? 2 : 1; /* the last line's newline, then an empty line */
    char *all = malloc(1 + plen + sep + blen);
    all[0] = (char)f;
    memcpy(all + 1, params, plen);
    memcpy(all + 1 + plen, "\n\n", sep);
    if (blen) memcpy(all + 1 + plen + sep, body, blen);
    seed("fcgi", name, all, 1 + plen + sep + blen, NULL, 0);
    free(all);
}

/* A complete FastCGI stream, as nginx sends it. */
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
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void rec(struct sb *b, int type, const void *c, size_t n)
{
    unsigned char h[8] = {1, (unsigned char)type, 0, 1, (unsigned char)(n >> 8), (unsigned char)n, 0, 0};
    sb_add(b, h, 8);
    sb_add(b, c, n);
}

static void pair(struct sb *b, const char *k, const char *v)
{
    size_t kl = strlen(k), vl = strlen(v);
    unsigned char l[4];
    if (kl < 128) { l[0] = (unsigned char)kl; sb_add(b, l, 1); }
    else { l[0] = (unsigned char)(0x80 | (kl >> 24)); l[1] = (unsigned char)(kl >> 16); l[2] = (unsigned char)(kl >> 8); l[3] = (unsigned char)kl; sb_add(b, l, 4); }
    if (vl < 128) { l[0] = (unsigned char)vl; sb_add(b, l, 1); }
    else { l[0] = (unsigned char)(0x80 | (vl >> 24)); l[1] = (unsigned char)(vl >> 16); l[2] = (unsigned char)(vl >> 8); l[3] = (unsigned char)vl; sb_add(b, l, 4); }
    sb_add(b, k, kl);
    sb_add(b, v, vl);
}

static void fcgi_raw(const char *name, const char *body, size_t blen, int keep_conn, int twice)
{
    struct sb s = {0}, p = {0};
    struct sig_secret secret = {.key = SECRET_FUZZ, .len = sizeof SECRET_FUZZ - 1};
    unsigned char begin[8] = {0, 1, (unsigned char)keep_conn, 0, 0, 0, 0, 0};
    char sig[SIG_HEADER_BUF], cl[32];

    sig_format(&secret, 1, (const unsigned char *)body, blen, sig);
    snprintf(cl, sizeof cl, "%zu", blen);
    pair(&p, "QUERY_STRING", "");
    pair(&p, "REQUEST_METHOD", "POST");
    pair(&p, "CONTENT_TYPE", "application/json");
    pair(&p, "CONTENT_LENGTH", cl);
    pair(&p, "DOCUMENT_URI", "/paddle/webhooks/ep_fuzz");
    pair(&p, "REQUEST_URI", "/paddle/webhooks/ep_fuzz");
    pair(&p, "SERVER_PROTOCOL", "HTTP/1.1");
    pair(&p, "REMOTE_ADDR", "127.0.0.1");
    pair(&p, "HTTP_HOST", "localhost");
    pair(&p, "HTTP_PADDLE_SIGNATURE", sig);
    unsigned char flag = 1;
    sb_add(&s, &flag, 1);
    for (int i = 0; i < (twice ? 2 : 1); i++) {
        rec(&s, 1, begin, sizeof begin);
        rec(&s, 4, p.p, p.len);
        rec(&s, 4, NULL, 0);
        for (size_t off = 0; off < blen; off += 8192) rec(&s, 5, body + off, blen - off < 8192 ? blen - off : 8192);
        rec(&s, 5, NULL, 0);
    }
    seed("fcgi", name, s.p, s.len, NULL, 0);
    free(s.p);
    free(p.p);
}

#define WEBHOOK "REQUEST_METHOD=POST\nDOCUMENT_URI=/paddle/webhooks/ep_fuzz\nREQUEST_URI=/paddle/webhooks/ep_fuzz\n" \
                "CONTENT_TYPE=application/json\nHTTP_HOST=localhost"

static int n_fcgi;

static void fcgi_file(const char *name, const char *bytes, size_t len)
{
    char n[300];
    if (len > FCGI_MAX_BODY) return;
    snprintf(n, sizeof n, "fx-%s", name);
    fcgi_structured(n, 0x06 | ((unsigned)(n_fcgi % 8) << 5), WEBHOOK, bytes, len); /* signed, auto length */
    if (n_fcgi++ % 8 == 0) {
        snprintf(n, sizeof n, "raw-%s", name);
        fcgi_raw(n, bytes, len, n_fcgi % 2, n_fcgi % 3 == 0);
    }
}

static void fcgi_builtin(void)
{
    static const char env[] = "{\"event_id\":\"evt_01\",\"event_type\":\"x.y\",\"occurred_at\":\"2024-01-01T00:00:00Z\",\"data\":{}}";
    fcgi_structured("healthz", 0, "REQUEST_METHOD=GET\nDOCUMENT_URI=/paddle/healthz", "", 0);
    fcgi_structured("metrics", 0, "REQUEST_METHOD=GET\nDOCUMENT_URI=/paddle/metrics", "", 0);
    fcgi_structured("notfound", 0, "REQUEST_METHOD=GET\nREQUEST_URI=/paddle/nope?x=1", "", 0);
    fcgi_structured("get-webhook", 0, "REQUEST_METHOD=GET\nDOCUMENT_URI=/paddle/webhooks/ep_fuzz", "", 0);
    fcgi_structured("no-length", 0x02, WEBHOOK, env, sizeof env - 1);
    fcgi_structured("huge-length", 0x02, WEBHOOK "\nCONTENT_LENGTH=99999999999999999999999", env, sizeof env - 1);
    fcgi_structured("short-length", 0x02, WEBHOOK "\nCONTENT_LENGTH=10", env, sizeof env - 1);
    fcgi_structured("disabled", 0x06, "REQUEST_METHOD=POST\nDOCUMENT_URI=/paddle/webhooks/ep_disabled", env, sizeof env - 1);
    fcgi_structured("live", 0x06, "REQUEST_METHOD=POST\nDOCUMENT_URI=/paddle/webhooks/ep_live", env, sizeof env - 1);
    fcgi_structured("unknown-ep", 0x06, "REQUEST_METHOD=POST\nDOCUMENT_URI=/paddle/webhooks/ep_nope", env, sizeof env - 1);
    fcgi_structured("two-sigs", 0x06, WEBHOOK "\nHTTP_PADDLE_SIGNATURE=ts=1;h1=00", env, sizeof env - 1);
    fcgi_structured("truncated", 0x16, WEBHOOK, env, sizeof env - 1);
    fcgi_structured("keepalive-tiny-chunks", 0x2e, WEBHOOK, env, sizeof env - 1);
    fcgi_structured("unsigned", 0x04, WEBHOOK "\nHTTP_PADDLE_SIGNATURE=ts=1700000000;h1=00", env, sizeof env - 1);
}

/* ---- dictionaries ------------------------------------------------------- */

static void dict(const char *target, const char *const *words)
{
    char path[4096];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s.dict", out_dir, target);
    if ((f = fopen(path, "w")) == NULL) {
        fprintf(stderr, "mkseeds: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    for (size_t i = 0; words[i]; i++) fprintf(f, "%s\n", words[i]);
    fclose(f);
}

static const char *const sig_words[] = {
    "\"ts=\"", "\"h1=\"", "\";\"", "\"; \"", "\"=\"", "\",\"", "\"\\x09\"", "\"1710498758\"",
    "\"999999999999\"", "\"0000000000000000000000000000000000000000000000000000000000000000\"", NULL};
static const char *const json_words[] = {
    "\"\\\"event_id\\\":\"", "\"\\\"event_type\\\":\"", "\"\\\"occurred_at\\\":\"",
    "\"\\\"notification_id\\\":\"", "\"\\\"data\\\":\"", "\"{\"", "\"}\"", "\"[\"", "\"]\"",
    "\"null\"", "\"true\"", "\"false\"", "\"\\\\u0000\"", "\"\\\\ud800\"", "\"\\\\u005f\"",
    "\"1e999999\"", "\"-0.0e-0\"", "\"\\xef\\xbb\\xbf\"", "\"\\xc3\\x28\"", "\"\\xf4\\x90\\x80\\x80\"",
    "\"2024-02-29T23:59:59.123456789Z\"", "\"+23:59\"", "\"evt_01h7ht60jy5hpdv5x8tfsaxje4\"",
    "\"transaction.completed\"", NULL};
static const char *const template_words[] = {
    "\"{{\"", "\"}}\"", "\"{{id:\"", "\"{{time:\"", "\"id:ctm:a\"", "\"time:+30d\"", "\"+1d+30m\"",
    "\"-2h\"", "\"0\"", "\"999999999d\"", NULL};
static const char *const fcgi_words[] = {
    "\"REQUEST_METHOD=POST\\x0a\"", "\"DOCUMENT_URI=/paddle/webhooks/ep_fuzz\\x0a\"",
    "\"REQUEST_URI=/paddle/webhooks/\"", "\"CONTENT_LENGTH=\"", "\"HTTP_PADDLE_SIGNATURE=\"",
    "\"/paddle/healthz\"", "\"/paddle/metrics\"", "\"ep_live\"", "\"ep_disabled\"", "\"\\x01\\x01\\x00\\x01\"",
    "\"\\x01\\x04\\x00\\x01\"", "\"\\x01\\x05\\x00\\x01\\x00\\x00\\x00\\x00\"", "\"\\x01\\x09\\x00\\x00\"",
    "\"\\x80\\x00\\x00\\x00\"", "\"\\x7f\\xff\\xff\\xff\"", NULL};

int main(int argc, char **argv)
{
    char path[4096];

    if (argc != 4) {
        fprintf(stderr, "usage: mkseeds FIXTURES_DIR SCENARIOS_DIR OUT_DIR\n");
        return 2;
    }
    if (sodium_init() < 0) return 1;
    fixtures = argv[1];
    out_dir = argv[3];
    mkdirs("sig");
    mkdirs("event");
    mkdirs("template");
    mkdirs("fcgi");

    sig_vectors();
    sig_builtin();
    snprintf(path, sizeof path, "%s/envelopes", fixtures);
    each_file(path, event_file);
    each_file(path, fcgi_file);
    snprintf(path, sizeof path, "%s/signed", fixtures);
    each_file(path, event_file);
    each_file(argv[2], template_file);
    fcgi_builtin();

    dict("sig", sig_words);
    dict("event", json_words);
    dict("template", template_words);
    dict("fcgi", fcgi_words);
    printf("mkseeds: %d seed files in %s/seeds\n", n_written, out_dir);
    return 0;
}

/* simulate.c - replay a billing lifecycle against a receiver.
 *
 * A scenario (fcgi/scenarios/NAME.json, compiled in) lists events with an
 * offset and a Paddle-shaped `data` snapshot whose strings may hold
 * placeholders: {{id:ctm:a}} becomes a fresh Paddle-style id, the same for
 * every use of that key in one run, and {{time:+30d}} a timestamp relative to
 * the run's base time. Each event is wrapped in an envelope, signed like
 * Paddle signs it, and POSTed with curl (so https URLs work too).
 */
#include "simulate.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

#include "embedded.h"
#include "endpoint_cmd.h"
#include "limits.h"
#include "shown.h"
#include "sig.h"
#include "template.h"

#define SIM_MAX_OUTPUT 65536
#define SIM_MAX_DEPTH 32
#define SIM_URL_MAX 2048

extern char **environ;

/* Writes a yajl tree back out as compact JSON (numbers keep their digits). */
static int gen_value(yajl_gen g, yajl_val v, int depth)
{
    if (depth > SIM_MAX_DEPTH) return -1;
    if (YAJL_IS_STRING(v)) return yajl_gen_string(g, (const unsigned char *)v->u.string, strlen(v->u.string));
    if (YAJL_IS_NUMBER(v)) return yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r));
    if (YAJL_IS_TRUE(v)) return yajl_gen_bool(g, 1);
    if (YAJL_IS_FALSE(v)) return yajl_gen_bool(g, 0);
    if (YAJL_IS_NULL(v)) return yajl_gen_null(g);
    if (YAJL_IS_ARRAY(v)) {
        yajl_gen_array_open(g);
        for (size_t i = 0; i < v->u.array.len; i++)
            if (gen_value(g, v->u.array.values[i], depth + 1) != 0) return -1;
        return yajl_gen_array_close(g);
    }
    yajl_gen_map_open(g);
    for (size_t i = 0; i < v->u.object.len; i++) {
        yajl_gen_string(g, (const unsigned char *)v->u.object.keys[i], strlen(v->u.object.keys[i]));
        if (gen_value(g, v->u.object.values[i], depth + 1) != 0) return -1;
    }
    return yajl_gen_map_close(g);
}

static const struct embedded_file *find_scenario(const char *name)
{
    for (unsigned i = 0; i < scenarios_count; i++)
        if (strcmp(scenarios[i].name, name) == 0) return &scenarios[i];
    return NULL;
}

static const char *tree_string(yajl_val obj, const char *key)
{
    const char *path[] = {key, NULL};
    yajl_val v = yajl_tree_get(obj, path, yajl_t_string);
    return v ? v->u.string : NULL;
}

static yajl_val tree_events(yajl_val root)
{
    const char *path[] = {"events", NULL};
    return yajl_tree_get(root, path, yajl_t_array);
}

/* The latest event offset, so that by default the last event happens now. */
static int scenario_span(const char *text, long long *span, char *err, size_t errlen)
{
    yajl_val root = yajl_tree_parse(text, err, errlen), events;
    int rc = -1;

    *span = 0;
    if (root == NULL || (events = tree_events(root)) == NULL || events->u.array.len == 0) {
        snprintf(err, errlen, "no events");
        goto out;
    }
    for (size_t i = 0; i < events->u.array.len; i++) {
        const char *at = tree_string(events->u.array.values[i], "at");
        long long off;
        if (at == NULL || template_offset(at, &off) != 0) {
            snprintf(err, errlen, "event %zu has no valid \"at\" offset", i + 1);
            goto out;
        }
        if (i == 0 || off > *span) *span = off;
    }
    rc = 0;
out:
    yajl_tree_free(root);
    return rc;
}

/* The status curl prints after the body ("\n%{http_code}", 000 when it got
 * no answer), from the last bytes of its whole output; -1 if they are not a
 * newline and three digits. */
static int status_from_tail(const char *tail, size_t n)
{
    if (n < 4 || tail[n - 4] != '\n') return -1;
    for (size_t i = n - 3; i < n; i++)
        if (tail[i] < '0' || tail[i] > '9') return -1;
    return (tail[n - 3] - '0') * 100 + (tail[n - 2] - '0') * 10 + (tail[n - 1] - '0');
}

/* POSTs body with curl; returns the HTTP status (0 when curl failed) and
 * leaves the start of the response body in resp. */
static int post(const char *url, const char *signature, const char *body, size_t len,
                char *resp, size_t resp_cap)
{
    char header[SIG_HEADER_BUF + 32], target[SIM_URL_MAX];
    /* -q first: a user's ~/.curlrc must not change what is sent or printed. */
    char *argv[] = {"curl", "-q", "-sS", "--max-time", "30", "--proto", "=http,https", "-o", "-",
                    "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "-H", header,
                    "--data-binary", "@-", "--url", target, NULL};
    posix_spawn_file_actions_t fa;
    int in[2] = {-1, -1}, out[2] = {-1, -1}, status = 0, code = 0, trailer;
    size_t got = 0, total = 0, tail_len = 0;
    char tail[4];
    pid_t pid = -1;
    ssize_t n;

    snprintf(header, sizeof header, "Paddle-Signature: %s", signature);
    resp[0] = '\0';
    if (strlen(url) >= sizeof target) {
        snprintf(resp, resp_cap, "URL too long");
        return 0;
    }
    memcpy(target, url, strlen(url) + 1);
    /* O_CLOEXEC: curl gets the pipes as its stdin and stdout only (dup2 clears
     * the flag there), no stray copies that keep a pipe from ending. */
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) goto out;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    if (posix_spawnp(&pid, "curl", &fa, NULL, argv, environ) != 0) pid = -1;
    posix_spawn_file_actions_destroy(&fa);
    close(in[0]);
    close(out[1]);
    in[0] = out[1] = -1;
    if (pid < 0) {
        snprintf(resp, resp_cap, "cannot run curl (apt-get install curl)");
        goto out;
    }
    for (size_t off = 0; off < len; off += (size_t)n)
        if ((n = write(in[1], body + off, len - off)) <= 0) break;
    close(in[1]);
    in[1] = -1;
    for (;;) {
        char chunk[4096];
        size_t room = got + 1 < resp_cap ? resp_cap - got - 1 : 0, take;
        /* Read to the end (curl would block on a full pipe), keeping the first
         * bytes to show and the last four, where the status is. */
        n = read(out[0], chunk, sizeof chunk);
        if (n <= 0) break;
        take = (size_t)n < room ? (size_t)n : room;
        memcpy(resp + got, chunk, take);
        got += take;
        total += (size_t)n;
        for (ssize_t i = 0; i < n; i++) {
            if (tail_len == sizeof tail) memmove(tail, tail + 1, --tail_len);
            tail[tail_len++] = chunk[i];
        }
    }
    resp[got] = '\0';
    waitpid(pid, &status, 0);
    trailer = status_from_tail(tail, tail_len);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && trailer > 0) code = trailer;
    /* All of it shown: drop the status line and the body's own line ends. */
    if (trailer >= 0 && got == total) {
        got -= 4;
        while (got > 0 && (resp[got - 1] == '\n' || resp[got - 1] == '\r')) got--;
        resp[got] = '\0';
    }
out:
    for (int i = 0; i < 2; i++) {
        if (in[i] >= 0) close(in[i]);
        if (out[i] >= 0) close(out[i]);
    }
    return code;
}

/* Wraps data in an envelope. Every envelope value is generated here or was
 * checked against event_parse's rules, so plain formatting is safe. */
static char *envelope(const char *event_type, const char *occurred_at, const unsigned char *data,
                      size_t data_len, size_t *len)
{
    char event_id[MAX_ID_LEN + 1], notification_id[MAX_ID_LEN + 1], head[512];
    char *body;
    int n;

    template_id("evt", event_id, sizeof event_id);
    template_id("ntf", notification_id, sizeof notification_id);
    n = snprintf(head, sizeof head,
                 "{\"event_id\":\"%s\",\"event_type\":\"%s\",\"occurred_at\":\"%s\","
                 "\"notification_id\":\"%s\",\"data\":",
                 event_id, event_type, occurred_at, notification_id);
    body = malloc((size_t)n + data_len + 2);
    if (body == NULL) return NULL;
    memcpy(body, head, (size_t)n);
    memcpy(body + n, data, data_len);
    memcpy(body + (size_t)n + data_len, "}", 2);
    *len = (size_t)n + data_len + 1;
    return body;
}

static int valid_event_type(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > MAX_EVENT_TYPE_LEN) return 0;
    for (; *t; t++)
        if (!((*t >= 'a' && *t <= 'z') || *t == '_' || *t == '.')) return 0;
    return 1;
}

static int run_scenario(const struct config *cfg, const struct embedded_file *sc,
                        const struct sig_secret *secret, int *failed)
{
    char err[256], *text = NULL, resp[SIM_MAX_OUTPUT], reply[SIM_MAX_OUTPUT];
    yajl_val root = NULL, events;
    long long span = 0, base;
    int rc = -1;

    if (scenario_span(sc->text, &span, err, sizeof err) != 0) goto fail;
    base = (long long)time(NULL) - span;
    if ((text = template_expand(sc->text, base, err, sizeof err)) == NULL) goto fail;
    if ((root = yajl_tree_parse(text, err, sizeof err)) == NULL || (events = tree_events(root)) == NULL)
        goto fail;
    printf("scenario %s: %zu events\n", sc->name, events->u.array.len);
    for (size_t i = 0; i < events->u.array.len; i++) {
        yajl_val ev = events->u.array.values[i];
        const char *path[] = {"data", NULL}, *type = tree_string(ev, "event_type");
        yajl_val data = yajl_tree_get(ev, path, yajl_t_object);
        char occurred_at[TEMPLATE_TS_LEN + 1], header[SIG_HEADER_BUF];
        const unsigned char *data_json;
        size_t data_len, body_len;
        long long off = 0;
        yajl_gen g;
        char *body;
        int code;

        if (type == NULL || !valid_event_type(type) || data == NULL) {
            snprintf(err, sizeof err, "event %zu needs an event_type and a data object", i + 1);
            goto fail;
        }
        template_offset(tree_string(ev, "at"), &off);
        /* The event's position as microseconds: events at the same offset keep
         * their file order, as Paddle's own occurred_at would. */
        template_time(base + off, (int)i, occurred_at);
        g = yajl_gen_alloc(NULL);
        if (g == NULL || gen_value(g, data, 0) != 0 ||
            yajl_gen_get_buf(g, &data_json, &data_len) != yajl_gen_status_ok ||
            (body = envelope(type, occurred_at, data_json, data_len, &body_len)) == NULL) {
            if (g) yajl_gen_free(g);
            snprintf(err, sizeof err, "cannot build event %zu", i + 1);
            goto fail;
        }
        yajl_gen_free(g);
        sig_format(secret, (int64_t)time(NULL), (const unsigned char *)body, body_len, header);
        code = post(cfg->url, header, body, body_len, resp, sizeof resp);
        /* What the receiver said, shown so that it cannot drive the terminal. */
        shown_copy(reply, sizeof reply, resp);
        free(body);
        printf("  %-28s %s  %d %s\n", type, occurred_at, code, reply);
        if (code < 200 || code > 299) (*failed)++;
    }
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "paddlehook: scenario %s: %s\n", sc->name, err);
out:
    yajl_tree_free(root);
    free(text);
    return rc;
}

static void list_scenarios(FILE *out)
{
    fprintf(out, "scenarios (paddlehook simulate NAME|all --url URL --secret-file FILE):\n");
    for (unsigned i = 0; i < scenarios_count; i++) {
        yajl_val root = yajl_tree_parse(scenarios[i].text, NULL, 0);
        const char *d = root ? tree_string(root, "description") : NULL;
        fprintf(out, "  %-28s %s\n", scenarios[i].name, d ? d : "");
        yajl_tree_free(root);
    }
}

int simulate_run(const struct config *cfg)
{
    char secret[MAX_SECRET_LEN + 2], err[256];
    const char *name = cfg->n_args == 1 ? cfg->args[0] : NULL;
    int len, failed = 0, rc = 1;
    FILE *f = NULL;

    if (name == NULL) {
        list_scenarios(stdout);
        return 0;
    }
    if (strcmp(name, "all") != 0 && find_scenario(name) == NULL) {
        fprintf(stderr, "paddlehook simulate: no scenario '%s'\n", name);
        list_scenarios(stderr);
        return 2;
    }
    if (cfg->url == NULL || cfg->secret_file == NULL) {
        fprintf(stderr, "paddlehook simulate: %s needs %s (the receiver's URL and its endpoint's secret)\n", name,
                cfg->url ? "--secret-file FILE" : cfg->secret_file ? "--url URL" : "--url URL and --secret-file FILE");
        return 2;
    }
    f = fopen(cfg->secret_file, "r");
    if (f == NULL) {
        fprintf(stderr, "paddlehook: cannot open %s: %s\n", cfg->secret_file, strerror(errno));
        return 1;
    }
    len = endpoint_cmd_read_secret(f, secret, sizeof secret, err, sizeof err);
    fclose(f);
    if (len < 0) {
        fprintf(stderr, "paddlehook: %s: %s\n", cfg->secret_file, err);
        goto out;
    }
    {
        struct sig_secret s = {.key = secret, .len = (size_t)len};
        for (unsigned i = 0; i < scenarios_count; i++) {
            if (strcmp(name, "all") != 0 && strcmp(name, scenarios[i].name) != 0) continue;
            if (run_scenario(cfg, &scenarios[i], &s, &failed) != 0) goto out;
        }
    }
    if (failed) fprintf(stderr, "paddlehook: %d deliveries were not acknowledged with 2xx\n", failed);
    rc = failed ? 1 : 0;
out:
    sodium_memzero(secret, sizeof secret);
    return rc;
}

/* log.c - timestamped key=value lines on stderr, written with one write(2)
 * so lines from concurrent workers never interleave; optionally the same
 * fields as one JSON object per line. */
#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <yajl/yajl_gen.h>

#define LOG_LINE_MAX 1024
/* Values never hold '"' or control characters (callers sanitise them), so
 * JSON is at most three times a line ("= " becomes "\"\":\"\",", a '\\' two);
 * still under PIPE_BUF, so one write(2) stays one line. */
#define LOG_JSON_MAX (3 * LOG_LINE_MAX)

static enum log_level max_level = LOG_INFO;
static int as_json;

/* The process's pid, read once: getpid(2) is a system call on every line otherwise. A child of fork(2)
 * forgets it (pthread_atfork), so no line shows the parent's. */
static pid_t own_pid;

static void forget_pid(void) { own_pid = 0; }

static pid_t log_pid(void)
{
    static int forgets_on_fork;

    if (!forgets_on_fork) forgets_on_fork = pthread_atfork(NULL, NULL, forget_pid) == 0;
    if (own_pid == 0 || !forgets_on_fork) own_pid = getpid();
    return own_pid;
}

void log_set_level(enum log_level max) { max_level = max; }
void log_set_json(int json) { as_json = json; }

/* A JSON number a double holds exactly: digits with at most one inner dot,
 * no leading zero (JSON forbids "007"), at most 15 digits. */
static int is_number(const char *s, size_t n)
{
    size_t dots = 0;
    if (n == 0 || n > 15) return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') dots++;
        else if (s[i] < '0' || s[i] > '9') return 0;
    }
    if (s[0] == '0' && n > 1 && s[1] != '.') return 0;
    return dots <= 1 && s[0] != '.' && s[n - 1] != '.';
}

/* Keys whose values are names, whatever they look like (an endpoint id comes
 * from the request's path and may be all digits). */
static int is_name_key(const char *k, size_t n)
{
    return (n == 8 && memcmp(k, "endpoint", 8) == 0) || (n == 8 && memcmp(k, "event_id", 8) == 0);
}

/* Bytes of the valid UTF-8 character at p (n bytes left), or 0 when it is
 * not one (RFC 3629: no overlong forms, surrogates or code points past
 * U+10FFFF). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len = p[0] < 0x80 ? 1 : p[0] >= 0xc2 && p[0] <= 0xdf ? 2 : p[0] >= 0xe0 && p[0] <= 0xef ? 3
               : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4 : 0;
    unsigned char lo = p[0] == 0xe0 ? 0xa0 : p[0] == 0xf0 ? 0x90 : 0x80;
    unsigned char hi = p[0] == 0xed ? 0x9f : p[0] == 0xf4 ? 0x8f : 0xbf;

    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if (p[i] < (i == 1 ? lo : 0x80) || p[i] > (i == 1 ? hi : 0xbf)) return 0;
    return len;
}

/* A JSON string of v (n bytes) with each byte that is not part of a valid
 * UTF-8 character written as '?': a log shipper may drop a line that is not
 * UTF-8, and text is cut at a byte limit (a database message in another
 * language, cut mid-character) or may quote input. */
static void gen_text(yajl_gen g, const char *v, size_t n)
{
    char clean[LOG_LINE_MAX];
    const unsigned char *p = (const unsigned char *)v;
    size_t i = 0;

    if (n > sizeof clean) n = sizeof clean;
    while (i < n) {
        size_t len = utf8_len(p + i, n - i);
        if (len == 0) clean[i++] = '?';
        else for (size_t k = 0; k < len; k++, i++) clean[i] = v[i];
    }
    yajl_gen_string(g, (const unsigned char *)clean, n);
}

/* Writes `key=value key="quoted value" ...` (line, n bytes) as one JSON
 * object and a newline into out; the length, or 0 if it cannot. Values never
 * contain '"' (callers sanitise them), so quoting is simple. */
static size_t to_json(const char *line, size_t n, char *out, size_t cap)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    const unsigned char *json;
    size_t json_len, len = 0;
    const char *p = line, *end = line + n;

    if (g == NULL) return 0;
    yajl_gen_map_open(g);
    while (p < end) {
        const char *eq = memchr(p, '=', (size_t)(end - p)), *v, *v_end, *key = p;
        if (eq == NULL) break;
        yajl_gen_string(g, (const unsigned char *)p, (size_t)(eq - p));
        v = eq + 1;
        if (*v == '"') {
            v++;
            v_end = memchr(v, '"', (size_t)(end - v));
            if (v_end == NULL) v_end = end;
            p = v_end + 1;
        } else {
            v_end = memchr(v, ' ', (size_t)(end - v));
            if (v_end == NULL) v_end = end;
            p = v_end;
        }
        if (!is_name_key(key, (size_t)(eq - key)) && is_number(v, (size_t)(v_end - v)))
            yajl_gen_number(g, v, (size_t)(v_end - v));
        else gen_text(g, v, (size_t)(v_end - v));
        while (p < end && *p == ' ') p++;
    }
    yajl_gen_map_close(g);
    if (yajl_gen_get_buf(g, &json, &json_len) == yajl_gen_status_ok && json_len < cap) {
        memcpy(out, json, json_len);
        out[json_len] = '\n';
        len = json_len + 1;
    }
    yajl_gen_free(g);
    return len;
}

int log_level_parse(const char *name, enum log_level *out)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    return -1;
}

void log_line(enum log_level level, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char line[LOG_LINE_MAX], json[LOG_JSON_MAX];
    const char *text = line;
    size_t len;
    struct timeval tv;
    struct tm tm;
    va_list ap;
    int n;

    if (level > max_level) return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = snprintf(line, sizeof line, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s pid=%ld ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 (long)(tv.tv_usec / 1000), names[level], (long)log_pid());
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n >= (int)sizeof line - 1) n = (int)sizeof line - 2;
    line[n] = '\n';
    if (as_json && (len = to_json(line, (size_t)n, json, sizeof json)) > 0) text = json;
    else len = (size_t)n + 1;
    (void)!write(STDERR_FILENO, text, len);
}

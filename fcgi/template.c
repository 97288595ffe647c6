/* template.c - expands the placeholders of simulate's scenarios. */
#include "template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "limits.h"

#define TEMPLATE_MAX_IDS 64
#define TEMPLATE_KEY_MAX 48
#define TEMPLATE_ID_CHARS 26
#define TEMPLATE_OFFSET_MAX_UNITS 100000000

struct id_map {
    char key[TEMPLATE_MAX_IDS][TEMPLATE_KEY_MAX];
    char id[TEMPLATE_MAX_IDS][MAX_ID_LEN + 1];
    int n;
};

struct buf {
    char *p;
    size_t len, cap;
};

static int buf_add(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap : 4096);
        char *p;
        while (cap < b->len + n + 1) cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL) return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int template_offset(const char *s, long long *seconds)
{
    long long total = 0;

    if (*s == '\0') return -1;
    if (strcmp(s, "0") == 0) {
        *seconds = 0;
        return 0;
    }
    while (*s) {
        int sign = 1;
        long long n = 0, unit;
        if (*s == '+' || *s == '-') sign = *s++ == '-' ? -1 : 1;
        if (*s < '0' || *s > '9') return -1;
        while (*s >= '0' && *s <= '9' && n < TEMPLATE_OFFSET_MAX_UNITS) n = n * 10 + (*s++ - '0');
        switch (*s++) {
        case 'd': unit = 86400; break;
        case 'h': unit = 3600; break;
        case 'm': unit = 60; break;
        case 's': unit = 1; break;
        default: return -1;
        }
        total += sign * n * unit;
    }
    *seconds = total;
    return 0;
}

void template_time(long long t, int micros, char out[TEMPLATE_TS_LEN + 1])
{
    time_t tt = (time_t)t;
    struct tm tm;

    gmtime_r(&tt, &tm);
    /* %04d, not strftime's %Y: RFC 3339 needs four digits for early years. */
    snprintf(out, TEMPLATE_TS_LEN + 1, "%04u-%02u-%02uT%02u:%02u:%02u.%06uZ",
             (unsigned)(tm.tm_year + 1900) % 10000u, (unsigned)(tm.tm_mon + 1) % 100u, (unsigned)tm.tm_mday % 100u,
             (unsigned)tm.tm_hour % 100u, (unsigned)tm.tm_min % 100u, (unsigned)tm.tm_sec % 100u,
             (unsigned)micros % 1000000u);
}

void template_id(const char *prefix, char *out, size_t cap)
{
    static const char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";
    size_t p = (size_t)snprintf(out, cap, "%s_01", prefix);
    for (int i = 2; i < TEMPLATE_ID_CHARS && p + 1 < cap; i++)
        out[p++] = alphabet[randombytes_uniform(sizeof alphabet - 1)];
    out[p] = '\0';
}

/* "id:ctm:a" -> a stable fresh id for that key. */
static const char *lookup_id(struct id_map *ids, const char *key, size_t len)
{
    const char *prefix = key + 3, *colon;
    size_t prefix_len;

    if (len >= TEMPLATE_KEY_MAX) return NULL;
    for (int i = 0; i < ids->n; i++)
        if (strlen(ids->key[i]) == len && memcmp(ids->key[i], key, len) == 0) return ids->id[i];
    colon = memchr(prefix, ':', len - 3);
    prefix_len = colon ? (size_t)(colon - prefix) : len - 3;
    if (ids->n == TEMPLATE_MAX_IDS || prefix_len == 0 || prefix_len > 8) return NULL;
    for (size_t i = 0; i < prefix_len; i++)
        if (prefix[i] < 'a' || prefix[i] > 'z') return NULL;
    memcpy(ids->key[ids->n], key, len);
    ids->key[ids->n][len] = '\0';
    {
        char p[9];
        memcpy(p, prefix, prefix_len);
        p[prefix_len] = '\0';
        template_id(p, ids->id[ids->n], sizeof ids->id[ids->n]);
    }
    return ids->id[ids->n++];
}

char *template_expand(const char *tmpl, long long base, char *err, size_t errlen)
{
    struct id_map *ids = calloc(1, sizeof *ids);
    struct buf out = {0};
    const char *p = tmpl;

    if (ids == NULL) goto oom;
    while (*p) {
        const char *open = strstr(p, "{{"), *close;
        char key[TEMPLATE_KEY_MAX + 1], ts[TEMPLATE_TS_LEN + 1];
        size_t len;
        if (open == NULL) {
            if (buf_add(&out, p, strlen(p)) != 0) goto oom;
            break;
        }
        close = strstr(open, "}}");
        len = close ? (size_t)(close - open - 2) : 0;
        if (close == NULL || len == 0 || len > TEMPLATE_KEY_MAX) {
            snprintf(err, errlen, "unterminated or over-long placeholder near '%.20s'", open);
            goto fail;
        }
        memcpy(key, open + 2, len);
        key[len] = '\0';
        if (buf_add(&out, p, (size_t)(open - p)) != 0) goto oom;
        if (strncmp(key, "id:", 3) == 0) {
            const char *id = lookup_id(ids, key, len);
            if (id == NULL) {
                snprintf(err, errlen, "bad id placeholder {{%s}}", key);
                goto fail;
            }
            if (buf_add(&out, id, strlen(id)) != 0) goto oom;
        } else if (strncmp(key, "time:", 5) == 0) {
            long long off;
            if (template_offset(key + 5, &off) != 0) {
                snprintf(err, errlen, "bad time placeholder {{%s}}", key);
                goto fail;
            }
            template_time(base + off, 0, ts);
            if (buf_add(&out, ts, strlen(ts)) != 0) goto oom;
        } else {
            snprintf(err, errlen, "unknown placeholder {{%s}}", key);
            goto fail;
        }
        p = close + 2;
    }
    free(ids);
    return out.p ? out.p : strdup("");
oom:
    snprintf(err, errlen, "out of memory");
fail:
    free(ids);
    free(out.p);
    return NULL;
}


/* shown.c - text made safe to print on a terminal. */
#include "shown.h"

#include <string.h>

/* \xNN */
#define SHOWN_ESCAPE_LEN 4

/* Bytes of a control character at the start of a character v: C0, DEL, C1
 * in UTF-8, or a byte 0x80-0x9f that starts nothing (a C1 control to a
 * terminal that reads 8-bit bytes); 0 otherwise. */
static int control_len(const unsigned char *v)
{
    if (*v < 0x20 || *v == 0x7f || (*v >= 0x80 && *v <= 0x9f)) return 1;
    if (v[0] == 0xc2 && v[1] >= 0x80 && v[1] <= 0x9f) return 2;
    return 0;
}

/* Bytes of the character at p: a whole UTF-8 sequence (a lead byte 0xc2-0xf4
 * and all its continuation bytes), else one byte, so that a continuation
 * byte after an invalid or cut sequence is looked at on its own (it may be a
 * raw C1 control). */
static size_t char_len(const unsigned char *p)
{
    size_t more = *p >= 0xc2 && *p <= 0xdf ? 1 : *p >= 0xe0 && *p <= 0xef ? 2 : *p >= 0xf0 && *p <= 0xf4 ? 3 : 0;

    for (size_t i = 1; i <= more; i++)
        if ((p[i] & 0xc0) != 0x80) return 1;
    return more + 1;
}

size_t shown_len(const char *v)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)v; *p;) {
        int c = control_len(p);
        n += c ? SHOWN_ESCAPE_LEN * (size_t)c : 1;
        p += c ? (size_t)c : char_len(p);
    }
    return n;
}

void shown_put(FILE *out, const char *v)
{
    for (const unsigned char *p = (const unsigned char *)v; *p;) {
        int c = control_len(p);
        size_t len = c ? (size_t)c : char_len(p);
        for (int i = 0; i < c; i++) fprintf(out, "\\x%02x", p[i]);
        if (c == 0) fwrite(p, 1, len, out);
        p += len;
    }
}

void shown_copy(char *dst, size_t cap, const char *v)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t n = 0;

    if (cap == 0) return;
    while (*p) {
        int c = control_len(p);
        size_t len = c ? (size_t)c : char_len(p), need = c ? SHOWN_ESCAPE_LEN * len : len;

        if (n + need >= cap) break;
        for (int i = 0; i < c; i++) n += (size_t)snprintf(dst + n, cap - n, "\\x%02x", p[i]);
        if (c == 0) {
            memcpy(dst + n, p, len);
            n += len;
        }
        p += len;
    }
    dst[n] = '\0';
}

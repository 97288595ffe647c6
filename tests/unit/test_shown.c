/* Text shown on a terminal: no control character gets through, everything
 * else is kept, and a copy cut short is still whole characters. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shown.h"
#include "tap.h"

/* What shown_put writes for v (caller frees). */
static char *put(const char *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    if (f == NULL) return NULL;
    shown_put(f, v);
    if (fclose(f) != 0) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* Whether v is shown as exactly want, by shown_put and by shown_copy given
 * room for all of it. */
static int shown_as(const char *v, const char *want)
{
    char *out = put(v), copy[SHOWN_COPY_CAP(64)];
    int ok = out != NULL && strcmp(out, want) == 0;

    shown_copy(copy, sizeof copy, v);
    ok = ok && strcmp(copy, want) == 0;
    free(out);
    return ok;
}

static void test_examples(void)
{
    static const struct { const char *in, *out; const char *what; } cases[] = {
        {"Acme GmbH", "Acme GmbH", "plain text is kept"},
        {"Zo\xc3\xab \xe2\x82\xac \xf0\x9f\x98\x80", "Zo\xc3\xab \xe2\x82\xac \xf0\x9f\x98\x80",
         "UTF-8 is kept, continuation bytes 0x80-0x9f inside a character too"},
        {"a\x1b]0;owned\x07z", "a\\x1b]0;owned\\x07z", "ESC and BEL become \\xNN"},
        {"line\r\nfake", "line\\x0d\\x0afake", "CR and LF cannot fake a line"},
        {"\x7f", "\\x7f", "DEL"},
        {"\xc2\x9b" "31m", "\\xc2\\x9b31m", "a C1 control in UTF-8 (CSI) is shown byte by byte"},
        {"\x9b" "31m", "\\x9b31m", "a raw C1 byte for an 8-bit terminal"},
        {"\xe2\x82", "\xe2\\x82", "a cut sequence: its continuation byte is looked at alone"},
        {"\\x41", "\\x41", "a backslash is kept (shown text is for eyes, not for parsing back)"},
    };
    char cut[8];

    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        tap_ok(shown_as(cases[i].in, cases[i].out), "shown: %s", cases[i].what);
    shown_copy(cut, 3, "a\xc3\xa9");
    tap_ok(strcmp(cut, "a") == 0, "shown_copy leaves out a character that does not fit whole");
    shown_copy(cut, 6, "a\x1b");
    tap_ok(strcmp(cut, "a\\x1b") == 0, "shown_copy keeps an escape that fits");
    shown_copy(cut, 5, "a\x1b");
    tap_ok(strcmp(cut, "a") == 0, "shown_copy leaves out an escape that does not fit whole");
    tap_ok(shown_len("Zo\xc3\xab") == 3 && shown_len("\x1b") == 4 && shown_len("\xc2\x9b") == 8 && shown_len("") == 0,
           "shown_len counts characters, and 4 columns per escaped byte");
}

/* Whether copy is what text v shows up to a cut between two of its
 * characters: the first k bytes of v, shown, are copy (heads[k]), and the
 * rest, shown apart from them (tails[k]), completes the whole in bytes and
 * in columns (a cut inside a character would leave its continuation bytes a
 * column of their own). */
static int cut_between_characters(size_t len, char *const *heads, char *const *tails, const char *copy,
                                  const char *whole)
{
    size_t n = strlen(copy);

    for (size_t k = 0; k <= len; k++)
        if (strcmp(heads[k], copy) == 0 && strncmp(whole, copy, n) == 0 && strcmp(whole + n, tails[k]) == 0 &&
            shown_len(heads[k]) + shown_len(tails[k]) == shown_len(whole))
            return 1;
    return 0;
}

/* Every text of one to three bytes from a set that covers each class of
 * byte: shown twice is shown once (nothing left to escape), its shown form
 * takes as many columns as shown_len says, and shown_copy cut at each size
 * keeps a prefix that ends between two characters, or all of it when it
 * fits. */
static void test_every_short_text(void)
{
    static const unsigned char bytes[] = {0x01, 0x09, 0x0a, 0x1b, 0x1f, ' ', 'a', '\\', 0x7f, 0x80, 0x82, 0x9b,
                                          0x9f, 0xa0, 0xbf, 0xc0, 0xc2, 0xc3, 0xdf, 0xe0, 0xe2, 0xed, 0xef,
                                          0xf0, 0xf4, 0xf5, 0xff};
    const size_t n = sizeof bytes;
    size_t texts = 0, failures = 0;
    char first[64] = "";

    for (size_t a = 0; a < n; a++)
        for (size_t b = 0; b <= n; b++)
            for (size_t c = 0; c <= (b < n ? n : 0); c++) {
                char v[4] = {(char)bytes[a], b < n ? (char)bytes[b] : 0, b < n && c < n ? (char)bytes[c] : 0, 0};
                size_t len = strlen(v);
                char *once = put(v), *twice = once ? put(once) : NULL, copy[SHOWN_COPY_CAP(3)];
                char *heads[4] = {0}, *tails[4] = {0}, head[4];
                int ok = once && twice && strcmp(once, twice) == 0 && shown_len(once) == shown_len(v) &&
                         strlen(once) < sizeof copy;

                for (size_t k = 0; k <= len; k++) {
                    memcpy(head, v, k);
                    head[k] = '\0';
                    heads[k] = put(head);
                    tails[k] = put(v + k);
                    ok = ok && heads[k] && tails[k];
                }
                for (size_t cap = 1; ok && cap <= sizeof copy; cap++) {
                    shown_copy(copy, cap, v);
                    ok = strlen(copy) < cap && cut_between_characters(len, heads, tails, copy, once) &&
                         (strlen(once) >= cap || strcmp(copy, once) == 0);
                }
                texts++;
                if (!ok && failures++ == 0)
                    snprintf(first, sizeof first, "%02x %02x %02x", bytes[a], (unsigned char)v[1],
                             (unsigned char)v[2]);
                for (size_t k = 0; k <= len; k++) {
                    free(heads[k]);
                    free(tails[k]);
                }
                free(once);
                free(twice);
            }
    tap_ok(failures == 0, "shown: %zu short texts, %zu wrong%s%s", texts, failures, failures ? ", the first " : "",
           first);
}

void test_shown(void)
{
    test_examples();
    test_every_short_text();
}

/* Unit tests of the pure core (signature, event parsing, master key file, text
 * shown on a terminal) and of the shared counters. TAP output; the exit
 * status is non-zero when any test failed. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include <sodium.h>

#include "tap.h"

static int n_run, n_failed;

void tap_ok(int passed, const char *fmt, ...)
{
    va_list ap;
    n_run++;
    if (!passed) n_failed++;
    printf("%sok %d - ", passed ? "" : "not ", n_run);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

char *tap_read_file(const char *path, size_t *len)
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

const char *tap_fixtures_dir(void)
{
    const char *d = getenv("PADDLEHOOK_FIXTURES");
    return d && *d ? d : "tests/fixtures/paddle";
}

int main(void)
{
    if (sodium_init() < 0) return 1;
    test_sig();
    test_event();
    test_template();
    test_masterkey();
    test_stats();
    test_shown();
    printf("1..%d\n# %d passed, %d failed\n", n_run, n_run - n_failed, n_failed);
    return n_failed ? 1 : 0;
}

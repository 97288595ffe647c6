/* tap.h - a minimal TAP producer for the C unit tests. */
#ifndef PADDLEHOOK_TAP_H
#define PADDLEHOOK_TAP_H

#include <stddef.h>

/* Records one result: prints "ok N - name" or "not ok N - name". */
void tap_ok(int passed, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads a whole file; caller frees. NULL on failure. */
char *tap_read_file(const char *path, size_t *len);

/* Directory of the Paddle fixtures (PADDLEHOOK_FIXTURES or tests/fixtures/paddle). */
const char *tap_fixtures_dir(void);

void test_sig(void);
void test_event(void);
void test_template(void);
void test_masterkey(void);
void test_stats(void);
void test_shown(void);

#endif

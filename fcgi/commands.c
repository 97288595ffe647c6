/* commands.c - migrate, keygen, sign and serve: thin wrappers that turn
 * options into calls of the modules that do the work. */
#include "commands.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "db.h"
#include "endpoint_cmd.h"
#include "masterkey.h"
#include "migrate.h"
#include "serve.h"
#include "sig.h"

int command_migrate(const struct config *cfg)
{
    char err[512];
    unsigned applied = 0;
    PGconn *conn = db_connect_or_say(cfg->db);
    int rc = 1;

    if (conn == NULL) return 1;
    if (migrate_apply(conn, cfg->db, &applied, err, sizeof err) != 0) {
        fprintf(stderr, "paddlehook: %s\n", err);
        goto out;
    }
    if (applied) printf("applied %u migration(s); ", applied);
    printf("schema is current\n");
    rc = 0;
out:
    PQfinish(conn);
    return rc;
}

int command_keygen(const struct config *cfg)
{
    char err[512];

    if (cfg->out == NULL) {
        fprintf(stderr, "usage: paddlehook keygen --out FILE\n");
        return 2;
    }
    if (masterkey_generate(cfg->out, err, sizeof err) != 0) {
        fprintf(stderr, "paddlehook: %s\n", err);
        return 1;
    }
    printf("wrote a new master key to %s (mode 0600); back it up: without it the stored "
           "endpoint secrets cannot be read\n", cfg->out);
    return 0;
}

/* Reads all of stdin, at most MAX_BODY_CEILING bytes. A read error is not
 * the end of the body: signing what came before it would sign the wrong body. */
static unsigned char *read_stdin(size_t *len, char *err, size_t errlen)
{
    size_t cap = 64 * 1024, n = 0;
    unsigned char *buf = malloc(cap), *grown;

    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, stdin);
        n += got;
        if (n > MAX_BODY_CEILING) {
            snprintf(err, errlen, "the body is over %d bytes", MAX_BODY_CEILING);
            goto fail;
        }
        if (got == 0) break;
        if (n == cap) {
            /* Room for one byte past the ceiling tells a body of exactly the ceiling from a longer one. */
            size_t next = cap * 2 > MAX_BODY_CEILING ? (size_t)MAX_BODY_CEILING + 1 : cap * 2;
            grown = realloc(buf, next);
            if (grown == NULL) free(buf);
            buf = grown;
            cap = next;
        }
    }
    if (buf == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (ferror(stdin)) {
        snprintf(err, errlen, "standard input: %s", strerror(errno));
        goto fail;
    }
    *len = n;
    return buf;
fail:
    free(buf);
    return NULL;
}

int command_sign(const struct config *cfg)
{
    char secret[MAX_SECRET_LEN + 2], header[SIG_HEADER_BUF], err[256];
    unsigned char *body = NULL;
    size_t body_len = 0;
    FILE *f = NULL;
    int len, rc = 1;

    if (cfg->secret_file == NULL) {
        fprintf(stderr, "usage: paddlehook sign --secret-file FILE [--ts UNIX] < body\n");
        return 2;
    }
    f = fopen(cfg->secret_file, "r");
    if (f == NULL) {
        fprintf(stderr, "paddlehook: cannot open %s: %s\n", cfg->secret_file, strerror(errno));
        goto out;
    }
    len = endpoint_cmd_read_secret(f, secret, sizeof secret, err, sizeof err);
    if (len < 0) {
        fprintf(stderr, "paddlehook: %s: %s\n", cfg->secret_file, err);
        goto out;
    }
    body = read_stdin(&body_len, err, sizeof err);
    if (body == NULL) {
        fprintf(stderr, "paddlehook: cannot read the body: %s\n", err);
        goto out;
    }
    {
        struct sig_secret s = {.key = secret, .len = (size_t)len};
        sig_format(&s, cfg->ts ? cfg->ts : (int64_t)time(NULL), body, body_len, header);
    }
    printf("%s\n", header);
    rc = 0;
out:
    sodium_memzero(secret, sizeof secret);
    if (f) fclose(f);
    free(body);
    return rc;
}

int command_serve(const struct config *cfg)
{
    struct masterkey mk;
    char err[512];
    int rc;

    if (masterkey_load(cfg->key_file, &mk, err, sizeof err) != 0) {
        fprintf(stderr, "paddlehook: %s\n", err);
        return 1;
    }
    rc = serve_run(cfg, &mk);
    masterkey_wipe(&mk);
    return rc;
}

/* config.h - settings from the config file, the environment and the
 * command line (each overriding the one before). Read once at start;
 * read-only afterwards. */
#ifndef PADDLEHOOK_CONFIG_H
#define PADDLEHOOK_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "limits.h"
#include "log.h"

struct config {
    const char *db;           /* --db, PADDLEHOOK_DB, else libpq defaults */
    const char *key_file;     /* --key-file, PADDLEHOOK_KEY_FILE */
    const char *listen;       /* --listen unix:/path | host:port, as given; NULL = fd 0 */
    const char *listen_path;  /* unix:'s path; NULL for a TCP address */
    char listen_host[MAX_LISTEN_HOST_LEN + 1]; /* without [ ]; "" = every address */
    char listen_port[MAX_LISTEN_PORT_DIGITS + 1];
    int workers;              /* --workers, PADDLEHOOK_WORKERS */
    size_t max_body;          /* --max-body, PADDLEHOOK_MAX_BODY */
    unsigned socket_mode;     /* --socket-mode (octal) for unix sockets */
    enum log_level log_level; /* --log-level, PADDLEHOOK_LOG_LEVEL */
    int log_json;             /* --log-format json */
    const char *stats_file;   /* --stats-file: counters shared by workers */
    const char *config_file;  /* the file read, NULL when none */
    const char *old_key_file; /* rekey --old-key-file */
    const char *environment;  /* --environment sandbox|live; NULL = not given */
    const char *since;        /* report/reproject --since */
    const char *format;       /* report --format table|csv|json */
    const char *url;          /* simulate --url */
    int tolerance;            /* endpoint add --tolerance */
    const char *out;          /* keygen --out */
    const char *secret_file;  /* sign --secret-file */
    int64_t ts;               /* sign --ts; 0 = now */
    char **args;              /* positional arguments after the subcommand */
    int n_args;
};

#define CONFIG_DEFAULT_FILE "/etc/paddlehook/paddlehook.conf"
#define CONFIG_DEFAULT_STATS_FILE "/run/paddlehook/stats"

/* Parses argv (argv[0] is the subcommand) over the environment over the
 * config file (--config, PADDLEHOOK_CONFIG, else CONFIG_DEFAULT_FILE when it
 * exists). 0, or -1 with a message in err. */
int config_parse(int argc, char **argv, struct config *cfg, char *err, size_t errlen);

/* A decimal number from min to max, the whole of s: 0, or -1 (out untouched). */
int config_parse_long(const char *s, long min, long max, long *out);

#endif

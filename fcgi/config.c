/* config.c - getopt_long over every subcommand's options, so all commands
 * spell options the same way, with PADDLEHOOK_* environment fallbacks. */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "limits.h"

#define DEFAULT_WORKERS 4
#define DEFAULT_SOCKET_MODE 0660

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v;
    if (s == NULL || *s == '\0') return -1;
    v = strtol(s, &end, 10);
    if (*end != '\0' || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return (v && *v) ? v : fallback;
}

int config_parse(int argc, char **argv, struct config *cfg, char *err, size_t errlen)
{
    enum { O_DB = 256, O_KEY, O_LISTEN, O_WORKERS, O_MAX_BODY, O_SOCKET_MODE, O_LOG_LEVEL,
           O_ENV, O_TOL, O_OUT, O_SECRET_FILE, O_TS, O_SINCE, O_FORMAT, O_URL };
    static const struct option opts[] = {
        {"db", required_argument, NULL, O_DB},
        {"key-file", required_argument, NULL, O_KEY},
        {"listen", required_argument, NULL, O_LISTEN},
        {"workers", required_argument, NULL, O_WORKERS},
        {"max-body", required_argument, NULL, O_MAX_BODY},
        {"socket-mode", required_argument, NULL, O_SOCKET_MODE},
        {"log-level", required_argument, NULL, O_LOG_LEVEL},
        {"environment", required_argument, NULL, O_ENV},
        {"tolerance", required_argument, NULL, O_TOL},
        {"out", required_argument, NULL, O_OUT},
        {"secret-file", required_argument, NULL, O_SECRET_FILE},
        {"ts", required_argument, NULL, O_TS},
        {"since", required_argument, NULL, O_SINCE},
        {"format", required_argument, NULL, O_FORMAT},
        {"url", required_argument, NULL, O_URL},
        {NULL, 0, NULL, 0},
    };
    const char *workers = env_or("PADDLEHOOK_WORKERS", NULL);
    const char *max_body = env_or("PADDLEHOOK_MAX_BODY", NULL);
    const char *log_level = env_or("PADDLEHOOK_LOG_LEVEL", "info");
    long v;
    int c;

    memset(cfg, 0, sizeof *cfg);
    cfg->db = env_or("PADDLEHOOK_DB", "");
    cfg->key_file = env_or("PADDLEHOOK_KEY_FILE", NULL);
    cfg->workers = DEFAULT_WORKERS;
    cfg->max_body = MAX_BODY_DEFAULT;
    cfg->socket_mode = DEFAULT_SOCKET_MODE;
    cfg->format = "table";
    cfg->tolerance = SIG_TOLERANCE_DEFAULT;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_DB: cfg->db = optarg; break;
        case O_KEY: cfg->key_file = optarg; break;
        case O_LISTEN: cfg->listen = optarg; break;
        case O_WORKERS: workers = optarg; break;
        case O_MAX_BODY: max_body = optarg; break;
        case O_LOG_LEVEL: log_level = optarg; break;
        case O_ENV: cfg->environment = optarg; break;
        case O_OUT: cfg->out = optarg; break;
        case O_SECRET_FILE: cfg->secret_file = optarg; break;
        case O_SINCE: cfg->since = optarg; break;
        case O_FORMAT: cfg->format = optarg; break;
        case O_URL: cfg->url = optarg; break;
        case O_SOCKET_MODE: {
            char *end = NULL;
            unsigned long m = strtoul(optarg, &end, 8);
            if (*optarg == '\0' || *end != '\0' || m > 0777) {
                snprintf(err, errlen, "--socket-mode takes an octal mode such as 0660");
                return -1;
            }
            cfg->socket_mode = (unsigned)m;
            break;
        }
        case O_TOL:
            if (parse_long(optarg, 1, SIG_TOLERANCE_MAX, &v) != 0) {
                snprintf(err, errlen, "--tolerance takes seconds from 1 to %d", SIG_TOLERANCE_MAX);
                return -1;
            }
            cfg->tolerance = (int)v;
            break;
        case O_TS:
            if (parse_long(optarg, 1, 999999999999L, &v) != 0) {
                snprintf(err, errlen, "--ts takes unix seconds");
                return -1;
            }
            cfg->ts = v;
            break;
        default:
            snprintf(err, errlen, "unknown or incomplete option '%s'", argv[optind - 1]);
            return -1;
        }
    }
    if (workers) {
        if (parse_long(workers, 1, MAX_WORKERS, &v) != 0) {
            snprintf(err, errlen, "workers must be from 1 to %d", MAX_WORKERS);
            return -1;
        }
        cfg->workers = (int)v;
    }
    if (max_body) {
        if (parse_long(max_body, 1, MAX_BODY_CEILING, &v) != 0) {
            snprintf(err, errlen, "max body must be from 1 to %d bytes", MAX_BODY_CEILING);
            return -1;
        }
        cfg->max_body = (size_t)v;
    }
    if (log_level_parse(log_level, &cfg->log_level) != 0) {
        snprintf(err, errlen, "log level must be error, warn, info or debug");
        return -1;
    }
    if (cfg->environment && strcmp(cfg->environment, "sandbox") != 0 &&
        strcmp(cfg->environment, "live") != 0) {
        snprintf(err, errlen, "--environment must be sandbox or live");
        return -1;
    }
    if (strcmp(cfg->format, "table") != 0 && strcmp(cfg->format, "csv") != 0 &&
        strcmp(cfg->format, "json") != 0) {
        snprintf(err, errlen, "--format must be table, csv or json");
        return -1;
    }
    cfg->args = argv + optind;
    cfg->n_args = argc - optind;
    return 0;
}

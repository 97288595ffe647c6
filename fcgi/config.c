/* config.c - one table of settings, filled in three layers: the config file
 * (`key = value` lines), then PADDLEHOOK_* environment variables, then
 * command-line options. Values are validated once, after all layers, so an
 * error names the setting whatever layer it came from. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db.h"
#include "limits.h"

#define DEFAULT_WORKERS 4
#define DEFAULT_SOCKET_MODE "0660"
#define CONFIG_LINE_MAX 1024
#define CONFIG_MAX_LINES 1000
/* An invalid value is quoted in its error up to this many bytes. */
#define CONFIG_QUOTED_VALUE_MAX 64
/* Room for libpq's reason why it cannot read db. */
#define CONFIG_WHY_MAX 256
/* Room for where a value came from: the config file's path and line, or a name. */
#define CONFIG_SOURCE_MAX 512

/* Settings that the file, the environment and an option can all set. */
enum { S_DB, S_KEY_FILE, S_LISTEN, S_WORKERS, S_MAX_BODY, S_SOCKET_MODE, S_LOG_LEVEL, S_LOG_FORMAT,
       S_TOLERANCE, S_STATS_FILE, S_COUNT };

static const struct {
    const char *key;  /* in the file and, with --, as option */
    const char *env;
} settings[S_COUNT] = {
    [S_DB] = {"db", "PADDLEHOOK_DB"},
    [S_KEY_FILE] = {"key_file", "PADDLEHOOK_KEY_FILE"},
    [S_LISTEN] = {"listen", "PADDLEHOOK_LISTEN"},
    [S_WORKERS] = {"workers", "PADDLEHOOK_WORKERS"},
    [S_MAX_BODY] = {"max_body", "PADDLEHOOK_MAX_BODY"},
    [S_SOCKET_MODE] = {"socket_mode", "PADDLEHOOK_SOCKET_MODE"},
    [S_LOG_LEVEL] = {"log_level", "PADDLEHOOK_LOG_LEVEL"},
    [S_LOG_FORMAT] = {"log_format", "PADDLEHOOK_LOG_FORMAT"},
    [S_TOLERANCE] = {"tolerance", "PADDLEHOOK_TOLERANCE"},
    [S_STATS_FILE] = {"stats_file", "PADDLEHOOK_STATS_FILE"},
};

/* Where a setting's value came from: an error names it, since the same
 * setting can be in three places. */
enum origin { FROM_DEFAULT, FROM_FILE, FROM_ENV, FROM_OPTION };
struct source {
    enum origin from;
    int line; /* in the config file */
};

/* Options that belong to one command only. */
enum { O_CONFIG = S_COUNT + 256, O_ENV, O_OUT, O_SECRET_FILE, O_TS, O_SINCE, O_FORMAT, O_URL,
       O_OLD_KEY };

int config_parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v;
    if (s == NULL || *s == '\0') return -1;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end != '\0' || v < min || v > max) return -1;
    *out = v;
    return 0;
}

static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t') s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r')) *--e = '\0';
    return s;
}

/* Values read from the config file, kept for the process's lifetime
 * (configuration is read once; struct config points into them). */
static char *file_values[S_COUNT];

/* Reads `key = value` lines into values[]. */
static int read_file(const char *path, int required, const char *values[S_COUNT], struct source src[S_COUNT],
                     char *err, size_t errlen)
{
    char line[CONFIG_LINE_MAX];
    FILE *f = fopen(path, "r");
    int n = 0, rc = -1;

    if (f == NULL) {
        if (!required && errno == ENOENT) return 1;
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof line, f)) {
        char *key, *value, *eq;
        int s;
        n++;
        if (n > CONFIG_MAX_LINES || (strlen(line) == sizeof line - 1 && line[sizeof line - 2] != '\n')) {
            snprintf(err, errlen, "%s:%d: line too long or file too large", path, n);
            goto out;
        }
        key = trim(line);
        if (*key == '\0' || *key == '#') continue;
        eq = strchr(key, '=');
        if (eq == NULL) {
            snprintf(err, errlen, "%s:%d: expected key = value", path, n);
            goto out;
        }
        *eq = '\0';
        key = trim(key);
        value = trim(eq + 1);
        for (s = 0; s < S_COUNT && strcmp(settings[s].key, key) != 0; s++) continue;
        if (s == S_COUNT) {
            snprintf(err, errlen, "%s:%d: unknown setting '%s'", path, n, key);
            goto out;
        }
        /* Which of two would win is no rule anyone reading the file should need. */
        if (src[s].from == FROM_FILE) {
            snprintf(err, errlen, "%s:%d: %s is set already, on line %d", path, n, key, src[s].line);
            goto out;
        }
        free(file_values[s]);
        values[s] = file_values[s] = strdup(value);
        src[s] = (struct source){FROM_FILE, n};
        if (values[s] == NULL) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}

/* The config file named by --config (option, NULL if not given),
 * PADDLEHOOK_CONFIG, or the default. */
static const char *config_path(const char *option, int *required)
{
    const char *env = getenv("PADDLEHOOK_CONFIG");
    if (option) return *required = 1, option;
    if (env && *env) return *required = 1, env;
    *required = 0;
    return CONFIG_DEFAULT_FILE;
}

/* listen into its parts: unix:/PATH (absolute, without ':', at most
 * MAX_LISTEN_PATH_LEN bytes), or HOST:PORT, [IPv6]:PORT or :PORT with a
 * port 1-65535 (:::PORT and [::]:PORT are :PORT). An IPv6 address needs its
 * brackets: in ::1 or 2001:db8::1:5 no one can tell where the port starts.
 * The host is resolved by serve, when it starts. */
static int parse_listen(const char *v, struct config *cfg)
{
    const char *colon = strrchr(v, ':'), *host = v, *port = colon ? colon + 1 : "";
    size_t host_len = colon ? (size_t)(colon - v) : 0;
    int bracketed, any_ipv6;
    long n;

    cfg->listen = v;
    if (strncmp(v, "unix:", 5) == 0) {
        cfg->listen_path = v + 5;
        return *cfg->listen_path == '/' && strchr(cfg->listen_path, ':') == NULL &&
                       strlen(cfg->listen_path) <= MAX_LISTEN_PATH_LEN ? 0 : -1;
    }
    bracketed = host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']';
    if (bracketed) {
        host++;
        host_len -= 2;
    }
    any_ipv6 = host_len == 2 && strncmp(host, "::", 2) == 0;
    if (colon == NULL || (bracketed && host_len == 0) || (!bracketed && memchr(host, ':', host_len) && !any_ipv6) ||
        host_len > MAX_LISTEN_HOST_LEN || strlen(port) > MAX_LISTEN_PORT_DIGITS ||
        strspn(port, "0123456789") != strlen(port) || config_parse_long(port, 1, 65535, &n) != 0)
        return -1;
    /* :: is every address, as an empty host is: the same dual-stack socket, or a refusal without IPv4. */
    if (any_ipv6) host_len = 0;
    memcpy(cfg->listen_host, host, host_len);
    cfg->listen_host[host_len] = '\0';
    memcpy(cfg->listen_port, port, strlen(port) + 1);
    return 0;
}

/* Sets *bad to the setting whose value is wrong (-1 for an option of one command). */
static int validate(const char *values[S_COUNT], struct config *cfg, int *bad, char *err, size_t errlen)
{
    long v;
    char *end = NULL, why[CONFIG_WHY_MAX];
    unsigned long mode;

    *bad = -1;

    cfg->db = values[S_DB] ? values[S_DB] : "";
    if (db_conninfo_check(cfg->db, why, sizeof why) != 0) {
        *bad = S_DB;
        snprintf(err, errlen, "db is not a connection string libpq can read: %s", why);
        return -1;
    }
    cfg->key_file = values[S_KEY_FILE];
    if (values[S_LISTEN] && *values[S_LISTEN] && parse_listen(values[S_LISTEN], cfg) != 0) {
        *bad = S_LISTEN;
        snprintf(err, errlen, "listen takes unix:/PATH (absolute, without ':', at most %d bytes), HOST:PORT, "
                              "[IPv6]:PORT or :PORT (port 1 to 65535)", MAX_LISTEN_PATH_LEN);
        return -1;
    }
    cfg->stats_file = values[S_STATS_FILE] ? values[S_STATS_FILE] : CONFIG_DEFAULT_STATS_FILE;
    if (config_parse_long(values[S_WORKERS], 1, MAX_WORKERS, &v) != 0) {
        *bad = S_WORKERS;
        snprintf(err, errlen, "workers must be from 1 to %d", MAX_WORKERS);
        return -1;
    }
    cfg->workers = (int)v;
    if (config_parse_long(values[S_MAX_BODY], 1, MAX_BODY_CEILING, &v) != 0) {
        *bad = S_MAX_BODY;
        snprintf(err, errlen, "max_body must be from 1 to %d bytes", MAX_BODY_CEILING);
        return -1;
    }
    cfg->max_body = (size_t)v;
    if (config_parse_long(values[S_TOLERANCE], 1, SIG_TOLERANCE_MAX, &v) != 0) {
        *bad = S_TOLERANCE;
        snprintf(err, errlen, "tolerance takes seconds from 1 to %d", SIG_TOLERANCE_MAX);
        return -1;
    }
    cfg->tolerance = (int)v;
    /* Octal digits only: strtoul alone would take "-0" or " +660". */
    mode = strtoul(values[S_SOCKET_MODE], &end, 8);
    if (strspn(values[S_SOCKET_MODE], "01234567") != strlen(values[S_SOCKET_MODE]) ||
        *values[S_SOCKET_MODE] == '\0' || *end != '\0' || mode > 0777) {
        *bad = S_SOCKET_MODE;
        snprintf(err, errlen, "socket_mode takes an octal mode such as 0660");
        return -1;
    }
    cfg->socket_mode = (unsigned)mode;
    if (log_level_parse(values[S_LOG_LEVEL], &cfg->log_level) != 0) {
        *bad = S_LOG_LEVEL;
        snprintf(err, errlen, "log_level must be error, warn, info or debug");
        return -1;
    }
    if (strcmp(values[S_LOG_FORMAT], "kv") != 0 && strcmp(values[S_LOG_FORMAT], "json") != 0) {
        *bad = S_LOG_FORMAT;
        snprintf(err, errlen, "log_format must be kv or json");
        return -1;
    }
    cfg->log_json = strcmp(values[S_LOG_FORMAT], "json") == 0;
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
    return 0;
}

/* Appends where the bad value came from to err. */
static void name_source(const struct config *cfg, int bad, const char *value, struct source src, char *err,
                        size_t errlen)
{
    size_t used = strlen(err);
    char where[CONFIG_SOURCE_MAX];

    switch (src.from) {
    case FROM_DEFAULT: snprintf(where, sizeof where, "the default"); break;
    case FROM_FILE: snprintf(where, sizeof where, "%s:%d", cfg->config_file, src.line); break;
    case FROM_ENV: snprintf(where, sizeof where, "%s", settings[bad].env); break;
    case FROM_OPTION: snprintf(where, sizeof where, "--%s", settings[bad].key); break;
    }
    if (src.from == FROM_OPTION)
        for (char *c = where; *c; c++) *c = *c == '_' ? '-' : *c;
    /* db is not quoted: it may hold a password. */
    if (bad == S_DB)
        snprintf(err + used, errlen - used, " (%s)", where);
    else
        snprintf(err + used, errlen - used, " (%s: '%.*s'%s)", where, CONFIG_QUOTED_VALUE_MAX, value,
                 src.from == FROM_FILE && strchr(value, '#') ? "; a comment goes on a line of its own" : "");
}

int config_parse(int argc, char **argv, struct config *cfg, char *err, size_t errlen)
{
    static char workers_default[16], max_body_default[16], tolerance_default[16];
    static const struct option opts[] = {
        {"db", required_argument, NULL, S_DB + 256},
        {"key-file", required_argument, NULL, S_KEY_FILE + 256},
        {"listen", required_argument, NULL, S_LISTEN + 256},
        {"workers", required_argument, NULL, S_WORKERS + 256},
        {"max-body", required_argument, NULL, S_MAX_BODY + 256},
        {"socket-mode", required_argument, NULL, S_SOCKET_MODE + 256},
        {"log-level", required_argument, NULL, S_LOG_LEVEL + 256},
        {"log-format", required_argument, NULL, S_LOG_FORMAT + 256},
        {"tolerance", required_argument, NULL, S_TOLERANCE + 256},
        {"stats-file", required_argument, NULL, S_STATS_FILE + 256},
        {"config", required_argument, NULL, O_CONFIG},
        {"environment", required_argument, NULL, O_ENV},
        {"out", required_argument, NULL, O_OUT},
        {"secret-file", required_argument, NULL, O_SECRET_FILE},
        {"ts", required_argument, NULL, O_TS},
        {"since", required_argument, NULL, O_SINCE},
        {"format", required_argument, NULL, O_FORMAT},
        {"url", required_argument, NULL, O_URL},
        {"old-key-file", required_argument, NULL, O_OLD_KEY},
        {NULL, 0, NULL, 0},
    };
    const char *values[S_COUNT] = {0}, *config_option = NULL;
    struct source src[S_COUNT] = {0};
    int required, c, r, bad;
    long v;

    memset(cfg, 0, sizeof *cfg);
    cfg->format = "table";
    snprintf(workers_default, sizeof workers_default, "%d", DEFAULT_WORKERS);
    snprintf(max_body_default, sizeof max_body_default, "%d", MAX_BODY_DEFAULT);
    snprintf(tolerance_default, sizeof tolerance_default, "%d", SIG_TOLERANCE_DEFAULT);
    values[S_WORKERS] = workers_default;
    values[S_MAX_BODY] = max_body_default;
    values[S_TOLERANCE] = tolerance_default;
    values[S_SOCKET_MODE] = DEFAULT_SOCKET_MODE;
    values[S_LOG_LEVEL] = "info";
    values[S_LOG_FORMAT] = "kv";

    /* The file is read before the options, which override it; getopt_long
     * itself finds --config, so that every spelling it takes (--conf FILE,
     * --config=FILE) names the file. Errors are the second pass's. */
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1)
        if (c == O_CONFIG) config_option = optarg;
    cfg->config_file = config_path(config_option, &required);
    r = read_file(cfg->config_file, required, values, src, err, errlen);
    if (r < 0) return -1;
    if (r > 0) cfg->config_file = NULL;
    for (int s = 0; s < S_COUNT; s++) {
        const char *e = getenv(settings[s].env);
        if (e && *e) values[s] = e, src[s] = (struct source){FROM_ENV, 0};
    }

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c >= 256 && c < 256 + S_COUNT) {
            values[c - 256] = optarg;
            src[c - 256] = (struct source){FROM_OPTION, 0};
            continue;
        }
        switch (c) {
        case O_CONFIG: break; /* read above */
        case O_ENV: cfg->environment = optarg; break;
        case O_OUT: cfg->out = optarg; break;
        case O_SECRET_FILE: cfg->secret_file = optarg; break;
        case O_SINCE: cfg->since = optarg; break;
        case O_FORMAT: cfg->format = optarg; break;
        case O_URL: cfg->url = optarg; break;
        case O_OLD_KEY: cfg->old_key_file = optarg; break;
        case O_TS:
            if (config_parse_long(optarg, 1, 999999999999L, &v) != 0) {
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
    if (validate(values, cfg, &bad, err, errlen) != 0) {
        if (bad >= 0) name_source(cfg, bad, values[bad], src[bad], err, errlen);
        return -1;
    }
    cfg->args = argv + optind;
    cfg->n_args = argc - optind;
    return 0;
}

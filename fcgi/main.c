/* main.c - paddlehook: receive Paddle Billing webhooks into PostgreSQL.
 * Dispatches to the subcommands; README.md describes them. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

#include "checkconfig.h"
#include "commands.h"
#include "config.h"
#include "endpoint_cmd.h"
#include "log.h"
#include "rekey.h"
#include "report.h"
#include "serve.h"
#include "simulate.h"
#include "status.h"
#include "version.h"

static void usage(FILE *out)
{
    fputs("usage: paddlehook COMMAND [OPTIONS]\n"
          "\n"
          "commands:\n"
          "  migrate                          apply the SQL migrations (idempotent)\n"
          "  keygen --out FILE                write a new master key (mode 0600)\n"
          "  endpoint add NAME [--environment sandbox|live] [--tolerance SECONDS]  (secret on stdin)\n"
          "  endpoint list | rotate ID | retire-secret ID | disable ID | enable ID\n"
          "  endpoint set-tolerance ID SECONDS\n"
          "  serve [--listen unix:/PATH | HOST:PORT] [--workers N] [--max-body BYTES]\n"
          "        [--socket-mode MODE]\n"
          "  sign --secret-file FILE [--ts UNIX]   print a Paddle-Signature for stdin\n"
          "  report [NAME] [--environment E] [--since DATE] [--format table|csv|json]\n"
          "  reproject [--since TIMESTAMP]    rebuild the state tables from the stored events\n"
          "  simulate [SCENARIO|all] --url URL --secret-file FILE   send a signed lifecycle\n"
          "  status                           per endpoint: last event, outcomes in the last hour/day\n"
          "  check-config                     validate configuration, key, database and schema\n"
          "  rekey --old-key-file OLD --key-file NEW   re-seal endpoint secrets with a new key\n"
          "  help, --help                     print this\n"
          "  version, --version               print the version this binary was built from\n"
          "\n"
          "common options (every command accepts and validates them all; each takes effect\n"
          "where it applies):\n"
          "  --db CONNINFO      database (else PADDLEHOOK_DB, else libpq's PG* defaults)\n"
          "  --key-file FILE    master key (else PADDLEHOOK_KEY_FILE)\n"
          "  --log-level LEVEL  error, warn, info (default) or debug\n"
          "  --log-format FMT   kv (default) or json\n"
          "  --config FILE      settings file (else PADDLEHOOK_CONFIG, else " CONFIG_DEFAULT_FILE ")\n"
          "  --stats-file FILE  shared counters of serve (default " CONFIG_DEFAULT_STATS_FILE ")\n"
          "  --max-body BYTES   largest body serve accepts, 1 to 67108864 (default 1048576)\n"
          "  --socket-mode MODE octal mode of a unix socket serve creates, at most 0777 (default 0660)\n"
          "  --tolerance SECONDS  default for endpoint add, 1 to 604800 (default 300)\n",
          out);
}

/* Each command with the most operands it takes: a stray one is a usage
 * error, not something quietly ignored (`reproject 2024-06-01` must not
 * rebuild everything). `endpoint` checks its own, per action. */
#define OPERANDS_CHECKED_BY_COMMAND (-1)

static const struct command {
    const char *name;
    int max_args;
    int (*run)(const struct config *cfg);
} commands[] = {
    {"migrate", 0, command_migrate},
    {"keygen", 0, command_keygen},
    {"endpoint", OPERANDS_CHECKED_BY_COMMAND, endpoint_cmd_run},
    {"serve", 0, command_serve},
    {"sign", 0, command_sign},
    {"report", 1, report_cmd_run},
    {"reproject", 0, report_reproject_run},
    {"simulate", 1, simulate_run},
    {"status", 0, status_run},
    {"check-config", 0, checkconfig_run},
    {"rekey", 0, rekey_run},
};

static const struct command *find_command(const char *name)
{
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(commands[i].name, name) == 0) return &commands[i];
    return NULL;
}

/* The exit status of a command that ended with rc, once its output is out:
 * flushed here, not at exit, where a failed write (a full disk) would go
 * unseen and the command would exit 0. A command that failed has said why. */
static int with_output_written(const char *name, int rc)
{
    int flushed = fflush(stdout) == 0;

    if (rc == 0 && (!flushed || ferror(stdout))) {
        /* A write that failed before this flush left no errno to trust. */
        fprintf(stderr, "paddlehook %s: cannot write to standard output%s%s\n", name, flushed ? "" : ": ",
                flushed ? "" : strerror(errno));
        rc = 1;
    }
    return rc;
}

/* The command's exit status. */
static int run(int argc, char **argv, const struct command *cmd)
{
    struct config cfg;
    char err[512]; /* a message, the value quoted and where it came from */

    if (sodium_init() < 0) {
        fprintf(stderr, "paddlehook: libsodium failed to initialise\n");
        return 1;
    }
    if (config_parse(argc - 1, argv + 1, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "paddlehook %s: %s\n", cmd->name, err);
        return 2;
    }
    if (cmd->max_args != OPERANDS_CHECKED_BY_COMMAND && cfg.n_args > cmd->max_args) {
        fprintf(stderr, "paddlehook %s: unexpected argument '%s' ('paddlehook help' shows the usage)\n",
                cmd->name, cfg.args[cmd->max_args]);
        return 2;
    }
    log_set_level(cfg.log_level);
    log_set_json(cfg.log_json);
    return cmd->run(&cfg);
}

int main(int argc, char **argv)
{
    const struct command *cmd = argc >= 2 ? find_command(argv[1]) : NULL;
    int help, version;

    /* First of all: a reload (SIGHUP) sent while serve starts must wait for
     * serve's handler instead of ending it, which is its default action. */
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) serve_hold_reload();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0;
    version = strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0;
    if (cmd == NULL && !help && !version) {
        fprintf(stderr, "paddlehook: unknown command '%s'\n\n", argv[1]);
        usage(stderr);
        return 2;
    }
    if (cmd == NULL && argc > 2) {
        fprintf(stderr, "paddlehook %s: unexpected argument '%s'\n", argv[1], argv[2]);
        return 2;
    }
    if (help) usage(stdout);
    if (version) printf("paddlehook %s\n", PADDLEHOOK_VERSION);
    return with_output_written(argv[1], cmd ? run(argc, argv, cmd) : 0);
}

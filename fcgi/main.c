/* main.c - paddlehook: receive Paddle Billing webhooks into PostgreSQL.
 * Dispatches to the subcommands; README.md describes them. */
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
          "  serve [--listen unix:/PATH | HOST:PORT] [--workers N] [--max-body BYTES]\n"
          "        [--socket-mode MODE]\n"
          "  sign --secret-file FILE [--ts UNIX]   print a Paddle-Signature for stdin\n"
          "  report [NAME] [--environment E] [--since DATE] [--format table|csv|json]\n"
          "  reproject [--since TIMESTAMP]    rebuild the state tables from the stored events\n"
          "  simulate [SCENARIO|all] --url URL --secret-file FILE   send a signed lifecycle\n"
          "  status                           per endpoint: last event, outcomes in the last hour/day\n"
          "  check-config                     validate configuration, key, database and schema\n"
          "  rekey --old-key-file OLD --key-file NEW   re-seal endpoint secrets with a new key\n"
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

int main(int argc, char **argv)
{
    struct config cfg;
    char err[256];
    const char *cmd;

    /* First of all: a reload (SIGHUP) sent while serve starts must wait for
     * serve's handler instead of ending it, which is its default action. */
    if (argc >= 2 && strcmp(argv[1], "serve") == 0) serve_hold_reload();
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
        printf("paddlehook %s\n", PADDLEHOOK_VERSION);
        return 0;
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "paddlehook: libsodium failed to initialise\n");
        return 1;
    }
    cmd = argv[1];
    if (config_parse(argc - 1, argv + 1, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "paddlehook %s: %s\n", cmd, err);
        return 2;
    }
    log_set_level(cfg.log_level);
    log_set_json(cfg.log_json);
    if (strcmp(cmd, "migrate") == 0) return command_migrate(&cfg);
    if (strcmp(cmd, "keygen") == 0) return command_keygen(&cfg);
    if (strcmp(cmd, "endpoint") == 0) return endpoint_cmd_run(&cfg);
    if (strcmp(cmd, "serve") == 0) return command_serve(&cfg);
    if (strcmp(cmd, "sign") == 0) return command_sign(&cfg);
    if (strcmp(cmd, "report") == 0) return report_cmd_run(&cfg);
    if (strcmp(cmd, "reproject") == 0) return report_reproject_run(&cfg);
    if (strcmp(cmd, "simulate") == 0) return simulate_run(&cfg);
    if (strcmp(cmd, "status") == 0) return status_run(&cfg);
    if (strcmp(cmd, "check-config") == 0) return checkconfig_run(&cfg);
    if (strcmp(cmd, "rekey") == 0) return rekey_run(&cfg);
    fprintf(stderr, "paddlehook: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}

/* status.c - `paddlehook status`: what only the database knows (endpoints,
 * consumer queues, events whose projection failed) joined with what only the
 * running server knows (every outcome, including requests that never reached
 * the database, from the shared stats file). */
#include "status.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "db.h"
#include "shown.h"
#include "stats.h"

/* Views of sql/migrations/0021_endpoint_functions.sql and 0010 (consumer_backlog). */
#define SQL_ENDPOINTS \
    "SELECT id, name, environment, enabled, active_secrets FROM paddle.endpoint_overview ORDER BY created_at, id"
#define SQL_LAST_EVENTS                                                                       \
    "SELECT endpoint_id, to_char(last_received_at AT TIME ZONE 'UTC', "                       \
    "'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM paddle.endpoint_last_events"
#define SQL_CONSUMERS                                                                         \
    "SELECT consumer, queued, coalesce(floor(extract(epoch FROM oldest_queued_at))::bigint, 0) " \
    "FROM paddle.consumer_backlog ORDER BY consumer"
/* The partial index payment_events_projection_error_idx keeps it cheap; no row: none. */
#define SQL_PROJECTION_ERRORS                                                                 \
    "SELECT count(*) OVER (), event_id, event_type, floor(extract(epoch FROM received_at))::bigint " \
    "FROM paddle.projection_failures ORDER BY received_at DESC LIMIT 1"

static void format_ago(long long t, char *buf, size_t cap)
{
    long long ago = (long long)time(NULL) - t;
    struct tm tm;
    time_t tt = (time_t)t;
    char when[32];

    gmtime_r(&tt, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (ago < 120) snprintf(buf, cap, "%s (%llds ago)", when, ago);
    else if (ago < 7200) snprintf(buf, cap, "%s (%lldm ago)", when, ago / 60);
    else snprintf(buf, cap, "%s (%lldh ago)", when, ago / 3600);
}

/* The application's consumer queues (docs/consumers.md), when there are any:
 * a queue whose oldest row keeps ageing has a consumer that stopped claiming. */
static void print_consumers(PGconn *conn)
{
    char err[512];
    PGresult *res = db_query(conn, SQL_CONSUMERS, err, sizeof err);

    if (res == NULL) {
        printf("\nnote: consumer queues not shown: %s\n", err);
        return;
    }
    int width = (int)strlen("CONSUMER");
    for (int r = 0; r < PQntuples(res); r++)
        if (PQgetlength(res, r, 0) > width) width = PQgetlength(res, r, 0);
    if (PQntuples(res) > 0) printf("\n%-*s %10s  %s\n", width, "CONSUMER", "QUEUED", "OLDEST QUEUED");
    for (int r = 0; r < PQntuples(res); r++) {
        char when[64] = "-";
        long long oldest = strtoll(PQgetvalue(res, r, 2), NULL, 10);
        if (oldest > 0) format_ago(oldest, when, sizeof when);
        printf("%-*s %10s  %s\n", width, PQgetvalue(res, r, 0), PQgetvalue(res, r, 1), when);
    }
    PQclear(res);
}

/* Stored events whose projection failed for a reason in their data: the state
 * tables lack what they carried until someone mends it and replays them. */
static void print_projection_errors(PGconn *conn)
{
    char err[512], when[64] = "-", event_id[SHOWN_FIELD_MAX], event_type[SHOWN_FIELD_MAX];
    PGresult *res = db_query(conn, SQL_PROJECTION_ERRORS, err, sizeof err);

    if (res == NULL) {
        printf("\nnote: projection errors not shown: %s\n", err);
        return;
    }
    if (PQntuples(res) == 0) {
        printf("\nprojection errors: none\n");
    } else {
        format_ago(strtoll(PQgetvalue(res, 0, 3), NULL, 10), when, sizeof when);
        shown_copy(event_id, sizeof event_id, PQgetvalue(res, 0, 1));
        shown_copy(event_type, sizeof event_type, PQgetvalue(res, 0, 2));
        printf("\nprojection errors: %s stored event(s) missing from the state tables; newest %s %s, received %s\n"
               "  the errors: SELECT * FROM paddle.projection_failures; once mended: SELECT paddle.reproject_event(event_id)\n",
               PQgetvalue(res, 0, 0), event_id, event_type, when);
    }
    PQclear(res);
}

/* One endpoint's line: its settings from the database (NULL columns when it
 * cannot be reached) and its counters from the stats file (st NULL: none). */
static void print_endpoint(const struct stats *st, const char *id, const PGresult *eps, int r, const PGresult *last)
{
    struct stats_window hour = {0}, day = {0};
    char when[64] = "-", c1[32] = "-", c2[32] = "-", c3[32] = "-", c4[32] = "-", name[SHOWN_FIELD_MAX] = "?";
    char id_shown[SHOWN_FIELD_MAX];
    long long last_at = 0;

    if (st && stats_endpoint_windows(st, id, &hour, &day, &last_at) == 0) {
        if (last_at) format_ago(last_at, when, sizeof when);
        snprintf(c1, sizeof c1, "%llu/%llu", hour.stored, day.stored);
        snprintf(c2, sizeof c2, "%llu/%llu", hour.duplicate, day.duplicate);
        snprintf(c3, sizeof c3, "%llu/%llu", hour.signature_failures, day.signature_failures);
        snprintf(c4, sizeof c4, "%llu/%llu", hour.other_errors, day.other_errors);
    } else if (st) {
        /* No slot: no delivery yet, or every slot was taken before this endpoint's first. */
        const char *none = stats_endpoints_full(st) ? "untracked" : "0/0";
        snprintf(c1, sizeof c1, "%s", none);
        snprintf(c2, sizeof c2, "%s", none);
        snprintf(c3, sizeof c3, "%s", none);
        snprintf(c4, sizeof c4, "%s", none);
    }
    for (int l = 0; last && l < PQntuples(last); l++)
        if (strcmp(PQgetvalue(last, l, 0), id) == 0) snprintf(when, sizeof when, "%s", PQgetvalue(last, l, 1));
    /* As shown: anyone who may write the endpoint tables chooses the text. */
    shown_copy(id_shown, sizeof id_shown, id);
    if (eps) shown_copy(name, sizeof name, PQgetvalue(eps, r, 1));
    printf("%-24s %-16s %-8s %-8s %-7s %-36s %-13s %-13s %-13s %s\n", id_shown, name,
           eps ? PQgetvalue(eps, r, 2) : "?", eps ? (PQgetvalue(eps, r, 3)[0] == 't' ? "enabled" : "disabled") : "?",
           eps ? PQgetvalue(eps, r, 4) : "?", when, c1, c2, c3, c4);
}

static void print_header(void)
{
    printf("%-24s %-16s %-8s %-8s %-7s %-36s %-13s %-13s %-13s %s\n", "ENDPOINT", "NAME", "ENV", "STATE",
           "SECRETS", "LAST EVENT STORED", "STORED 1h/1d", "DUPS 1h/1d", "SIG FAIL 1h/1d", "ERRORS 1h/1d");
}

/* With the database down, the counters are what is left to show: the
 * endpoints that had deliveries since serve started. */
static void print_counters_only(const struct stats *st)
{
    printf("note: showing the counters only: the endpoints with deliveries since serve started\n\n");
    print_header();
    for (size_t i = 0; i < STATS_MAX_ENDPOINTS; i++) {
        const char *id = stats_endpoint_at(st, i);
        if (id) print_endpoint(st, id, NULL, 0, NULL);
    }
}

int status_run(const struct config *cfg)
{
    char err[512], why[256];
    int live = 0, rc = 1;
    struct stats *st = stats_snapshot(cfg->stats_file, &live, why, sizeof why);
    PGresult *eps = NULL, *last = NULL;
    PGconn *conn = db_connect_or_say(cfg->db);

    if (st) {
        char since[64];
        format_ago(stats_started_at(st), since, sizeof since);
        printf(live ? "live counters (%s) since serve started at %s\n"
                    : "counters (%s) that no serve holds: of one that stopped, or one that could not use the file "
                      "(its stats_private warning says why); it started at %s\n",
               cfg->stats_file, since);
    }
    if (conn == NULL) {
        if (st) print_counters_only(st);
        goto out;
    }
    if ((eps = db_query(conn, SQL_ENDPOINTS, err, sizeof err)) == NULL) {
        fprintf(stderr, "paddlehook: %s\n", err);
        goto out;
    }
    /* Without the live counters, fall back to the event log for "last event". */
    if (st == NULL && (last = db_query(conn, SQL_LAST_EVENTS, err, sizeof err)) == NULL) {
        fprintf(stderr, "paddlehook: %s\n", err);
        goto out;
    }
    if (st == NULL)
        printf("note: no live counters at %s (%s);\n"
               "      showing the last stored event only\n", cfg->stats_file, why);
    putchar('\n');
    print_header();
    for (int r = 0; r < PQntuples(eps); r++) print_endpoint(st, PQgetvalue(eps, r, 0), eps, r, last);
    if (st && stats_endpoints_full(st))
        printf("\nnote: the counters track %d endpoints per serve; \"untracked\" ones are counted in "
               "/paddle/metrics under endpoint=\"\"\n", STATS_MAX_ENDPOINTS);
    print_consumers(conn);
    print_projection_errors(conn);
    rc = 0;
out:
    PQclear(last);
    PQclear(eps);
    PQfinish(conn);
    stats_snapshot_free(st);
    return rc;
}

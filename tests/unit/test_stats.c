/* The shared counters: a slot whose claimer died before filling it is taken
 * over by the next process that finds it; one a live process is filling is
 * passed. Includes stats.c to reach the slots, which no caller can see. */
#include "stats.c"

#include <sys/wait.h>

#include "tap.h"

/* The pid of a process that has exited and been reaped. */
static pid_t dead_pid(void)
{
    pid_t pid = fork();

    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, NULL, 0);
    return pid;
}

static struct series_slot *series_home(struct stats *st, const char *event_type, uint32_t probe)
{
    uint32_t start = hash(event_type, NULL, (uint32_t)-1 * 31u + outcome_index("stored"));
    return &st->series[(start + probe) % STATS_MAX_SERIES];
}

void test_stats(void)
{
    const char *note;
    struct stats *st = stats_create(NULL, &note);
    struct series_slot *home, *next;
    struct endpoint_slot *ep;
    struct stats_window hour, day;
    long long last = 0;
    pid_t dead = dead_pid();

    if (st == NULL || dead <= 0) {
        tap_ok(0, "stats: anonymous mapping and a dead pid");
        return;
    }

    home = series_home(st, "t.orphaned", 0);
    next = series_home(st, "t.orphaned", 1);
    home->state = SLOT_CLAIMED_BY + (uint32_t)dead;
    snprintf(home->event_type, sizeof home->event_type, "half-writ");
    stats_record(st, NULL, "t.orphaned", "stored", -1);
    stats_record(st, NULL, "t.orphaned", "stored", -1);
    tap_ok(home->state == SLOT_READY && strcmp(home->event_type, "t.orphaned") == 0 && home->count == 2 &&
               next->state == SLOT_FREE,
           "stats: a series slot whose claimer died is taken over and counts");

    home = series_home(st, "t.busy", 0);
    next = series_home(st, "t.busy", 1);
    home->state = SLOT_CLAIMED_BY + (uint32_t)getppid();
    stats_record(st, NULL, "t.busy", "stored", -1);
    tap_ok(home->state == SLOT_CLAIMED_BY + (uint32_t)getppid() && next->state == SLOT_READY &&
               strcmp(next->event_type, "t.busy") == 0 && next->count == 1,
           "stats: a series slot a live process is filling is passed");

    ep = &st->endpoints[hash("ep_orphaned", NULL, 0) % STATS_MAX_ENDPOINTS];
    ep->state = SLOT_CLAIMED_BY + (uint32_t)dead;
    stats_record(st, "ep_orphaned", "t.other", "stored", -1);
    tap_ok(ep->state == SLOT_READY && strcmp(ep->id, "ep_orphaned") == 0 && ep->last_event_at > 0,
           "stats: an endpoint slot whose claimer died is taken over");

    home = series_home(st, "t.mine", 0);
    home->state = SLOT_CLAIMED_BY + (uint32_t)getpid();
    stats_record(st, NULL, "t.mine", "stored", -1);
    tap_ok(home->state == SLOT_READY && strcmp(home->event_type, "t.mine") == 0 && home->count == 1,
           "stats: a slot claimed under this process's own pid (a dead claimer's, reused) is taken over");

    stats_record(st, "ep_replaced", "customer.created", "replaced_sandbox", 1.0);
    tap_ok(stats_endpoint_windows(st, "ep_replaced", &hour, &day, &last) == 0 && hour.stored == 1 &&
               day.stored == 1 && last > 0,
           "stats: a live event that replaced a sandbox one counts as stored and as the last event");

    stats_record(st, "ep_failed_projection", "customer.created", "projection_failed", 1.0);
    tap_ok(stats_endpoint_windows(st, "ep_failed_projection", &hour, &day, &last) == 0 && hour.stored == 1,
           "stats: an event stored with a projection error counts as stored");

    {
        char id[32];
        int tracked = 0;
        tap_ok(!stats_endpoints_full(st), "stats: endpoint slots left");
        for (int i = 0; i < STATS_MAX_ENDPOINTS + 2; i++) {
            snprintf(id, sizeof id, "ep_many_%d", i);
            stats_record(st, id, "customer.created", "stored", 1.0);
        }
        for (int i = 0; i < STATS_MAX_ENDPOINTS + 2; i++) {
            snprintf(id, sizeof id, "ep_many_%d", i);
            tracked += stats_endpoint_windows(st, id, &hour, &day, &last) == 0;
        }
        tap_ok(stats_endpoints_full(st) && tracked < STATS_MAX_ENDPOINTS + 2,
               "stats: past %d endpoints the table says it is full (status shows the rest as untracked)",
               STATS_MAX_ENDPOINTS);
        {
            uint64_t unlabelled = 0;
            for (size_t i = 0; i < STATS_MAX_SERIES; i++)
                if (st->series[i].state == SLOT_READY && st->series[i].endpoint == -1 &&
                    st->series[i].outcome == outcome_index("stored") &&
                    strcmp(st->series[i].event_type, "customer.created") == 0)
                    unlabelled += st->series[i].count;
            tap_ok(unlabelled == (uint64_t)(STATS_MAX_ENDPOINTS + 2 - tracked),
                   "stats: the deliveries of the untracked endpoints are counted under endpoint=\"\"");
        }
    }

    {
        char type[32];
        size_t free_slots = 0;
        /* A slot left claimed by a live process (above) would make each claim wait for it. */
        for (size_t i = 0; i < STATS_MAX_SERIES; i++) {
            if (st->series[i].state >= SLOT_CLAIMED_BY) st->series[i].state = SLOT_FREE;
            free_slots += st->series[i].state == SLOT_FREE;
        }
        for (size_t i = 0; i < free_slots; i++) {
            snprintf(type, sizeof type, "t.fill_%zu", i);
            stats_record(st, NULL, type, "stored", -1);
        }
        tap_ok(st->counters[STATS_DELIVERIES_UNCOUNTED] == 0, "stats: every series slot taken, none left out");
        stats_record(st, NULL, "t.one_too_many", "stored", -1);
        stats_record(st, NULL, "t.fill_0", "stored", -1);
        tap_ok(st->counters[STATS_DELIVERIES_UNCOUNTED] == 1,
               "stats: a delivery that needs a series past the last is counted as uncounted, the others as before");
    }

    stats_close(st);
}

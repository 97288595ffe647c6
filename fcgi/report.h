/* report.h - `paddlehook report` and `paddlehook reproject`. */
#ifndef PADDLEHOOK_REPORT_H
#define PADDLEHOOK_REPORT_H

#include "config.h"

/* No argument: lists the reports in paddle.report_catalog. With NAME: prints
 * that view, filtered by --environment and --since, as --format. */
int report_cmd_run(const struct config *cfg);

/* Rebuilds the state tables from paddle.payment_events (paddle.reproject). */
int report_reproject_run(const struct config *cfg);

#endif

/* webhook.h - routing and handling of one HTTP request. */
#ifndef PADDLEHOOK_WEBHOOK_H
#define PADDLEHOOK_WEBHOOK_H

#include "http.h"
#include "worker.h"

#define WEBHOOK_PATH_PREFIX "/paddle/webhooks/"
#define HEALTHZ_PATH "/paddle/healthz"
#define METRICS_PATH "/paddle/metrics"

void webhook_handle(struct worker *w, struct http_request *req);

#endif

/* log.h - one key=value line per event on stderr (nginx/journald collect it).
 * Never pass secrets or payloads. */
#ifndef PADDLEHOOK_LOG_H
#define PADDLEHOOK_LOG_H

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Lines above this level are dropped (configuration, set once at start). */
void log_set_level(enum log_level max);

/* 1: each line becomes one JSON object, for log shippers. */
void log_set_json(int json);
int log_level_parse(const char *name, enum log_level *out);

/* fmt continues the line with " key=value" pairs. */
void log_line(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

/* embedded.h - files compiled into the binary by fcgi/embed.sh. */
#ifndef PADDLEHOOK_EMBEDDED_H
#define PADDLEHOOK_EMBEDDED_H

struct embedded_file {
    const char *name; /* file name without extension, e.g. "0001_core" */
    const char *text; /* contents, NUL-terminated */
};

/* The .sql files of sql/migrations, in order. */
extern const struct embedded_file migrations[];
extern const unsigned migrations_count;

/* The .json files of fcgi/scenarios, for `paddlehook simulate`. */
extern const struct embedded_file scenarios[];
extern const unsigned scenarios_count;

#endif

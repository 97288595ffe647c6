/* migrations.h - the SQL migrations compiled into the binary, in order. */
#ifndef PADDLEHOOK_MIGRATIONS_H
#define PADDLEHOOK_MIGRATIONS_H

struct migration {
    const char *version; /* file name without .sql, e.g. "0001_core" */
    const char *sql;
};

extern const struct migration migrations[];
extern const unsigned migrations_count;

#endif

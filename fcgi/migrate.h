/* migrate.h - applying the embedded migrations. */
#ifndef PADDLEHOOK_MIGRATE_H
#define PADDLEHOOK_MIGRATE_H

#include <stddef.h>

#include <libpq-fe.h>

/* Applies every migration not yet recorded in paddle.schema_migrations, each
 * in its own transaction, under an advisory lock so concurrent deploys are
 * safe (conn is connected to conninfo, which db_commit asks again after a
 * lost answer). *applied counts the new ones. 0, or -1 with a reason in err. */
int migrate_apply(PGconn *conn, const char *conninfo, unsigned *applied, char *err, size_t errlen);

#endif

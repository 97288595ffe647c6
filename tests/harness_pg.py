"""The PostgreSQL side of the integration harness: a cluster of its own in the
temporary directory (as user postgres when run as root), and SQL through psql."""

import json
import os
import pwd
import signal
import subprocess
import threading

from harness_util import (DB_NAME, EVENT_TABLE, HarnessError, QUEUE_TABLE, STATE_TABLES, children_of, free_port,
                          kill_pid, pid_alive, ts_text, wait_until)


class PostgresMixin:
    """Harness methods for PostgreSQL: start/stop the cluster, psql, table digests."""

    # ---- PostgreSQL ------------------------------------------------------

    def _as_postgres(self, argv):
        if self.is_root:
            return ["runuser", "-u", "postgres", "--"] + argv
        return argv

    def _run(self, argv, input=None, timeout=60, check=True, env=None, log=True):
        try:
            p = subprocess.run(argv, input=input, capture_output=True, timeout=timeout,
                               env=env, text=isinstance(input, str) or input is None)
        except subprocess.TimeoutExpired as exc:
            if log:
                self._log_command(argv, "timeout", str(exc.stdout), str(exc.stderr))
            raise HarnessError("command timed out after %ss: %s" % (timeout, " ".join(argv)))
        if log:
            self._log_command(argv, p.returncode,
                              p.stdout if isinstance(p.stdout, str) else "(bytes)",
                              p.stderr if isinstance(p.stderr, str) else
                              p.stderr.decode("utf-8", "replace"))
        if check and p.returncode != 0:
            err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode("utf-8", "replace")
            raise HarnessError("command failed (rc=%d): %s\n%s" % (p.returncode, " ".join(argv), err))
        return p

    def init_postgres(self):
        os.makedirs(self.pg_dir, exist_ok=True)
        os.makedirs(self._p("pg", "run"), exist_ok=True)
        if self.is_root:
            pw = pwd.getpwnam("postgres")
            for d in (self.pg_dir, self._p("pg", "run")):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.pg_dir, 0o700)
        self._run(self._as_postgres([
            os.path.join(self.pg_bin, "initdb"), "-D", self.pg_data,
            "--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-N"]),
            timeout=120)
        if self.pg_port is None:
            self.pg_port = free_port()
        settings = [
            "listen_addresses = '127.0.0.1'",
            "port = %d" % self.pg_port,
            "unix_socket_directories = '%s'" % self._p("pg", "run"),
            "max_connections = 100",
            "shared_buffers = 32MB",
            "log_line_prefix = '%m [%p] %q%u@%d '",
            "log_min_messages = warning",
            "timezone = 'UTC'",
        ]
        if self.pg_fast:
            settings += ["fsync = off", "synchronous_commit = off", "full_page_writes = off"]
        conf = os.path.join(self.pg_data, "postgresql.conf")
        # postgres owns the file; root may append, ownership stays.
        with open(conf, "a") as f:
            f.write("\n# paddlehook test harness\n" + "\n".join(settings) + "\n")

    def _pg_ctl(self, *args, timeout=60, check=True):
        return self._run(self._as_postgres(
            [os.path.join(self.pg_bin, "pg_ctl"), "-D", self.pg_data] + list(args)),
            timeout=timeout, check=check)

    def _read_pg_pid(self):
        try:
            with open(os.path.join(self.pg_data, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError):
            return None

    def start_postgres(self):
        """Start the cluster (again) on the same port; wait until it accepts."""
        self._pg_ctl("-l", self.pg_log, "-w", "-t", "60", "start", timeout=90)
        self.pg_pid = self._read_pg_pid()
        wait_until(self.postgres_ready, timeout=30, what="postgres to accept connections")

    def stop_postgres(self, mode="fast"):
        """Stop the cluster; SIGKILL the postmaster by PID if it lingers."""
        if not self.tmpdir or not os.path.isdir(self.pg_data):
            return
        pid = self._read_pg_pid() or self.pg_pid
        if pid is None or not pid_alive(pid):
            self.pg_pid = None
            return
        self._pg_ctl("-m", mode, "-w", "-t", "30", "stop", timeout=45, check=False)
        try:
            wait_until(lambda: not pid_alive(pid), timeout=15, what="postmaster exit")
        except TimeoutError:
            kids = children_of(pid)
            kill_pid(pid, signal.SIGKILL)
            for k in kids:
                kill_pid(k, signal.SIGKILL)
        self.pg_pid = None

    def postgres_running(self):
        pid = self._read_pg_pid()
        return bool(pid and pid_alive(pid))

    def postgres_ready(self):
        p = subprocess.run([os.path.join(self.pg_bin, "pg_isready"), "-q", "-h", "127.0.0.1",
                            "-p", str(self.pg_port), "-U", "postgres", "-t", "2"],
                           capture_output=True)
        return p.returncode == 0

    def create_database(self):
        self.psql("CREATE DATABASE %s" % DB_NAME, db="postgres")

    # ---- SQL -------------------------------------------------------------

    _FS = "\x1f"
    _RS = "\x1e"
    _NULL = "\x01NULL\x01"

    def psql(self, sql, db=DB_NAME, timeout=30):
        """Run SQL through psql; return the raw stdout text."""
        argv = [os.path.join(self.pg_bin, "psql"), "-X", "-A", "-t", "-q",
                "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "-d", db,
                "-v", "ON_ERROR_STOP=1", "-F", self._FS, "-R", self._RS,
                "-P", "null=" + self._NULL, "-f", "-"]
        env = dict(os.environ, PGTZ="UTC", PGCONNECT_TIMEOUT="5")
        p = subprocess.run(argv, input=sql, capture_output=True, text=True,
                           timeout=timeout, env=env)
        if p.returncode != 0:
            raise HarnessError("psql failed (rc=%d): %s\nSQL: %s"
                               % (p.returncode, p.stderr.strip(), sql[:2000]))
        return p.stdout

    def sql(self, sql, db=DB_NAME):
        """Rows of the last statement as tuples of str (None for NULL)."""
        out = self.psql(sql, db=db)
        if out.endswith("\n"):
            out = out[:-1]
        rows = []
        for rec in out.split(self._RS):
            if rec == "":
                continue
            rows.append(tuple(None if v == self._NULL else v for v in rec.split(self._FS)))
        return rows

    def sql_value(self, sql, db=DB_NAME):
        rows = self.sql(sql, db=db)
        return rows[0][0] if rows else None

    def reload_conf(self, setting, value):
        """pg_reload_conf(), then wait until a new session shows `setting` = value. The call only signals the
        server; once a new session has the setting, every existing one has been signalled and reads the file
        again before its next command."""
        self.sql("SELECT pg_reload_conf()")
        wait_until(lambda: self.sql_value("SHOW %s" % setting) == value, what="the server's reload (%s = %s)"
                   % (setting, value))

    def sleeping(self, tag):
        """Whether the session named `tag` runs its pg_sleep (see in_flight)."""
        return self.sql_value("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND "
                              "state = 'active' AND query LIKE 'SELECT pg_sleep%%'" % self.lit(tag)) != "0"

    def wait_lock_waiters(self, query_start, count=1, timeout=10, what=None):
        """Until `count` sessions whose statement starts with query_start (a LIKE pattern) wait for a lock."""
        wait_until(lambda: self.sql_value(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
            % self.lit(query_start + "%")) == str(count), timeout=timeout, interval=0.02,
            what=what or "%d session(s) of %r to wait for a lock" % (count, query_start))

    def in_flight(self, sql, seconds, tag, rows=None, db=DB_NAME):
        """Starts a thread running `sql` then pg_sleep(seconds) in one open
        transaction (application_name `tag`); returns it once the sleep runs,
        when `sql` is done and uncommitted (psql sends one statement at a time):
        its locks are held, its rows not yet visible. The rows of the last
        statement go to `rows`. Join the thread before the test ends."""
        def run():
            out = self.sql("SET application_name = %s; BEGIN; %s; SELECT pg_sleep(%s); COMMIT;"
                           % (self.lit(tag), sql, seconds), db=db)
            if rows is not None:
                rows.extend(out)
        t = threading.Thread(target=run)
        t.start()
        wait_until(lambda: self.sleeping(tag), timeout=10, interval=0.02, what="%s to be in flight" % tag)
        return t

    def sql_json(self, query, db=DB_NAME):
        """Rows of a SELECT as a list of dicts (via json_agg: types survive)."""
        q = query.strip().rstrip(";")
        v = self.sql_value("SELECT coalesce(json_agg(_harness_row), '[]'::json) FROM (%s) _harness_row"
                           % q, db=db)
        return json.loads(v)

    @staticmethod
    def lit(value):
        """SQL string literal."""
        if value is None:
            return "NULL"
        return "'" + str(value).replace("'", "''") + "'"

    def ingest_sql(self, env, endpoint_id, environment):
        """The worker's call for the notification `env` (a dict), as SQL to
        run in a transaction of the test's own (no notification id)."""
        return ("SELECT paddle.ingest_event(%s, %s, %s::timestamptz, NULL, %s, %s, %s::jsonb)"
                % (self.lit(env["event_id"]), self.lit(env["event_type"]), self.lit(env["occurred_at"]),
                   self.lit(endpoint_id), self.lit(environment), self.lit(json.dumps(env))))

    def existing_tables(self, refresh=False):
        """schema.table names that exist in schema paddle."""
        if self._table_cache is None or refresh:
            rows = self.sql("SELECT table_schema || '.' || table_name FROM "
                            "information_schema.tables WHERE table_schema = 'paddle'")
            self._table_cache = {r[0] for r in rows}
        return self._table_cache

    def table_columns(self, table):
        schema, name = table.split(".")
        rows = self.sql("SELECT column_name FROM information_schema.columns WHERE "
                        "table_schema = %s AND table_name = %s ORDER BY ordinal_position"
                        % (self.lit(schema), self.lit(name)))
        return [r[0] for r in rows]

    def digest(self, tables=None):
        """{table: (row count, md5 of all rows)} for the event, state and
        queue tables that exist: equal digests mean nothing changed."""
        if tables is None:
            tables = (EVENT_TABLE,) + STATE_TABLES + (QUEUE_TABLE,)
        have = self.existing_tables()
        parts = []
        for t in tables:
            if t in have:
                parts.append("SELECT %s, count(*)::text, coalesce(md5(string_agg(x::text, '|' "
                             "ORDER BY x::text)), '') FROM %s x" % (self.lit(t), t))
        if not parts:
            return {}
        return {r[0]: (int(r[1]), r[2]) for r in self.sql(" UNION ALL ".join(parts))}

    def state_row(self, table, entity_id):
        """The state row keyed by Paddle's id as a dict (None if absent), with
        occurred_at also rendered as `occurred_at_text` (RFC 3339, 6 digits)."""
        rows = self.sql_json("SELECT t.*, %s AS occurred_at_text FROM %s t WHERE t.id = %s"
                             % (ts_text("t.occurred_at"), table, self.lit(entity_id)))
        if len(rows) > 1:
            raise AssertionError("%d rows in %s for id %s" % (len(rows), table, entity_id))
        return rows[0] if rows else None

    def event_rows_with_id(self, event_id):
        """How many payment_events rows hold event_id (0 or 1: it is the key)."""
        return int(self.sql_value("SELECT count(*) FROM paddle.payment_events WHERE event_id = %s"
                                  % self.lit(event_id)))

    def event_row(self, event_id):
        """The payment_events row as a dict (None if absent); occurred_at and
        received_at also as `occurred_at_text`/`received_at_text`."""
        rows = self.sql_json("SELECT e.*, %s AS occurred_at_text, %s AS received_at_text "
                             "FROM paddle.payment_events e WHERE e.event_id = %s"
                             % (ts_text("e.occurred_at"), ts_text("e.received_at"),
                                self.lit(event_id)))
        return rows[0] if rows else None

    def event_count(self):
        return int(self.sql_value("SELECT count(*) FROM %s" % EVENT_TABLE))

"""The installed service (`make install` into a temporary DESTDIR) started the
way its systemd units start it.

systemd is not PID 1 where the tests run, so nothing here uses systemctl.
Instead the installed binary is started exactly as each unit's ExecStart
would run it (argv read from the installed unit, environment from an
EnvironmentFile, UMask, User/Group), with the listening socket handed over
the three ways the units and docs describe:

    spawn-fcgi   the socket on fd 0             (docs/deploy.md, spawn-fcgi -n)
    activation   fd 3 + LISTEN_PID/LISTEN_FDS   (paddlehook.socket + .service)
    --listen     serve opens it itself          (paddlehook-listen.service)

Each then takes a signed event from nginx (with the installed snippets) into
PostgreSQL. The service runs as `nobody` (standing in for the paddlehook
user) with group www-data where the units give it, reading a config file
made from the installed paddlehook.conf.example.
"""

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import unittest

import harness
from harness import Harness, HarnessTestCase, make_event, paddle_id, sample_customer, wait_until
from install_tree import NGINX_GROUP, PREFIX, UNIT_SOCKET, InstalledTree, read_unit

SERVICE_USER = "nobody"      # stands in for the paddlehook system user
WORKERS = 2

# Emulates systemd's part of socket activation: bind the unix socket as
# root, give it SocketUser/SocketGroup/SocketMode, put it on fd 3, drop to
# User=/Group=, set LISTEN_PID (this process's pid survives exec; another
# one with TEST_LISTEN_PID) and exec.
# argv: PATH MODE BACKLOG SOCKET_UID SOCKET_GID UID GID -- COMMAND...
ACTIVATE = r"""
import ctypes, os, signal, socket, sys
path, mode, backlog, suid, sgid, uid, gid = sys.argv[1:8]
argv = sys.argv[9:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chown(path, int(suid), int(sgid))
os.chmod(path, int(mode, 8))
s.listen(int(backlog))
if s.fileno() == 3:
    os.set_inheritable(3, True)
else:
    os.dup2(s.fileno(), 3)
    s.close()
os.setgroups([])
os.setgid(int(gid))
os.setuid(int(uid))
ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG, reset by setuid
pid = os.environ.pop("TEST_LISTEN_PID", None) or str(os.getpid())
os.environ.update(LISTEN_PID=pid, LISTEN_FDS="1", LISTEN_FDNAMES="paddlehook.socket")
os.execv(argv[0], argv)
"""

def can_connect(path, uid, gid):
    """Whether a process with only this uid/gid may connect to the unix
    socket (checked in a forked child, as nginx's worker would be)."""
    pid = os.fork()
    if pid == 0:
        code = 2
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                try:
                    s.connect(path)
                    code = 0
                except PermissionError:
                    code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise AssertionError("connect check as %d:%d failed (status %d)" % (uid, gid, code))
    return code == 0


def read_env_file(path):
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads simple ones."""
    env = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k.strip()] = v.strip()
    return env


TREE = InstalledTree()
installed = TREE.path
setUpModule = TREE.install
tearDownModule = TREE.remove


# --------------------------------------------------------------------------
# The installed service, started as its units start it
# --------------------------------------------------------------------------

class ServiceHarness(Harness):
    """The socket lives in <tmp>/rt/, standing in for /run/paddlehook."""

    @property
    def runtime_dir(self):
        return self._p("rt")

    @property
    def socket_path(self):
        return self._p("rt", "paddlehook.sock")


H = None


def setUpServiceStack():
    """PostgreSQL + schema + key + nginx with the installed snippets."""
    global H
    if H is not None:
        return H
    nginx_dir = installed("/usr/share/paddlehook/nginx")
    h = ServiceHarness(workers=WORKERS, binary=installed("/usr/bin/paddlehook"))
    h.make_tmpdir()
    # The webhooks server block as deploy.md shows it: Paddle's allowlist,
    # then the /paddle/ locations.
    wrapper = h._p("server-snippet.conf")
    with open(wrapper, "w") as f:
        f.write("include %s/paddle-ips.conf;\ninclude %s/paddlehook.conf;\n" % (nginx_dir, nginx_dir))
    h.snippet = wrapper
    h.upstream_conf = os.path.join(nginx_dir, "paddlehook-upstream.conf")
    svc = pwd.getpwnam(SERVICE_USER)
    www = grp.getgrnam(NGINX_GROUP)
    # /run/paddlehook: the service user's, nginx's group may traverse.
    os.makedirs(h.runtime_dir)
    os.chown(h.runtime_dir, svc.pw_uid, www.gr_gid)
    os.chmod(h.runtime_dir, 0o750)
    h.start(serve=False, nginx=True)
    H = h
    return h


class ServiceFromUnits(HarnessTestCase):

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root to run the service as %s" % SERVICE_USER)
        try:
            pwd.getpwnam(SERVICE_USER)
            grp.getgrnam(NGINX_GROUP)
        except KeyError as exc:
            raise unittest.SkipTest("no %s user or %s group: %s" % (SERVICE_USER, NGINX_GROUP, exc))
        cls.harness = setUpServiceStack()
        cls.svc = pwd.getpwnam(SERVICE_USER)
        cls.www = grp.getgrnam(NGINX_GROUP)
        cls.etc = cls.harness._p("etc-paddlehook")
        cls.write_etc()
        cls.endpoint = None

    @classmethod
    def tearDownClass(cls):
        global H
        if H is not None:
            H.stop()
            H = None

    @classmethod
    def write_etc(cls):
        """/etc/paddlehook as deploy.md sets it up: the key file and the
        config (from the installed example) owned by the service user, mode
        0600; paddlehook.env for the units' EnvironmentFile=."""
        h = cls.harness
        os.makedirs(cls.etc, mode=0o755)
        key = os.path.join(cls.etc, "master.key")
        shutil.copyfile(h.key_file, key)
        with open(installed("/usr/share/doc/paddlehook/paddlehook.conf.example")) as f:
            conf = f.read()
        settings = {"db": h.conninfo, "key_file": key,
                    "stats_file": os.path.join(h.runtime_dir, "stats")}
        for k, v in settings.items():
            conf, n = re.subn(r"(?m)^#?%s = .*$" % k, "%s = %s" % (k, v), conf)
            assert n == 1, "%s not in paddlehook.conf.example" % k
        path = os.path.join(cls.etc, "paddlehook.conf")
        with open(path, "w") as f:
            f.write(conf)
        for p in (key, path):
            os.chown(p, cls.svc.pw_uid, cls.svc.pw_gid)
            os.chmod(p, 0o600)
        with open(os.path.join(cls.etc, "paddlehook.env"), "w") as f:
            f.write("# EnvironmentFile=-/etc/paddlehook/paddlehook.env\n"
                    "PADDLEHOOK_CONFIG=%s\nPADDLEHOOK_WORKERS=%d\n" % (path, WORKERS))

    def setUp(self):
        self.proc = None
        try:
            os.unlink(self.H.socket_path)
        except FileNotFoundError:
            pass

    def tearDown(self):
        if self.proc is not None:
            self.H.stop_serve()

    # ---- starting the service like systemd -----------------------------

    def unit(self, name):
        return read_unit(installed("/usr/lib/systemd/system/" + name))

    def exec_start(self, name):
        """ExecStart of the installed unit, binary under DESTDIR, the
        socket path moved to the test's runtime directory."""
        argv = shlex.split(self.unit(name)["ExecStart"][0])
        self.assertEqual(argv[0], PREFIX + "/bin/paddlehook")
        argv[0] = installed(argv[0])
        return [a.replace(UNIT_SOCKET, self.H.socket_path) for a in argv]

    def service_env(self):
        """What the unit's process sees: no PADDLEHOOK_* from the test
        runner, only what EnvironmentFile= provides."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PADDLEHOOK_", "PG"))}
        env.update(read_env_file(os.path.join(self.etc, "paddlehook.env")))
        env["PGTZ"] = "UTC"
        return env

    def launch(self, argv, unit=None, **kw):
        """unit: the systemd unit whose Type=notify is emulated (an abstract notify socket: no file
        permissions stand between it and the service user)."""
        log = open(self.H.serve_log, "ab")
        env = self.service_env()
        notify = None
        if unit is not None:
            self.assertEqual((self.unit(unit)["Type"], self.unit(unit)["NotifyAccess"]), (["notify"], ["main"]))
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            name = "paddlehook-test-notify-%d" % time.time_ns()
            notify.bind("\0" + name)
            env["NOTIFY_SOCKET"] = "@" + name
        self.H._log_command(argv, "(started as a unit would)", "", "")
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         env=env, cwd="/", umask=0o027,
                                         preexec_fn=harness._set_pdeathsig, **kw)
            if notify is not None:
                notify.settimeout(20)
                self.assertEqual(notify.recvfrom(256)[0], b"READY=1", "the unit's Type=notify readiness")
        finally:
            log.close()
            if notify is not None:
                notify.close()
        self.H.serve_proc = self.proc     # so the harness helpers and stop_serve apply
        wait_until(lambda: self.proc.poll() is None and os.path.exists(self.H.socket_path)
                   and len(self.H.worker_pids()) >= WORKERS or self.proc.poll() is not None,
                   timeout=20, what="service socket and %d workers" % WORKERS)
        self.assertIsNone(self.proc.poll(), "service exited with status %s" % self.proc.returncode)
        self.H.wait_healthy()

    def activate_argv(self):
        """paddlehook.socket + paddlehook.service, through ACTIVATE."""
        sock = self.unit("paddlehook.socket")
        svc = self.unit("paddlehook.service")
        self.assertEqual((sock["SocketUser"], svc["User"], svc["Group"]),
                         (["paddlehook"], ["paddlehook"], ["paddlehook"]))
        socket_group = grp.getgrnam(sock["SocketGroup"][0])
        return [sys.executable, "-c", ACTIVATE, self.H.socket_path, sock["SocketMode"][0],
                sock.get("Backlog", ["128"])[0], str(self.svc.pw_uid), str(socket_group.gr_gid),
                str(self.svc.pw_uid), str(self.svc.pw_gid), "--"] + \
            self.exec_start("paddlehook.service")

    def start_activated(self):
        self.launch(self.activate_argv(), unit="paddlehook.service")

    def start_listen(self):
        """paddlehook-listen.service: User=paddlehook, Group=www-data."""
        unit = self.unit("paddlehook-listen.service")
        self.assertEqual(unit["Group"], [NGINX_GROUP])
        self.launch(self.exec_start("paddlehook-listen.service"), unit="paddlehook-listen.service",
                    user=self.svc.pw_uid,
                    group=self.www.gr_gid, extra_groups=[])

    def start_spawn_fcgi(self):
        """docs/deploy.md: spawn-fcgi -s SOCK -M 0660 -u paddlehook -G www-data -n -- BIN serve (the
        socket's group; the process keeps the service user's own group)."""
        argv = ["spawn-fcgi", "-s", self.H.socket_path, "-M", "0660", "-u", SERVICE_USER,
                "-G", NGINX_GROUP, "-n", "--"] + self.exec_start("paddlehook.service")
        self.launch(argv)

    # ---- what every variant must do -----------------------------------

    def assert_socket_for_nginx_only(self):
        st = os.stat(self.H.socket_path)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual((st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode))),
                         (self.svc.pw_uid, self.www.gr_gid, oct(0o660)), "socket owner/group/mode")
        self.assertTrue(can_connect(self.H.socket_path, pwd.getpwnam(NGINX_GROUP).pw_uid,
                                    self.www.gr_gid), "%s cannot connect" % NGINX_GROUP)
        try:
            other = pwd.getpwnam("daemon")
        except KeyError:
            return
        self.assertFalse(can_connect(self.H.socket_path, other.pw_uid, other.pw_gid),
                         "user daemon could connect to the socket")

    def get_endpoint(self):
        cls = type(self)
        if cls.endpoint is None:
            cls.endpoint = self.H.add_endpoint(name="install-test")
        else:
            self.H.wait_endpoint_known(cls.endpoint)
        return cls.endpoint

    def assert_event_goes_through(self, what):
        ep = self.get_endpoint()
        cid = paddle_id("ctm")
        body = make_event("customer.created", sample_customer(cid))
        r = self.H.post_event(ep, body)
        self.assertStored(r, what)
        self.assertIsNotNone(self.H.state_row("paddle.customers", cid), "customer row (%s)" % what)
        return body

    def assert_reload_and_stop(self):
        """ExecReload= (SIGHUP to $MAINPID) keeps serving; KillSignal=SIGTERM
        stops it with status 0 well within TimeoutStopSec=35, so
        Restart=on-failure leaves it stopped."""
        main = self.proc.pid
        workers = self.H.worker_pids()
        offset = os.path.getsize(self.H.serve_log)
        os.kill(main, signal.SIGHUP)
        wait_until(lambda: self.H.serve_log_since(offset).count("event=reloaded endpoints=loaded") >= len(workers)
                   or self.proc.poll() is not None, timeout=15, what="every worker to reload")
        self.assertIsNone(self.proc.poll(), "SIGHUP stopped the service")
        self.assertEqual(self.H.worker_pids(), workers, "SIGHUP restarted workers")
        self.assert_event_goes_through("after SIGHUP")
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(35)
        self.assertEqual(rc, 0, "exit status after SIGTERM")
        self.assertLess(time.monotonic() - t0, 10)
        wait_until(lambda: not any(harness.pid_alive(w) for w in workers), timeout=5,
                   what="workers gone")
        self.H.serve_proc = None
        self.proc = None

    def assert_metrics(self):
        r = self.H.get("/paddle/metrics")
        self.assertEqual(r.status, 200, "GET /paddle/metrics from localhost: %r" % r)

    # ---- the tests ---------------------------------------------------------

    def test_socket_activation_fd3_stores_a_signed_event(self):
        self.start_activated()
        self.assert_socket_for_nginx_only()
        self.assert_event_goes_through("socket activation")
        self.assert_metrics()
        self.assert_reload_and_stop()

    def test_listen_unit_stores_a_signed_event(self):
        self.start_listen()
        self.assert_socket_for_nginx_only()
        self.assert_event_goes_through("paddlehook-listen.service")
        self.assert_reload_and_stop()
        self.assertFalse(os.path.exists(self.H.socket_path), "serve --listen leaves its socket")

    @unittest.skipUnless(shutil.which("spawn-fcgi"),
                         "spawn-fcgi is not installed (apt-get install spawn-fcgi; make deps)")
    def test_spawn_fcgi_fd0_stores_a_signed_event(self):
        self.start_spawn_fcgi()
        self.assert_socket_for_nginx_only()
        # The service keeps its user's own group (the one that may read /etc/paddlehook/paddlehook.conf).
        for pid in self.H.worker_pids():
            with open("/proc/%d/status" % pid) as f:
                gid = next(l for l in f if l.startswith("Gid:")).split()[1]
            self.assertEqual(int(gid), self.svc.pw_gid, "group of worker %d" % pid)
        self.assert_event_goes_through("spawn-fcgi")
        self.assert_reload_and_stop()

    def test_activation_meant_for_another_process_is_not_taken(self):
        """LISTEN_PID of another process: serve must not take fd 3, and with
        /dev/null on fd 0 it refuses to start instead of hanging."""
        env = self.service_env()
        env["TEST_LISTEN_PID"] = "1"
        p = subprocess.run(self.activate_argv(), stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, env=env, timeout=30)
        self.assertNotEqual(p.returncode, 0, p.stderr)
        self.assertIn("no --listen", p.stderr)

    def test_paddle_ips_allowlist_refuses_other_sources(self):
        """The installed paddle-ips.conf at server level: loopback (the test's
        own requests) passes, any other source gets the JSON 403 before the
        worker, on the webhook path as on the others."""
        for method, path in (("GET", "/paddle/healthz"), ("POST", "/paddle/webhooks/ep_x"),
                             ("GET", "/paddle/metrics")):
            r = self.H.request(method, path, body=b"{}" if method == "POST" else None,
                               source="127.0.0.2")
            self.assertErrorResponse(r, 403, "forbidden", "%s %s from another address" % (method, path))

    def test_check_config_passes_as_the_service_user(self):
        argv = [installed("/usr/bin/paddlehook"), "check-config"]
        p = subprocess.run(argv, capture_output=True, text=True, env=self.service_env(),
                           timeout=30, user=self.svc.pw_uid, group=self.svc.pw_gid,
                           extra_groups=[], stdin=subprocess.DEVNULL)
        self.assertEqual(p.returncode, 0, "check-config as %s:\n%s%s"
                         % (SERVICE_USER, p.stdout, p.stderr))


if __name__ == "__main__":
    unittest.main()

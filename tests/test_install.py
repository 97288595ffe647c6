"""`make install` / `make uninstall`: every file in its place with its mode,
units that run the installed binary on the socket nginx uses and that
systemd-analyze accepts, a man page that renders and covers every command and
option.  The installed service itself is started in test_service_units."""

import os
import re
import shlex
import shutil
import stat
import subprocess
import tempfile
import unittest

from install_tree import NGINX_GROUP, PREFIX, REPO, UNIT_SOCKET, InstalledTree, read_unit, run_make

MIGRATIONS = sorted(f for f in os.listdir(os.path.join(REPO, "sql", "migrations"))
                    if f.endswith(".sql"))
UNITS = ("paddlehook.socket", "paddlehook.service", "paddlehook-listen.service")

# Everything `make install PREFIX=/usr` puts under DESTDIR, with its mode.
EXPECTED = {"usr/bin/paddlehook": 0o755}
EXPECTED.update({"usr/share/paddlehook/sql/migrations/" + m: 0o644 for m in MIGRATIONS})
EXPECTED.update({"usr/share/paddlehook/nginx/" + n: 0o644
                 for n in ("paddlehook.conf", "paddlehook-upstream.conf", "paddle-ips.conf")})
EXPECTED.update({"usr/lib/systemd/system/" + u: 0o644 for u in UNITS})
EXPECTED.update({
    "usr/lib/sysusers.d/paddlehook.conf": 0o644,
    "usr/lib/tmpfiles.d/paddlehook.conf": 0o644,
    "usr/share/man/man8/paddlehook.8": 0o644,
    "usr/share/doc/paddlehook/paddlehook.conf.example": 0o644,
})


def files_under(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            path = os.path.join(d, n)
            out[os.path.relpath(path, root)] = stat.S_IMODE(os.lstat(path).st_mode)
    return out


TREE = InstalledTree()
installed = TREE.path
setUpModule = TREE.install
tearDownModule = TREE.remove


# --------------------------------------------------------------------------
# The installed tree
# --------------------------------------------------------------------------

class InstallTree(unittest.TestCase):

    def test_install_puts_every_file_there_with_its_mode(self):
        got = files_under(TREE.root)
        self.assertEqual(sorted(got), sorted(EXPECTED), "installed files differ from the list")
        for rel, mode in EXPECTED.items():
            self.assertEqual(oct(got[rel]), oct(mode), rel)
        with open(installed("/usr/bin/paddlehook"), "rb") as a, \
                open(os.path.join(REPO, "build", "paddlehook"), "rb") as b:
            self.assertTrue(a.read() == b.read(), "installed binary is not build/paddlehook")

    def test_units_run_the_installed_binary_on_the_socket_nginx_uses(self):
        with open(installed("/usr/share/paddlehook/nginx/paddlehook-upstream.conf")) as f:
            upstream = re.findall(r"server\s+unix:([^\s;]+)\s*;", f.read())
        self.assertEqual(upstream, [UNIT_SOCKET], "nginx upstream socket")
        sock = read_unit(installed("/usr/lib/systemd/system/paddlehook.socket"))
        self.assertEqual(sock["ListenStream"], [UNIT_SOCKET])
        self.assertEqual(sock["Accept"], ["no"])
        self.assertEqual((sock["SocketGroup"], sock["SocketMode"]), ([NGINX_GROUP], ["0660"]))
        for name in ("paddlehook.service", "paddlehook-listen.service"):
            path = installed("/usr/lib/systemd/system/" + name)
            with open(path) as f:
                text = f.read()
            self.assertNotIn("/usr/local", text, name)
            unit = read_unit(path)
            argv = shlex.split(unit["ExecStart"][0])
            self.assertEqual(argv[:2], [PREFIX + "/bin/paddlehook", "serve"], name)
            self.assertEqual(unit["ExecReload"], ["/bin/kill -HUP $MAINPID"], name)
            self.assertEqual(unit["User"], ["paddlehook"], name)
            self.assertEqual(unit["EnvironmentFile"], ["-/etc/paddlehook/paddlehook.env"], name)
            self.assertEqual(unit["TimeoutStopSec"], ["35"], name)
            if name == "paddlehook.service":
                self.assertNotIn("--listen", argv, "socket activation needs serve without --listen")
            else:
                self.assertIn("unix:" + UNIT_SOCKET, argv, name)
        with open(installed("/usr/lib/sysusers.d/paddlehook.conf")) as f:
            self.assertRegex(f.read(), r"(?m)^u\s+paddlehook\s")
        with open(installed("/usr/share/man/man8/paddlehook.8")) as f:
            man = f.read()
        self.assertNotIn("/usr/local", man, "man page paths follow PREFIX")

    @unittest.skipUnless(shutil.which("systemd-analyze"), "systemd-analyze not installed")
    def test_systemd_analyze_verify_accepts_the_installed_units(self):
        # The binary and man page live under DESTDIR here, not at /usr: point
        # the copies there so verify can check that ExecStart= and
        # Documentation=man:paddlehook(8) resolve.
        with tempfile.TemporaryDirectory() as d:
            for u in UNITS:
                with open(installed("/usr/lib/systemd/system/" + u)) as f:
                    text = f.read().replace(PREFIX + "/bin/paddlehook",
                                            installed("/usr/bin/paddlehook"))
                with open(os.path.join(d, u), "w") as f:
                    f.write(text)
            env = dict(os.environ, MANPATH=installed("/usr/share/man"), SYSTEMD_LOG_COLOR="0")
            p = subprocess.run(["systemd-analyze", "verify"] + [os.path.join(d, u) for u in UNITS],
                               capture_output=True, text=True, timeout=60, env=env)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""), "systemd-analyze verify")

    @unittest.skipUnless(shutil.which("groff"), "groff not installed")
    def test_man_page_renders_without_warnings(self):
        page = installed("/usr/share/man/man8/paddlehook.8")
        p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", page], capture_output=True,
                           timeout=30)
        self.assertEqual((p.returncode, p.stderr.decode()), (0, ""), "groff -ww")
        self.assertIn(b"EXIT STATUS", re.sub(rb".\x08", b"", p.stdout))
        if shutil.which("man"):
            env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8", MAN_KEEP_STDERR="1")
            p = subprocess.run(["man", "--warnings", "-l", page], capture_output=True,
                               timeout=30, env=env)
            self.assertEqual((p.returncode, p.stderr.decode()), (0, ""), "man --warnings")

    def test_man_page_covers_every_command_and_option(self):
        with open(os.path.join(REPO, "docs", "paddlehook.8")) as f:
            man = f.read().replace("\\-", "-").replace("\\fB", "").replace("\\fP", "")
        with open(os.path.join(REPO, "README.md")) as f:
            readme = f.read()
        p = subprocess.run([installed("/usr/bin/paddlehook"), "--help"], capture_output=True,
                           text=True, timeout=30)
        usage = p.stdout
        commands = set(re.findall(r"`paddlehook ([a-z][a-z-]*)", readme))
        commands |= set(re.findall(r"(?m)^  ([a-z][a-z-]+)\b", usage.split("common options")[0]))
        commands |= {"check-config", "status", "rekey"}
        for c in sorted(commands):
            self.assertRegex(man, r"(?m)^\.(?:B|BI|BR|RB)?\s*\"?%s\b" % re.escape(c),
                             "command %s missing from the man page" % c)
        tables = "\n".join(l for l in readme.splitlines() if l.startswith("|"))
        options = set(re.findall(r"(--[a-z][a-z-]+)", tables + usage))
        options |= {"--config", "--log-format", "--stats-file", "--old-key-file"}
        for o in sorted(options):
            self.assertIn(o, man, "option %s missing from the man page" % o)
        for var in sorted(set(re.findall(r"PADDLEHOOK_[A-Z_]+", readme)) |
                          {"PADDLEHOOK_CONFIG", "PADDLEHOOK_LISTEN", "PADDLEHOOK_SOCKET_MODE",
                           "PADDLEHOOK_LOG_FORMAT", "PADDLEHOOK_STATS_FILE"}):
            self.assertIn(var, man, "variable %s missing from the man page" % var)

    def test_uninstall_removes_every_installed_file(self):
        d = tempfile.mkdtemp(prefix="paddlehook-uninstall-")
        try:
            run_make("install", d)
            self.assertEqual(sorted(files_under(d)), sorted(EXPECTED))
            run_make("uninstall", d)
            self.assertEqual(files_under(d), {}, "files left after make uninstall")
            for rel in ("usr/share/paddlehook", "usr/share/doc/paddlehook"):
                self.assertFalse(os.path.exists(os.path.join(d, rel)), rel + " left behind")
        finally:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()

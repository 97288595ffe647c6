"""`make install PREFIX=/usr` into a temporary DESTDIR, and reading what it
installed; shared by test_install (the tree) and test_service_units (the
service started from it)."""

import os
import shutil
import subprocess
import tempfile

import harness

REPO = harness.REPO_ROOT
PREFIX = "/usr"
NGINX_GROUP = "www-data"     # SocketGroup= / Group= of the units
UNIT_SOCKET = "/run/paddlehook/paddlehook.sock"


def make_env():
    """The environment for make: no jobserver of an outer make."""
    env = dict(os.environ)
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES"):
        env.pop(k, None)
    return env


def run_make(target, destdir):
    p = subprocess.run(["make", "-C", REPO, "--no-print-directory", target,
                        "DESTDIR=" + destdir, "PREFIX=" + PREFIX],
                       capture_output=True, text=True, timeout=300, env=make_env())
    if p.returncode != 0:
        raise AssertionError("make %s failed (rc=%d)\n%s\n%s"
                             % (target, p.returncode, p.stdout[-3000:], p.stderr[-3000:]))
    return p


def read_unit(path):
    """{key: [values]} of a unit file (sections merged; keys are unique
    across our units' sections)."""
    keys = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            k, _, v = line.partition("=")
            keys.setdefault(k.strip(), []).append(v.strip())
    return keys


class InstalledTree:
    """One `make install` per test module, removed at its end."""

    def __init__(self):
        self.root = None

    def install(self):
        self.root = tempfile.mkdtemp(prefix="paddlehook-destdir-",
                                     dir=os.environ.get("PADDLEHOOK_TMPDIR") or None)
        os.chmod(self.root, 0o755)   # the service user runs the installed binary
        run_make("install", self.root)

    def remove(self):
        if self.root and os.path.isdir(self.root):
            shutil.rmtree(self.root, ignore_errors=True)

    def path(self, rel):
        """Where /usr/... of the installed tree is under DESTDIR."""
        return os.path.join(self.root, rel.lstrip("/"))

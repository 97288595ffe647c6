"""The front of the integration harness: `paddlehook serve` with its workers,
nginx with the shipped snippet, and HTTP to it as Paddle would send it."""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import threading

from paddledata import py_sign
from harness_util import (Endpoint, HarnessError, TESTS_DIR, _response_from, _set_pdeathsig, children_of,
                          free_port, stop_with_children, wait_until)


class WebMixin:
    """Harness methods for serve, nginx and HTTP requests."""

    # ---- serve -----------------------------------------------------------

    def start_serve(self, wait=True):
        if self.serve_proc and self.serve_proc.poll() is None:
            return self.serve_proc
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        args = [self.binary, "serve", "--listen", "unix:" + self.socket_path,
                "--workers", str(self.workers)]
        if self.max_body is not None:
            args += ["--max-body", str(self.max_body)]
        args += self.serve_args
        if self._serve_log_f is None:
            self._serve_log_f = open(self.serve_log, "ab")
        self._log_command(args, "(started)", "", "")
        self.serve_proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._serve_log_f, stderr=self._serve_log_f,
            env=self.env(), cwd=self.tmpdir,
            preexec_fn=_set_pdeathsig if threading.current_thread() is threading.main_thread() else None)
        if wait:
            def ready():
                if self.serve_proc.poll() is not None:
                    raise HarnessError("paddlehook serve exited with status %s"
                                       % self.serve_proc.returncode)
                return os.path.exists(self.socket_path) and \
                    len(self.worker_pids()) >= self.workers
            try:
                wait_until(ready, timeout=20, what="serve socket and %d workers" % self.workers)
            except TimeoutError as exc:
                if self.serve_proc.poll() is not None:
                    raise HarnessError("paddlehook serve exited with status %s"
                                       % self.serve_proc.returncode)
                raise HarnessError(str(exc))
        return self.serve_proc

    def stop_serve(self, timeout=15):
        """SIGTERM (graceful) then SIGKILL serve and any leftover workers."""
        p, self.serve_proc = self.serve_proc, None
        return stop_with_children(p, timeout)

    def serve_pid(self):
        return self.serve_proc.pid if self.serve_proc else None

    def worker_pids(self):
        """The serve supervisor's live children (the workers)."""
        if not self.serve_proc or self.serve_proc.poll() is not None:
            return []
        return children_of(self.serve_proc.pid)

    def wait_workers(self, count=None, exclude=(), timeout=20):
        """Wait until serve has `count` live workers, none of them in exclude."""
        count = self.workers if count is None else count
        exclude = set(exclude)

        def ok():
            pids = self.worker_pids()
            return pids if len(pids) == count and not (set(pids) & exclude) else None
        return wait_until(ok, timeout=timeout, what="%d workers (not %s)" % (count, sorted(exclude)))

    # ---- nginx -----------------------------------------------------------

    def nginx_config(self):
        """Write nginx.conf + upstream + fastcgi_params into tmp/nginx/; return the path."""
        self.make_tmpdir()
        if self.http_port is None:
            self.http_port = free_port()
        nd = self.nginx_dir
        os.makedirs(nd, exist_ok=True)
        # The snippet's relative `include fastcgi_params;` resolves here.
        shutil.copyfile("/etc/nginx/fastcgi_params", os.path.join(nd, "fastcgi_params"))
        # The shipped upstream file with the socket replaced by ours.
        with open(self.upstream_conf) as f:
            upstream = f.read()
        new, n = re.subn(r"server\s+unix:[^\s;]+", "server unix:%s" % self.socket_path, upstream)
        if n != 1 or not re.search(r"upstream\s+paddlehook\s*\{", new):
            new = "upstream paddlehook {\n    server unix:%s;\n}\n" % self.socket_path
        if self.nginx_upstream_keepalive is not None:
            new = re.sub(r"keepalive\s+\d+;", "keepalive %d;" % self.nginx_upstream_keepalive, new)
        with open(os.path.join(nd, "paddlehook-upstream.conf"), "w") as f:
            f.write(new)
        with open(os.path.join(TESTS_DIR, "nginx.conf.in")) as f:
            conf = f.read()
        subst = {
            "USER_DIRECTIVE": "user root root;" if self.is_root else "# (not root: no user directive)",
            "NGINX_DIR": nd,
            "HTTP_PORT": str(self.http_port),
            "SNIPPET": self.snippet,
            "SERVER_DIRECTIVES": self.nginx_server_directives,
            "ACCESS_LOG_OPTIONS": self.nginx_access_log_options,
        }
        for k, v in subst.items():
            conf = conf.replace("@%s@" % k, v)
        left = [m for m in re.findall(r"@[A-Z_]+@", conf) if m != "@NAME@"]
        if left:
            raise HarnessError("unfilled placeholders in nginx.conf.in: %s" % left)
        path = os.path.join(nd, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return path

    def _nginx_argv(self, conf, *extra):
        return [self.nginx_bin, "-p", self.nginx_dir + "/", "-c", conf,
                "-e", os.path.join(self.nginx_dir, "error.log")] + list(extra)

    def nginx_test_config(self):
        """`nginx -t` on the generated config; returns (ok, output)."""
        conf = self.nginx_config()
        p = subprocess.run(self._nginx_argv(conf, "-t"), capture_output=True, text=True, timeout=30)
        return p.returncode == 0, (p.stdout + p.stderr).strip()

    def start_nginx(self):
        ok, out = self.nginx_test_config()
        if not ok:
            raise HarnessError("nginx -t failed for the generated config:\n%s" % out)
        conf = os.path.join(self.nginx_dir, "nginx.conf")
        self.nginx_proc = subprocess.Popen(
            self._nginx_argv(conf), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_set_pdeathsig if threading.current_thread() is threading.main_thread() else None)

        def up():
            if self.nginx_proc.poll() is not None:
                raise HarnessError("nginx exited with status %s" % self.nginx_proc.returncode)
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=1):
                return True
        try:
            wait_until(up, timeout=15, what="nginx to listen on %d" % self.http_port)
        except TimeoutError as exc:
            raise HarnessError(str(exc))
        return self.nginx_proc

    def stop_nginx(self, timeout=10):
        p, self.nginx_proc = self.nginx_proc, None
        return stop_with_children(p, timeout)

    def wait_healthy(self, timeout=20):
        def ok():
            r = self.get("/paddle/healthz", timeout=5)
            return r if r.status == 200 else None
        try:
            return wait_until(ok, timeout=timeout, what="GET /paddle/healthz == 200")
        except TimeoutError as exc:
            raise HarnessError(str(exc))

    # ---- HTTP ------------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=30, source="127.0.0.1"):
        """One request through nginx with http.client (new connection), from
        the loopback address source."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout,
                                          source_address=(source, 0))
        try:
            h = {}
            if body is not None:
                h["Content-Type"] = "application/json"
            h.update(headers or {})
            conn.request(method, path, body=body, headers=h)
            return _response_from(conn.getresponse())
        finally:
            conn.close()

    def get(self, path, headers=None, timeout=30, source="127.0.0.1"):
        return self.request("GET", path, headers=headers, timeout=timeout, source=source)

    def post(self, path, body, signature=None, headers=None, timeout=30):
        h = dict(headers or {})
        if signature is not None:
            h["Paddle-Signature"] = signature
        if isinstance(body, str):
            body = body.encode()
        return self.request("POST", path, body=body, headers=h, timeout=timeout)

    def post_event(self, endpoint, body, secret=None, ts=None, signature=None, timeout=30):
        """POST body to the endpoint, signed in Python with a fresh ts
        (or with the given signature header)."""
        if isinstance(body, str):
            body = body.encode()
        if isinstance(body, dict):
            body = json.dumps(body, separators=(",", ":")).encode()
        if signature is None:
            signature = py_sign(body, secret or endpoint.secret, ts=ts)
        eid = endpoint.id if isinstance(endpoint, Endpoint) else endpoint
        return self.post("/paddle/webhooks/%s" % eid, body, signature=signature, timeout=timeout)

    def raw_request(self, data, shutdown_write=False, timeout=15, method="POST"):
        """Send raw bytes on a fresh TCP connection; parse the HTTP response.

        Returns a Response, or None when the server closed without answering.
        """
        s = socket.create_connection(("127.0.0.1", self.http_port), timeout=timeout)
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            if shutdown_write:
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            resp = http.client.HTTPResponse(s, method=method)
            try:
                resp.begin()
            except (http.client.RemoteDisconnected, ConnectionResetError,
                    http.client.BadStatusLine):
                return None
            return _response_from(resp)
        finally:
            s.close()

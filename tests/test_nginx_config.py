"""The shipped nginx snippet, on its own (no PostgreSQL, no worker needed).

nginx runs with the generated config (tests/nginx.conf.in) that includes
nginx/paddlehook.conf unmodified and the upstream from
nginx/paddlehook-upstream.conf pointed at a socket nobody listens on.
"""

import harness
from harness import Harness, HarnessTestCase, make_event, paddle_id, py_sign

H = Harness()


def setUpModule():
    H.make_tmpdir()


def tearDownModule():
    H.stop()


class NginxSnippet(HarnessTestCase):
    harness = H

    def test_shipped_snippet_passes_nginx_t(self):
        ok, out = H.nginx_test_config()
        self.assertTrue(ok, out)

    def test_nginx_answers_oversized_body_with_json_413_by_itself(self):
        ok, out = H.nginx_test_config()
        if not ok:
            self.skipTest("nginx -t fails (see test_shipped_snippet_passes_nginx_t)")
        H.start_nginx()
        try:
            body = make_event("subscription.created", {"id": paddle_id("sub"), "pad": "x" * (1 << 20)})
            sig = py_sign(body, harness.new_secret())
            raw = ("POST /paddle/webhooks/%s HTTP/1.1\r\nHost: localhost\r\n"
                   "Content-Type: application/json\r\nPaddle-Signature: %s\r\n"
                   "Content-Length: %d\r\nConnection: close\r\n\r\n"
                   % (paddle_id("ep"), sig, len(body))).encode() + body
            self.assertErrorResponse(H.raw_request(raw), 413, "body_too_large")
        finally:
            H.stop_nginx()

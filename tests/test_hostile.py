"""Hostile input, through nginx, against one stack (docs/security.md).

Each request test asserts the status, the JSON `error` code and that payment_events and the state tables are
unchanged (H.digest()), or for inputs that must be stored, exactly what was stored. Logs checks that no secret or
payload reaches a log; the serve log runs at --log-level debug so that it covers everything the worker can write.
Errors that test_errors.py already covers are not repeated here. The other hostile tests: test_hostile_load.py
(the worker pool under abuse), test_hostile_sandbox.py (sandbox deliveries and live state),
test_least_privilege.py (the worker's database role).
"""

import base64
import json
import os
import time

import hostile
from harness import hmac_h1, make_event, paddle_id, py_sign, sample_customer, sample_subscription
from hostile import HostileHarness, event

H = HostileHarness()
setUpModule, tearDownModule = H.start, H.stop


class HostileCase(hostile.HostileCase):
    harness = H


# --------------------------------------------------------------------------
# The Paddle-Signature header
# --------------------------------------------------------------------------

class HostileSignature(HostileCase):

    def test_100_h1_values_are_401_even_with_the_valid_one_among_them(self):
        body = event()
        ts = int(time.time())
        good = "h1=" + hmac_h1(self.ep.secret, ts, body)
        junk = ["h1=" + os.urandom(32).hex() for _ in range(99)]
        for header in (";".join(["ts=%d" % ts, good] + junk), ";".join(["ts=%d" % ts] + junk + [good])):
            with self.subTest(valid_at=header.index(good)):
                self.assertLess(len(header), 8000)
                self.expect(H.post(self.ep.path, body, signature=header), 401, "invalid_signature")

    def test_8kb_signature_header_is_401_or_nginx_400_never_stored(self):
        body = event()
        ts = int(time.time())
        valid = "ts=%d;h1=%s" % (ts, hmac_h1(self.ep.secret, ts, body))
        # Just under nginx's 8 KiB header buffer: reaches the worker, whose limit is 2 KiB.
        header = valid + ";x=" + "a" * (8000 - len(valid))
        self.expect(H.post(self.ep.path, body, signature=header), 401, "invalid_signature", "7.9 KB")
        # Over it: nginx answers 400 itself (before any location, so not as JSON).
        header = valid + ";x=" + "a" * (8192 - len(valid))
        r = H.post(self.ep.path, body, signature=header)
        self.assertEqual(r.status, 400, r)
        self.assertNothingChanged("8 KB header")

    def test_a_request_line_over_nginx_buffer_is_its_414_never_stored(self):
        body = event()
        r = H.post(self.ep.path + "x" * 8192, body, signature=H.sign(body, self.ep.secret))
        self.assertEqual(r.status, 414, r)
        self.assertNothingChanged("8 KB request line")

    def test_ts_of_20_digits_or_negative_is_401_invalid_signature(self):
        body = event()
        now = int(time.time())
        for ts in ("9" * 20, "18446744073709551617", "-%d" % now, "+%d" % now, "%d.5" % now,
                   "0%d" % now, "%de0" % now, " %d" % now):
            with self.subTest(ts=ts):
                # h1 is a correct HMAC over "<ts as sent>:<body>": only the ts format is wrong.
                header = "ts=%s;h1=%s" % (ts, hmac_h1(self.ep.secret, ts, body))
                self.expect(H.post(self.ep.path, body, signature=header), 401, "invalid_signature", ts)

    def test_h1_that_is_almost_hex_is_401_invalid_signature(self):
        body = event()
        ts = int(time.time())
        mac = hmac_h1(self.ep.secret, ts, body)
        variants = {
            "last char not hex": mac[:-1] + "g",
            "0x prefix": "0x" + mac,
            "colon separated": ":".join(mac[i:i + 2] for i in range(0, 64, 2)),
            "space inside": mac[:32] + " " + mac[32:],
            "one digit short": mac[:-1],
            "one digit long": mac + "0",
            "base64 of the mac": base64.b64encode(bytes.fromhex(mac)).decode(),
        }
        for name, h1 in variants.items():
            with self.subTest(variant=name):
                header = "ts=%d;h1=%s" % (ts, h1)
                self.expect(H.post(self.ep.path, body, signature=header), 401, "invalid_signature", name)
        # Non-ASCII look-alike digits (fullwidth) as raw header bytes.
        fullwidth = "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in mac)
        r = self.raw_post(self.ep.path, body,
                          [b"Paddle-Signature: ts=%d;h1=" % ts + fullwidth.encode("utf-8")])
        self.expect(r, 401, "invalid_signature", "fullwidth digits")

    def test_valid_signature_of_another_body_is_401_invalid_signature(self):
        signed = event()
        sent = event()
        self.expect(H.post(self.ep.path, sent, signature=py_sign(signed, self.ep.secret)),
                    401, "invalid_signature")
        # The right h1 moved to another ts.
        ts = int(time.time())
        header = "ts=%d;h1=%s" % (ts - 1, hmac_h1(self.ep.secret, ts, sent))
        self.expect(H.post(self.ep.path, sent, signature=header), 401, "invalid_signature", "ts moved")

    def test_replayed_request_after_the_tolerance_is_401_timestamp_out_of_range(self):
        ep = H.add_endpoint(tolerance=2)
        body = event()
        ts = int(time.time()) + 1    # a second ahead: the two deliveries inside the tolerance have 2-3 s
        sig = py_sign(body, ep.secret, ts=ts)
        self.assertStored(H.post(ep.path, body, signature=sig))
        self.assertDuplicate(H.post(ep.path, body, signature=sig), "replay inside the tolerance")
        self.before = H.digest()
        # The worker's time(2) reads the kernel's coarse clock, a tick (a few ms) behind time.time().
        while time.time() < ts + 3.05:
            time.sleep(0.05)
        self.expect(H.post(ep.path, body, signature=sig), 401, "timestamp_out_of_range", "late replay")
        other = event()
        self.expect(H.post(ep.path, other, signature=py_sign(other, ep.secret, ts=ts)),
                    401, "timestamp_out_of_range", "new body, old ts")


# --------------------------------------------------------------------------
# Bodies: encodings, structure, sizes, values
# --------------------------------------------------------------------------

class HostileBody(HostileCase):

    def test_raw_nul_bytes_are_400_malformed_json(self):
        good = event()
        for name, body in (("inside a string", good.replace(b'"active"', b'"act\x00ive"', 1)),
                           ("after the object", good + b"\x00"),
                           ("before the object", b"\x00" + good),
                           ("between tokens", good.replace(b'":', b'"\x00:', 1))):
            with self.subTest(where=name):
                self.assertIn(b"\x00", body)
                self.expect(self.post_signed(body), 400, "malformed_json", name)

    def test_utf16_body_is_400_malformed_json(self):
        text = event().decode()
        for enc in ("utf-16", "utf-16-le", "utf-16-be", "utf-32"):
            with self.subTest(encoding=enc):
                self.expect(self.post_signed(text.encode(enc)), 400, "malformed_json", enc)

    def test_utf8_bom_is_400_malformed_json(self):
        self.expect(self.post_signed(b"\xef\xbb\xbf" + event()), 400, "malformed_json")

    def test_10000_deep_nesting_is_400_nesting_too_deep(self):
        for name, deep in (("arrays", "[" * 10000 + "]" * 10000),
                           ("objects", '{"a":' * 10000 + "1" + "}" * 10000),
                           ("unclosed", "[" * 10000)):
            with self.subTest(shape=name):
                body = event().replace(b'"data":{', b'"data":{"deep":' + deep.encode() + b',', 1)
                self.expect(self.post_signed(body), 400, "nesting_too_deep", name)

    def test_duplicate_envelope_keys_are_400_invalid_field(self):
        good = event()
        eid = json.loads(good)["event_id"]
        cases = {
            "event_id twice, same value": good.replace(b"{", b'{"event_id":"%s",' % eid.encode(), 1),
            "event_id twice, other value": good[:-1] + b',"event_id":"%s"}' % paddle_id("evt").encode(),
            "event_type twice": good[:-1] + b',"event_type":"customer.created"}',
            "data twice": good[:-1] + b',"data":{"id":"%s"}}' % paddle_id("ctm").encode(),
            "escaped key": good[:-1] + b',"event\\u005fid":"%s"}' % paddle_id("evt").encode(),
        }
        for name, body in cases.items():
            with self.subTest(case=name):
                json.loads(body)  # valid JSON; the duplicate is the only fault
                self.expect(self.post_signed(body), 400, "invalid_field", name)

    def test_huge_numbers_in_data_are_stored_exactly(self):
        big = "123456789012345678901234567890123456789012345678901234567890"
        data = sample_subscription()
        env = make_event("subscription.created", data, as_dict=True)
        body = json.dumps(env, separators=(",", ":")).encode()
        body = body.replace(b'"data":{', b'"data":{"big":%s,"exp":1e400,"neg":-%s.%s,"tiny":1e-400,'
                            % (big.encode(), big.encode(), big.encode()), 1)
        self.assertStored(self.post_signed(body))
        row = H.sql_json("SELECT payload->'data'->>'big' AS big, payload->'data'->>'exp' AS exp, "
                         "payload->'data'->>'neg' AS neg, payload->'data'->>'tiny' AS tiny "
                         "FROM paddle.payment_events WHERE event_id = %s" % H.lit(env["event_id"]))[0]
        self.assertEqual(row["big"], big)
        self.assertEqual(row["neg"], "-%s.%s" % (big, big))
        self.assertEqual(row["exp"].replace("0", ""), "1")
        self.assertEqual(len(row["exp"]), 401)
        self.assertEqual(row["tiny"].rstrip("0"), "0." + "0" * 399 + "1")
        sub = H.state_row("paddle.subscriptions", data["id"])
        self.assertIsNotNone(sub, "the subscription was not projected")

    def test_number_beyond_postgresql_numeric_is_400_unsupported_json(self):
        body = event().replace(b'"data":{', b'"data":{"n":1e1000000,', 1)
        self.expect(self.post_signed(body), 400, "unsupported_json")

    def test_900kb_string_value_is_stored(self):
        blob = "x" * (900 * 1024)
        data = sample_customer()
        data["custom_data"] = {"blob": blob}
        env = make_event("customer.created", data, as_dict=True)
        body = json.dumps(env, separators=(",", ":")).encode()
        self.assertLess(len(body), 1024 * 1024)
        self.assertStored(self.post_signed(body))
        n = H.sql_value("SELECT length(payload->'data'->'custom_data'->>'blob') FROM paddle.payment_events "
                        "WHERE event_id = %s" % H.lit(env["event_id"]))
        self.assertEqual(int(n), len(blob))
        n = H.sql_value("SELECT length(custom_data->>'blob') FROM paddle.customers WHERE id = %s"
                        % H.lit(data["id"]))
        self.assertEqual(int(n), len(blob))

    def test_sql_metacharacters_in_envelope_ids_are_400_invalid_field(self):
        injections = ["evt_'; DROP TABLE paddle.payment_events; --", "evt_01\" OR \"1\"=\"1",
                      "evt_01); DELETE FROM paddle.customers; --", "evt_$1", "evt_01\\'",
                      "evt_01 UNION SELECT sealed FROM paddle.endpoint_secrets"]
        for value in injections:
            for field in ("event_id", "notification_id", "event_type"):
                with self.subTest(field=field, value=value):
                    env = make_event("subscription.created", sample_subscription(), as_dict=True)
                    env[field] = value
                    self.expect(self.post_signed(json.dumps(env).encode()), 400, "invalid_field",
                                "%s=%s" % (field, value))

    def test_sql_metacharacters_in_data_are_stored_verbatim(self):
        name = "Robert'); DROP TABLE paddle.customers; -- \\ $1 $$ \" ; '' E'\\x00'"
        data = sample_customer(name=name)
        data["email"] = "o'hara+\"quoted\"@example.com"
        self.assertStored(self.post_signed(make_event("customer.created", data)))
        row = H.state_row("paddle.customers", data["id"])
        self.assertEqual(row["name"], name)
        self.assertEqual(row["email"], data["email"])
        self.assertGreater(H.event_count(), 0)  # the tables are all still there

    def test_nul_escape_in_data_is_400_unsupported_json(self):
        for where, data in (("string", {"id": paddle_id("sub"), "name": "a\u0000b"}),
                            ("key", {"id": paddle_id("sub"), "a\u0000b": 1})):
            with self.subTest(where=where):
                env = make_event("subscription.created", data, as_dict=True)
                body = json.dumps(env).encode()
                self.assertIn(b"\\u0000", body)
                self.expect(self.post_signed(body), 400, "unsupported_json", where)
                self.assertIsNone(H.event_row(env["event_id"]))

    def test_chunked_body_is_verified_on_its_decoded_bytes(self):
        body = event()
        sig = py_sign(body, self.ep.secret)
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 100]), body[i:i + 100])
                          for i in range(0, len(body), 100)) + b"0\r\n\r\n"
        head = (b"POST %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                b"Paddle-Signature: %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                % (self.ep.path.encode(), sig.encode()))
        self.assertStored(H.raw_request(head + chunks))
        self.before = H.digest()
        other = event()
        chunks = b"%x\r\n%s\r\n0\r\n\r\n" % (len(other), other)
        self.expect(H.raw_request(head + chunks), 401, "invalid_signature", "other body, chunked")

    def test_over_long_paths_and_ids_are_404(self):
        body = event()
        sig = py_sign(body, self.ep.secret)
        for path, code in (("/paddle/webhooks/" + "a" * 65, "unknown_endpoint"),
                           ("/paddle/webhooks/" + "a" * 4000, "not_found")):
            with self.subTest(path=path[:60]):
                self.expect(H.post(path, body, signature=sig), 404, code, path[:60])
        # An encoded NUL never reaches the worker: nginx refuses the request line.
        r = H.post(self.ep.path + "%00", body, signature=sig)
        self.assertEqual(r.status, 400, r)
        self.assertNothingChanged("%00")


# --------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------


class Logs(HostileCase):

    def test_no_secret_payload_or_forged_line_reaches_the_logs(self):
        canary = "CANARY%s" % os.urandom(6).hex()
        data = sample_customer(name="Name " + canary, email=canary.lower() + "@example.com")
        data["custom_data"] = {"note": canary, "x": "\n" + canary}
        self.assertStored(self.post_signed(make_event("customer.created", data)))
        body = make_event("customer.created", data)
        for r in (H.post(self.ep.path, body, signature="ts=1;h1=" + canary),          # malformed header
                  H.post(self.ep.path, body, signature=py_sign(body, canary)),       # wrong secret
                  self.post_signed(body.replace(b'"data":', b'"data":1,"x":', 1)),   # invalid field
                  self.post_signed(body[:-3]),                                       # malformed JSON
                  self.post_signed(body.replace(b'"note":"', b'"note":"\\u0000', 1)),  # PostgreSQL refuses
                  # ... after the canary: PostgreSQL's message quotes the JSON up to where it stopped
                  self.post_signed(body.replace(canary.encode() + b'"', canary.encode() + b'\\u0000"', 1)),
                  self.post_signed(body.replace(canary.encode() + b'"', canary.encode() + b'\xed\xa0\x80"', 1)),
                  self.post_signed(make_event("x\ny level=error FORGED=1", data)),
                  H.post(self.ep.path + "%0a" + "ts=0%20level=error%20FORGED=1", body,
                         signature=py_sign(body, self.ep.secret)),
                  H.request("GET", "/paddle/healthz?" + canary)):
            self.assertIsNotNone(r)
        time.sleep(0.3)
        text = self.assertLogsClean()
        self.assertNotIn(canary, text["serve"], "payload or header bytes in the serve log")
        self.assertNotIn("FORGED", text["serve"])

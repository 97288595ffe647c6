"""FastCGI spoken directly to a worker's socket, as nginx speaks it: for what
nginx never forwards (a body shorter than its CONTENT_LENGTH, a length that is
not a number) and for the connection-level behaviour nginx relies on."""

import socket
import struct

FCGI_BEGIN_REQUEST, FCGI_ABORT_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 2, 3, 4, 5, 6


def fcgi_record(rtype, content=b"", request_id=1):
    return struct.pack(">BBHHBx", 1, rtype, request_id, len(content), 0) + content


def _name_value(name, value):
    def length(n):
        return bytes([n]) if n < 128 else struct.pack(">I", n | 0x80000000)
    return length(len(name)) + length(len(value)) + name + value


def fcgi_request(method, uri, body=b"", keep_conn=True, params=(), content_length=None, end_stdin=True):
    """A whole FastCGI request: BEGIN_REQUEST, PARAMS, STDIN. params: more (name, value) pairs, a name
    may repeat; content_length: CONTENT_LENGTH as sent (default the body's length, False = absent);
    end_stdin=False leaves out the empty STDIN record that ends the body."""
    pairs = [("REQUEST_METHOD", method), ("DOCUMENT_URI", uri), ("REQUEST_URI", uri)]
    cl = str(len(body)) if content_length is None else content_length
    if cl is not False:
        pairs.append(("CONTENT_LENGTH", cl))
    encoded = b"".join(_name_value(n.encode(), v.encode()) for n, v in pairs + list(params))
    out = fcgi_record(FCGI_BEGIN_REQUEST, struct.pack(">HB5x", 1, 1 if keep_conn else 0))  # responder
    for i in range(0, len(encoded), 65535):
        out += fcgi_record(FCGI_PARAMS, encoded[i:i + 65535])
    out += fcgi_record(FCGI_PARAMS)
    for i in range(0, len(body), 65535):
        out += fcgi_record(FCGI_STDIN, body[i:i + 65535])
    return out + fcgi_record(FCGI_STDIN) if end_stdin else out


def fcgi_response(sock, timeout=10):
    """STDOUT of one request up to its END_REQUEST; None if the connection closed first."""
    sock.settimeout(timeout)
    buf, out = b"", b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buf += chunk
        data, buf = buf[:n], buf[n:]
        return data
    while True:
        head = need(8)
        if head is None:
            return None
        _, rtype, _, length, padding = struct.unpack(">BBHHBx", head)
        content = need(length + padding)
        if content is None:
            return None
        if rtype == FCGI_STDOUT:
            out += content[:length]
        elif rtype == FCGI_END_REQUEST:
            return out


def fcgi_once(address, method, uri, body=b"", **request):
    """One request on a new connection to a unix socket path or a (host, port): its STDOUT, or None when
    nothing answers there (yet). request: more arguments of fcgi_request."""
    try:
        if isinstance(address, str):
            conn = socket.socket(socket.AF_UNIX)
            conn.settimeout(5)
            try:
                conn.connect(address)
            except OSError:
                conn.close()
                raise
        else:
            conn = socket.create_connection(address, timeout=5)
        with conn:
            conn.sendall(fcgi_request(method, uri, body, keep_conn=False, **request))
            return fcgi_response(conn)
    except OSError:
        return None


def fcgi_split(stdout):
    """(status, headers dict with lower-case names, body bytes) of a worker's STDOUT."""
    head, _, body = stdout.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(headers.get("status", "0").split()[0]), headers, body

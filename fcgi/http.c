/* http.c - the FastCGI side of a request. Bodies are JSON built with
 * yajl_gen, so messages are always escaped correctly. */
#include "http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_gen.h>

/* The Paddle-Signature header as nginx passes it. */
#define SIGNATURE_PARAM "HTTP_PADDLE_SIGNATURE"

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 413: return "Payload Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    }
    return "Unknown";
}

void http_request_init(struct http_request *req, FCGX_Request *fcgx)
{
    const char *uri;
    size_t len;

    memset(req, 0, sizeof *req);
    req->fcgx = fcgx;
    req->method = FCGX_GetParam("REQUEST_METHOD", fcgx->envp);
    req->content_length = FCGX_GetParam("CONTENT_LENGTH", fcgx->envp);
    req->signature = FCGX_GetParam(SIGNATURE_PARAM, fcgx->envp);
    /* nginx passes a repeated header as repeated parameters; GetParam would
     * silently pick the first. */
    for (char **e = fcgx->envp; e && *e; e++)
        req->signature_count += strncmp(*e, SIGNATURE_PARAM "=", sizeof SIGNATURE_PARAM) == 0;
    if (req->method == NULL) req->method = "";
    /* DOCUMENT_URI is nginx's normalised, decoded path, taken whole: a '?' in
     * it was sent as %3F, and cutting there would route /paddle/metrics%3F to
     * a page whose nginx location it never matched. REQUEST_URI, the fallback
     * other servers send, carries the query string. */
    uri = FCGX_GetParam("DOCUMENT_URI", fcgx->envp);
    if (uri != NULL) {
        len = strlen(uri);
    } else {
        uri = FCGX_GetParam("REQUEST_URI", fcgx->envp);
        if (uri == NULL) uri = "";
        len = strcspn(uri, "?");
    }
    if (len < sizeof req->path) {
        memcpy(req->path, uri, len);
        req->path[len] = '\0';
    }
}

int http_content_length(const struct http_request *req, size_t *len)
{
    const char *s = req->content_length;
    size_t v = 0;

    if (s == NULL || *s == '\0') return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return -1;
        /* Saturate: any length past the ceiling is simply "too large". */
        v = v > MAX_BODY_CEILING ? v : v * 10 + (size_t)(*s - '0');
    }
    *len = v;
    return 0;
}

int http_read_body(struct http_request *req, unsigned char *buf, size_t len)
{
    size_t got = 0;

    while (got < len) {
        int n = FCGX_GetStr((char *)buf + got, (int)(len - got), req->fcgx->in);
        if (n <= 0) break;
        got += (size_t)n;
    }
    buf[got] = '\0';
    /* A body longer than its Content-Length is as suspect as a shorter one.
     * libfcgi also answers EOF when the stream failed (the request deadline
     * interrupted the wait for its end, the peer aborted or closed): only the
     * end record nginx sends after every body is an end. */
    return got == len && FCGX_GetChar(req->fcgx->in) == EOF && FCGX_GetError(req->fcgx->in) == 0 ? 0 : -1;
}

static void respond(struct http_request *req, int code, const char *extra_headers,
                    const char *k1, const char *v1, const char *k2, const char *v2)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    const unsigned char *json = (const unsigned char *)"{}";
    size_t json_len = 2;

    if (g) {
        yajl_gen_map_open(g);
        yajl_gen_string(g, (const unsigned char *)k1, strlen(k1));
        yajl_gen_string(g, (const unsigned char *)v1, strlen(v1));
        if (k2) {
            yajl_gen_string(g, (const unsigned char *)k2, strlen(k2));
            yajl_gen_string(g, (const unsigned char *)v2, strlen(v2));
        }
        yajl_gen_map_close(g);
        yajl_gen_get_buf(g, &json, &json_len);
    }
    FCGX_FPrintF(req->fcgx->out,
                 "Status: %d %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
                 "%s\r\n",
                 code, reason(code), extra_headers ? extra_headers : "");
    FCGX_PutStr((const char *)json, (int)json_len, req->fcgx->out);
    FCGX_PutChar('\n', req->fcgx->out);
    if (g) yajl_gen_free(g);
}

void http_respond_status(struct http_request *req, int code, const char *status_word)
{
    respond(req, code, NULL, "status", status_word, NULL, NULL);
}

void http_respond_error(struct http_request *req, int code, const char *error,
                        const char *message, const char *extra_headers)
{
    respond(req, code, extra_headers, "error", error, "message", message);
}

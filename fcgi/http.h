/* http.h - reading a FastCGI request and writing JSON responses. */
#ifndef PADDLEHOOK_HTTP_H
#define PADDLEHOOK_HTTP_H

#include <stddef.h>

#include <fcgiapp.h>

#include "limits.h"

struct http_request {
    FCGX_Request *fcgx;
    const char *method;
    const char *content_length; /* NULL when nginx sent none */
    const char *signature;      /* Paddle-Signature, NULL when absent */
    int signature_count;        /* >1 when the header was sent more than once */
    char path[MAX_URI_LEN + 1]; /* without the query string; "" when too long */
};

void http_request_init(struct http_request *req, FCGX_Request *fcgx);

/* Parses CONTENT_LENGTH: 0 and the value, or -1 when absent/not a number. */
int http_content_length(const struct http_request *req, size_t *len);

/* Reads exactly len bytes into buf (len + 1 bytes, NUL-terminated). 0 when
 * the body had exactly that many bytes and then its end record; -1 when it was
 * shorter or longer, or its stream failed first (aborted, closed, deadline). */
int http_read_body(struct http_request *req, unsigned char *buf, size_t len);

/* {"status": status_word} with code. */
void http_respond_status(struct http_request *req, int code, const char *status_word);

/* {"error": error, "message": message}. extra_headers: "" or lines ending in \r\n. */
void http_respond_error(struct http_request *req, int code, const char *error,
                        const char *message, const char *extra_headers);

#endif

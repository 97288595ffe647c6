/* shown.h - text from the database or the network, made safe to print on a
 * terminal: each byte of a control character (C0, DEL, or C1 in UTF-8) is
 * written as \xNN, so that no such text can move the cursor, set the
 * window's title or fake a line. */
#ifndef PADDLEHOOK_SHOWN_H
#define PADDLEHOOK_SHOWN_H

#include <stddef.h>
#include <stdio.h>

/* Columns v takes once shown (UTF-8: continuation bytes take none). */
size_t shown_len(const char *v);

/* Writes v to out as shown. */
void shown_put(FILE *out, const char *v);

/* A one-line field from the database (an id, a name) as shown: the room
 * listings give it, cut there. */
#define SHOWN_FIELD_MAX 1024

/* Bytes shown_copy needs for all of a text of n bytes: each byte may become
 * \xNN. */
#define SHOWN_COPY_CAP(n) ((n) * 4 + 1)

/* v as shown, into dst (always terminated; cut before a character that does
 * not fit). */
void shown_copy(char *dst, size_t cap, const char *v);

#endif

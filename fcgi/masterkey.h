/* masterkey.h - the master key file and the sealing of endpoint secrets.
 * Endpoint secrets live in PostgreSQL only as secretbox ciphertext, so a
 * database dump alone reveals none of them. */
#ifndef PADDLEHOOK_MASTERKEY_H
#define PADDLEHOOK_MASTERKEY_H

#include <stddef.h>

#include <sodium.h>

#define MASTERKEY_BYTES crypto_secretbox_KEYBYTES
#define MASTERKEY_SEAL_OVERHEAD (crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES)

struct masterkey {
    unsigned char key[MASTERKEY_BYTES];
};

/* Writes a new random key as hex to `path`, created with mode 0600; refuses to
 * overwrite. 0 or -1 with a reason in err. */
int masterkey_generate(const char *path, char *err, size_t errlen);

/* Reads a key written by masterkey_generate. Refuses a file that group or
 * others can read. 0 or -1 with a reason in err; on -1 *mk is unchanged. */
int masterkey_load(const char *path, struct masterkey *mk, char *err, size_t errlen);

/* out gets nonce || secretbox(msg); out_cap >= len + MASTERKEY_SEAL_OVERHEAD. */
int masterkey_seal(const struct masterkey *mk, const unsigned char *msg, size_t len,
                   unsigned char *out, size_t out_cap);

/* Opens a sealed endpoint secret as the database returns it, encode(sealed,
 * 'hex'); *out_len gets its length. -1 when it is not hex of one or was not
 * sealed with this key. */
int masterkey_open_hex(const struct masterkey *mk, const char *hex, unsigned char *out, size_t out_cap,
                       size_t *out_len);

void masterkey_wipe(struct masterkey *mk);

#endif

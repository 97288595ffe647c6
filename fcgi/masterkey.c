/* masterkey.c - master key file handling and libsodium secretbox sealing. */
#include "masterkey.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MASTERKEY_HEX_LEN (2 * MASTERKEY_BYTES)

int masterkey_generate(const char *path, char *err, size_t errlen)
{
    unsigned char key[MASTERKEY_BYTES];
    char hex[MASTERKEY_HEX_LEN + 2];
    int fd = -1, rc = -1;

    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create %s: %s", path, strerror(errno));
        goto out;
    }
    randombytes_buf(key, sizeof key);
    sodium_bin2hex(hex, sizeof hex, key, sizeof key);
    hex[MASTERKEY_HEX_LEN] = '\n';
    if (write(fd, hex, MASTERKEY_HEX_LEN + 1) != MASTERKEY_HEX_LEN + 1 || fsync(fd) != 0) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        unlink(path);
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(key, sizeof key);
    sodium_memzero(hex, sizeof hex);
    if (fd >= 0) close(fd);
    return rc;
}

/* Up to cap bytes of fd, however many reads that takes; -1 on an error. */
static ssize_t read_up_to(int fd, char *buf, size_t cap)
{
    size_t got = 0;

    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int masterkey_load(const char *path, struct masterkey *mk, char *err, size_t errlen)
{
    char buf[MASTERKEY_HEX_LEN + 8];
    unsigned char key[MASTERKEY_BYTES];
    struct stat st;
    size_t bin_len = 0;
    ssize_t n;
    int fd = -1, rc = -1;

    if (path == NULL || *path == '\0') {
        snprintf(err, errlen, "no key file: set key_file in the configuration file, pass --key-file or set PADDLEHOOK_KEY_FILE");
        goto out;
    }
    /* O_NONBLOCK: a FIFO in the key's place must not hang the open (and a reload with it). */
    fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(err, errlen, "cannot open key file %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "key file %s is not a regular file", path);
        goto out;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen, "key file %s is open to group or others (mode %03o); chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
        goto out;
    }
    if ((n = read_up_to(fd, buf, sizeof buf)) < 0) {
        snprintf(err, errlen, "cannot read key file %s: %s", path, strerror(errno));
        goto out;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
    if (n != MASTERKEY_HEX_LEN ||
        sodium_hex2bin(key, sizeof key, buf, (size_t)n, NULL, &bin_len, NULL) != 0 ||
        bin_len != MASTERKEY_BYTES) {
        snprintf(err, errlen, "key file %s does not hold a key made by 'paddlehook keygen'", path);
        goto out;
    }
    /* Decoded aside: hex2bin writes as it goes, and a reload that fails
     * must leave the key in use whole. */
    memcpy(mk->key, key, sizeof key);
    rc = 0;
out:
    sodium_memzero(key, sizeof key);
    sodium_memzero(buf, sizeof buf);
    if (fd >= 0) close(fd);
    return rc;
}

int masterkey_seal(const struct masterkey *mk, const unsigned char *msg, size_t len,
                   unsigned char *out, size_t out_cap)
{
    if (out_cap < len + MASTERKEY_SEAL_OVERHEAD) return -1;
    randombytes_buf(out, crypto_secretbox_NONCEBYTES);
    return crypto_secretbox_easy(out + crypto_secretbox_NONCEBYTES, msg, len, out, mk->key);
}

/* Inverse of seal; *out_len = sealed_len - MASTERKEY_SEAL_OVERHEAD. -1 when
 * the ciphertext was not made with this key. */
static int masterkey_open(const struct masterkey *mk, const unsigned char *sealed, size_t sealed_len,
                          unsigned char *out, size_t out_cap, size_t *out_len)
{
    if (sealed_len < MASTERKEY_SEAL_OVERHEAD || out_cap < sealed_len - MASTERKEY_SEAL_OVERHEAD)
        return -1;
    if (crypto_secretbox_open_easy(out, sealed + crypto_secretbox_NONCEBYTES,
                                   sealed_len - crypto_secretbox_NONCEBYTES, sealed, mk->key) != 0)
        return -1;
    *out_len = sealed_len - MASTERKEY_SEAL_OVERHEAD;
    return 0;
}

int masterkey_open_hex(const struct masterkey *mk, const char *hex, unsigned char *out, size_t out_cap,
                       size_t *out_len)
{
    unsigned char sealed[MAX_SECRET_LEN + MASTERKEY_SEAL_OVERHEAD];
    size_t sealed_len = 0;

    if (sodium_hex2bin(sealed, sizeof sealed, hex, strlen(hex), NULL, &sealed_len, NULL) != 0) return -1;
    return masterkey_open(mk, sealed, sealed_len, out, out_cap, out_len);
}

void masterkey_wipe(struct masterkey *mk) { sodium_memzero(mk, sizeof *mk); }

/* The master key file: what is accepted, and that a refused file leaves the
 * key in use as it was (a reload on SIGHUP relies on it). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "masterkey.h"
#include "tap.h"

static int write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    size_t len = strlen(text);
    int ok = fd >= 0 && write(fd, text, len) == (ssize_t)len && fchmod(fd, mode) == 0;

    if (fd >= 0) close(fd);
    return ok ? 0 : -1;
}

void test_masterkey(void)
{
    char dir[] = "/tmp/paddlehook-unit-XXXXXX", good[64], bad[64];
    char err[256], hex[2 * MASTERKEY_BYTES + 2];
    struct masterkey mk, before;

    if (mkdtemp(dir) == NULL) {
        tap_ok(0, "masterkey: temporary directory");
        return;
    }
    snprintf(good, sizeof good, "%s/good.key", dir);
    snprintf(bad, sizeof bad, "%s/bad.key", dir);

    tap_ok(masterkey_generate(good, err, sizeof err) == 0, "masterkey: keygen writes a key file");
    tap_ok(masterkey_generate(good, err, sizeof err) != 0, "masterkey: keygen refuses to overwrite");
    tap_ok(masterkey_load(good, &mk, err, sizeof err) == 0, "masterkey: the generated file loads");
    before = mk;

    /* 64 characters, the first 16 valid hex: hex2bin has written 8 bytes
     * by the time it meets the 'g'. */
    memset(hex, 'a', 2 * MASTERKEY_BYTES);
    hex[16] = 'g';
    hex[2 * MASTERKEY_BYTES] = '\n';
    hex[2 * MASTERKEY_BYTES + 1] = '\0';
    write_file(bad, hex, 0600);
    tap_ok(masterkey_load(bad, &mk, err, sizeof err) != 0, "masterkey: a non-hex character is refused");
    tap_ok(memcmp(&mk, &before, sizeof mk) == 0, "masterkey: a refused file leaves the key unchanged");

    write_file(bad, "abcd\n", 0600);
    tap_ok(masterkey_load(bad, &mk, err, sizeof err) != 0 && memcmp(&mk, &before, sizeof mk) == 0,
           "masterkey: a short file is refused, key unchanged");

    hex[16] = 'b';
    write_file(bad, hex, 0640);
    tap_ok(masterkey_load(bad, &mk, err, sizeof err) != 0 && strstr(err, "chmod 600") != NULL,
           "masterkey: a group-readable file is refused: %s", err);

    /* Not a regular file: a FIFO with no writer would block the open, a
     * directory fail the read; each is named as what it is. */
    unlink(bad);
    tap_ok(mkfifo(bad, 0600) == 0 && masterkey_load(bad, &mk, err, sizeof err) != 0 &&
               strstr(err, "not a regular file") != NULL,
           "masterkey: a FIFO is refused without waiting for a writer: %s", err);
    unlink(bad);
    tap_ok(mkdir(bad, 0700) == 0 && masterkey_load(bad, &mk, err, sizeof err) != 0 &&
               strstr(err, "not a regular file") != NULL,
           "masterkey: a directory is refused as not a regular file: %s", err);
    rmdir(bad);

    {
        /* A sealed secret as the database returns it: encode(sealed, 'hex'). */
        static const char secret[] = "pdl_ntfset_01test";
        unsigned char sealed[sizeof secret + MASTERKEY_SEAL_OVERHEAD], plain[MAX_SECRET_LEN];
        char sealed_hex[2 * sizeof sealed + 1];
        struct masterkey other;
        size_t len = 0;

        masterkey_load(good, &mk, err, sizeof err);
        memset(&other, 0x5a, sizeof other);
        masterkey_seal(&mk, (const unsigned char *)secret, sizeof secret - 1, sealed, sizeof sealed);
        sodium_bin2hex(sealed_hex, sizeof sealed_hex, sealed, sizeof secret - 1 + MASTERKEY_SEAL_OVERHEAD);
        tap_ok(masterkey_open_hex(&mk, sealed_hex, plain, sizeof plain, &len) == 0 && len == sizeof secret - 1 &&
                   memcmp(plain, secret, len) == 0,
               "masterkey: a sealed secret in hex opens with its key");
        tap_ok(masterkey_open_hex(&other, sealed_hex, plain, sizeof plain, &len) != 0,
               "masterkey: ... and not with another key");
        sealed_hex[3] = 'x';
        tap_ok(masterkey_open_hex(&mk, sealed_hex, plain, sizeof plain, &len) != 0, "masterkey: ... nor when not hex");
        masterkey_wipe(&other);
    }

    unlink(good);
    unlink(bad);
    rmdir(dir);
    masterkey_wipe(&mk);
    masterkey_wipe(&before);
}

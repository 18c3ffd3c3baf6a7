/* What the hosted C examples share (examples/c, and examples/c-firmware/host_expected.c):
 * reading a whole model file into memory, and checking a call's status. Header-only, all
 * `static`, so each program compiles it once and unused parts cost nothing. C99, std flavour
 * (expect() prints goldcrest_last_error()). */
#ifndef GOLDCREST_EXAMPLE_H
#define GOLDCREST_EXAMPLE_H

#include <stdio.h>
#include <stdlib.h>
#include "goldcrest.h"

/* Checks failed so far; a program exits non-zero when any did. */
static int failures = 0;

/* The whole file at `path` in a malloc'd buffer (free it), its length in *len; NULL when it
 * cannot be read. malloc's alignment covers every tensor's; the library checks it (tensors are
 * read in place, as from a firmware's flash). */
static inline unsigned char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
        buf = malloc((size_t)n);
        if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
        *len = (size_t)n;
    }
    fclose(f);
    return buf;
}

/* Prints an ok line (with the library's detail, if any) when a call returned `want`, else a
 * FAIL line, and counts the failure. */
static inline void expect(GoldcrestStatus got, GoldcrestStatus want, const char *what) {
    if (got != want) {
        fprintf(stderr, "FAIL %s: got %s, want %s (%s)\n", what, goldcrest_status_str((int32_t)got),
                goldcrest_status_str((int32_t)want), goldcrest_last_error());
        failures++;
    } else {
        printf("ok   %-52s %s%s%s\n", what, goldcrest_status_str((int32_t)got),
               *goldcrest_last_error() ? ": " : "", goldcrest_last_error());
    }
}

/* Prints an ok line when `ok` holds, else a FAIL line, and counts the failure. */
static inline void expect_true(int ok, const char *what) {
    if (!ok) { fprintf(stderr, "FAIL %s\n", what); failures++; }
    else printf("ok   %s\n", what);
}

#endif

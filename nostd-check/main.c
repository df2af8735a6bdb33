/* Links the no_std staticlib into a C program: validates and re-emits an image. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t cr_nostd_validate(const uint8_t *buf, size_t len, uint64_t *err_offset);
int64_t cr_nostd_copy(const uint8_t *buf, size_t len, uint8_t *out, size_t cap);

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s IMAGE\n", argv[0]); return 2; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    static uint8_t buf[1 << 22], out[1 << 22];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint64_t off = 0;
    int64_t n = cr_nostd_validate(buf, len, &off);
    if (n < 0) { printf("invalid at offset 0x%llx\n", (unsigned long long)off); return 1; }
    int64_t m = cr_nostd_copy(buf, len, out, sizeof out);
    if (m != (int64_t)len || memcmp(buf, out, len) != 0) { printf("re-emit differs\n"); return 1; }
    printf("ok %lld records, re-emitted %lld identical bytes\n", (long long)n, (long long)m);
    return 0;
}

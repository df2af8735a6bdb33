/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * walk - walk the records of a cr image with nothing but cr_image.h and libc.
 *
 *   walk IMAGE
 *
 * Prints one line per record:
 *
 *   <offset 0x..> <kind> <len> <crc 0x%08x> <ok|BAD>
 *
 * where ok means the stored CRC equals the CRC-32 of header bytes 0..12 and the payload's checked
 * part (FORMAT.md §2.3) and, for a Pages record, the data area's CRC equals data_crc. Then, at
 * the Tail:
 *
 *   tail records=<n> image_len=<n> digest=0x%016llx digest_ok=<yes|no>
 *
 * with the Tail's stored values; digest_ok says whether the stored digest is the CRC-64/XZ of the
 * record headers before the Tail (§2.4). This is a record walker, not a validator: it checks
 * framing, indexes and checksums only (cr-format checks every rule). Exit status: 0 when every
 * CRC, index, the digest and the Tail's counts match and nothing follows the Tail; 1 on a
 * mismatch or malformed input, with a message on stderr; 2 on a usage or I/O error.
 *
 * C11, no dependencies beyond libc; its own table-driven CRC-32 and bitwise CRC-64/XZ.
 */
#include "cr_image.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* CRC-32/ISO-HDLC (zlib crc32), table-driven. */
static uint32_t crc32_table[256];

static void crc32_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1u) ? (c >> 1) ^ 0xEDB88320u : c >> 1;
		crc32_table[i] = c;
	}
}

/* Continues a CRC: pass 0 to start; the result of one call can be passed to the next. */
static uint32_t crc32_update(uint32_t crc, const unsigned char *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc32_table[(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
	return ~crc;
}

/* CRC-64/XZ, bitwise: reflected polynomial 0xC96C5795D7870F42, init and xorout all ones. */
static uint64_t crc64_update(uint64_t crc, const unsigned char *p, size_t n)
{
	crc = ~crc;
	while (n--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc & 1u) ? (crc >> 1) ^ UINT64_C(0xC96C5795D7870F42) : crc >> 1;
	}
	return ~crc;
}

static int fail(const char *msg, uint64_t off)
{
	fprintf(stderr, "walk: malformed image at offset 0x%" PRIx64 ": %s\n", off, msg);
	return 1;
}

/* Reads all of `path` into a malloc'd buffer. */
static unsigned char *read_all(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "walk: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	size_t cap = 1 << 16, n = 0;
	unsigned char *buf = malloc(cap);
	while (buf) {
		if (n == cap) {
			unsigned char *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
			if (!bigger) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = bigger;
			cap *= 2;
		}
		size_t got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0) {
			if (ferror(f)) {
				fprintf(stderr, "walk: %s: read error\n", path);
				free(buf);
				buf = NULL;
			}
			break;
		}
	}
	if (!buf && !ferror(f))
		fprintf(stderr, "walk: %s: out of memory\n", path);
	fclose(f);
	*len = n;
	return buf;
}

static int walk(const unsigned char *img, uint64_t size)
{
	uint64_t off = 0, count = 0, digest = 0;
	int bad = 0;

	for (;;) {
		if (off == size)
			return fail("the image ends without a Tail", off);
		if (size - off < CR_RECORD_HEADER_LEN)
			return fail("truncated record header", off);
		const unsigned char *h = img + off;
		uint16_t kind = cr_get_le16(h + offsetof(struct cr_record_header, kind));
		uint32_t len = cr_get_le32(h + offsetof(struct cr_record_header, len));
		uint32_t index = cr_get_le32(h + offsetof(struct cr_record_header, index));
		uint32_t stored = cr_get_le32(h + offsetof(struct cr_record_header, crc));
		if (len % 8 != 0)
			return fail("record length not a multiple of 8", off);
		if (len > size - off - CR_RECORD_HEADER_LEN)
			return fail("truncated record payload", off);
		const unsigned char *p = h + CR_RECORD_HEADER_LEN;

		/* The checked part: all of the payload, or for Pages everything before the data. */
		uint64_t checked = len;
		int data_ok = 1;
		if (kind == CR_KIND_PAGES) {
			if (len < sizeof(struct cr_pages))
				return fail("Pages record shorter than its fixed part", off);
			uint64_t runs = cr_get_le32(p + offsetof(struct cr_pages, run_count));
			uint64_t pad = cr_get_le32(p + offsetof(struct cr_pages, pad_len));
			checked = sizeof(struct cr_pages) + sizeof(struct cr_page_run) * runs + pad;
			if (checked > len)
				return fail("Pages run table and pad longer than the record", off);
			uint32_t data_crc = cr_get_le32(p + offsetof(struct cr_pages, data_crc));
			data_ok = crc32_update(0, p + checked, (size_t)(len - checked)) == data_crc;
		}
		uint32_t crc = crc32_update(0, h, 12);
		crc = crc32_update(crc, p, (size_t)checked);
		int ok = crc == stored && data_ok;
		if (!ok) {
			fprintf(stderr, "walk: record at 0x%" PRIx64 ": %s mismatch\n", off,
				crc != stored ? "record CRC" : "page data CRC");
			bad = 1;
		}
		if (index != count) {
			fprintf(stderr, "walk: record at 0x%" PRIx64 " has index %" PRIu32
					", expected %" PRIu64 "\n",
				off, index, count);
			bad = 1;
		}
		printf("0x%" PRIx64 " %u %" PRIu32 " 0x%08" PRIx32 " %s\n", off, (unsigned)kind, len,
		       stored, ok ? "ok" : "BAD");

		uint64_t next = off + CR_RECORD_HEADER_LEN + len;
		if (kind == CR_KIND_TAIL) {
			if (len < sizeof(struct cr_tail))
				return fail("Tail record shorter than 24 bytes", off);
			uint64_t records = cr_get_le64(p + offsetof(struct cr_tail, record_count));
			uint64_t image_len = cr_get_le64(p + offsetof(struct cr_tail, image_len));
			uint64_t want = cr_get_le64(p + offsetof(struct cr_tail, digest));
			printf("tail records=%" PRIu64 " image_len=%" PRIu64 " digest=0x%016" PRIx64
			       " digest_ok=%s\n",
			       records, image_len, want, want == digest ? "yes" : "no");
			if (records != count || image_len != next) {
				fprintf(stderr, "walk: Tail says %" PRIu64 " records, %" PRIu64
						" bytes; found %" PRIu64 ", %" PRIu64 "\n",
					records, image_len, count, next);
				bad = 1;
			}
			if (next != size) {
				fprintf(stderr, "walk: %" PRIu64 " bytes after the Tail\n", size - next);
				bad = 1;
			}
			if (want != digest) {
				fprintf(stderr, "walk: tail digest mismatch: computed 0x%016" PRIx64 "\n",
					digest);
				bad = 1;
			}
			return bad;
		}
		digest = crc64_update(digest, h, CR_RECORD_HEADER_LEN);
		count++;
		off = next;
	}
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: walk IMAGE\n");
		return 2;
	}
	crc32_init();
	size_t len;
	unsigned char *img = read_all(argv[1], &len);
	if (!img)
		return 2;
	int rc = walk(img, (uint64_t)len);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "walk: write error\n");
		rc = 2;
	}
	free(img);
	return rc;
}

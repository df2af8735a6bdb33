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
 * record headers before the Tail (§2.4). Then, if anything was wrong, one last line names the
 * first error the way cr-format does, its kind and the byte offset cr-format gives:
 *
 *   error 0x<offset> <kind>
 *
 * kind: truncated, magic, version, arch, page_size, crid, parent_crid (Header fields, §3),
 * order (a record where §2.2's order does not allow it), unknown_critical, record_crc,
 * page_data_crc, tail_digest, tail_count, trailing_data, index, malformed, limit, reserved,
 * field. This is a record walker, not a validator: it checks framing, record order (that of
 * the state records, VmaAttr and VdsoData of 1.1 and 1.2 included), the Header's fields, indexes
 * and checksums, and the fields of the other records that cr-format checks first (for the
 * records of 1.1 and 1.2, §15..§24, every rule; cr-format checks every rule of every record). Exit status: 0
 * when none of that is wrong; 1 on an error (with a message on stderr); 2 on a usage or I/O
 * error.
 *
 * C11, no dependencies beyond libc; its own table-driven CRC-32 and bitwise CRC-64/XZ. Built
 * from walk.c and walk_state.c (the state records of 1.1 and 1.2), which share walk.h:
 *
 *   cc -std=c11 -I spec -o walk spec/c/walk.c spec/c/walk_state.c
 */
#include "walk.h"

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

/* The first error found: its kind and offset, printed last (cr-format stops at its first). */
static const char *err_kind;
static uint64_t err_off;

static void error_at(const char *kind, uint64_t off)
{
	if (!err_kind) {
		err_kind = kind;
		err_off = off;
	}
}

int fail(const char *msg, const char *kind, uint64_t off)
{
	fprintf(stderr, "walk: malformed image at offset 0x%" PRIx64 ": %s\n", off, msg);
	error_at(kind, off);
	return 1;
}

/* §3: the Header's own fields, at `p` (its payload, at image offset `at`). */
static int check_header(const unsigned char *p, uint64_t at)
{
	uint16_t major = cr_get_le16(p + offsetof(struct cr_header, version_major));
	uint16_t arch = cr_get_le16(p + offsetof(struct cr_header, arch));
	uint32_t ps = cr_get_le32(p + offsetof(struct cr_header, page_size));
	uint64_t crid = cr_get_le64(p + offsetof(struct cr_header, crid));
	uint64_t parent = cr_get_le64(p + offsetof(struct cr_header, parent_crid));
	if (major != CR_VERSION_MAJOR)
		return fail("unsupported format version", "version",
			    at + offsetof(struct cr_header, version_major));
	if (arch != CR_ARCH_X86_64)
		return fail("unsupported architecture", "arch",
			    at + offsetof(struct cr_header, arch));
	if (ps < 4096 || ps > 65536 || (ps & (ps - 1)) != 0)
		return fail("bad page_size", "page_size",
			    at + offsetof(struct cr_header, page_size));
	if (crid == 0)
		return fail("bad crid", "crid", at + offsetof(struct cr_header, crid));
	if (parent != 0 && parent >= crid)
		return fail("bad parent_crid", "parent_crid",
			    at + offsetof(struct cr_header, parent_crid));
	return 0;
}

/* The first nonzero byte of p[0..n), or n. */
uint64_t first_nonzero(const unsigned char *p, uint64_t n)
{
	uint64_t i = 0;
	while (i < n && p[i] == 0)
		i++;
	return i;
}

/* The Mm's exe path (§6), its length checked: no NUL byte in it, zero padding after it; the
 * error names the NUL or the first nonzero pad byte (§2.6). `p` is the payload, at `at`. */
static int check_mm_exe(const unsigned char *p, uint64_t at)
{
	uint64_t n = cr_get_le32(p + offsetof(struct cr_mm, auxv_count));
	uint64_t e = cr_get_le16(p + offsetof(struct cr_mm, exe_len));
	uint64_t o = sizeof(struct cr_mm) + 16 * n, i, z;
	for (i = 0; i < e; i++)
		if (p[o + i] == 0)
			return fail("NUL in the exe path", "field", at + o + i);
	z = first_nonzero(p + o + e, cr_pad8(e) - e);
	if (z < cr_pad8(e) - e)
		return fail("exe path padding not zero", "field", at + o + e + z);
	return 0;
}

/* The fields of Task, Regs, Mm, Vma and Pages that cr-format checks first (§4-§8): limits,
 * reserved bytes, ranges. `p` is the payload, at image offset `at`. */
static int check_fields(uint16_t kind, const unsigned char *p, uint32_t len, uint64_t at,
			struct ctx *c)
{
#define AT(s, f) (at + offsetof(struct s, f))
	switch (kind) {
	case CR_KIND_TASK:
		if (len < sizeof(struct cr_task))
			return fail("Task record too short", "malformed", at);
		for (int i = 0; i < 3; i++)
			if (p[offsetof(struct cr_task, _reserved0) + i])
				return fail("Task _reserved0 not 0", "reserved", AT(cr_task, _reserved0));
		return 0;
	case CR_KIND_REGS:
		if (len < sizeof(struct cr_regs_x86_64))
			return fail("Regs record too short", "malformed", at);
		{
			uint64_t x = cr_get_le32(p + offsetof(struct cr_regs_x86_64, xsave_len));
			uint64_t end = sizeof(struct cr_regs_x86_64) + x, z;
			if (x > CR_MAX_XSAVE_LEN)
				return fail("xsave_len over CR_MAX_XSAVE_LEN", "limit",
					    AT(cr_regs_x86_64, xsave_len));
			if (len != sizeof(struct cr_regs_x86_64) + cr_pad8(x))
				return fail("Regs length is not that of its XSAVE area", "malformed",
					    at - CR_RECORD_HEADER_LEN);
			/* §2.6: a padding error names the first nonzero byte. */
			z = first_nonzero(p + end, len - end);
			if (z < len - end)
				return fail("XSAVE padding not zero", "field", at + end + z);
		}
		return 0;
	case CR_KIND_MM:
		if (len < sizeof(struct cr_mm))
			return fail("Mm record too short", "malformed", at);
		if (cr_get_le32(p + offsetof(struct cr_mm, auxv_count)) > CR_MAX_AUXV)
			return fail("auxv_count over CR_MAX_AUXV", "limit", AT(cr_mm, auxv_count));
		if (cr_get_le16(p + offsetof(struct cr_mm, exe_len)) > CR_MAX_PATH)
			return fail("exe_len over CR_MAX_PATH", "limit", AT(cr_mm, exe_len));
		if (len != sizeof(struct cr_mm) +
				   16ull * cr_get_le32(p + offsetof(struct cr_mm, auxv_count)) +
				   cr_pad8(cr_get_le16(p + offsetof(struct cr_mm, exe_len))))
			return fail("Mm length is not that of its auxv and path", "malformed",
				    at - CR_RECORD_HEADER_LEN);
		if (cr_get_le64(p + offsetof(struct cr_mm, start_brk)) >
		    cr_get_le64(p + offsetof(struct cr_mm, brk)))
			return fail("start_brk above brk", "field", AT(cr_mm, start_brk));
		return check_mm_exe(p, at);
	case CR_KIND_VMA: {
		if (len < sizeof(struct cr_vma))
			return fail("Vma record too short", "malformed", at);
		uint64_t start = cr_get_le64(p + offsetof(struct cr_vma, start));
		uint64_t end = cr_get_le64(p + offsetof(struct cr_vma, end));
		uint16_t path_len = cr_get_le16(p + offsetof(struct cr_vma, path_len));
		uint16_t vkind = cr_get_le16(p + offsetof(struct cr_vma, kind));
		uint64_t mask = c->page_size - 1;
		if ((start & mask) || start < c->prev_end)
			return fail("Vma start unaligned or below the previous Vma's end", "field",
				    AT(cr_vma, start));
		if ((end & mask) || end <= start)
			return fail("Vma end unaligned or not above start", "field", AT(cr_vma, end));
		if (cr_get_le32(p + offsetof(struct cr_vma, prot)) &
		    ~(uint32_t)(CR_PROT_READ | CR_PROT_WRITE | CR_PROT_EXEC))
			return fail("Vma prot has unknown bits", "field", AT(cr_vma, prot));
		if (path_len > CR_MAX_PATH)
			return fail("Vma path_len over CR_MAX_PATH", "limit", AT(cr_vma, path_len));
		if ((path_len != 0) != (vkind == CR_VMA_FILE))
			return fail("Vma path_len nonzero other than for a file", "field",
				    AT(cr_vma, path_len));
		c->vma_start = start;
		c->vma_end = end;
		c->vdso_open = vkind == CR_VMA_VDSO;
		c->vdso_len = end - start;
		c->prev_end = end;
		c->run_end = start;
		return 0;
	}
	case CR_KIND_PAGES: {
		/* run_count is bounded (and the run table inside the record) by the framing. */
		uint32_t runs = cr_get_le32(p + offsetof(struct cr_pages, run_count));
		for (uint32_t i = 0; i < runs; i++) {
			uint64_t o = sizeof(struct cr_pages) + (uint64_t)i * sizeof(struct cr_page_run);
			const unsigned char *r = p + o;
			uint64_t ra = at + o;
			uint64_t addr = cr_get_le64(r + offsetof(struct cr_page_run, addr));
			uint64_t pages = cr_get_le32(r + offsetof(struct cr_page_run, pages));
			uint16_t rkind = cr_get_le16(r + offsetof(struct cr_page_run, kind));
			if ((addr & (c->page_size - 1)) || addr < c->run_end)
				return fail("run addr below the Vma or the previous run", "field",
					    ra + offsetof(struct cr_page_run, addr));
			if (pages == 0 || addr >= c->vma_end ||
			    pages > (c->vma_end - addr) / c->page_size)
				return fail("run does not end inside the Vma", "field",
					    ra + offsetof(struct cr_page_run, pages));
			if (rkind > CR_RUN_PARENT || (rkind == CR_RUN_PARENT && c->parent_crid == 0))
				return fail("bad run kind", "field", ra + offsetof(struct cr_page_run, kind));
			c->run_end = addr + pages * c->page_size;
		}
		{
			/* The pad after the run table: its first nonzero byte (§2.6). */
			uint64_t t = sizeof(struct cr_pages) + (uint64_t)runs * sizeof(struct cr_page_run);
			uint64_t pad = cr_get_le32(p + offsetof(struct cr_pages, pad_len));
			uint64_t z = first_nonzero(p + t, pad);
			if (z < pad)
				return fail("Pages pad not zero", "field", at + t + z);
		}
		return 0;
	}
	default:
		return 0;
	}
#undef AT
}

/* §2.2's order: Header, Task, Regs, Mm, then Vma, Pages (after a Vma) and non-critical
 * records of unknown kinds, then the Tail. `state` counts the fixed records seen. */
static int check_order(uint16_t kind, uint16_t flags, int *state, int *seen_vma, uint64_t off,
		       const struct ctx *c)
{
	static const uint16_t fixed[] = { CR_KIND_HEADER, CR_KIND_TASK, CR_KIND_REGS, CR_KIND_MM };
	int known = kind >= CR_KIND_HEADER && kind <= CR_KIND_TAIL;
	if (*state >= 4 && kind >= CR_KIND_FILE && kind <= CR_KIND_LAST)
		return check_state_order(kind, flags, *seen_vma, off, c);
	if (*state < 4) {
		if (kind != fixed[*state])
			return fail("record not allowed here", "order", off);
		(*state)++;
		return 0;
	}
	if (!known)
		return (flags & CR_RECORD_CRITICAL) ?
			       fail("unknown critical record kind", "unknown_critical", off) :
			       0;
	if (kind == CR_KIND_VMA)
		*seen_vma = 1;
	else if (kind == CR_KIND_PAGES && !*seen_vma)
		return fail("Pages before any Vma", "order", off);
	else if (kind != CR_KIND_PAGES && kind != CR_KIND_TAIL)
		return fail("record not allowed here", "order", off);
	return 0;
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
	int bad = 0, state = 0, seen_vma = 0;
	struct ctx c;
	memset(&c, 0, sizeof(c));
	c.page_size = 4096;

	for (;;) {
		/* Truncation is reported where the bytes run out, as cr-format does. */
		if (off == size)
			return fail("the image ends without a Tail", "truncated", size);
		if (size - off < CR_RECORD_HEADER_LEN)
			return fail("truncated record header", "truncated", size);
		const unsigned char *h = img + off;
		uint16_t kind = cr_get_le16(h + offsetof(struct cr_record_header, kind));
		uint16_t flags = cr_get_le16(h + offsetof(struct cr_record_header, flags));
		uint32_t len = cr_get_le32(h + offsetof(struct cr_record_header, len));
		uint32_t index = cr_get_le32(h + offsetof(struct cr_record_header, index));
		uint32_t stored = cr_get_le32(h + offsetof(struct cr_record_header, crc));
		const unsigned char *p = h + CR_RECORD_HEADER_LEN;
		/* Not a cr image at all: said before anything else, even of an input too short to
		 * hold the magic when the bytes it has past 16 are not the magic's first (§2.5). */
		if (count == 0 && size - off > CR_RECORD_HEADER_LEN &&
		    size - off < CR_RECORD_HEADER_LEN + CR_MAGIC_LEN &&
		    memcmp(img + off + CR_RECORD_HEADER_LEN, CR_MAGIC,
			   (size_t)(size - off - CR_RECORD_HEADER_LEN)) != 0)
			return fail("bad magic", "magic", off + CR_RECORD_HEADER_LEN);
		if (count == 0) {
			if (size - off < CR_RECORD_HEADER_LEN + CR_MAGIC_LEN)
				return fail("truncated Header", "truncated", size);
			if (memcmp(p, CR_MAGIC, CR_MAGIC_LEN) != 0)
				return fail("bad magic", "magic", off + CR_RECORD_HEADER_LEN);
		}
		if (len % 8 != 0)
			return fail("record length not a multiple of 8", "malformed", off);
		if (len > size - off - CR_RECORD_HEADER_LEN)
			return fail("truncated record payload", "truncated", size);
		if (check_order(kind, flags, &state, &seen_vma, off, &c))
			return 1;

		/* The checked part: all of the payload, or for Pages everything before the data. */
		uint64_t checked = len;
		int data_ok = 1;
		if (kind == CR_KIND_PAGES) {
			if (len < sizeof(struct cr_pages))
				return fail("Pages record shorter than its fixed part", "malformed",
					    off);
			uint64_t runs = cr_get_le32(p + offsetof(struct cr_pages, run_count));
			if (runs > CR_MAX_RUNS_PER_RECORD)
				return fail("run_count over CR_MAX_RUNS_PER_RECORD", "limit",
					    off + CR_RECORD_HEADER_LEN +
						    offsetof(struct cr_pages, run_count));
			uint64_t pad = cr_get_le32(p + offsetof(struct cr_pages, pad_len));
			if (pad >= CR_MAX_PAGE_SIZE)
				return fail("pad_len not below CR_MAX_PAGE_SIZE", "field",
					    off + CR_RECORD_HEADER_LEN +
						    offsetof(struct cr_pages, pad_len));
			checked = sizeof(struct cr_pages) + sizeof(struct cr_page_run) * runs + pad;
			if (checked > len)
				return fail("Pages run table and pad longer than the record",
					    "malformed", off);
			uint32_t data_crc = cr_get_le32(p + offsetof(struct cr_pages, data_crc));
			data_ok = crc32_update(0, p + checked, (size_t)(len - checked)) == data_crc;
		}
		uint32_t crc = crc32_update(0, h, 12);
		crc = crc32_update(crc, p, (size_t)checked);
		int ok = crc == stored && data_ok;
		if (!ok) {
			fprintf(stderr, "walk: record at 0x%" PRIx64 ": %s mismatch\n", off,
				crc != stored ? "record CRC" : "page data CRC");
			if (crc != stored)
				error_at("record_crc", off);
			else
				error_at("page_data_crc", off + CR_RECORD_HEADER_LEN + checked);
			bad = 1;
		}
		if (index != count) {
			fprintf(stderr, "walk: record at 0x%" PRIx64 " has index %" PRIu32
					", expected %" PRIu64 "\n",
				off, index, count);
			error_at("index", off);
			bad = 1;
		}
		printf("0x%" PRIx64 " %u %" PRIu32 " 0x%08" PRIx32 " %s\n", off, (unsigned)kind, len,
		       stored, ok ? "ok" : "BAD");
		if (kind == CR_KIND_HEADER) {
			if (len < sizeof(struct cr_header))
				return fail("Header record shorter than 96 bytes", "malformed", off);
			if (ok && check_header(p, off + CR_RECORD_HEADER_LEN))
				return 1;
			c.page_size = cr_get_le32(p + offsetof(struct cr_header, page_size));
			c.minor = cr_get_le16(p + offsetof(struct cr_header, version_minor));
			c.parent_crid = cr_get_le64(p + offsetof(struct cr_header, parent_crid));
		} else if (ok && check_fields(kind, p, len, off + CR_RECORD_HEADER_LEN, &c)) {
			return 1;
		} else if (ok && check_state_fields(kind, p, len, off + CR_RECORD_HEADER_LEN, &c)) {
			return 1;
		}
		state_advance(kind, &c);

		uint64_t next = off + CR_RECORD_HEADER_LEN + len;
		if (kind == CR_KIND_TAIL) {
			if (len < sizeof(struct cr_tail))
				return fail("Tail record shorter than 24 bytes", "malformed", off);
			uint64_t records = cr_get_le64(p + offsetof(struct cr_tail, record_count));
			uint64_t image_len = cr_get_le64(p + offsetof(struct cr_tail, image_len));
			uint64_t want = cr_get_le64(p + offsetof(struct cr_tail, digest));
			uint64_t at = off + CR_RECORD_HEADER_LEN;
			printf("tail records=%" PRIu64 " image_len=%" PRIu64 " digest=0x%016" PRIx64
			       " digest_ok=%s\n",
			       records, image_len, want, want == digest ? "yes" : "no");
			if (records != count || image_len != next) {
				fprintf(stderr, "walk: Tail says %" PRIu64 " records, %" PRIu64
						" bytes; found %" PRIu64 ", %" PRIu64 "\n",
					records, image_len, count, next);
				error_at("tail_count", records != count ?
							       at + offsetof(struct cr_tail, record_count) :
							       at + offsetof(struct cr_tail, image_len));
				bad = 1;
			}
			if (want != digest) {
				fprintf(stderr, "walk: tail digest mismatch: computed 0x%016" PRIx64 "\n",
					digest);
				error_at("tail_digest", at + offsetof(struct cr_tail, digest));
				bad = 1;
			}
			if (next != size) {
				fprintf(stderr, "walk: %" PRIu64 " bytes after the Tail\n", size - next);
				error_at("trailing_data", next);
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
	if (err_kind)
		printf("error 0x%" PRIx64 " %s\n", err_off, err_kind);
	if (fflush(stdout) != 0) {
		fprintf(stderr, "walk: write error\n");
		rc = 2;
	}
	free(img);
	return rc;
}

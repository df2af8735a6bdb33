/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * walk.h - what walk.c (framing, order, the records of 1.0) and walk_state.c (the state records
 * of 1.1 and 1.2, FORMAT.md §2.5 and §15..§24) share.
 */
#ifndef CR_WALK_H
#define CR_WALK_H

#include "cr_image.h"

#include <stdint.h>

/* What the field checks of later records need from earlier ones. */
struct ctx {
	uint64_t page_size, parent_crid;
	uint64_t vma_start, vma_end; /* the last Vma; a Pages record's runs lie in it */
	uint64_t prev_end;           /* end of the Vma before it */
	uint64_t run_end;            /* end of the last run in this Vma */
	unsigned minor;              /* the Header's version_minor */
	int state_part;              /* state records passed: 1 Inotify, 2 Lock, 3 Signals,
				      * 4 Timers, 5 Process */
	uint64_t files;              /* File records so far */
	int have_last;               /* a File was seen: its (role, fd) */
	uint32_t last_role, last_fd;
	int data_open;               /* a FileData may come, at offset data_next */
	uint64_t data_next;
	int after_vma;               /* the record before was a Vma */
	int watch_open;              /* an InotifyWatch may come, with a wd above watch_prev */
	uint32_t watch_prev;
	int have_inotify;            /* an Inotify was seen: its fd */
	uint32_t last_inotify;
	uint64_t watches, locks;     /* InotifyWatch and Lock records so far */
	int vdso_open;               /* a VdsoData may come, of vdso_len bytes */
	uint64_t vdso_len;
	int vdso_seen;               /* a VdsoData was seen */
};

/* Prints `msg`, records the first error (its kind and offset); returns 1. */
int fail(const char *msg, const char *kind, uint64_t off);
/* The first nonzero byte of p[0..n), or n. */
uint64_t first_nonzero(const unsigned char *p, uint64_t n);

/* §2.5: where a record of kind 8..17 may come. */
int check_state_order(uint16_t kind, uint16_t flags, int seen_vma, uint64_t off,
		      const struct ctx *c);
/* What a record leaves behind for the order of the next one (after its fields). */
void state_advance(uint16_t kind, struct ctx *c);
/* The fields of the records of 1.1 and 1.2, every rule of §15..§24 in cr-format's order. */
int check_state_fields(uint16_t kind, const unsigned char *p, uint32_t len, uint64_t at,
		       struct ctx *c);

#endif /* CR_WALK_H */

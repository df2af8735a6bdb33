/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * walk_state.c - walk's checks of the state records of 1.1 and 1.2 (FORMAT.md §2.5 and
 * §15..§24): their order, and every rule of each in cr-format's order. See walk.c.
 */
#include "walk.h"

#include <stddef.h>
#include <stdio.h>

/* §2.5: the place of a state record among File, Inotify, Lock, Signals, Timers, Process. */
static int state_part_of(uint16_t kind)
{
	switch (kind) {
	case CR_KIND_INOTIFY:
		return 1;
	case CR_KIND_LOCK:
		return 2;
	case CR_KIND_SIGNALS:
		return 3;
	case CR_KIND_TIMERS:
		return 4;
	case CR_KIND_PROCESS:
		return 5;
	default:
		return 0;
	}
}

/* ---- The records of 1.1 and 1.2 (§2.5, §15..§24) ---- */

/* §2.5: where a record of kind 8..17 may come; these kinds are non-critical (flags 0). */
int check_state_order(uint16_t kind, uint16_t flags, int seen_vma, uint64_t off,
			     const struct ctx *c)
{
	if (flags != 0)
		return fail("bad record flags for a kind of 1.1 or 1.2", "field", off);
	if (c->minor == 0)
		return fail("a record kind of 1.1 in an image of version 1.0", "order", off);
	if (kind >= CR_KIND_INOTIFY && c->minor < 2)
		return fail("a record kind of 1.2 in an image of version 1.1", "order", off);
	switch (kind) {
	case CR_KIND_VMA_ATTR:
		return c->after_vma ? 0 : fail("VmaAttr not right after a Vma", "order", off);
	case CR_KIND_FILE_DATA:
		return c->data_open ? 0 :
				      fail("FileData not after a File with data", "order", off);
	case CR_KIND_INOTIFY_WATCH:
		return c->watch_open ? 0 :
				       fail("InotifyWatch not after an Inotify that is no dup",
					    "order", off);
	case CR_KIND_VDSO_DATA:
		if (c->vdso_seen)
			return fail("a second VdsoData", "order", off);
		return c->vdso_open ? 0 : fail("VdsoData not right after the vDSO's Vma", "order", off);
	default:
		break;
	}
	if (seen_vma)
		return fail("state record after a Vma", "order", off);
	if (kind == CR_KIND_FILE && c->state_part > 0)
		return fail("File after Inotify, Lock, Signals, Timers or Process", "order", off);
	if (kind == CR_KIND_INOTIFY && c->state_part > 1)
		return fail("Inotify after Lock, Signals, Timers or Process", "order", off);
	if (kind == CR_KIND_LOCK && c->state_part > 2)
		return fail("Lock after Signals, Timers or Process", "order", off);
	if (kind >= CR_KIND_SIGNALS && kind <= CR_KIND_PROCESS &&
	    c->state_part >= state_part_of(kind))
		return fail("Signals, Timers, Process out of order or twice", "order", off);
	return 0;
}

/* What a record leaves behind for the order of the next one (after its fields). */
void state_advance(uint16_t kind, struct ctx *c)
{
	c->after_vma = kind == CR_KIND_VMA;
	if (kind != CR_KIND_FILE && kind != CR_KIND_FILE_DATA)
		c->data_open = 0;
	if (kind != CR_KIND_INOTIFY && kind != CR_KIND_INOTIFY_WATCH)
		c->watch_open = 0;
	if (kind != CR_KIND_VMA && kind != CR_KIND_VMA_ATTR)
		c->vdso_open = 0;
	if (kind == CR_KIND_VDSO_DATA)
		c->vdso_seen = 1;
	if (c->state_part < state_part_of(kind))
		c->state_part = state_part_of(kind);
}

/* §15: File. */
static int check_file(const unsigned char *p, uint32_t len, uint64_t at, struct ctx *c)
{
#define F(f) (at + offsetof(struct cr_file, f))
#define G32(f) cr_get_le32(p + offsetof(struct cr_file, f))
#define G16(f) cr_get_le16(p + offsetof(struct cr_file, f))
	if (len < sizeof(struct cr_file))
		return fail("File record too short", "malformed", at);
	uint32_t fd = G32(fd), role = G16(role), ftype = G16(ftype), flags = G32(flags);
	uint32_t path_len = G16(path_len), data_len = G32(data_len), dup = G32(dup_of);
	if (path_len > CR_MAX_PATH)
		return fail("path_len over CR_MAX_PATH", "limit", F(path_len));
	if (ftype > CR_FILE_TYPE_LAST)
		return fail("unknown file type", "field", F(ftype));
	if (ftype == CR_FILE_EPOLL) {
		if (data_len % 16)
			return fail("epoll data_len not a multiple of 16", "field", F(data_len));
		if (data_len / 16 > CR_MAX_EPOLL_ENTRIES)
			return fail("epoll entries over CR_MAX_EPOLL_ENTRIES", "limit", F(data_len));
	} else if (ftype == CR_FILE_SOCKET) {
		if (data_len > CR_MAX_SOCKADDR)
			return fail("socket address over CR_MAX_SOCKADDR", "limit", F(data_len));
	} else if (data_len) {
		return fail("data for a type without data", "field", F(data_len));
	}
	if (len != sizeof(struct cr_file) + cr_pad8(path_len) + cr_pad8(data_len))
		return fail("File length", "malformed", at - CR_RECORD_HEADER_LEN);
	if (role > CR_ROLE_ROOT)
		return fail("unknown role", "field", F(role));
	if (flags & ~(uint32_t)CR_FILE_FLAGS_KNOWN)
		return fail("unknown file flags", "field", F(flags));
	if (G16(_reserved0))
		return fail("File _reserved0 not 0", "reserved", F(_reserved0));
	if (G32(_reserved1))
		return fail("File _reserved1 not 0", "reserved", F(_reserved1));
	int dir = role != CR_ROLE_FD;
	if (dir && fd != 0)
		return fail("cwd or root with an fd", "field", F(fd));
	if (c->have_last && (role < c->last_role || (role == c->last_role && fd <= c->last_fd)))
		return fail("File records not sorted by (role, fd)", "field",
			    role == c->last_role ? F(fd) : F(role));
	if (c->files >= CR_MAX_FILES)
		return fail("more than CR_MAX_FILES File records", "limit",
			    at - CR_RECORD_HEADER_LEN);
	if (dir && ftype != CR_FILE_DIR && ftype != CR_FILE_UNSUPPORTED)
		return fail("cwd or root not a directory", "field", F(ftype));
	int data_type = ftype == CR_FILE_REG || ftype == CR_FILE_MEMFD || ftype == CR_FILE_PIPE ||
			ftype == CR_FILE_FIFO;
	if (((flags & CR_FILE_DELETED) && ftype != CR_FILE_REG) ||
	    ((flags & CR_FILE_TTY) && ftype != CR_FILE_CHR) ||
	    ((flags & CR_FILE_HAS_DATA) && (!data_type || dir)))
		return fail("file flag for another type", "field", F(flags));
	if (G32(fd_flags) & ~(uint32_t)(dir ? 0 : 1))
		return fail("bad fd_flags", "field", F(fd_flags));
	if (dup != CR_DUP_NONE && (dir || dup >= fd))
		return fail("dup_of not a smaller fd", "field", F(dup_of));
	unsigned used = 0;
	switch (ftype) {
	case CR_FILE_PIPE:
		used = 2;
		break;
	case CR_FILE_FIFO: case CR_FILE_SIGNALFD: case CR_FILE_MEMFD:
		used = 1;
		break;
	case CR_FILE_EVENTFD:
		used = 2;
		break;
	case CR_FILE_TIMERFD:
		used = 4;
		break;
	case CR_FILE_SOCKET:
		used = 6;
		break;
	}
	uint64_t param[8];
	for (unsigned i = 0; i < 8; i++) {
		param[i] = cr_get_le64(p + offsetof(struct cr_file, params) + 8 * i);
		if (i >= used && param[i])
			return fail("a param the type does not use", "field", F(params) + 8 * i);
	}
	if (ftype == CR_FILE_PIPE && param[1] > CR_PIPE_OTHER_END_OUTSIDE)
		return fail("pipe other-end flag", "field", F(params) + 8);
	if (ftype == CR_FILE_EVENTFD && param[1] > 1)
		return fail("eventfd semaphore flag", "field", F(params) + 8);
	if (ftype == CR_FILE_SOCKET) {
		if (param[3] > CR_SOCKET_CONNECTED)
			return fail("socket state", "field", F(params) + 24);
		if (param[3] != CR_SOCKET_LISTENING && param[4])
			return fail("backlog of a socket not listening", "field", F(params) + 32);
		if (param[5] && (param[3] != CR_SOCKET_CONNECTED || param[0] != CR_AF_UNIX))
			return fail("peer inode of a socket not a connected Unix one", "field", F(params) + 40);
		if (param[3] == CR_SOCKET_UNBOUND && data_len)
			return fail("address of an unbound socket", "field", F(data_len));
	}
	const unsigned char *path = p + sizeof(struct cr_file);
	uint64_t nul = 0;
	while (nul < path_len && path[nul])
		nul++;
	if (nul < path_len)
		return fail("NUL in the path", "field", at + sizeof(struct cr_file) + nul);
	uint64_t pad1 = cr_pad8(path_len) - path_len;
	uint64_t z = first_nonzero(path + path_len, pad1);
	const unsigned char *dpad = path + cr_pad8(path_len) + data_len;
	uint64_t pad2 = cr_pad8(data_len) - data_len;
	if (z < pad1)
		return fail("File padding", "field", at + sizeof(struct cr_file) + path_len + z);
	z = first_nonzero(dpad, pad2);
	if (z < pad2)
		return fail("File padding", "field",
			    at + sizeof(struct cr_file) + cr_pad8(path_len) + data_len + z);
	c->files++;
	c->have_last = 1;
	c->last_role = role;
	c->last_fd = fd;
	c->data_open = (flags & CR_FILE_HAS_DATA) != 0;
	c->data_next = 0;
	return 0;
#undef F
#undef G32
#undef G16
}

/* §16: FileData. */
static int check_file_data(const unsigned char *p, uint32_t len, uint64_t at, struct ctx *c)
{
	if (len < sizeof(struct cr_file_data))
		return fail("FileData record too short", "malformed", at);
	uint32_t n = cr_get_le32(p + offsetof(struct cr_file_data, len));
	if (n > CR_MAX_FILE_DATA)
		return fail("FileData len over CR_MAX_FILE_DATA", "limit", at + 8);
	if (n == 0)
		return fail("empty FileData", "field", at + 8);
	if (len != sizeof(struct cr_file_data) + cr_pad8(n))
		return fail("FileData length", "malformed", at - CR_RECORD_HEADER_LEN);
	if (cr_get_le32(p + offsetof(struct cr_file_data, _reserved0)))
		return fail("FileData _reserved0 not 0", "reserved", at + 12);
	if (cr_get_le64(p + offsetof(struct cr_file_data, offset)) != c->data_next)
		return fail("FileData offset not where the previous ended", "field", at);
	uint64_t z = first_nonzero(p + 16 + n, cr_pad8(n) - n);
	if (z < cr_pad8(n) - n)
		return fail("FileData padding", "field", at + 16 + n + z);
	c->data_next += n;
	return 0;
}

/* §17: Signals. */
static int check_signals(const unsigned char *p, uint32_t len, uint64_t at)
{
	if (len < sizeof(struct cr_signals))
		return fail("Signals record too short", "malformed", at);
	uint32_t n = cr_get_le32(p + offsetof(struct cr_signals, pending_count));
	if (n > CR_MAX_PENDING_SIGNALS)
		return fail("pending_count over CR_MAX_PENDING_SIGNALS", "limit", at + 20);
	if (len != sizeof(struct cr_signals) + (uint64_t)n * sizeof(struct cr_pending_signal))
		return fail("Signals length", "malformed", at - CR_RECORD_HEADER_LEN);
	uint32_t fl = cr_get_le32(p + offsetof(struct cr_signals, altstack_flags));
	if (fl & ~(uint32_t)(1u | 2u | 0x80000000u))
		return fail("unknown altstack flags", "field", at + 16);
	if ((fl & 2u) && cr_get_le64(p))
		return fail("disabled altstack with an address", "field", at);
	if ((fl & 2u) && cr_get_le64(p + 8))
		return fail("disabled altstack with a size", "field", at + 8);
	for (unsigned i = 0; i < 64; i++) {
		uint64_t o = offsetof(struct cr_signals, actions) + 32u * i;
		for (unsigned j = 0; (i == 8 || i == 18) && j < 4; j++)
			if (cr_get_le64(p + o + 8 * j))
				return fail("SIGKILL/SIGSTOP action not zero", "field",
					    at + o + 8 * j);
		if (cr_get_le64(p + o + 24) & ((1u << 8) | (1u << 18)))
			return fail("sigaction mask with SIGKILL or SIGSTOP", "field", at + o + 24);
	}
	uint32_t queue = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t o = sizeof(struct cr_signals) + (uint64_t)i * sizeof(struct cr_pending_signal);
		uint32_t q = cr_get_le32(p + o);
		if (q > CR_QUEUE_SHARED || q < queue)
			return fail("pending signal queue", "field", at + o);
		queue = q;
		if (cr_get_le32(p + o + 4))
			return fail("pending signal _reserved0 not 0", "reserved", at + o + 4);
		uint32_t sig = cr_get_le32(p + o + 8);
		if (sig < 1 || sig > 64)
			return fail("pending si_signo", "field", at + o + 8);
	}
	return 0;
}

/* §18: Timers. */
static int check_timers(const unsigned char *p, uint32_t len, uint64_t at)
{
	if (len < sizeof(struct cr_timers))
		return fail("Timers record too short", "malformed", at);
	uint32_t n = cr_get_le32(p + offsetof(struct cr_timers, posix_count));
	if (n > CR_MAX_POSIX_TIMERS)
		return fail("posix_count over CR_MAX_POSIX_TIMERS", "limit", at + 48);
	if (len != sizeof(struct cr_timers) + (uint64_t)n * sizeof(struct cr_posix_timer))
		return fail("Timers length", "malformed", at - CR_RECORD_HEADER_LEN);
	if (cr_get_le32(p + offsetof(struct cr_timers, _reserved0)))
		return fail("Timers _reserved0 not 0", "reserved", at + 52);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t o = sizeof(struct cr_timers) + (uint64_t)i * sizeof(struct cr_posix_timer);
#define T(f) cr_get_le32(p + o + offsetof(struct cr_posix_timer, f))
		uint32_t id = T(id), notify = T(sigev_notify), sig = T(sigev_signo);
		uint32_t tid = T(notify_tid);
#undef T
		if (id > 0x7fffffffu || (i > 0 && id <= cr_get_le32(p + o - 48)))
			return fail("timer id", "field", at + o);
		if (notify != 0 && notify != 1 && notify != 2 && notify != 4)
			return fail("sigev_notify", "field", at + o + 8);
		if (notify != 1 && (sig < 1 || sig > 64))
			return fail("sigev_signo", "field", at + o + 12);
		if ((notify == 4) != (tid != 0))
			return fail("notify_tid", "field", at + o + 24);
	}
	return 0;
}

/* §19: Process. */
static int check_process(const unsigned char *p, uint32_t len, uint64_t at)
{
#define P(f) cr_get_le32(p + offsetof(struct cr_process, f))
#define O(f) (at + offsetof(struct cr_process, f))
	if (len < sizeof(struct cr_process))
		return fail("Process record too short", "malformed", at);
	uint32_t n = P(group_count), attrs = P(attr_flags);
	if (n > CR_MAX_GROUPS)
		return fail("group_count over CR_MAX_GROUPS", "limit", O(group_count));
	if (len != sizeof(struct cr_process) + cr_pad8(4ull * n))
		return fail("Process length", "malformed", at - CR_RECORD_HEADER_LEN);
	if (attrs & ~(uint32_t)CR_ATTR_FLAGS_KNOWN)
		return fail("unknown attr_flags", "field", O(attr_flags));
	if (P(_reserved0))
		return fail("Process _reserved0 not 0", "reserved", O(_reserved0));
	for (unsigned r = 0; r < CR_RLIMIT_COUNT; r++)
		if (cr_get_le64(p + 16u * r) > cr_get_le64(p + 16u * r + 8))
			return fail("rlimit cur above max", "field", at + 16u * r);
	int no_rseq = cr_get_le64(p + offsetof(struct cr_process, rseq_addr)) == 0;
	if (no_rseq && P(rseq_len))
		return fail("rseq_len without rseq", "field", O(rseq_len));
	if (no_rseq && P(rseq_sig))
		return fail("rseq_sig without rseq", "field", O(rseq_sig));
	if (P(pdeathsig) > 64)
		return fail("pdeathsig", "field", O(pdeathsig));
	if (P(dumpable) > 2)
		return fail("dumpable", "field", O(dumpable));
	if ((attrs & CR_ATTR_MLOCK_ONFAULT) && !(attrs & CR_ATTR_MLOCK_FUTURE))
		return fail("ATTR_MLOCK_ONFAULT without ATTR_MLOCK_FUTURE", "field", O(attr_flags));
	int32_t oom = (int32_t)P(oom_score_adj);
	if (oom < -1000 || oom > 1000)
		return fail("oom_score_adj", "field", O(oom_score_adj));
	if (P(seccomp_mode) > 2)
		return fail("seccomp_mode", "field", O(seccomp_mode));
	const unsigned char *g = p + sizeof(struct cr_process);
	for (uint32_t i = 1; i < n; i++)
		if (cr_get_le32(g + 4u * i) < cr_get_le32(g + 4u * (i - 1)))
			return fail("groups not in increasing order", "field",
				    at + sizeof(struct cr_process) + 4u * i);
	uint64_t pad = cr_pad8(4ull * n) - 4ull * n;
	uint64_t z = first_nonzero(g + 4ull * n, pad);
	if (z < pad)
		return fail("groups padding", "field", at + sizeof(struct cr_process) + 4ull * n + z);
	return 0;
#undef P
#undef O
}

/* §20: VmaAttr. */
static int check_vma_attr(const unsigned char *p, uint32_t len, uint64_t at)
{
	if (len != sizeof(struct cr_vma_attr))
		return fail("VmaAttr length not 8", "malformed", at - CR_RECORD_HEADER_LEN);
	uint32_t a = cr_get_le32(p + offsetof(struct cr_vma_attr, attrs));
	if ((a & ~(uint32_t)CR_VMA_ATTR_KNOWN) || a == 0 ||
	    ((a & CR_VMA_ATTR_LOCKONFAULT) && !(a & CR_VMA_ATTR_LOCKED)) ||
	    ((a & CR_VMA_ATTR_HUGEPAGE) && (a & CR_VMA_ATTR_NOHUGEPAGE)))
		return fail("bad VMA attributes", "field", at);
	if (cr_get_le32(p + offsetof(struct cr_vma_attr, _reserved0)))
		return fail("VmaAttr _reserved0 not 0", "reserved", at + 4);
	return 0;
}

/* §21: Inotify. */
static int check_inotify(const unsigned char *p, uint32_t len, uint64_t at, struct ctx *c)
{
	if (len != sizeof(struct cr_inotify))
		return fail("Inotify length not 16", "malformed", at - CR_RECORD_HEADER_LEN);
	uint32_t fd = cr_get_le32(p + offsetof(struct cr_inotify, fd));
	uint32_t dup = cr_get_le32(p + offsetof(struct cr_inotify, dup_of));
	c->watch_open = 0;
	if (fd > 0x7fffffffu || (c->have_inotify && fd <= c->last_inotify))
		return fail("Inotify fd not below 2^31 and above the previous one", "field", at);
	if (cr_get_le32(p + offsetof(struct cr_inotify, fd_flags)) & ~1u)
		return fail("bad fd_flags", "field", at + offsetof(struct cr_inotify, fd_flags));
	if (dup != CR_NO_DUP && dup >= fd)
		return fail("dup_of not a smaller fd", "field", at + offsetof(struct cr_inotify, dup_of));
	c->have_inotify = 1;
	c->last_inotify = fd;
	c->watch_open = dup == CR_NO_DUP;
	c->watch_prev = 0;
	return 0;
}

/* §22: InotifyWatch. */
static int check_inotify_watch(const unsigned char *p, uint32_t len, uint64_t at, struct ctx *c)
{
#define W(f) (at + offsetof(struct cr_inotify_watch, f))
	if (len < sizeof(struct cr_inotify_watch))
		return fail("InotifyWatch record too short", "malformed", at - CR_RECORD_HEADER_LEN);
	if (c->watches >= CR_MAX_INOTIFY_WATCHES)
		return fail("more than CR_MAX_INOTIFY_WATCHES watches", "limit",
			    at - CR_RECORD_HEADER_LEN);
	uint32_t n = cr_get_le16(p + offsetof(struct cr_inotify_watch, path_len));
	uint32_t wd = cr_get_le32(p + offsetof(struct cr_inotify_watch, wd));
	if (n > CR_MAX_PATH)
		return fail("path_len over CR_MAX_PATH", "limit", W(path_len));
	if (n == 0)
		return fail("empty watch path", "field", W(path_len));
	if (len != sizeof(struct cr_inotify_watch) + cr_pad8(n))
		return fail("InotifyWatch length", "malformed", at - CR_RECORD_HEADER_LEN);
	if (wd == 0 || wd > 0x7fffffffu || wd <= c->watch_prev)
		return fail("wd not above the previous watch's", "field", W(wd));
	if (cr_get_le32(p + offsetof(struct cr_inotify_watch, mask)) == 0)
		return fail("empty watch mask", "field", W(mask));
	if (first_nonzero(p + offsetof(struct cr_inotify_watch, _reserved0), 6) < 6)
		return fail("InotifyWatch _reserved0 not 0", "reserved", W(_reserved0));
	const unsigned char *path = p + sizeof(struct cr_inotify_watch);
	uint64_t i = 0, z;
	while (i < n && path[i])
		i++;
	if (i < n)
		return fail("NUL in the watch path", "field", at + sizeof(struct cr_inotify_watch) + i);
	z = first_nonzero(path + n, cr_pad8(n) - n);
	if (z < cr_pad8(n) - n)
		return fail("watch path padding", "field", at + sizeof(struct cr_inotify_watch) + n + z);
	c->watches++;
	c->watch_prev = wd;
	return 0;
#undef W
}

/* §23: Lock. */
static int check_lock(const unsigned char *p, uint32_t len, uint64_t at, struct ctx *c)
{
	const uint64_t off_max = 0x7fffffffffffffffull;
	if (len != sizeof(struct cr_lock))
		return fail("Lock length not 24", "malformed", at - CR_RECORD_HEADER_LEN);
	if (c->locks >= CR_MAX_LOCKS)
		return fail("more than CR_MAX_LOCKS locks", "limit", at - CR_RECORD_HEADER_LEN);
	uint32_t fd = cr_get_le32(p + offsetof(struct cr_lock, fd));
	uint16_t ltype = cr_get_le16(p + offsetof(struct cr_lock, ltype));
	uint16_t mode = cr_get_le16(p + offsetof(struct cr_lock, mode));
	uint64_t start = cr_get_le64(p + offsetof(struct cr_lock, start));
	uint64_t n = cr_get_le64(p + offsetof(struct cr_lock, len));
	if (fd > 0x7fffffffu)
		return fail("Lock fd not below 2^31", "field", at);
	if (ltype < CR_LOCK_POSIX || ltype > CR_LOCK_OFD)
		return fail("unknown lock type", "field", at + offsetof(struct cr_lock, ltype));
	if (mode < CR_LOCK_READ || mode > CR_LOCK_WRITE)
		return fail("unknown lock mode", "field", at + offsetof(struct cr_lock, mode));
	if (ltype == CR_LOCK_FLOCK && start)
		return fail("flock with a start", "field", at + offsetof(struct cr_lock, start));
	if (ltype == CR_LOCK_FLOCK && n)
		return fail("flock with a len", "field", at + offsetof(struct cr_lock, len));
	if (start > off_max)
		return fail("lock start beyond 2^63-1", "field", at + offsetof(struct cr_lock, start));
	if (n > off_max - start + 1)
		return fail("lock end beyond 2^63-1", "field", at + offsetof(struct cr_lock, len));
	c->locks++;
	return 0;
}

/* §24: VdsoData (its bytes are not checked). */
static int check_vdso_data(const unsigned char *p, uint32_t len, uint64_t at, struct ctx *c)
{
	if (len < sizeof(struct cr_vdso_data))
		return fail("VdsoData record too short", "malformed", at - CR_RECORD_HEADER_LEN);
	uint32_t n = cr_get_le32(p + offsetof(struct cr_vdso_data, len));
	if (n > CR_MAX_VDSO_LEN)
		return fail("VdsoData len over CR_MAX_VDSO_LEN", "limit", at);
	if (len != sizeof(struct cr_vdso_data) + cr_pad8(n))
		return fail("VdsoData length", "malformed", at - CR_RECORD_HEADER_LEN);
	if (n != c->vdso_len)
		return fail("VdsoData len not the vDSO Vma's", "field", at);
	if (cr_get_le32(p + offsetof(struct cr_vdso_data, _reserved0)))
		return fail("VdsoData _reserved0 not 0", "reserved", at + 4);
	return 0;
}

/* The fields of the records of 1.1 and 1.2, every rule of §15..§24 in cr-format's order. */
int check_state_fields(uint16_t kind, const unsigned char *p, uint32_t len, uint64_t at,
			      struct ctx *c)
{
	switch (kind) {
	case CR_KIND_FILE:
		return check_file(p, len, at, c);
	case CR_KIND_FILE_DATA:
		return check_file_data(p, len, at, c);
	case CR_KIND_SIGNALS:
		return check_signals(p, len, at);
	case CR_KIND_TIMERS:
		return check_timers(p, len, at);
	case CR_KIND_PROCESS:
		return check_process(p, len, at);
	case CR_KIND_VMA_ATTR:
		return check_vma_attr(p, len, at);
	case CR_KIND_INOTIFY:
		return check_inotify(p, len, at, c);
	case CR_KIND_INOTIFY_WATCH:
		return check_inotify_watch(p, len, at, c);
	case CR_KIND_LOCK:
		return check_lock(p, len, at, c);
	case CR_KIND_VDSO_DATA:
		return check_vdso_data(p, len, at, c);
	default:
		return 0;
	}
}

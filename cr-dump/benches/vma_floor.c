/* What the kernel alone takes to make N one-page anonymous mappings with contents, every other
 * one read-only (the layout of tests/programs/many_maps.c), in this process: the floor under
 * a restore of such a task, whatever the restorer. BENCHMARKS.md ("Session 12") compares it
 * with `cr-dump restore` and `criu restore`.
 *
 *   gcc -O2 -Wall -o /tmp/vma_floor cr-dump/benches/vma_floor.c
 *   /tmp/vma_floor [N] [ROUNDS]        (N defaults to 65000, ROUNDS to 3)
 *
 * Ways, each timed by phase:
 *   each    one mmap per mapping with its protection, a userfaultfd registered over the
 *           whole range, one UFFDIO_COPY per page, the userfaultfd closed (what cr-dump's
 *           restore does: steps 5 and 6)
 *   whole   one read-write mapping, one UFFDIO_COPY of every page at once, then one mprotect
 *           per read-only page, which splits the mapping into the N (the fewest calls; its
 *           source must be contiguous, which an image's page data of one-page VMAs is not)
 *   split   one read-write mapping, one UFFDIO_COPY per page, then the mprotects
 * Every way ends with N mappings (checked in /proc/self/maps) holding the source's bytes.
 * vm.max_map_count (65530 by default) bounds N.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PS 4096UL

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void die(const char *what)
{
	perror(what);
	exit(1);
}

static int uffd_over(char *base, size_t len)
{
	/* UFFD_USER_MODE_ONLY (1): no privilege needed. */
	int u = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1);
	if (u < 0)
		die("userfaultfd");
	struct uffdio_api api = { .api = UFFD_API };
	if (ioctl(u, UFFDIO_API, &api))
		die("UFFDIO_API");
	struct uffdio_register r = {
		.range = { (unsigned long)base, len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(u, UFFDIO_REGISTER, &r))
		die("UFFDIO_REGISTER");
	return u;
}

static void copy(int u, char *dst, const char *src, size_t len)
{
	struct uffdio_copy c = {
		.dst = (unsigned long)dst, .src = (unsigned long)src, .len = len
	};
	if (ioctl(u, UFFDIO_COPY, &c))
		die("UFFDIO_COPY");
}

static int mappings(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	char b[512];
	int n = 0;
	if (!f)
		die("/proc/self/maps");
	while (fgets(b, sizeof b, f))
		n++;
	fclose(f);
	return n;
}

int main(int argc, char **argv)
{
	long n = argc > 1 ? atol(argv[1]) : 65000;
	int rounds = argc > 2 ? atoi(argv[2]) : 3;
	size_t len = n * PS;
	char *src = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (src == MAP_FAILED)
		die("mmap source");
	for (long i = 0; i < n; i++)
		memset(src + i * PS, (int)(i % 251) + 1, PS);
	int before = mappings();
	const char *names[] = { "each", "whole", "split" };
	for (int r = 0; r < rounds; r++) {
		for (int way = 0; way < 3; way++) {
			/* A free range, then given back: the mappings go there. */
			char *base = mmap(NULL, len, PROT_NONE,
					  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (base == MAP_FAILED)
				die("mmap range");
			munmap(base, len);
			double t0 = now_ms(), t1, t2, t3;
			if (way == 0) {
				for (long i = 0; i < n; i++) {
					int prot = (i & 1) ? PROT_READ : PROT_READ | PROT_WRITE;
					if (mmap(base + i * PS, PS, prot,
						 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
						 -1, 0) == MAP_FAILED)
						die("mmap");
				}
				t1 = now_ms();
				int u = uffd_over(base, len);
				for (long i = 0; i < n; i++)
					copy(u, base + i * PS, src + i * PS, PS);
				close(u);
				t2 = t3 = now_ms();
			} else {
				if (mmap(base, len, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1,
					 0) == MAP_FAILED)
					die("mmap");
				t1 = now_ms();
				int u = uffd_over(base, len);
				if (way == 1)
					copy(u, base, src, len);
				else
					for (long i = 0; i < n; i++)
						copy(u, base + i * PS, src + i * PS, PS);
				close(u);
				t2 = now_ms();
				for (long i = 1; i < n; i += 2)
					if (mprotect(base + i * PS, PS, PROT_READ))
						die("mprotect");
				t3 = now_ms();
			}
			int got = mappings() - before;
			if (got != n || memcmp(base, src, len))
				fprintf(stderr, "%s: %d mappings, or contents differ\n", names[way], got),
					exit(1);
			printf("%-5s N=%ld  map %6.1f  fill %6.1f  split %6.1f  total %6.1f ms\n",
			       names[way], n, t1 - t0, t2 - t1, t3 - t2, t3 - t0);
			fflush(stdout);
			munmap(base, len);
		}
	}
	return 0;
}

/* A target that checks itself: it keeps rewriting a buffer with a known pattern and checking
 * the whole buffer's checksum, holds known values in every general register it can across a
 * spin loop and checks them, and sleeps in short nanosleep() calls (restarted by the kernel
 * after a ptrace stop, so they must return 0). Anything that changed memory, registers or a
 * system call's result under it makes it print "corrupt: WHAT" on stderr and exit 3.
 *
 * Usage: checksum [PAGES]  (default 64). Prints "region buf ADDR LEN", then "ready". */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static void corrupt(const char *what, unsigned long v) {
	fprintf(stderr, "corrupt: %s (%#lx)\n", what, v);
	exit(3);
}

/* Loads constants into rbx, rdx, rsi, rdi, r8-r15, spins, then checks them: a register
 * changed while the task was stopped in the loop shows as a nonzero result. */
static unsigned long regs_changed(void) {
	unsigned long bad;
	__asm__ volatile(
		"movabs $0x0101010101010101, %%rbx\n\t"
		"movabs $0x0202020202020202, %%rdx\n\t"
		"movabs $0x0303030303030303, %%rsi\n\t"
		"movabs $0x0404040404040404, %%rdi\n\t"
		"movabs $0x0808080808080808, %%r8\n\t"
		"movabs $0x0909090909090909, %%r9\n\t"
		"movabs $0x0a0a0a0a0a0a0a0a, %%r10\n\t"
		"movabs $0x0b0b0b0b0b0b0b0b, %%r11\n\t"
		"movabs $0x0c0c0c0c0c0c0c0c, %%r12\n\t"
		"movabs $0x0d0d0d0d0d0d0d0d, %%r13\n\t"
		"movabs $0x0e0e0e0e0e0e0e0e, %%r14\n\t"
		"movabs $0x0f0f0f0f0f0f0f0f, %%r15\n\t"
		"mov $2000000, %%ecx\n\t"
		"1: dec %%ecx\n\t"
		"jnz 1b\n\t"
		"movq $0, %0\n\t"
		"movabs $0x0101010101010101, %%rax\n\t" "cmp %%rax, %%rbx\n\t" "jne 2f\n\t"
		"movabs $0x0202020202020202, %%rax\n\t" "cmp %%rax, %%rdx\n\t" "jne 2f\n\t"
		"movabs $0x0303030303030303, %%rax\n\t" "cmp %%rax, %%rsi\n\t" "jne 2f\n\t"
		"movabs $0x0404040404040404, %%rax\n\t" "cmp %%rax, %%rdi\n\t" "jne 2f\n\t"
		"movabs $0x0808080808080808, %%rax\n\t" "cmp %%rax, %%r8\n\t" "jne 2f\n\t"
		"movabs $0x0909090909090909, %%rax\n\t" "cmp %%rax, %%r9\n\t" "jne 2f\n\t"
		"movabs $0x0a0a0a0a0a0a0a0a, %%rax\n\t" "cmp %%rax, %%r10\n\t" "jne 2f\n\t"
		"movabs $0x0b0b0b0b0b0b0b0b, %%rax\n\t" "cmp %%rax, %%r11\n\t" "jne 2f\n\t"
		"movabs $0x0c0c0c0c0c0c0c0c, %%rax\n\t" "cmp %%rax, %%r12\n\t" "jne 2f\n\t"
		"movabs $0x0d0d0d0d0d0d0d0d, %%rax\n\t" "cmp %%rax, %%r13\n\t" "jne 2f\n\t"
		"movabs $0x0e0e0e0e0e0e0e0e, %%rax\n\t" "cmp %%rax, %%r14\n\t" "jne 2f\n\t"
		"movabs $0x0f0f0f0f0f0f0f0f, %%rax\n\t" "cmp %%rax, %%r15\n\t" "jne 2f\n\t"
		"jmp 3f\n\t"
		"2: movq $1, %0\n\t"
		"3:\n\t"
		: "=m"(bad)
		:
		: "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
		  "r14", "r15", "cc");
	return bad;
}

static uint64_t word(uint64_t gen, uint64_t i) {
	return (gen * 0x9e3779b97f4a7c15ull) ^ (i * 0xbf58476d1ce4e5b9ull);
}

int main(int argc, char **argv) {
	size_t pages = argc > 1 ? strtoul(argv[1], 0, 0) : 64;
	size_t len = pages * 4096, n = len / 8;
	uint64_t *buf = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		return 2;
	printf("region buf %lx %zx\nready\n", (unsigned long)buf, len);
	fflush(stdout);
	for (uint64_t gen = 1;; gen++) {
		for (size_t i = 0; i < n; i++)
			buf[i] = word(gen, i);
		if (regs_changed())
			corrupt("registers", gen);
		struct timespec ts = {0, 200000};
		errno = 0;
		if (nanosleep(&ts, 0) != 0)
			corrupt("nanosleep", (unsigned long)errno);
		for (size_t i = 0; i < n; i++)
			if (buf[i] != word(gen, i))
				corrupt("memory", i);
	}
}

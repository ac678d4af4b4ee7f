/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Smoke test of rseq_marker.h: two librseq-shaped critical sections with markers, checked by
 * hand with readelf/objdump (see the header for the record format). It runs the sections on a
 * fake `struct rseq` (the kernel never sees it), so it needs no rseq registration: running it
 * only shows that the marker code is harmless.
 *
 *   gcc -O2 -I include include/tests/marker_smoke.c -o smoke             (also -no-pie, -pie)
 *   gcc -O2 -fPIC -shared -I include include/tests/marker_smoke.c -o smoke.so
 *   aarch64-linux-gnu-gcc -O2 -I include include/tests/marker_smoke.c -o smoke-arm64
 *
 * Expected: `readelf -S` shows __rseq_markers without the A flag; `objdump -s -j
 * __rseq_markers` shows 7 records: counter START, FINISH, ABORT with key
 * rseq_key_smoke_counter, push START, FINISH, ABORT (cancel at exit_ip), ABORT (abort_ip) with
 * key rseq_key_smoke_push; each ip is the probe point (nop) of the marker starting at the
 * label named in the comments below.
 */
#include <stdint.h>
#include <stdio.h>

#include "rseq_marker.h"

/* Layout of the first fields of struct rseq (cpu_id at 4, rseq_cs at 8). */
struct fake_rseq {
	uint32_t cpu_id_start;
	uint32_t cpu_id;
	uint64_t rseq_cs;
	uint32_t flags;
};

struct stack {
	uint64_t len;
	uint64_t items[8];
};

RSEQ_MARKER_DEFINE_KEY(rseq_key_smoke_counter);
RSEQ_MARKER_DEFINE_KEY(rseq_key_smoke_push);

#if defined(__x86_64__)

/* Returns 0 committed, 1 aborted. */
__attribute__((noinline)) int smoke_counter_add(struct fake_rseq *rs, uint32_t cpu,
						uint64_t *counter)
{
	int st;

	__asm__ __volatile__(
		RSEQ_MARKER_START(rseq_key_smoke_counter)
		"leaq 3f(%%rip), %%rax\n\t"
		"movq %%rax, 8(%[rs])\n\t"
		"4:\n\t" /* start_ip */
		"cmpl %[cpu], 4(%[rs])\n\t"
		"jne 5f\n\t"
		"addq $1, (%[counter])\n\t" /* commit */
		"6:\n\t" /* post_commit_ip */
		RSEQ_MARKER_FINISH(rseq_key_smoke_counter)
		"movl $0, %[st]\n\t"
		"9:\n\t"
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"3:\n\t"
		".long 0, 0\n\t"
		".quad 4b, (6b - 4b), 5f\n\t"
		".popsection\n\t"
		".pushsection __rseq_failure, \"ax\"\n\t"
		".byte 0x0f, 0xb9, 0x3d\n\t"
		".long 0x53053053\n\t"
		"5:\n\t" /* abort_ip */
		RSEQ_MARKER_ABORT(rseq_key_smoke_counter)
		"movl $1, %[st]\n\t"
		"jmp 9b\n\t"
		".popsection\n\t"
		: [st] "=&r"(st)
		: [rs] "r"(rs), [cpu] "r"(cpu), [counter] "r"(counter)
		: "rax", "memory", "cc");
	return st;
}

/* Returns 0 committed, 1 aborted, 2 cancelled (stack full). */
__attribute__((noinline)) int smoke_push(struct fake_rseq *rs, uint32_t cpu, struct stack *s,
					 uint64_t item)
{
	int st;

	__asm__ __volatile__(
		RSEQ_MARKER_START(rseq_key_smoke_push)
		"leaq 3f(%%rip), %%rax\n\t"
		"movq %%rax, 8(%[rs])\n\t"
		"4:\n\t" /* start_ip */
		"cmpl %[cpu], 4(%[rs])\n\t"
		"jne 5f\n\t"
		"movq (%[s]), %%rax\n\t"
		"cmpq $8, %%rax\n\t"
		"jae 22f\n\t"
		"movq %[item], 8(%[s],%%rax,8)\n\t"
		"addq $1, %%rax\n\t"
		"movq %%rax, (%[s])\n\t" /* commit */
		"6:\n\t" /* post_commit_ip */
		RSEQ_MARKER_FINISH(rseq_key_smoke_push)
		"movl $0, %[st]\n\t"
		"jmp 9f\n\t"
		"22:\n\t" /* exit_ip */
		RSEQ_MARKER_ABORT(rseq_key_smoke_push)
		"movl $2, %[st]\n\t"
		"9:\n\t"
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"3:\n\t"
		".long 0, 0\n\t"
		".quad 4b, (6b - 4b), 5f\n\t"
		".popsection\n\t"
		".pushsection __rseq_exit_point_array, \"aw\"\n\t"
		".quad 4b, 22b\n\t"
		".popsection\n\t"
		".pushsection __rseq_failure, \"ax\"\n\t"
		".byte 0x0f, 0xb9, 0x3d\n\t"
		".long 0x53053053\n\t"
		"5:\n\t" /* abort_ip */
		RSEQ_MARKER_ABORT(rseq_key_smoke_push)
		"movl $1, %[st]\n\t"
		"jmp 9b\n\t"
		".popsection\n\t"
		: [st] "=&r"(st)
		: [rs] "r"(rs), [cpu] "r"(cpu), [s] "r"(s), [item] "r"(item)
		: "rax", "memory", "cc");
	return st;
}

#elif defined(__aarch64__)

__attribute__((noinline)) int smoke_counter_add(struct fake_rseq *rs, uint32_t cpu,
						uint64_t *counter)
{
	int st;
	uint64_t tmp;

	__asm__ __volatile__(
		RSEQ_MARKER_START(rseq_key_smoke_counter)
		"adrp %[tmp], 3f\n\t"
		"add %[tmp], %[tmp], :lo12:3f\n\t"
		"str %[tmp], [%[rs], #8]\n\t"
		"4:\n\t" /* start_ip */
		"ldr %w[tmp], [%[rs], #4]\n\t"
		"cmp %w[tmp], %w[cpu]\n\t"
		"b.eq 23f\n\t"
		"b 5f\n\t"
		"23:\n\t"
		"ldr %[tmp], [%[counter]]\n\t"
		"add %[tmp], %[tmp], #1\n\t"
		"str %[tmp], [%[counter]]\n\t" /* commit */
		"6:\n\t" /* post_commit_ip */
		RSEQ_MARKER_FINISH(rseq_key_smoke_counter)
		"mov %w[st], #0\n\t"
		"9:\n\t"
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"3:\n\t"
		".long 0, 0\n\t"
		".quad 4b, (6b - 4b), 5f\n\t"
		".popsection\n\t"
		".pushsection __rseq_failure, \"ax\"\n\t"
		".inst 0xd428bc00\n\t"
		"5:\n\t" /* abort_ip */
		RSEQ_MARKER_ABORT(rseq_key_smoke_counter)
		"mov %w[st], #1\n\t"
		"b 9b\n\t"
		".popsection\n\t"
		: [st] "=&r"(st), [tmp] "=&r"(tmp)
		: [rs] "r"(rs), [cpu] "r"(cpu), [counter] "r"(counter)
		: "memory", "cc");
	return st;
}

__attribute__((noinline)) int smoke_push(struct fake_rseq *rs, uint32_t cpu, struct stack *s,
					 uint64_t item)
{
	int st;
	uint64_t tmp, addr;

	__asm__ __volatile__(
		RSEQ_MARKER_START(rseq_key_smoke_push)
		"adrp %[tmp], 3f\n\t"
		"add %[tmp], %[tmp], :lo12:3f\n\t"
		"str %[tmp], [%[rs], #8]\n\t"
		"4:\n\t" /* start_ip */
		"ldr %w[tmp], [%[rs], #4]\n\t"
		"cmp %w[tmp], %w[cpu]\n\t"
		"b.eq 23f\n\t"
		"b 5f\n\t"
		"23:\n\t"
		"ldr %[tmp], [%[s]]\n\t"
		"cmp %[tmp], #8\n\t"
		"b.hs 22f\n\t"
		"add %[addr], %[s], %[tmp], lsl #3\n\t"
		"str %[item], [%[addr], #8]\n\t"
		"add %[tmp], %[tmp], #1\n\t"
		"str %[tmp], [%[s]]\n\t" /* commit */
		"6:\n\t" /* post_commit_ip */
		RSEQ_MARKER_FINISH(rseq_key_smoke_push)
		"mov %w[st], #0\n\t"
		"b 9f\n\t"
		"22:\n\t" /* exit_ip */
		RSEQ_MARKER_ABORT(rseq_key_smoke_push)
		"mov %w[st], #2\n\t"
		"9:\n\t"
		".pushsection __rseq_cs, \"aw\"\n\t"
		".balign 32\n\t"
		"3:\n\t"
		".long 0, 0\n\t"
		".quad 4b, (6b - 4b), 5f\n\t"
		".popsection\n\t"
		".pushsection __rseq_exit_point_array, \"aw\"\n\t"
		".quad 4b, 22b\n\t"
		".popsection\n\t"
		".pushsection __rseq_failure, \"ax\"\n\t"
		".inst 0xd428bc00\n\t"
		"5:\n\t" /* abort_ip */
		RSEQ_MARKER_ABORT(rseq_key_smoke_push)
		"mov %w[st], #1\n\t"
		"b 9b\n\t"
		".popsection\n\t"
		: [st] "=&r"(st), [tmp] "=&r"(tmp), [addr] "=&r"(addr)
		: [rs] "r"(rs), [cpu] "r"(cpu), [s] "r"(s), [item] "r"(item)
		: "memory", "cc");
	return st;
}

#endif

int main(void)
{
	struct fake_rseq rs = { .cpu_id_start = 3, .cpu_id = 3 };
	struct stack s = { 0 };
	uint64_t counter = 0;
	int i, bad = 0;

	for (i = 0; i < 3; i++)
		bad |= smoke_counter_add(&rs, 3, &counter) != 0;
	bad |= counter != 3;
	bad |= smoke_counter_add(&rs, 4, &counter) != 1; /* CPU mismatch: abort path */
	bad |= counter != 3;
	for (i = 0; i < 8; i++)
		bad |= smoke_push(&rs, 3, &s, i + 1) != 0;
	bad |= smoke_push(&rs, 3, &s, 9) != 2; /* full: cancel */
	bad |= smoke_push(&rs, 4, &s, 9) != 1; /* CPU mismatch: abort */
	bad |= s.len != 8 || s.items[7] != 8;
	printf("keys: counter %p push %p; functions: counter_add %p push %p; %s\n",
	       (const void *)&rseq_key_smoke_counter, (const void *)&rseq_key_smoke_push,
	       (void *)smoke_counter_add, (void *)smoke_push, bad ? "FAIL" : "ok");
	return bad;
}

// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Target of the probe-cost benchmark (bench/probe_cost.sh, rseq-trace/examples/probe_cost.rs):
// calls one of two tiny functions in a loop for a given time and prints the nanoseconds per
// call, so the cost of a uprobe hit is the difference between a traced and an untraced run.
//
// Both functions have the shape of rseq-marker's marker code: the probed instruction sits
// between `lea -128(%rsp),%rsp` and `lea 128(%rsp),%rsp`. The kernel turns a uprobe on a 5-byte
// nop into a `call` to a trampoline, which pushes a return address; moving %rsp below the red
// zone first keeps that push from clobbering a leaf function's red-zone data. The two functions
// differ only in the probed instruction:
//   site_ordinary: `mov %rdi,%rax`, which a uprobe handles with int3 and an out-of-line single
//                  step (the kernel emulates only branches, nops and pushes).
//   site_nop5:     `nopl 0(%rax,%rax,1)` (0f 1f 44 00 00), which the kernel optimizes into a call
//                  after its first hit.
// The probed instructions carry their own function symbols (`site_*_probe`), so that bpftrace
// can name them and the benchmark can find their file offsets.
//
// Usage: probe_cost_target ordinary|nop5 SECONDS [--wait]
//   --wait: print "ready" and wait for a line on stdin before starting (the benchmark attaches
//   its probe meanwhile). Warms up first, so the optimized probe is in place before timing.
//   Prints "warmup W calls N ns_per_call X" (W untimed calls first, then N timed ones).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

long site_ordinary(long x);
long site_nop5(long x);

__asm__(".text\n\t"
        ".globl site_ordinary\n\t"
        ".type site_ordinary, @function\n\t"
        ".p2align 4\n"
        "site_ordinary:\n\t"
        "lea -128(%rsp), %rsp\n\t"
        ".globl site_ordinary_probe\n\t"
        ".type site_ordinary_probe, @function\n"
        "site_ordinary_probe:\n\t"
        "mov %rdi, %rax\n\t"
        "lea 128(%rsp), %rsp\n\t"
        "ret\n\t"
        ".size site_ordinary, . - site_ordinary\n\t"
        ".size site_ordinary_probe, . - site_ordinary_probe\n\t"
        ".globl site_nop5\n\t"
        ".type site_nop5, @function\n\t"
        ".p2align 4\n"
        "site_nop5:\n\t"
        "lea -128(%rsp), %rsp\n\t"
        ".globl site_nop5_probe\n\t"
        ".type site_nop5_probe, @function\n"
        "site_nop5_probe:\n\t"
        ".byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n\t"
        "mov %rdi, %rax\n\t"
        "lea 128(%rsp), %rsp\n\t"
        "ret\n\t"
        ".size site_nop5, . - site_nop5\n\t"
        ".size site_nop5_probe, . - site_nop5_probe\n\t");

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "ordinary") != 0 && strcmp(argv[1], "nop5") != 0)) {
        fprintf(stderr, "usage: %s ordinary|nop5 SECONDS [--wait]\n", argv[0]);
        return 2;
    }
    // Called through a volatile pointer, so the compiler keeps every call.
    long (*volatile site)(long) = strcmp(argv[1], "nop5") == 0 ? site_nop5 : site_ordinary;
    double seconds = atof(argv[2]);
    if (argc > 3 && strcmp(argv[3], "--wait") == 0) {
        printf("ready\n");
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof(line), stdin))
            return 2;
    }
    // Warm-up: the first hit of a probe on the nop is what makes the kernel optimize it.
    const int warmup = 1000;
    for (int i = 0; i < warmup; i++)
        site(i);
    // Batches of 1000 calls between clock reads, so the clock costs nothing per call.
    long calls = 0;
    double start = now(), elapsed;
    do {
        for (int i = 0; i < 1000; i++)
            site(i);
        calls += 1000;
        elapsed = now() - start;
    } while (elapsed < seconds);
    printf("warmup %d calls %ld ns_per_call %.3f\n", warmup, calls, elapsed * 1e9 / (double)calls);
    return 0;
}

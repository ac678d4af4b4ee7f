/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * rseq_marker.h: START / FINISH / ABORT markers for rseq critical sections, for C and C++.
 *
 * Produces the same machine code and the same 24-byte records in the non-loadable ELF section
 * `__rseq_markers` as the `rseq-marker` Rust crate (format: docs/marker-table.md of
 * rseq-trace). A tracer finds every entry and exit of a group of critical sections from the
 * records, and probes only the markers' probe points, never the inside of a section.
 *
 * Why: a uprobe on an ordinary instruction costs a trap plus a single step (about 10 us); on
 * x86-64 the kernel turns a uprobe on a 5-byte nop into a call to a trampoline (an optimized
 * uprobe, about 0.5 us). That call writes below %rsp, into the red zone where a leaf function
 * may keep data, so the x86-64 marker code steps over the red zone around its nop:
 *
 *   x86-64:  lea -128(%rsp),%rsp   48 8d 64 24 80
 *            nopl 0(%rax,%rax,1)   0f 1f 44 00 00              <- probe point (record ip)
 *            lea 128(%rsp),%rsp    48 8d a4 24 80 00 00 00
 *   aarch64: nop                   d503201f                    <- probe point (record ip)
 *
 * lea does not change the flags. The code is written as .byte directives, so the macros work
 * in AT&T and Intel syntax (-masm=intel) and in basic as well as extended asm (they contain
 * no '%'). Record (in `.pushsection __rseq_markers, "", @progbits`, .balign 8):
 *   .quad <probe point>, <key>   .short <type>, 1   .long 0
 * type 1 = START, 2 = FINISH, 3 = ABORT; version 1. The section has no flags (not SHF_ALLOC):
 * the static linker resolves its addresses to link-time values, and the dynamic loader never
 * sees it, in executables, PIE and shared objects alike.
 *
 * Usage (inside the asm template of the critical section, librseq style):
 *
 *   RSEQ_MARKER_DEFINE_KEY(rseq_key_my_counter);        // at file scope, once per program
 *
 *   __asm__ __volatile__ goto (
 *       RSEQ_MARKER_START(rseq_key_my_counter)           // before the descriptor store
 *       "leaq 3f(%%rip), %%rax\n\t"
 *       "movq %%rax, 8(%[rseq])\n\t"
 *       "4:\n\t"                                          // start_ip
 *       ...                                               // commit store
 *       "6:\n\t"                                          // post_commit_ip
 *       RSEQ_MARKER_FINISH(rseq_key_my_counter)
 *       ...
 *       ".pushsection __rseq_failure, \"ax\"\n\t"
 *       ".byte 0x0f, 0xb9, 0x3d\n\t"
 *       ".long 0x53053053\n\t"                            // RSEQ_SIG
 *       "5:\n\t"                                          // abort_ip
 *       RSEQ_MARKER_ABORT(rseq_key_my_counter)
 *       ...
 *       ".popsection\n\t"
 *       ...);
 *
 * The key is referenced by its symbol name (the argument is macro-expanded, then stringized),
 * so it must be an object with a symbol the assembler can see: define it at file scope with
 * RSEQ_MARKER_DEFINE_KEY, which gives it external linkage and an unmangled name (also in
 * C++). Markers in other translation units may use the same key by name.
 *
 * Rules:
 *  - Never inside [start_ip, post_commit_ip): a probe hit there runs out of line, and a
 *    preemption at that moment lets the commit happen unprotected.
 *  - START: before the store of the descriptor address into rseq->rseq_cs, with only
 *    straight-line code between the marker and that store.
 *  - FINISH: at post_commit_ip (the marker code starts there), on the commit path only.
 *  - ABORT at an abort handler must start right at abort_ip, immediately after RSEQ_SIG;
 *    ABORT anywhere else (an exit point) means a cancel.
 *  - Each marker defines the numeric local labels 90 (probe point) and 91 (record) and uses
 *    them right away: several markers in one asm statement are fine, but the user's own
 *    90b/91b references must not cross a marker. Use other label numbers.
 *  - If the compiler duplicates the asm statement (inlining, unrolling, cloning), every copy
 *    gets its own records, in the same group.
 *
 * Each marker also emits `.reloc 0, R_<ARCH>_NONE, 91b` in the section it is in, so that
 * GNU ld's --gc-sections, which otherwise drops non-loadable sections carrying relocations,
 * keeps the records (and, through them, the code and key they refer to) as long as the code
 * holding the marker is kept. A record of a discarded function reads ip 0 and is ignored.
 */
#ifndef RSEQ_MARKER_H
#define RSEQ_MARKER_H

#define RSEQ_MARKER_TYPE_START 1
#define RSEQ_MARKER_TYPE_FINISH 2
#define RSEQ_MARKER_TYPE_ABORT 3
#define RSEQ_MARKER_VERSION 1
#define RSEQ_MARKER_SECTION "__rseq_markers"

#define __RSEQ_MARKER_STR_1(x) #x
#define __RSEQ_MARKER_STR(x) __RSEQ_MARKER_STR_1(x)

#if defined(__x86_64__)
#define __RSEQ_MARKER_CODE                                                        \
	".byte 0x48, 0x8d, 0x64, 0x24, 0x80\n\t" /* lea -128(%rsp),%rsp */      \
	"90:\n\t"                                                                \
	".byte 0x0f, 0x1f, 0x44, 0x00, 0x00\n\t" /* nopl 0(%rax,%rax,1) */      \
	".byte 0x48, 0x8d, 0xa4, 0x24, 0x80, 0x00, 0x00, 0x00\n\t" /* lea 128(%rsp),%rsp */
#define __RSEQ_MARKER_RELOC_NONE "R_X86_64_NONE"
#elif defined(__aarch64__)
#define __RSEQ_MARKER_CODE                                                        \
	"90:\n\t"                                                                \
	"nop\n\t"
#define __RSEQ_MARKER_RELOC_NONE "R_AARCH64_NONE"
#else
#error "rseq_marker.h supports x86-64 and aarch64 only"
#endif

/*
 * One marker. The section type is written @progbits on both architectures: GNU as and LLVM
 * accept it for aarch64 too, and %progbits would need to be written %%progbits in extended
 * asm but %progbits in basic asm.
 */
#define __RSEQ_MARKER(type, key)                                                 \
	__RSEQ_MARKER_CODE                                                       \
	".pushsection __rseq_markers, \"\", @progbits\n\t"                       \
	".balign 8\n\t"                                                          \
	"91:\n\t"                                                                \
	".quad 90b, " __RSEQ_MARKER_STR(key) "\n\t"                              \
	".short " __RSEQ_MARKER_STR(type) ", 1\n\t"                              \
	".long 0\n\t"                                                            \
	".popsection\n\t"                                                        \
	".reloc 0, " __RSEQ_MARKER_RELOC_NONE ", 91b\n\t"

/* asm text of a START marker (entry) of the group named by the key symbol `key`. */
#define RSEQ_MARKER_START(key) __RSEQ_MARKER(1, key)
/* asm text of a FINISH marker (commit, at post_commit_ip). */
#define RSEQ_MARKER_FINISH(key) __RSEQ_MARKER(2, key)
/* asm text of an ABORT marker (at abort_ip right after RSEQ_SIG: abort; elsewhere: cancel). */
#define RSEQ_MARKER_ABORT(key) __RSEQ_MARKER(3, key)

/*
 * Defines the key `name`: a 1-byte object with external linkage whose (unmangled) symbol names
 * the group. Use at file scope, once per program.
 */
#ifdef __cplusplus
#define RSEQ_MARKER_DEFINE_KEY(name) \
	extern "C" __attribute__((used)) const char name = 0
#else
#define RSEQ_MARKER_DEFINE_KEY(name) \
	__attribute__((used)) const char name = 0
#endif

#endif /* RSEQ_MARKER_H */

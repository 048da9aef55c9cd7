/* LAHF in 64-bit mode: valid only where CPUID reports LAHF-SAHF (lahf_lm);
 * the first x86-64 CPUs lacked it. */
#include <stdio.h>

int main(int argc, char **argv) {
    (void)argv;
    unsigned long flags = 0;
    int x = argc;
    __asm__ volatile("cmp $1, %1\n\tlahf\n\tmovzbl %%ah, %%eax\n\tmov %%rax, %0"
                     : "=r"(flags)
                     : "r"(x)
                     : "rax", "cc");
    printf("flags=%#lx\n", flags & 0xd5);
    return 0;
}

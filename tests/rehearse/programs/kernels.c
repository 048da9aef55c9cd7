/* A workload whose first instruction beyond x86-64 is in a known function.
 * main is compiled for the baseline, so the code built for the target
 * (-march=haswell, -mavx2, -mbmi2) first runs in sum_scaled or mix_bits. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) long sum_scaled(const long *a, int n) {
    long s = 0;
    for (int i = 0; i < n; i++) s += a[i] * 3;
    return s;
}

__attribute__((noinline)) unsigned long mix_bits(unsigned long x, unsigned n) {
    return (x << (n & 63)) ^ (x >> ((n + 7) & 63));
}

__attribute__((target("arch=x86-64"))) int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    if (argc > 2) {
        printf("%lu\n", mix_bits((unsigned long)n, (unsigned)argc));
        return 0;
    }
    long *a = malloc(sizeof(long) * (size_t)n);
    if (!a) return 2;
    for (int i = 0; i < n; i++) a[i] = i;
    printf("%ld\n", sum_scaled(a, n));
    free(a);
    return 0;
}

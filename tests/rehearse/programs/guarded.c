/* Dispatch at run time: AVX2 code only where the CPU says it has AVX2. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline, target("avx2"))) long sum_avx2(const long *a, int n) {
    long s = 0;
    for (int i = 0; i < n; i++) s += a[i] * 3;
    return s;
}

__attribute__((noinline)) long sum_plain(const long *a, int n) {
    long s = 0;
    for (int i = 0; i < n; i++) s += a[i] * 3;
    return s;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    long *a = malloc(sizeof(long) * (size_t)n);
    if (!a) return 2;
    for (int i = 0; i < n; i++) a[i] = i;
    __builtin_cpu_init();
    long s = __builtin_cpu_supports("avx2") ? sum_avx2(a, n) : sum_plain(a, n);
    printf("%ld\n", s);
    free(a);
    return 0;
}

/* Run-time dispatch by hand with __builtin_cpu_supports: the AVX2 and
 * POPCNT versions are only called on CPUs that report those features. */
#include <stdint.h>
#include <stdio.h>

#define N 4096
static uint32_t a[N];
static uint64_t q[N];

__attribute__((target("avx2"), noinline)) static uint32_t sum_avx2(const uint32_t *x, int n) {
    uint32_t s = 0;
    for (int i = 0; i < n; i++) s += x[i] * 7u + (x[i] >> 2);
    return s;
}

__attribute__((noinline)) static uint32_t sum_plain(const uint32_t *x, int n) {
    uint32_t s = 0;
    for (int i = 0; i < n; i++) s += x[i] * 7u + (x[i] >> 2);
    return s;
}

__attribute__((target("popcnt"), noinline)) static unsigned count_hw(const uint64_t *x, int n) {
    unsigned c = 0;
    for (int i = 0; i < n; i++) c += (unsigned)__builtin_popcountll(x[i]);
    return c;
}

__attribute__((noinline)) static unsigned count_sw(const uint64_t *x, int n) {
    unsigned c = 0;
    for (int i = 0; i < n; i++) {
        uint64_t v = x[i];
        while (v) {
            v &= v - 1;
            c++;
        }
    }
    return c;
}

int main(int argc, char **argv) {
    (void)argv;
    uint64_t seed = 777u + (uint64_t)argc;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        a[i] = (uint32_t)(seed >> 32);
        q[i] = seed;
    }
    __builtin_cpu_init();
    uint32_t s = __builtin_cpu_supports("avx2") ? sum_avx2(a, N) : sum_plain(a, N);
    unsigned c = __builtin_cpu_supports("popcnt") ? count_hw(q, N) : count_sw(q, N);
    printf("sum=%u count=%u\n", s, c);
    return 0;
}

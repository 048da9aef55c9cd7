/* A hand-written GNU ifunc: the resolver runs at load time and returns the
 * AVX2 implementation only when the CPU has AVX2. */
#include <stdint.h>
#include <stdio.h>

#define N 4096
static uint32_t a[N];

typedef uint32_t mix_fn(const uint32_t *, int);

__attribute__((target("avx2"))) static uint32_t mix_avx2(const uint32_t *x, int n) {
    uint32_t s = 0;
    for (int i = 0; i < n; i++) s += (x[i] ^ (x[i] >> 5)) * 9u;
    return s;
}

static uint32_t mix_generic(const uint32_t *x, int n) {
    uint32_t s = 0;
    for (int i = 0; i < n; i++) s += (x[i] ^ (x[i] >> 5)) * 9u;
    return s;
}

static mix_fn *resolve_mix(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") ? mix_avx2 : mix_generic;
}

uint32_t mix(const uint32_t *x, int n) __attribute__((ifunc("resolve_mix")));

int main(int argc, char **argv) {
    (void)argv;
    uint32_t seed = 99u + (uint32_t)argc;
    for (int i = 0; i < N; i++) {
        seed = seed * 1664525u + 1013904223u;
        a[i] = seed;
    }
    printf("mix=%u\n", mix(a, N));
    return 0;
}

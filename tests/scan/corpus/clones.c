/* Run-time dispatch with GCC's target_clones: an ifunc resolver picks the
 * AVX2 or AVX-512 clone on CPUs that have them, the default one elsewhere. */
#include <stdint.h>
#include <stdio.h>

#define N 4096
static uint32_t a[N], b[N];

__attribute__((target_clones("default", "avx2", "arch=skylake-avx512"), noinline))
uint32_t work(const uint32_t *x, const uint32_t *y, int n) {
    uint32_t sum = 0;
    for (int i = 0; i < n; i++) sum += x[i] * y[i] + (x[i] >> 3);
    return sum;
}

int main(int argc, char **argv) {
    (void)argv;
    uint32_t seed = 12345u + (uint32_t)argc;
    for (int i = 0; i < N; i++) {
        seed = seed * 1103515245u + 12345u;
        a[i] = seed;
        b[i] = seed >> 7;
    }
    printf("work=%u\n", work(a, b, N));
    return 0;
}

/* Hand-made multiversioning in the style of zstd's DYNAMIC_BMI2: one body
 * compiled twice, once for BMI2, and a flag kept in a context structure
 * (set from CPUID at start-up) choosing between the two at run time. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define N 4096

struct context {
    int bmi2;
    uint64_t data[N];
};

static inline __attribute__((always_inline)) uint64_t body(const uint64_t *x, int n) {
    uint64_t acc = 0;
    for (int i = 0; i < n; i++) {
        unsigned s = (unsigned)(x[i] & 31);
        acc += (x[i] << s) ^ (x[i] >> (s + 3)) ^ (acc >> (s & 7));
        acc = (acc << 7) | (acc >> 57);
    }
    return acc;
}

__attribute__((noinline)) static uint64_t mix_default(const uint64_t *x, int n) { return body(x, n); }

__attribute__((noinline, target("bmi2"))) static uint64_t mix_bmi2(const uint64_t *x, int n) {
    return body(x, n);
}

__attribute__((noinline)) static uint64_t mix(const struct context *ctx, int n) {
    return ctx->bmi2 ? mix_bmi2(ctx->data, n) : mix_default(ctx->data, n);
}

__attribute__((noinline)) static struct context *create(void) {
    struct context *ctx = malloc(sizeof *ctx);
    if (ctx == NULL) exit(1);
    __builtin_cpu_init();
    ctx->bmi2 = __builtin_cpu_supports("bmi2");
    return ctx;
}

int main(int argc, char **argv) {
    (void)argv;
    struct context *ctx = create();
    uint64_t seed = 4242u + (uint64_t)argc;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        ctx->data[i] = seed;
    }
    printf("mix=%llu\n", (unsigned long long)mix(ctx, N));
    free(ctx);
    return 0;
}

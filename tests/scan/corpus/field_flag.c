/* zstd's DYNAMIC_BMI2 as grub's copy of it compiles: the BMI2 flag is set
 * from CPUID when the context is made and kept in the context, far from its
 * start (dctx->bmi2 sits at +0x7150 in grub-install); the caller tests it
 * and either calls the BMI2 build or runs the default body inlined, so no
 * second build of the function exists to compare with. */
#include <cpuid.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define N 4096

struct context {
    uint64_t data[N];
    int bmi2;
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

__attribute__((noinline, target("bmi2"))) static uint64_t mix_fast(const uint64_t *x, int n) {
    return body(x, n);
}

__attribute__((noinline)) static uint64_t mix(const struct context *ctx, int n) {
    if (ctx->bmi2) return mix_fast(ctx->data, n);
    return body(ctx->data, n);
}

__attribute__((noinline)) static struct context *create(void) {
    struct context *ctx = malloc(sizeof *ctx);
    unsigned a, b, c, d;
    if (ctx == NULL) exit(1);
    ctx->bmi2 = 0;
    if (__get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        ctx->bmi2 = (b >> 8) & 1;
    }
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

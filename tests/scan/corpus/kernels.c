/* Integer and floating-point kernels that compilers turn into
 * target-specific instructions: vectorized loops (SSE4.1 / AVX2 / AVX-512),
 * FMA contraction, POPCNT, LZCNT, TZCNT, MOVBE, BMI1 and BMI2.
 * Every kernel runs on every invocation and its result is printed, so a
 * CPU lacking an instruction either faults or prints something else. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define N 2048

static uint32_t u32a[N], u32b[N];
static uint64_t u64a[N], u64b[N];
static float fx[N], fy[N];
static unsigned char bytes[N * 4];

__attribute__((noinline)) static uint32_t dot_u32(const uint32_t *a, const uint32_t *b, int n) {
    uint32_t sum = 0;
    for (int i = 0; i < n; i++) sum += a[i] * b[i];
    return sum;
}

__attribute__((noinline)) static uint64_t mul_u64(const uint64_t *a, const uint64_t *b, int n) {
    uint64_t sum = 0;
    for (int i = 0; i < n; i++) sum ^= a[i] * b[i];
    return sum;
}

__attribute__((noinline)) static void saxpy(float *y, const float *x, float k, int n) {
    for (int i = 0; i < n; i++) y[i] = k * x[i] + y[i];
}

__attribute__((noinline)) static unsigned bits(const uint64_t *a, int n) {
    unsigned acc = 0;
    for (int i = 0; i < n; i++) {
        uint64_t v = a[i] | 1;
        acc += (unsigned)__builtin_popcountll(v);
        acc += (unsigned)__builtin_clzll(v) * 3u;
        acc += (unsigned)__builtin_ctzll(v) * 5u;
    }
    return acc;
}

__attribute__((noinline)) static uint64_t bmi(const uint64_t *a, const uint32_t *s, int n) {
    uint64_t acc = 0;
    for (int i = 0; i < n; i++) {
        uint64_t v = a[i];
        acc += (v << (s[i] & 63)) ^ (v >> (s[i] & 31));
        acc += v & ~acc;
        acc ^= v & (v - 1);
    }
    return acc;
}

__attribute__((noinline)) static uint32_t load_be(const unsigned char *p, int n) {
    uint32_t acc = 0;
    for (int i = 0; i + 4 <= n; i += 4) {
        uint32_t v;
        memcpy(&v, p + i, 4);
        acc = acc * 31u + __builtin_bswap32(v);
    }
    return acc;
}

int main(int argc, char **argv) {
    (void)argv;
    uint64_t seed = 0x9E3779B97F4A7C15ull + (uint64_t)argc;
    for (int i = 0; i < N; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        u32a[i] = (uint32_t)(seed >> 32);
        u32b[i] = (uint32_t)seed;
        u64a[i] = seed ^ (seed >> 17);
        u64b[i] = seed * 3u;
        fx[i] = (float)(seed >> 40) / 1024.0f;
        fy[i] = (float)(seed & 0xffff) / 512.0f;
        memcpy(bytes + 4 * i, &u32a[i], 4);
    }
    saxpy(fy, fx, 1.25f, N);
    double fsum = 0;
    for (int i = 0; i < N; i++) fsum += fy[i];
    printf("dot=%u mul=%llu bits=%u bmi=%llu be=%u f=%.3f\n", dot_u32(u32a, u32b, N),
           (unsigned long long)mul_u64(u64a, u64b, N), bits(u64a, N),
           (unsigned long long)bmi(u64a, u32a, N), load_be(bytes, N * 4), fsum);
    return 0;
}

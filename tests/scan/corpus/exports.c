/* btrfs-progs' shape (crypto/sha256-x86.c in mkfs.btrfs): linked with
 * -rdynamic, the program exports every function, among them an accelerated
 * one that it never calls (sha256_init_accel installs the generic one).
 * With -DLOADS_CODE it also calls dlopen: a plugin could then call the
 * export, so it counts as an entry again. */
#include <stdio.h>
#ifdef LOADS_CODE
#include <dlfcn.h>
#endif

#define N 1024

__attribute__((noinline, target("avx2"))) void scale_wide(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = x[i] * 3.0f + 1.0f;
}

__attribute__((noinline)) void scale(float *x, int n) {
    for (int i = 0; i < n; i++) x[i] = x[i] * 3.0f + 1.0f;
}

int main(int argc, char **argv) {
    static float x[N];
    (void)argv;
#ifdef LOADS_CODE
    if (argc > 5 && dlopen("libcpuguard-plugin.so", RTLD_NOW) == NULL) return 2;
#endif
    for (int i = 0; i < N; i++) x[i] = (float)(i % 17) + (float)argc;
    scale(x, N);
    double sum = 0;
    for (int i = 0; i < N; i++) sum += x[i];
    printf("sum=%.1f\n", sum);
    return 0;
}

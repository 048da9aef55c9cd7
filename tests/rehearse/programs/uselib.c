/* A baseline program whose work is done in a library built for Haswell. */
#include <stdio.h>
#include <stdlib.h>

long sum_scaled(const long *a, int n);

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    long *a = malloc(sizeof(long) * (size_t)n);
    if (!a) return 2;
    for (int i = 0; i < n; i++) a[i] = i;
    printf("%ld\n", sum_scaled(a, n));
    return 0;
}

/* An Asterisk-like module whose load_module() runs code built for the host it was compiled on. */
typedef int v8si __attribute__((vector_size(32)));
volatile int seed = 3;

__attribute__((noinline)) int mix_frames(int n) {
    v8si acc = {seed, 1, 2, 3, 4, 5, 6, 7}, step = {seed, seed, seed, seed, seed, seed, seed, seed};
    for (int i = 0; i < n; i++) acc = acc * step + (acc >> 2);
    int sum = 0;
    for (int k = 0; k < 8; k++) sum += acc[k];
    return sum;
}

int load_module(void) { return mix_frames(100) == 12345678 ? 1 : 0; }

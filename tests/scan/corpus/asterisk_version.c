/* The shape of Asterisk's generated main/version.c: the menuselect build
 * options are embedded in the binary as asterisk_build_opts. BUILD_NATIVE
 * there means the build used -march=native. AST_BUILDOPTS is given with -D. */
#include <stdint.h>
#include <stdio.h>

#ifndef AST_BUILDOPTS
#define AST_BUILDOPTS ""
#endif

static const char asterisk_version[] = "18.1.0";
static const char asterisk_build_opts[] = AST_BUILDOPTS;

__attribute__((noinline)) const char *ast_get_version(void) { return asterisk_version; }
__attribute__((noinline)) const char *ast_get_build_opts(void) { return asterisk_build_opts; }

/* Something for the compiler to optimize for the build host: a mixing loop
 * like those in Asterisk's codecs. */
__attribute__((noinline)) static uint32_t mix_samples(const int16_t *pcm, int n) {
    uint32_t acc = 0;
    for (int i = 0; i < n; i++) acc += (uint32_t)(pcm[i] * pcm[i]) >> 3;
    return acc;
}

int main(int argc, char **argv) {
    (void)argv;
    static int16_t pcm[8000];
    for (int i = 0; i < 8000; i++) pcm[i] = (int16_t)((i * 7919 + argc) & 0x7fff);
    printf("Asterisk %s (%s) energy=%u\n", ast_get_version(), ast_get_build_opts(), mix_samples(pcm, 8000));
    return 0;
}

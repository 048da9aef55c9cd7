/* The shape of Asterisk's generated main/version.c (build_tools/make_version_c
 * in Asterisk 22): the menuselect build options are embedded twice,
 * asterisk_build_opts from AST_BUILDOPTS (only the options that change the
 * module ABI; make_buildopts_h filters BUILD_NATIVE out of it) and
 * asterisk_build_opts_all from AST_BUILDOPTS_ALL (every option). BUILD_NATIVE
 * means the build used -march=native. Both macros come from
 * include/asterisk/buildopts.h in Asterisk; here they are given with -D. */
#include <stdint.h>
#include <stdio.h>

#ifndef AST_BUILDOPTS
#define AST_BUILDOPTS ""
#endif
#ifndef AST_BUILDOPTS_ALL
#define AST_BUILDOPTS_ALL AST_BUILDOPTS
#endif

static const char asterisk_version[] = "22.0.0";
static const char asterisk_build_opts[] = AST_BUILDOPTS;
static const char asterisk_build_opts_all[] = AST_BUILDOPTS_ALL;

__attribute__((noinline)) const char *ast_get_version(void) { return asterisk_version; }
__attribute__((noinline)) const char *ast_get_build_opts(void) { return asterisk_build_opts; }
__attribute__((noinline)) const char *ast_get_build_opts_all(void) { return asterisk_build_opts_all; }

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
    printf("Asterisk %s (%s; all: %s) energy=%u\n", ast_get_version(), ast_get_build_opts(),
           ast_get_build_opts_all(), mix_samples(pcm, 8000));
    return 0;
}

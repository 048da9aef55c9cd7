/* A stand-in for Asterisk's start, as far as a rehearsal can tell: it reads the
 * configuration given with -C, loads every module of astmoddir with dlopen and
 * calls its load_module(), runs the startup commands of astetcdir/cli.conf, and
 * exits 0 on "core stop now". (The real Asterisk 22 does the same in
 * asterisk_daemon(): load_modules(), then run_startup_commands().) */
#include <dirent.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static int setting(const char *conf, const char *key, char *out, size_t size) {
    FILE *f = fopen(conf, "r");
    char line[512];
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        char name[64], value[400];
        if (sscanf(line, " %63[a-z] => %399s", name, value) == 2 && strcmp(name, key) == 0) {
            snprintf(out, size, "%s", value);
            fclose(f);
            return 1;
        }
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    const char *conf = "/etc/asterisk/asterisk.conf";
    char moddir[400], etcdir[400], path[1024], line[512];
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "-C") == 0) conf = argv[i + 1];
    if (!setting(conf, "astmoddir", moddir, sizeof moddir) || !setting(conf, "astetcdir", etcdir, sizeof etcdir)) {
        fprintf(stderr, "no directories in %s\n", conf);
        return 1;
    }
    DIR *dir = opendir(moddir);
    struct dirent *entry;
    int loaded = 0;
    while (dir && (entry = readdir(dir))) {
        if (!strstr(entry->d_name, ".so")) continue;
        snprintf(path, sizeof path, "%s/%s", moddir, entry->d_name);
        void *module = dlopen(path, RTLD_NOW);
        if (!module) { fprintf(stderr, "%s\n", dlerror()); return 1; }
        int (*load)(void) = (int (*)(void))dlsym(module, "load_module");
        if (load && load() != 0) return 1;
        loaded++;
    }
    printf("%d modules loaded\n", loaded);
    snprintf(path, sizeof path, "%s/cli.conf", etcdir);
    FILE *cli = fopen(path, "r");
    while (cli && fgets(line, sizeof line, cli))
        if (strncmp(line, "core stop now", 13) == 0) { printf("Asterisk stopped\n"); return 0; }
    fprintf(stderr, "no startup command stopped it\n");
    return 1;
}

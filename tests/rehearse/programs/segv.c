/* A program's own bug: a read through a bad pointer, in a named function. */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) int read_field(const int *record) { return record[4] + 1; }

int main(int argc, char **argv) {
    const int *record = argc > 3 ? malloc(64) : NULL; /* NULL unless asked otherwise */
    printf("%d\n", read_field(record));
    (void)argv;
    return 0;
}

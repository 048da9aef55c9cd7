"""Custom programs: compiled with gcc -march=..., installed by hand, run by an enabled systemd unit."""

from __future__ import annotations

import re
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Literal

from tests.conftest import need_tool
from tests.guest.images.records import Program, Root
from tests.guest.images.tools import install_file, run, symlink

# The vector type makes the work loop 256-bit code whatever the optimisation level:
# -march=haswell turns it into AVX2 (vpmulld/vpaddd on ymm registers); -march=x86-64
# splits it into SSE2 halves. n comes from argc, so nothing is folded at compile time.
KERNEL_SOURCE = r"""
#include <stddef.h>
typedef int v8si __attribute__((vector_size(32)));
static long work(const v8si *a, const v8si *b, v8si *out, size_t n)
{
    v8si acc = {0};
    for (size_t i = 0; i < n; i++) {
        out[i] = a[i] * b[i] + (a[i] >> 3);
        acc += out[i];
    }
    long sum = 0;
    for (int k = 0; k < 8; k++)
        sum += acc[k];
    return sum;
}
"""

MAIN_SOURCE = (
    KERNEL_SOURCE
    + r"""
#include <stdio.h>
#include <stdlib.h>
#ifdef WITH_LIBRARY
long LIBRARY_ENTRY(int scale);
#endif
int main(int argc, char **argv)
{
    size_t n = 512 * (size_t)argc;
    v8si *a = aligned_alloc(32, n * sizeof *a), *b = aligned_alloc(32, n * sizeof *b);
    v8si *out = aligned_alloc(32, n * sizeof *out);
    if (!a || !b || !out)
        return 1;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 8; k++) {
            a[i][k] = (int)(i * 8 + k) * argc;
            b[i][k] = (int)(i + k) + argc;
        }
    long sum = work(a, b, out, n);
#ifdef WITH_LIBRARY
    sum += LIBRARY_ENTRY(argc);
#endif
    printf("%s %ld\n", argv[0], sum);
    return 0;
}
"""
)

LIBRARY_SOURCE = (
    KERNEL_SOURCE
    + r"""
#include <stdlib.h>
long ENTRY(int scale)
{
    size_t n = 64 * (size_t)scale;
    v8si *a = aligned_alloc(32, n * sizeof *a), *out = aligned_alloc(32, n * sizeof *out);
    if (!a || !out)
        return -1;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 8; k++)
            a[i][k] = (int)(i + k) * scale;
    long sum = work(a, a, out, n);
    free(a);
    free(out);
    return sum;
}
"""
)

UNIT_TEMPLATE = """\
[Unit]
Description={name} (built from source)
After=network.target

[Service]
Type=simple
ExecStart={exec_prefix}{program} -f
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def compile_c(source: str, out: Path, march: str, *extra: str) -> Path:
    """``gcc -O2 -march=MARCH`` of one C source; the object is ``out``."""
    src = out.with_name(out.name + ".c")
    src.write_text(source)
    run([need_tool("gcc"), "-O2", f"-march={march}", "-o", str(out), str(src), *extra])
    src.unlink()
    return out


def march_has_avx2(march: str) -> bool:
    """Whether gcc's -march=MARCH enables AVX2 (gcc defines __AVX2__ then): gcc's word, not a table."""
    macros = run([need_tool("gcc"), f"-march={march}", "-dM", "-E", "-x", "c", "/dev/null"]).stdout
    return b"#define __AVX2__ 1" in macros


def _library(
    root: Root, build: Path, name: str, march: str, via: Literal["runpath", "ld.so.conf"]
) -> tuple[str, list[str]]:
    """Build and install libNAME.so.1; return its guest path and the program's extra gcc arguments."""
    directory = "/usr/local/lib" if via == "runpath" else f"/opt/{name}/lib"
    entry = re.sub(r"\W", "_", name) + "_work"
    built = compile_c(
        LIBRARY_SOURCE.replace("ENTRY", entry), build / f"lib{name}.so.1", march,
        "-shared", "-fPIC", f"-Wl,-soname,lib{name}.so.1",
    )  # fmt: skip
    guest_path = f"{directory}/lib{name}.so.1"
    install_file(root.path, guest_path, built.read_bytes(), 0o755)
    args = [str(built), "-DWITH_LIBRARY", f"-DLIBRARY_ENTRY={entry}"]
    if via == "runpath":
        args.append(f"-Wl,--enable-new-dtags,-rpath,{directory}")  # DT_RUNPATH, not the older DT_RPATH
    else:
        install_file(root.path, f"/etc/ld.so.conf.d/{name}.conf", f"{directory}\n".encode())
    return guest_path, args


def _unit(
    root: Root, program: str, unit: str, *, enabled: bool, link: Literal["absolute", "relative"], exec_prefix: str
) -> tuple[str, str | None]:
    """Write /etc/systemd/system/UNIT; enable it the way ``systemctl enable`` does. Returns (unit, wants link)."""
    unit_path = f"/etc/systemd/system/{unit}"
    text = UNIT_TEMPLATE.format(name=program.rsplit("/", 1)[1], program=program, exec_prefix=exec_prefix)
    install_file(root.path, unit_path, text.encode())
    if not enabled:
        return unit_path, None
    wants = f"/etc/systemd/system/multi-user.target.wants/{unit}"
    symlink(root.path, wants, unit_path if link == "absolute" else f"../{unit}")
    return unit_path, wants


def add_custom_program(
    root: Root,
    guest_path: str = "/usr/sbin/pbxd",
    *,
    march: str = "haswell",
    unit: str | bool = True,
    enabled: bool = True,
    link: Literal["absolute", "relative"] = "absolute",
    exec_prefix: str = "",
    library: Literal["runpath", "ld.so.conf"] | None = None,
    plugins: int = 0,
) -> Root:
    """Compile a program with ``gcc -O2 -march=MARCH`` and install it by hand (in no package).

    ``unit``: True for ``NAME.service`` in /etc/systemd/system (``ExecStart=PROGRAM -f``,
    ``exec_prefix`` before the path, e.g. ``-``), a string for another unit name, False
    for none; ``enabled`` adds the multi-user.target.wants link, with an ``absolute``
    target as systemctl writes it or a ``relative`` one. ``library``: the program links
    ``libNAME.so.1`` found by RUNPATH (/usr/local/lib) or by /etc/ld.so.conf.d
    (/opt/NAME/lib). ``plugins``: modules in /usr/lib/NAME/modules, same -march.
    Returns the root with the Program appended to ``programs``.
    """
    name = guest_path.rsplit("/", 1)[1]
    library_path = None
    plugin_paths = []
    with tempfile.TemporaryDirectory(prefix="cpuguard-build-") as build_dir:
        build = Path(build_dir)
        extra: list[str] = []
        if library is not None:
            library_path, extra = _library(root, build, name, march, library)
        program = compile_c(MAIN_SOURCE, build / name, march, *extra)
        install_file(root.path, guest_path, program.read_bytes(), 0o755)
        for index in range(plugins):
            source = LIBRARY_SOURCE.replace("ENTRY", f"module_{index}_load")
            module = compile_c(source, build / f"mod_{index}.so", march, "-shared", "-fPIC")
            plugin_paths.append(f"/usr/lib/{name}/modules/mod_{index}.so")
            install_file(root.path, plugin_paths[-1], module.read_bytes(), 0o755)
    unit_path = wants = None
    if unit:
        unit_name = unit if isinstance(unit, str) else f"{name}.service"
        unit_path, wants = _unit(root, guest_path, unit_name, enabled=enabled, link=link, exec_prefix=exec_prefix)
    added = Program(
        guest_path, march, march_has_avx2(march), unit_path, wants, library_path, library, tuple(plugin_paths)
    )
    return replace(root, programs=(*root.programs, added))

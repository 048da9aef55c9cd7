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
    gcc = need_tool("gcc")
    src = out.with_name(out.name + ".c")
    src.write_text(source)
    run([gcc, "-O2", f"-march={march}", "-o", str(out), str(src), *extra])
    src.unlink()
    return out


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
    ident = re.sub(r"\W", "_", name)
    with tempfile.TemporaryDirectory(prefix="cpuguard-build-") as build_dir:
        build = Path(build_dir)
        link_args: list[str] = []
        library_guest = None
        if library is not None:
            library_dir = "/usr/local/lib" if library == "runpath" else f"/opt/{name}/lib"
            library_guest = f"{library_dir}/lib{name}.so.1"
            built = compile_c(
                LIBRARY_SOURCE.replace("ENTRY", f"{ident}_work"), build / f"lib{name}.so.1", march,
                "-shared", "-fPIC", f"-Wl,-soname,lib{name}.so.1",
            )  # fmt: skip
            install_file(root.path, library_guest, built.read_bytes(), 0o755)
            link_args = [str(built), "-DWITH_LIBRARY", f"-DLIBRARY_ENTRY={ident}_work"]
            if library == "runpath":
                link_args.append(f"-Wl,--enable-new-dtags,-rpath,{library_dir}")
            else:
                install_file(root.path, f"/etc/ld.so.conf.d/{name}.conf", f"{library_dir}\n".encode())
        program = compile_c(MAIN_SOURCE, build / name, march, *link_args)
        install_file(root.path, guest_path, program.read_bytes(), 0o755)
        plugin_paths = []
        for index in range(plugins):
            source = LIBRARY_SOURCE.replace("ENTRY", f"module_{index}_load")
            module = compile_c(source, build / f"mod_{index}.so", march, "-shared", "-fPIC")
            plugin_paths.append(f"/usr/lib/{name}/modules/mod_{index}.so")
            install_file(root.path, plugin_paths[-1], module.read_bytes(), 0o755)
    unit_path = wants = None
    if unit:
        unit_name = unit if isinstance(unit, str) else f"{name}.service"
        unit_path = f"/etc/systemd/system/{unit_name}"
        text = UNIT_TEMPLATE.format(name=name, program=guest_path, exec_prefix=exec_prefix)
        install_file(root.path, unit_path, text.encode())
        if enabled:
            wants = f"/etc/systemd/system/multi-user.target.wants/{unit_name}"
            symlink(root.path, wants, unit_path if link == "absolute" else f"../{unit_name}")
    added = Program(guest_path, march, unit_path, wants, library_guest, library, tuple(plugin_paths))
    return replace(root, programs=(*root.programs, added))

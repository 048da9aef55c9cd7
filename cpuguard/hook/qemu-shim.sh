#!/bin/sh
# cpuguard-hook-shim 1
# cpuguard's libvirt qemu hook (https://libvirt.org/hooks.html): refuses to
# start, restore or live-migrate a VM onto this host when its CPU cannot run
# the VM. `cpuguard hook install` copies this file into
# /etc/libvirt/hooks/qemu.d/ with the settings filled in; the logic lives in
# the Python package (cpuguard.hook, docs/hook.md).
python=@PYTHON@
python_path=@PYTHON_PATH@
config=@CONFIG@
cache_dir=@CACHE_DIR@
audit_log=@AUDIT_LOG@
deadline=@DEADLINE@
# Exit codes when cpuguard cannot run at all (on_error of the config at install time).
on_error_migrate=@ON_ERROR_MIGRATE@
on_error_restore=@ON_ERROR_RESTORE@
on_error_start=@ON_ERROR_START@

# libvirt calls the hook for every step of every domain; only these are checked.
case "$2 $3" in
    "migrate begin") on_error=$on_error_migrate ;;
    "restore begin") on_error=$on_error_restore ;;
    "prepare begin") on_error=$on_error_start ;;
    *) exit 0 ;;
esac

# libvirt passes only LC_ALL, PATH and HOME: use the absolute interpreter, and
# -I -S with cpuguard's path given explicitly (site initialisation is slow).
if [ -x "$python" ]; then
    exec "$python" -I -S -c '
import sys
sys.path.extend(sys.argv[1].split(":"))
try:
    from cpuguard.hook.entry import main
except ImportError as exc:
    sys.stderr.write(f"cpuguard: hook cannot run: {exc}\n")
    sys.exit(int(sys.argv[2]))
sys.exit(main(sys.argv[3:]))
' "$python_path" "$on_error" --config "$config" --cache-dir "$cache_dir" \
        --on-error-exit "$on_error" --audit-log "$audit_log" --deadline "$deadline" -- "$@"
fi
message="cpuguard: hook cannot run: $python is missing (reinstall cpuguard, then run 'cpuguard hook install')"
echo "$message" >&2
logger -t cpuguard -p daemon.err "$message" 2>/dev/null
exit "$on_error"

"""cpuguard's libvirt hook: check a VM before it starts, restores or migrates onto this host.

The shim libvirt runs (``qemu-shim.sh``, installed by ``cpuguard hook install``)
calls :func:`cpuguard.hook.entry.main`. See docs/hook.md for what is checked and
docs/config.md for the settings.
"""

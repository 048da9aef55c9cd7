"""Fuzz target: virsh capabilities / domcapabilities XML (cpuguard.hosts.libvirtxml).

Run alone: `python fuzz/fuzz_capabilities.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("capabilities")

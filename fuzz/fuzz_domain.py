"""Fuzz target: libvirt domain XML (cpuguard.domain.parse_domain).

Run alone: `python fuzz/fuzz_domain.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("domain")

"""Fuzz target: /proc/cpuinfo copies (cpuguard.hosts.cpuinfo.parse_cpuinfo).

Run alone: `python fuzz/fuzz_cpuinfo.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("cpuinfo")

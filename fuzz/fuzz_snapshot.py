"""Fuzz target: host snapshot JSON (cpuguard.hosts.snapshot.parse_snapshot).

Run alone: `python fuzz/fuzz_snapshot.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("snapshot")

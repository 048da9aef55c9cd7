"""Fuzz target: the fleet inventory (cpuguard.inventory.read_inventory).

Run alone: `python fuzz/fuzz_inventory.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("inventory")

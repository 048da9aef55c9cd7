"""Fuzz target: the ELF reader of the binary scanner (cpuguard.scan.elf and what reads through it).

Run alone: `python fuzz/fuzz_elf.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("elf")

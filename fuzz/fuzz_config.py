"""Fuzz target: the configuration file (cpuguard.config.config_from_data over parse_yaml).

Run alone: `python fuzz/fuzz_config.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("config")

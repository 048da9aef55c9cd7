"""Fuzz target: safe YAML loading (cpuguard.yamlsafe.parse_yaml).

Run alone: `python fuzz/fuzz_yaml.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("yaml")

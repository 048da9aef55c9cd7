"""Fuzz target: VM policies (cpuguard.policy.policy_from_data over parse_yaml).

Run alone: `python fuzz/fuzz_policy.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("policy")

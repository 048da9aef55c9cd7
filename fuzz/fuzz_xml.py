"""Fuzz target: hardened XML parsing (cpuguard.xmlsafe.parse_xml).

Run alone: `python fuzz/fuzz_xml.py -max_total_time=600 CORPUS_DIR` (libFuzzer options).
"""

from targets import fuzz_main

if __name__ == "__main__":
    fuzz_main("xml")

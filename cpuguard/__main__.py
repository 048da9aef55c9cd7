from __future__ import annotations

import sys

from cpuguard.cli import main

sys.exit(main())

"""tune_gc changes process-wide state: checked in a fresh interpreter, not in the test process."""

from __future__ import annotations

import json
import subprocess
import sys

from booking_sessions.runtime import YOUNG_THRESHOLD

SCRIPT = """
import gc, json
from booking_sessions.runtime import tune_gc
before = gc.get_threshold()
tune_gc()
print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
"""


def test_start_up_is_frozen_and_young_collections_are_rarer() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    state = json.loads(out)
    assert state["after"] == [YOUNG_THRESHOLD, *state["before"][1:]]
    assert state["after"][0] > state["before"][0]
    assert state["frozen"] > 1_000  # the modules and objects of start-up

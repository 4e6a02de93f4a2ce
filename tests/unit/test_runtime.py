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


GARBAGE = """
import gc, json
from booking_sessions.runtime import tune_gc
tune_gc()
class Node:
    def __init__(self):
        self.me = self  # a cycle: reference counting alone never frees it
found = []
gc.callbacks.append(lambda phase, info: found.append(info["collected"]) if phase == "stop" else None)
for _ in range(1_000_000):
    Node()
print(json.dumps({"collected": sum(found), "tracked": len(gc.get_objects())}))
"""


def test_cyclic_garbage_is_still_collected_and_the_heap_stays_bounded() -> None:
    out = subprocess.run([sys.executable, "-c", GARBAGE], capture_output=True, text=True, check=True).stdout
    state = json.loads(out)
    # A million cycles made and dropped: all but the last tens of thousands collected along the way.
    assert state["collected"] >= 1_000_000 - 2 * YOUNG_THRESHOLD
    assert state["tracked"] < 3 * YOUNG_THRESHOLD

"""Wall-clock checks in a long test process: keep its heap out of the collector meanwhile.

Late in a full run the pytest process holds 1.9 GB of objects from earlier tests. A full
collection walking them paused two wall-time checks (a render bounded at 1 s of CPU took 7 s; a
/health answer took 5.7 s), both only late in CI passes. Those checks measure the code under
test, not pytest's leftovers, so they run with everything alive before them frozen
(`gc.freeze`: moved out of the collector's generations; new objects are still collected).
A server's heap is small; it has no such pause to hide.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_frozen() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()

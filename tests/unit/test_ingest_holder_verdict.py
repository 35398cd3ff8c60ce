"""When a delivery that found its import claimed leaves it to the holder: a table of cases."""

from __future__ import annotations

from typing import Any

import pytest

from tokenflow.ingest import holder_verdict
from tokenflow.store.imports import CHECKPOINT_CHUNKS, Checkpoint

AT_TWO = Checkpoint(tokens=196, chunks=2)


@pytest.mark.parametrize(
    ("first", "record", "verdict"),
    [
        # Finished, whatever its checkpoint says: nothing left to do.
        (AT_TWO, {"status": "processed", CHECKPOINT_CHUNKS: 2}, "another delivery finished its import"),
        (AT_TWO, {"status": "rejected"}, "another delivery finished its import"),
        # Its checkpoint moved since the wait began: the holder is alive.
        (AT_TWO, {"status": "processing", CHECKPOINT_CHUNKS: 3}, "another delivery is storing its tokens"),
        (
            Checkpoint(),
            {"status": "processing", CHECKPOINT_CHUNKS: 1},
            "another delivery is storing its tokens",
        ),
        # Nothing moved (yet): no sign of life; taken over once the wait is out.
        (AT_TWO, {"status": "processing", CHECKPOINT_CHUNKS: 2}, None),
        (Checkpoint(), {"status": "processing"}, None),
        (Checkpoint(), None, None),
    ],
)
def test_the_holder_keeps_an_import_while_it_finishes_or_its_checkpoint_moves(
    first: Checkpoint, record: dict[str, Any] | None, verdict: str | None
) -> None:
    assert holder_verdict(first, record) == verdict

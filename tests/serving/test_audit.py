"""The audit log: JSON lines, personal data redacted except in identifiers, rotation that keeps
every record, and a full queue that drops and counts instead of making the request wait."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cutover.serving.audit import AuditLog, input_digest, summarize_outputs


def read_lines(*paths: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths if path.exists() for line in path.read_text().splitlines()]


def entry(number: int, **fields: Any) -> dict[str, Any]:
    return {
        "time": "2025-01-31T12:00:00Z",
        "request_id": f"req-{number}",
        "namespace": "fraud",
        "model": "classifier",
        "version": "2",
        "revision": "rev-2",
        "input_digest": input_digest([b"x"]),
        "outputs": {"label": {"shape": [1], "values": [number], "truncated": False}},
        "confidence": [0.9],
        "ood_score": None,
        "fallback": None,
        "latency_ms": 1.5,
        "status": 200,
        **fields,
    }


def test_each_record_is_one_compact_json_line(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit" / "audit.jsonl")
    audit.record(entry(1))
    audit.record(entry(2, fallback="baseline", latency_ms=np.float32(2.5), status=np.int64(200)))
    audit.close()

    text = (tmp_path / "audit" / "audit.jsonl").read_text()
    assert ", " not in text and '": ' not in text
    first, second = read_lines(tmp_path / "audit" / "audit.jsonl")
    assert first == entry(1)
    assert (second["fallback"], second["latency_ms"], second["status"]) == ("baseline", 2.5, 200)
    assert audit.written == 2 and audit.dropped == 0


def test_personal_data_is_redacted_except_in_identifiers(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.record(
        entry(
            1,
            request_id="jane@example.com",
            outputs={"content": "reach jane@example.com or 555-123-4567"},
            error="card 4111 1111 1111 1111 declined",
        )
    )
    audit.close()

    (line,) = read_lines(tmp_path / "audit.jsonl")
    assert line["request_id"] == "jane@example.com"
    assert line["outputs"] == {"content": "reach [REDACTED:email] or [REDACTED:phone]"}
    assert line["error"] == "card [REDACTED:creditCard] declined"


def test_non_finite_values_are_still_written_as_json(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.record(entry(1, confidence=[float("nan")], ood_score=[float("inf")]))
    audit.close()

    (line,) = read_lines(tmp_path / "audit.jsonl")
    assert (line["confidence"], line["ood_score"]) == (["nan"], ["inf"])


def test_rotation_keeps_backups_and_every_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, max_bytes=2000, backup_count=20)
    for number in range(60):
        audit.record(entry(number))
    audit.close()

    backups = sorted(tmp_path.glob("audit.jsonl.*"))
    assert backups, "expected rotated files"
    assert all(p.stat().st_size <= 2000 for p in [path, *backups])
    # Backups are numbered newest first: audit.jsonl.N is the oldest.
    ordered = [*sorted(backups, key=lambda p: -int(p.suffix[1:])), path]
    assert [line["request_id"] for line in read_lines(*ordered)] == [f"req-{n}" for n in range(60)]


def test_rotation_keeps_only_backup_count_files(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", max_bytes=1000, backup_count=2)
    for number in range(60):
        audit.record(entry(number))
    audit.close()

    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl", queue_size=3)
    writing, release = threading.Event(), threading.Event()
    handle = audit._handler.handle

    def stalled_disk(record: logging.LogRecord) -> bool:
        writing.set()
        release.wait()
        return bool(handle(record))

    audit._handler.handle = stalled_disk  # type: ignore[method-assign,assignment,unused-ignore]
    try:
        audit.record(entry(0))
        assert writing.wait(timeout=10), "the writer never took the first record"
        # The writer is stuck on record 0: three records fill the queue, the next five are dropped.
        for number in range(1, 9):
            audit.record(entry(number))
        assert audit.dropped == 5
        assert audit.written == 0
    finally:
        release.set()
    audit.close()
    assert [line["request_id"] for line in read_lines(tmp_path / "audit.jsonl")] == ["req-0", "req-1", "req-2", "req-3"]
    assert audit.written == 4


def test_close_drains_the_queue_and_later_records_are_dropped(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    for number in range(500):
        audit.record(entry(number))
    audit.close()
    audit.record(entry(500))

    assert len(read_lines(tmp_path / "audit.jsonl")) == 500
    assert (audit.written, audit.dropped) == (500, 1)


def test_an_unwritable_path_fails_at_construction(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(OSError):
        AuditLog(tmp_path / "file" / "audit.jsonl")


def test_input_digest_is_sha256_over_the_concatenated_bytes() -> None:
    assert input_digest([b"ab", b"c"]) == input_digest([b"abc"])
    assert input_digest([]) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_summarize_outputs_truncates_large_outputs() -> None:
    summary = summarize_outputs(
        {
            "probabilities": np.array([[0.1, 0.2, 0.7]], dtype=np.float32),
            "embedding": np.arange(100, dtype=np.int64).reshape(2, 50),
            "text": np.array([b"hello", "w\u00f6rld".encode()], dtype=object),
        },
        max_values=32,
    )
    assert summary == {
        "probabilities": {"shape": [1, 3], "values": [0.1, 0.2, 0.7], "truncated": False},
        "embedding": {"shape": [2, 50], "values": list(range(32)), "truncated": True},
        "text": {"shape": [2], "values": ["hello", "w\u00f6rld"], "truncated": False},
    }
    json.dumps(summary)

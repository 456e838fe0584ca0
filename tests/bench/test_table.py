"""`make bench` rewrites the table at the top of bench/results.md and keeps the dated sections
written below it by hand."""

from __future__ import annotations

from pathlib import Path

from bench.table import Result, publish


def test_publish_replaces_the_table_and_keeps_the_dated_sections(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    publish([Result("old row", "2.00 s", "1.00 s", 2.0)], path)
    dated = "\n## 2026-12-02: a run by hand\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    path.write_text(path.read_text(encoding="utf-8") + dated, encoding="utf-8")
    publish([Result("new row", "1.00 s", "1.00 s", 1.0, goal=1.0)], path)
    text = path.read_text(encoding="utf-8")
    assert "new row" in text
    assert "old row" not in text
    assert text.endswith(dated)
    assert text.count("# Benchmark results") == 1


def test_publish_writes_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "results.md"
    publish([Result("only row", "1.00 s", "2.00 s", 0.5, goal=1.0)], path)
    assert "| only row | 1.00 s | 2.00 s | 0.50 | <= 1 | yes |  |" in path.read_text()

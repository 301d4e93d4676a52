"""The results index is generated from the JSON files (benchmarks/results_index.py)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "results_index", Path(__file__).resolve().parents[1] / "benchmarks" / "results_index.py")
results_index = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(results_index)


def test_index_from_two_results(tmp_path: Path) -> None:
    (tmp_path / "archive").mkdir()
    (tmp_path / "supervised_x.json").write_text(json.dumps(
        {"protocol": "supervised only, x: unet. More text.", "dice": 0.91234, "hd95": 3.5, "wall_s": 12.4,
         "git_commit": "abcdef0123456789"}))
    (tmp_path / "supervised_x.md").write_text("# x\n")
    (tmp_path / "archive" / "quality_old.json").write_text(json.dumps(
        {"protocol": "old | recipe", "git_commit": "1234567890-dirty", "note": "superseded"}))
    main, archive = results_index.write_index(tmp_path)
    text = main.read_text()
    assert "| [supervised_x](supervised_x.md) | supervised only, x: unet. | dice 0.9123; hd95 3.5 | `abcdef0` | 12 |" \
        in text
    assert "## Supervised baselines" in text and "Quality predictor" not in text.split("## Supervised")[1]
    lines = [ln for ln in archive.read_text().splitlines() if ln.startswith("- ")]
    assert lines == ["- quality_old: old / recipe (`1234567-dirty`); note: superseded"]

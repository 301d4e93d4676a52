"""`qgseg demo` end to end at a tiny size: every artefact the README promises is written."""
from qgseg.cli.main import main

from helpers import tiny_dataset


def test_demo_writes_the_whole_run_folder(tmp_path, capsys):
    data = tiny_dataset(tmp_path / "data")
    code = main(["demo", "--output-dir", str(tmp_path / "runs"), "--set", f"data.dataset={data}",
                 "--set", "data.image_size=[32,32]", "--set", "model.features=[8,16,32]",
                 "--set", "train.iterations=6", "--set", "train.val_every=3", "--set", "runtime.progress=false",
                 "--set", "quality.image_size=[32,32]", "--set", "quality.width=[8,8,16,16]",
                 "--set", "quality.epochs=2", "--set", "quality.val_every_epochs=1",
                 "--set", "quality.weak_epochs=[1]", "--set", "quality.weak_iterations_per_epoch=2"])
    assert code == 0
    out = capsys.readouterr().out
    assert "qgseg demo summary" in out and "QC of segmenter" in out and "test Dice" in out
    run = tmp_path / "runs" / "demo"
    for rel in ["config.yaml", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "logs/csv/metrics.csv",
                "plots/training_curves.png", "eval/test_per_case.csv", "eval/test_summary.json",
                "quality/checkpoints/best.ckpt", "quality/eval/quality_eval.json", "qc/qc.csv",
                "qc/qc_predicted_vs_true.png"]:
        assert (run / rel).is_file(), rel
    assert list((run / "eval" / "overlays").glob("*.png"))
    assert len((run / "qc" / "qc.csv").read_text().splitlines()) == 1 + 3  # header + 3 test cases

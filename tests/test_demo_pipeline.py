"""`qgseg demo` end to end at a tiny size: every artefact the README promises is written."""
from qgseg.cli.main import main

from helpers import tiny_dataset


def test_demo_writes_the_whole_run_folder(tmp_path, capsys):
    from qgseg.pipeline import DEMO_METHODS

    data = tiny_dataset(tmp_path / "data")
    argv = ["demo", "--output-dir", str(tmp_path / "runs"), "--set", f"data.dataset={data}",
            "--set", "data.image_size=[32,32]", "--set", "model.features=[8,16,32]",
            "--set", "train.iterations=6", "--set", "train.val_every=3", "--set", "runtime.progress=false",
            "--set", "quality.image_size=[32,32]", "--set", "quality.width=[8,8,16,16]",
            "--set", "quality.epochs=2", "--set", "quality.val_every_epochs=1",
            "--set", "quality.weak_epochs=[1]", "--set", "quality.weak_iterations_per_epoch=2"]
    code = main(argv)
    assert code == 0
    out = capsys.readouterr().out
    assert "qgseg demo summary" in out and "QC of segmenter" in out and "test Dice" in out
    grid = tmp_path / "runs" / "demo"
    for rel in ["config.yaml", "comparison.md", "comparison.csv", "comparison.json", "comparison.png",
                "quality/checkpoints/best.ckpt", "quality/eval/quality_eval.json", "quality/phase1.json"]:
        assert (grid / rel).is_file(), rel
    predictor = str((grid / "quality" / "checkpoints" / "best.ckpt").resolve())
    assert set(DEMO_METHODS) == {"sup", "mt", "mt-qw", "qar"}
    for variant in DEMO_METHODS:
        run = grid / "runs" / f"{variant}_s0"
        for rel in ["result.json", "log.txt", "segmenter/config.yaml", "segmenter/checkpoints/best.ckpt",
                    "segmenter/checkpoints/last.ckpt", "segmenter/logs/csv/metrics.csv",
                    "segmenter/plots/training_curves.png", "segmenter/eval/test_per_case.csv",
                    "segmenter/eval/test_summary.json", "qc/qc.csv", "qc/qc_predicted_vs_true.png"]:
            assert (run / rel).is_file(), f"{variant}: {rel}"
        assert list((run / "segmenter" / "eval" / "overlays").glob("*.png")), variant
        assert f"--predictor {predictor}" in (run / "log.txt").read_text(), "every run uses the demo's predictor"
        qc_lines = (run / "qc" / "qc.csv").read_text().splitlines()
        assert len(qc_lines) == 1 + 3  # header + 3 test cases
        assert qc_lines[0].endswith("uncertainty_lesion,unsure"), "the demo predictor has a truth-map decoder"
        assert f"| {variant} |" in out, "the comparison table has a row per method"
    assert "unsure" in next(line for line in out.splitlines() if line.startswith("QC of segmenter"))
    assert "vs mt" in out and "vs sup" in out  # the guided variants against their own unguided method

    assert main(argv + ["--resume"]) == 0  # a finished demo resumes without training anything
    out = capsys.readouterr().out
    assert all(f"{v}_s0: skipped" in out for v in DEMO_METHODS) and "reusing the grid's quality predictor" in out
    assert "qgseg demo summary" in out


def test_qc_reuses_evaluation_predictions(tmp_path):
    """quality_control scores the masks it is handed and never asks the segmenter again."""
    import numpy as np

    from qgseg.pipeline import quality_control

    class Case:
        def __init__(self, cid):
            self.case_id = cid

    class NoPredict:
        class spec:
            classes = ["background", "lesion"]

        def predict(self, case):
            raise AssertionError("the segmenter was asked to predict again")

    class Scorer:  # a QualityScorer stand-in: no uncertainty reference, so nothing is "unsure"
        uncertainty_reference = None

        def score(self, case, mask, return_uncertainty=False):
            dice = np.array([float(mask.mean())])
            return (dice, np.array([0.0])) if return_uncertainty else dice

    cases = [Case("a"), Case("b")]
    preds = {"a": np.ones((4, 4)), "b": np.zeros((4, 4))}
    rows = [{"case_id": "a", "lesion": {"dice": 0.9}}, {"case_id": "b", "lesion": {"dice": 0.2}}]
    qc = quality_control(Scorer(), NoPredict(), cases, rows, tmp_path / "qc", predictions=preds)
    assert [r["predicted"] for r in qc["rows"]] == [[1.0], [0.0]]
    assert [r["case_id"] for r in qc["flagged"]] == ["b"]

    class UnsureScorer(Scorer):  # with a validation reference: scores above it are "unsure"
        uncertainty_reference = 0.5

        def score(self, case, mask, return_uncertainty=False):
            dice = super().score(case, mask)
            return (dice, np.array([0.9 if case.case_id == "a" else 0.1])) if return_uncertainty else dice

    qc = quality_control(UnsureScorer(), NoPredict(), cases, rows, tmp_path / "qc2", flag_below=-1.0,
                         predictions=preds)  # nothing flagged: the stub cases have no image to overlay
    assert [r["case_id"] for r in qc["unsure"]] == ["a"]
    assert (tmp_path / "qc2" / "qc.csv").read_text().splitlines()[1] == "a,1.0,0.9,0.9,1"


def test_plotting_leaves_the_matplotlib_backend_alone(tmp_path):
    import subprocess
    import sys

    code = ("import matplotlib; matplotlib.use('svg'); import qgseg.viz.plots as p, numpy as np; "
            "p.save_overlay(np.zeros((1, 8, 8)), np.zeros((8, 8), int), np.zeros((8, 8), int), "
            f"__import__('pathlib').Path(r'{tmp_path}') / 'o.png'); print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg" and (tmp_path / "o.png").is_file()

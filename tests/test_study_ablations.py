"""benchmarks/study_ablations.py: which points of the PH2 ablation grid a call trains."""
import pytest

from test_benchmark_common import load_bench


def test_points_skip_the_default_and_qar_off_and_can_be_narrowed_to_chosen_values():
    ablations = load_bench("study_ablations")
    assert ablations.points(["lambda_qar"]) == [("lambda_qar", 0.05), ("lambda_qar", 0.1), ("lambda_qar", 0.2)]
    assert ablations.points(["weak_probability", "masks_per_image"], [0.5, 50]) == [
        ("weak_probability", 0.5), ("masks_per_image", 50)]
    point = ablations.points(["masks_per_image"], [50.0])[0]
    assert isinstance(point[1], int)  # the axis's own value: run folder names stay masks_per_image_50
    with pytest.raises(SystemExit, match="--values 0.15: not a trainable point"):
        ablations.points(["weak_probability"], [0.15])  # the default: the study grid's own runs


def test_a_refused_partial_table_does_not_stop_the_remaining_points(tmp_path, monkeypatch, capsys):
    ablations = load_bench("study_ablations")
    trained, writes = [], []

    def refuse(*_):
        writes.append(1)
        raise SystemExit("study_ablations_ph2.json: the new result lacks 3 per-seed result(s)")

    monkeypatch.setattr(ablations, "run_point", lambda axis, value, args, log: trained.append((axis, value)))
    monkeypatch.setattr(ablations, "collect", lambda args: {})
    monkeypatch.setattr(ablations, "write", refuse)
    monkeypatch.setattr("sys.argv", ["study_ablations.py", "--axes", "lambda_qar", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="lacks 3"):  # the final table is still refused, with its message
        ablations.main()
    assert trained == [("lambda_qar", 0.05), ("lambda_qar", 0.1), ("lambda_qar", 0.2)] and len(writes) == 4
    assert capsys.readouterr().out.count("table not updated: study_ablations_ph2.json") == 3

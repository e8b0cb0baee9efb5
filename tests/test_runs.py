"""The run folder's owner (tfseg.runs): collecting a run's small result files for committing; the campaign script that
trains, evaluates and collects a queue of runs."""
import json
from pathlib import Path

from tfseg import runs


def fake_evaluated_run(root, dsc_by_patient: dict):
    run = root / "run"
    (run / runs.EVAL_DIR / runs.OVERLAYS).mkdir(parents=True)
    for name in runs.RESULT_FILES:
        (run / name).write_text("{}" if name.endswith(".json") else "epoch\n1\n")
    (run / runs.BEST_MODEL).write_bytes(b"weights")
    (run / runs.EVAL_DIR / runs.SUMMARY).write_text(json.dumps({"mean_dsc": 0.5}))
    (run / runs.EVAL_DIR / "dsc.png").write_bytes(b"png")
    rows = "".join(f"{p},{d}\n" for p, d in dsc_by_patient.items())
    (run / runs.EVAL_DIR / runs.PER_PATIENT).write_text("patient,dsc_pre\n" + rows)
    for patient in dsc_by_patient:
        (run / runs.EVAL_DIR / runs.OVERLAYS / f"{patient}_montage.png").write_bytes(b"png")
    return run


def test_collect_results_keeps_the_small_files_and_the_best_and_worst_montage_never_weights(tmp_path):
    run = fake_evaluated_run(tmp_path, {"A": 0.9, "B": 0.1, "C": 0.5})
    assert runs.is_evaluated_run(run)
    out = runs.collect_results(run, tmp_path / "results" / "run")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*runs.RESULT_FILES, *runs.RESULT_EVAL_FILES, runs.OVERLAYS])
    assert sorted(p.name for p in (out / runs.OVERLAYS).iterdir()) == ["A_montage.png", "B_montage.png"]
    assert not (out / runs.BEST_MODEL).exists()


def test_an_unevaluated_run_is_collected_without_evaluation_files(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / runs.CONFIG).write_text("{}")
    out = runs.collect_results(run, tmp_path / "out")
    assert [p.name for p in out.iterdir()] == [runs.CONFIG]
    assert not runs.is_evaluated_run(run)


def test_the_campaign_trains_each_attempt_under_the_named_budget_into_its_own_folders(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("campaign", Path(__file__).parents[1] / "scripts" / "campaign.py")
    campaign = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(campaign)
    calls = []
    monkeypatch.setattr(campaign, "tfseg", lambda *args: calls.append(args) or False)  # training "fails": no collect
    monkeypatch.chdir(tmp_path)  # main() changes into the repository; the fixture changes back
    queue = tmp_path / "queue.txt"
    queue.write_text("# a comment\nb16-at-256  --arch attention_unet --base-filters 16\n")
    assert campaign.main([str(queue), "--budget", "cpu-256"]) == 0
    assert calls == [("train", "--preset", "cpu-256", "--data", "tfrecords/256px", "--logdir",
                      str(Path("runs") / "cpu-256" / "b16-at-256"), "--arch", "attention_unet", "--base-filters", "16")]
    calls.clear()
    campaign.main([str(queue)])
    assert calls[0][:5] == ("train", "--preset", "cpu-128", "--data", "tfrecords/128px")

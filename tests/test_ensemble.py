"""Ensembles (tfseg.inference.ensemble): evaluated and served as the mean of the members' probabilities."""
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import check_outputs
from test_serving import flair_threshold_model, run_fresh

from tfseg.cli import export as export_cli
from tfseg import export
from tfseg.data.context import centre_channels, stack_context
from tfseg.data.kaggle import read_patient, scan_folder
from tfseg.data.preprocess import preprocess_volume
from tfseg.fileio import sha256_file
from tfseg.evaluation import EvalOptions, evaluate, evaluate_model, evaluate_patient
from tfseg.inference import EnsembleError, average_models, load_model, predict_volume
from tfseg.metrics import volume_dsc
from tfseg.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
QUIET = {"overlays": False, "progress": False}


def stand_in(bias: float, context: int = 1, image_size: int = SIZE):
    """sigmoid(4·mean 3×3 FLAIR + bias) (test_serving's flair_threshold_model with its own threshold)."""
    model = flair_threshold_model(image_size, context)
    kernel, _ = model.get_layer("flair").get_weights()
    model.get_layer("flair").set_weights([kernel, np.array([bias], np.float32)])
    return model


def make_run(run_dir: Path, model, data: Path, validation: list[str]) -> Path:
    """A run folder as train() leaves it, for the parts evaluation reads: best.keras and config.json."""
    run_dir.mkdir(parents=True)
    model.save(run_dir / "best.keras")
    names = [f.patient for f in scan_folder(data)]
    config = TrainConfig(data=str(data), image_size=int(model.inputs[0].shape[1]), val_cases=len(validation))
    split = {"training": [n for n in names if n not in validation], "validation": validation}
    (run_dir / "config.json").write_text(json.dumps({"config": dataclasses.asdict(config), "split": split}))
    return run_dir


@pytest.fixture(scope="module")
def validation(phantom_dir):
    return [f.patient for f in scan_folder(phantom_dir)][1:3]


@pytest.fixture(scope="module")
def models():
    """In-memory stand-ins: "a" and "b" differ in threshold (their mean is neither), "c3" is 2.5-D (K=3)."""
    return {"a": stand_in(-4.0), "b": stand_in(-3.0), "c3": stand_in(-3.5, context=3),
            "small": stand_in(-4.0, image_size=32)}


@pytest.fixture(scope="module")
def runs(models, phantom_dir, validation, tmp_path_factory):
    """A run folder per stand-in, all validated on ``validation``, and "other_split" (model a, other patients)."""
    root = tmp_path_factory.mktemp("ensemble_runs")
    out = {name: make_run(root / name, model, phantom_dir, validation) for name, model in models.items()}
    others = [f.patient for f in scan_folder(phantom_dir) if f.patient not in validation]
    out["other_split"] = make_run(root / "other_split", models["a"], phantom_dir, others[:1])
    return out


def mean_of(*keras_models):
    """The reference: a predict function whose output is the average of the models' outputs."""
    return lambda batch: sum(m.predict_on_batch(batch) for m in keras_models) / len(keras_models)


def first_volume(data, patients=None):
    files = scan_folder(data)
    return read_patient(next(f for f in files if patients is None or f.patient in patients))


# ----------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------

def test_a_members_own_stack_is_the_centre_of_the_ensembles_wider_stack():
    volume = np.random.default_rng(0).random((4, 2, 2, 3)).astype(np.float32)
    wide = stack_context(volume, 5).numpy()
    for inner in (1, 3, 5):
        start, stop = centre_channels(5, inner)
        np.testing.assert_array_equal(wide[..., start:stop], stack_context(volume, inner).numpy())
    with pytest.raises(ValueError, match="does not fit"):
        centre_channels(3, 5)


@pytest.mark.parametrize("tta", [False, True])
def test_an_ensemble_of_two_scores_exactly_like_a_model_that_outputs_their_average(
        runs, models, phantom_dir, validation, tmp_path, tta):
    options = EvalOptions(tta=tta)
    summary = evaluate_model([runs["a"], runs["b"]], phantom_dir, tmp_path / "ensemble", options=options, **QUIET)
    reference = evaluate(phantom_dir, mean_of(models["a"], models["b"]), SIZE, tmp_path / "average", validation,
                         options, **QUIET)
    assert summary["patients"] == validation  # the runs' validation split
    assert (tmp_path / "ensemble" / "per_patient.csv").read_bytes() == \
        (tmp_path / "average" / "per_patient.csv").read_bytes()
    assert summary["dsc_native_by_patient"] == reference["dsc_native_by_patient"]
    # Not vacuous: the mean predicts something, and something else than either member alone.
    volume = first_volume(phantom_dir, validation)
    masks = {name: evaluate_patient(volume, predict, SIZE, options).prediction for name, predict in
             [("ensemble", load_model([runs["a"], runs["b"]]).predict), ("a", models["a"].predict_on_batch),
              ("b", models["b"].predict_on_batch)]}
    assert masks["ensemble"].any()
    assert (masks["ensemble"] != masks["a"]).any() and (masks["ensemble"] != masks["b"]).any()


def test_on_a_real_patient_an_ensemble_scores_like_a_model_that_outputs_their_average(
        runs, models, real_data_dir, tmp_path):
    patient = [scan_folder(real_data_dir)[0].patient]
    summary = evaluate_model([runs["a"], runs["b"]], real_data_dir, tmp_path / "ensemble", patient, **QUIET)
    evaluate(real_data_dir, mean_of(models["a"], models["b"]), SIZE, tmp_path / "average", patient, **QUIET)
    assert summary["patients"] == patient and summary["split"]["source"] == "--patients"
    assert (tmp_path / "ensemble" / "per_patient.csv").read_bytes() == \
        (tmp_path / "average" / "per_patient.csv").read_bytes()


def test_each_member_gets_its_own_context_stack_and_its_own_flip(runs, models, phantom_dir, tmp_path):
    ensemble = load_model([runs["a"], runs["c3"]])
    assert ensemble.kind == "ensemble" and ensemble.context == 3
    volume = first_volume(phantom_dir)
    image, _, _ = preprocess_volume(volume.image, volume.mask, SIZE)
    got = predict_volume(ensemble.predict, image, batch_size=5, tta=True, context=ensemble.context)
    # Each member on its own K-slice stack with its own left-right flip, then the mean.
    members = [predict_volume(models["a"].predict_on_batch, image, tta=True, context=1),
               predict_volume(models["c3"].predict_on_batch, image, tta=True, context=3)]
    np.testing.assert_allclose(got, (members[0] + members[1]) / 2, atol=1e-6)
    summary = evaluate_model([runs["a"], runs["c3"]], phantom_dir, tmp_path, **QUIET)
    assert summary["options"]["context"] == summary["model"]["context"] == 3
    assert [m["context"] for m in summary["model"]["members"]] == [1, 3]


def test_an_ensemble_of_one_model_is_that_model(runs, models, phantom_dir, tmp_path):
    one = load_model([runs["a"]])
    assert one.kind == "keras" and one.describe() == load_model(runs["a"]).describe()
    as_list = evaluate_model([runs["a"]], phantom_dir, tmp_path / "list", **QUIET)
    as_path = evaluate_model(runs["a"], phantom_dir, tmp_path / "path", **QUIET)
    assert (tmp_path / "list" / "per_patient.csv").read_bytes() == (tmp_path / "path" / "per_patient.csv").read_bytes()
    drop = ("seconds", "created")
    assert {k: v for k, v in as_list.items() if k not in drop} == {k: v for k, v in as_path.items() if k not in drop}
    batch = np.random.default_rng(0).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(average_models([models["a"]]).predict_on_batch(batch),
                                  models["a"].predict_on_batch(batch))


def test_members_of_different_image_sizes_are_an_error_naming_both(runs, phantom_dir, tmp_path, capsys):
    a, small = runs["a"], runs["small"]
    with pytest.raises(EnsembleError, match="same --image-size") as caught:
        load_model([a, small])
    assert str(a) in str(caught.value) and str(small) in str(caught.value)
    with pytest.raises(EnsembleError, match=re.escape(f"{small / 'best.keras'} takes 32x32")):
        export.export_ensemble([a, small], tmp_path / "export")
    assert not (tmp_path / "export").exists()
    from tfseg.cli import evaluate as evaluate_py

    assert evaluate_py.main(["--model", str(a), str(small), "--data", str(phantom_dir),
                             "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(a) in err and str(small) in err
    assert not (tmp_path / "o").exists()


def test_members_validated_on_different_patients_need_explicit_patients(runs, phantom_dir, validation, tmp_path):
    a, other = runs["a"], runs["other_split"]
    with pytest.raises(EnsembleError, match="validated on different patients") as caught:
        evaluate_model([a, other], phantom_dir, tmp_path / "split", **QUIET)
    assert str(a) in str(caught.value) and str(other) in str(caught.value)
    summary = evaluate_model([a, other], phantom_dir, tmp_path / "named", validation[:1], **QUIET)
    assert summary["patients"] == validation[:1]


def test_an_ensemble_needs_an_output_folder(runs, tmp_path):
    with pytest.raises(EnsembleError, match="--out"):
        evaluate_model([runs["a"], runs["b"]], **QUIET)
    with pytest.raises(SystemExit) as caught:
        export_cli.main(["--ensemble", str(runs["a"]), str(runs["b"])])
    assert caught.value.code == 2


def test_evaluate_py_with_two_run_folders_lists_both_members_in_summary_json(runs, phantom_dir, validation,
                                                                             tmp_path):
    from tfseg.cli import evaluate as evaluate_py

    out = tmp_path / "eval"
    assert evaluate_py.main(["--model", str(runs["a"]), str(runs["b"]), "--data", str(phantom_dir),
                             "--out", str(out)]) == 0
    summary = check_outputs(out, validation)  # every file, as for one model
    model = summary["model"]
    assert model["kind"] == "ensemble" and model["image_size"] == SIZE
    assert [m["path"] for m in model["members"]] == [str(runs["a"] / "best.keras"), str(runs["b"] / "best.keras")]
    assert [m["kind"] for m in model["members"]] == ["keras", "keras"]
    assert [m["sha256"] for m in model["members"]] == [sha256_file(runs[n] / "best.keras") for n in ("a", "b")]
    assert summary["split"] == {"source": "run config split", "validation": validation}


# ----------------------------------------------------------------------------
# Export: one SavedModel for the whole ensemble
# ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def exported(runs, tmp_path_factory):
    """{name: (member run folders, SavedModel folder)}: "ab" through the command line, "a_c3" mixes contexts."""
    root = tmp_path_factory.mktemp("ensemble_export")
    cases = {"ab": [runs["a"], runs["b"]], "a_c3": [runs["a"], runs["c3"]]}
    assert export_cli.main(["--ensemble", *map(str, cases["ab"]), "--out", str(root / "ab")]) == 0
    export.export_ensemble(cases["a_c3"], root / "a_c3")
    return {name: (paths, root / name) for name, paths in cases.items()}


def test_the_exported_ensemble_serves_the_mean_probabilities_and_lists_its_members(exported):
    for paths, folder in exported.values():
        ensemble = load_model(paths)
        served = load_model(folder)
        assert served.kind == "saved_model" and served.context == ensemble.context
        batch = np.random.default_rng(0).normal(size=(3, SIZE, SIZE, 3 * ensemble.context)).astype(np.float32)
        np.testing.assert_allclose(np.asarray(served.predict(batch))[..., 0], ensemble.predict(batch), atol=1e-6)
        listed = json.loads((folder / "ensemble.json").read_text())
        assert [m["path"] for m in listed["members"]] == [str(p / "best.keras") for p in paths]


def served_masks_match_ensemble_evaluation(exported, data, tmp_path, patients: int | None = None):
    """Every exported ensemble's segment_volume, in one fresh process, against evaluate_patient's native mask."""
    volumes = [read_patient(f) for f in scan_folder(data)][:patients]
    for i, volume in enumerate(volumes):
        np.save(tmp_path / f"slices{i}.npy", volume.image)
    folders = {name: str(folder) for name, (_, folder) in exported.items()}
    out = run_fresh(f"""
        import sys, numpy as np, tensorflow as tf
        for name, folder in {folders!r}.items():
            segment = tf.saved_model.load(folder).signatures["segment_volume"]
            for i in range({len(volumes)}):
                mask = segment(slices=tf.constant(np.load({str(tmp_path)!r} + f"/slices{{i}}.npy")))["mask"]
                np.save({str(tmp_path)!r} + f"/{{name}}_mask{{i}}.npy", mask.numpy())
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("tfseg", "keras", "skimage", "scipy")))
    """)
    assert "tfseg" not in out and "skimage" not in out
    for name, (paths, _) in exported.items():
        ensemble = load_model(paths)
        predicted = 0
        for i, volume in enumerate(volumes):
            served = np.load(tmp_path / f"{name}_mask{i}.npy")
            assert served.dtype == np.uint8 and served.shape == volume.mask.shape
            expected = evaluate_patient(volume, ensemble.predict, SIZE, EvalOptions(context=ensemble.context))
            differing = int(np.count_nonzero((served > 0) != expected.prediction))
            # As in test_serving: allow a handful of voxels whose mean probability is within rounding of 0.5.
            assert differing <= 5, f"{name}, {volume.patient}: {differing} voxels differ"
            assert volume_dsc(served > 0, expected.prediction) >= 0.99
            predicted += int(expected.prediction.sum())
        assert predicted > 0, f"{name}: the ensemble predicted nothing: the comparison would be vacuous"


def test_segment_volume_of_the_exported_ensemble_in_a_fresh_process_matches_evaluation_on_the_phantom(
        exported, phantom_dir, tmp_path):
    served_masks_match_ensemble_evaluation(exported, phantom_dir, tmp_path, patients=2)


def test_segment_volume_of_the_exported_ensemble_matches_evaluation_on_a_real_patient(exported, real_data_dir,
                                                                                    tmp_path):
    served_masks_match_ensemble_evaluation(exported, real_data_dir, tmp_path, patients=1)


def test_exporting_one_run_still_writes_run_dir_export(models, phantom_dir, validation, tmp_path):
    run = make_run(tmp_path / "run", models["a"], phantom_dir, validation)
    assert export_cli.main([str(run)]) == 0  # python -m tfseg.export RUN_DIR
    assert load_model(run / "export").kind == "saved_model" and not (run / "export" / "ensemble.json").exists()


def test_a_saved_model_cannot_be_an_ensemble_member_of_an_export(exported, runs, tmp_path):
    saved_model = exported["ab"][1]
    with pytest.raises(EnsembleError, match=re.escape(f"{saved_model} is a SavedModel")):
        export.export_ensemble([saved_model, runs["b"]], tmp_path / "nested")

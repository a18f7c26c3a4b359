"""`featstore fit-head`, `evaluate` and `heads ls|show` through Typer's test runner."""

from __future__ import annotations

import json

from conftest import blobs, write_synthetic_set
from typer.testing import CliRunner

from featstore_cli.app import app

runner = CliRunner()
CLASSES = ["ant", "bee", "cow"]


def _store(tmp_path):
    X, y = blobs()
    write_synthetic_set(tmp_path / "s", "bugs@tiny", X, y, CLASSES)
    return str(tmp_path / "s")


def test_fit_head_table_then_ls_show_evaluate(tmp_path):
    store = _store(tmp_path)
    out = runner.invoke(
        app,
        [
            "fit-head",
            "logistic",
            "--features",
            "bugs@tiny",
            "--store",
            store,
            "--C",
            "0.1,1",
            "--no-emissions",
            "-q",
        ],
    )
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "kind",
        "train_accuracy",
        "val_accuracy",
        "test_accuracy",
        "test_macro_f1",
        "test_ece",
        "fit_seconds",
        "energy_kwh",
        "head_id",
    ]
    assert lines[2].startswith("logistic") and lines[3].startswith("saved ")
    head_id = lines[2].split()[-1]
    ls = json.loads(runner.invoke(app, ["heads", "ls", "--store", store, "--json"]).stdout)
    assert [h["head_id"] for h in ls] == [head_id] and ls[0]["kind"] == "logistic"
    show = runner.invoke(app, ["heads", "show", head_id, "--store", store])
    assert show.stdout.startswith(f"# Model card: {head_id}") and "## Limitations" in show.stdout
    ev = runner.invoke(app, ["evaluate", "--head", head_id, "--features", "bugs@tiny", "--store", store])
    assert ev.exit_code == 0 and ev.stdout.startswith(f"{head_id} on bugs@tiny: 90 images")
    evj = json.loads(
        runner.invoke(
            app, ["evaluate", "--head", head_id, "-f", "bugs@tiny", "--store", store, "--json"]
        ).stdout
    )
    assert evj["n_rows"] == 90 and evj["metrics"]["accuracy"] > 0.9


def test_fit_head_json(tmp_path):
    store = _store(tmp_path)
    out = runner.invoke(app, ["fit-head", "knn", "-f", "bugs@tiny", "--store", store, "--json", "--k", "3"])
    r = json.loads(out.stdout)
    assert r["kind"] == "knn" and r["config"]["k"] == 3 and r["emissions"]["country"] == "FRA"


def test_bad_inputs_are_one_line(tmp_path):
    store = _store(tmp_path)
    cases = [
        (
            ["fit-head", "forest", "-f", "bugs@tiny"],
            "Error: unknown head 'forest'; valid heads: svm, logistic, dense, knn, ensemble, all, sweep",
        ),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--C", "0.1,abc"],
            "Error: --C: must be a comma-separated list",
        ),
        (["fit-head", "logistic", "-f", "nope@x"], "Error: no feature set 'nope@x'"),
        (["evaluate", "--head", "nohead", "-f", "bugs@tiny"], "Error: no head 'nohead'"),
        (["heads", "show", "../../etc"], "Error: '../../etc' is not a head id"),
    ]
    for args, message in cases:
        out = runner.invoke(app, [*args, "--store", store])
        assert out.exit_code == 1, (args, out.output)
        assert out.stderr.startswith(message), out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not list((tmp_path / "s" / "heads").glob("*-*")) if (tmp_path / "s" / "heads").exists() else True


def test_bad_option_values_name_their_flag(tmp_path):
    store = _store(tmp_path)
    cases = [
        (["--dropout", "1", "dense"], "Error: --dropout: must be in [0, 1), not 1.0"),
        (["--k", "0", "knn"], "Error: --k: must be a whole number of at least 1, not 0"),
        (["--epochs", "0", "dense"], "Error: --epochs: must be a whole number of at least 1, not 0"),
        (
            ["--hidden", "16,0", "dense"],
            "Error: --hidden: layer sizes must be whole numbers of at least 1, not [16, 0]",
        ),
        (["--scale", "max"], "Error: --scale: must be one of standard, l2, none, not 'max'"),
        (["--kernel", "poly", "svm"], "Error: --kernel: must be one of rbf, linear, not 'poly'"),
        (["--C", "0"], "Error: --C: values must be positive numbers, not [0.0]"),
        (
            ["--k", "3"],
            "Error: --k: is not an option of logistic heads (logistic takes scale, C, class_weight)",
        ),
        (["--test-size", "1.5"], "Error: --test-size: must be a fraction in [0, 1), not 1.5"),
        (["--test-size", "0.6", "--val-size", "0.5"], "Error: --test-size: and val_size must sum below 1"),
        (
            ["--use-augmented"],
            "Error: --use-augmented: bugs@tiny has no augmented views of training images; "
            "extract with --augment flip,rotate,zoom --copies N first",
        ),
    ]
    for args, message in cases:
        kind = args.pop() if args[-1] in ("dense", "knn", "svm") else "logistic"
        out = runner.invoke(
            app, ["fit-head", kind, "-f", "bugs@tiny", *args, "--store", store, "--no-emissions"]
        )
        assert out.exit_code == 1, (args, out.output)
        assert out.stderr.startswith(message) and len(out.stderr.splitlines()) == 1, out.stderr
    svm = runner.invoke(app, ["fit-head", "svm", "-f", "bugs@tiny", "--C", "1,2", "--store", store])
    assert svm.stderr == "Error: --C: svm takes one value; the logistic head searches a grid of C\n"
    assert not (tmp_path / "s" / "heads").exists() or not list((tmp_path / "s" / "heads").glob("[!.]*"))


def test_train_and_val_folders_then_fit_head_all_and_report(tmp_path, tiny_onnx):
    from conftest import make_class_folders

    data = tmp_path / "pets"
    make_class_folders(data / "Training", ("cat", "dog", "eel"), n_per_class=10)
    make_class_folders(data / "Validation", ("cat", "dog", "eel"), n_per_class=4, seed=1)
    store = str(tmp_path / "s")
    ex = runner.invoke(
        app, ["extract", "-b", str(tiny_onnx), "-d", str(data), "--store", store, "--no-emissions", "-q"]
    )
    assert ex.exit_code == 0, ex.output
    note = (
        "no test split: val (12 images) is the held-out test set; "
        "validation (3 images, 10 % of train) carved from train"
    )
    out = runner.invoke(
        app,
        [
            "fit-head",
            "all",
            "-f",
            "pets@tiny",
            "--store",
            store,
            "--no-emissions",
            "--epochs",
            "2",
            "--select",
            "val",
        ],
    )
    assert out.exit_code == 0, out.output
    assert out.stderr.splitlines() == [note]
    assert len(out.stdout.splitlines()) == 6  # heading, rule, four heads
    quiet = runner.invoke(
        app, ["fit-head", "knn", "-f", "pets@tiny", "--store", store, "--no-emissions", "-q"]
    )
    assert quiet.exit_code == 0 and quiet.stderr == ""
    hashed = runner.invoke(
        app,
        [
            "fit-head",
            "logistic",
            "-f",
            "pets@tiny",
            "--store",
            store,
            "--no-emissions",
            "--split",
            "hash",
            "--json",
        ],
    )
    assert hashed.exit_code == 0, hashed.output
    r = json.loads(hashed.stdout)
    assert r["split"]["source"] == "hash" and r["split"]["note"] == "" and hashed.stderr == ""
    head_id = r["head_id"]
    ev = runner.invoke(app, ["evaluate", "--head", head_id, "-f", "pets@tiny", "--store", store])
    assert ev.exit_code == 0, ev.output
    report = runner.invoke(app, ["report", "--store", store])
    assert report.exit_code == 0, report.output
    lines = report.stdout.splitlines()
    assert f"Split: {note} (" in report.stdout  # every head but the hash one
    (ev_line,) = [ln for ln in lines if ln.startswith("| evaluate |")]
    accuracy = json.loads(
        runner.invoke(
            app, ["evaluate", "--head", head_id, "-f", "pets@tiny", "--store", store, "--json"]
        ).stdout
    )["metrics"]["accuracy"]
    assert ev_line.endswith(f"| {head_id} |") and f"| {accuracy:.1%} |" in ev_line
    rows = json.loads(runner.invoke(app, ["report", "--store", store, "--json"]).stdout)
    evaluated = [row for row in rows if row["method"] == "evaluate"]
    assert len(evaluated) == 2 and {row["dataset"] for row in evaluated} == {"pets"}
    assert all(row["test_accuracy"] == accuracy and row["head_id"] == head_id for row in evaluated)
    csv = runner.invoke(app, ["report", "--store", store, "--csv"]).stdout
    assert sum(1 for ln in csv.splitlines() if ln.startswith("pets,evaluate,tiny,logistic,")) == 2


def test_split_errors_are_one_line(tmp_path):
    store = _store(tmp_path)
    X, y = blobs()
    write_synthetic_set(tmp_path / "s", "vt@tiny", X, y, CLASSES, split=(["val"] * 20 + ["test"] * 10) * 3)
    cases = [
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--split", "stored"],
            "Error: --split stored: these images have no stored split (no train/val/test folders or "
            "manifest split column); use --split stratified or --split hash",
        ),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--split", "random"],
            "Error: --split: must be one of stored, stratified, hash, not 'random'",
        ),
        (
            ["fit-head", "logistic", "-f", "vt@tiny"],
            "Error: the stored split has no train part, only val (60 images) and test (30 images); name a "
            "folder train/ (or add a train split to the manifest), or pass --split stratified to split "
            "every image anew",
        ),
    ]
    for args, message in cases:
        out = runner.invoke(app, [*args, "--store", store, "--no-emissions"])
        assert out.exit_code == 1, (args, out.output)
        assert out.stderr == message + "\n"
    ok = runner.invoke(
        app, ["fit-head", "logistic", "-f", "vt@tiny", "--split", "stratified", "--store", store]
    )
    assert ok.exit_code == 0, ok.output


def _grid(tmp_path, grid) -> str:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(grid))
    return str(path)


GRID = {"logistic": {"C": [0.1, 1]}, "knn": {"k": [1, 5]}}


def test_sweep_table_json_csv_and_the_heads_it_saves(tmp_path):
    store = _store(tmp_path)
    grid = _grid(tmp_path, GRID)
    base = ["fit-head", "sweep", "-f", "bugs@tiny", "--grid", grid, "--store", store, "--no-emissions", "-q"]
    base += ["--select", "val"]
    out = runner.invoke(app, [*base, "--name", "bugs", "--ensemble", "2"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == [
        "rank", "kind", "setting", "features", "val_accuracy", "val_macro_f1", "test_accuracy",
        "test_macro_f1", "fit_seconds", "chosen", "head_id",
    ]  # fmt: skip
    # every setting is right on validation: the greedy ensemble keeps one, and no ensemble is saved
    assert len(lines) == 2 + 4 + 1 and lines[2].split()[0] == "1" and "best" in lines[2]
    assert lines[-1].startswith("saved 2 heads (bugs-") and "bugs-ensemble" not in lines[-1]
    ls = json.loads(runner.invoke(app, ["heads", "ls", "--store", store, "--json"]).stdout)
    assert {h["head_id"] for h in ls} == {"bugs-logistic", "bugs-knn"}
    ev = runner.invoke(app, ["evaluate", "--head", "bugs-knn", "-f", "bugs@tiny", "--store", store])
    assert ev.exit_code == 0 and ev.stdout.startswith("bugs-knn on bugs@tiny: 90 images")
    doc = json.loads(runner.invoke(app, [*base, "--json"]).stdout)
    assert doc["n_settings"] == 4 and len(doc["rows"]) == 4 and len(doc["heads"]) == 2
    assert doc["rows"][0]["chosen"] == "best" and doc["path"].endswith(".json")
    csv = runner.invoke(app, [*base, "--csv"]).stdout.splitlines()
    assert (
        csv[0]
        == "rank,kind,setting,features,val_accuracy,val_macro_f1,test_accuracy,test_macro_f1,fit_seconds,chosen,head_id,error"
    )
    assert len(csv) == 5


def test_ensemble_and_few_shot_from_the_command_line(tmp_path):
    store = _store(tmp_path)
    for kind in ("logistic", "knn"):
        runner.invoke(
            app, ["fit-head", kind, "-f", "bugs@tiny", "--store", store, "--no-emissions", "--name", kind]
        )
    out = runner.invoke(
        app,
        [
            "fit-head",
            "ensemble",
            "--heads",
            "logistic,knn",
            "--name",
            "v",
            "--store",
            store,
            "--no-emissions",
        ],
    )
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[2].startswith("ensemble") and out.stdout.splitlines()[-1].startswith(
        "saved "
    )
    shots = [
        "fit-head",
        "logistic",
        "-f",
        "bugs@tiny",
        "--shots",
        "1,2,5",
        "--repeats",
        "2",
        "--store",
        store,
        "-q",
    ]
    out = runner.invoke(app, shots)
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["head", "features", "shots", "mean", "std", "n", "min", "max"]
    assert [line.split()[2] for line in lines[2:5]] == ["1", "2", "5"] and lines[-1].startswith(
        "draws and curves: "
    )
    doc = json.loads(runner.invoke(app, [*shots, "--json"]).stdout)
    assert doc["seeds"] == [0, 1] and doc["mode"] == "logistic" and len(doc["curves"]) == 3
    sweep_shots = runner.invoke(
        app,
        [
            "fit-head",
            "sweep",
            "-f",
            "bugs@tiny",
            "--grid",
            _grid(tmp_path, GRID),
            "--shots",
            "2",
            "--repeats",
            "1",
            "--store",
            store,
            "--csv",
        ],
    )
    assert (
        sweep_shots.exit_code == 0
        and sweep_shots.stdout.splitlines()[0] == "head,features,shots,mean,std,n,min,max"
    )


def test_bad_sweeps_ensembles_and_shots_are_one_line(tmp_path):
    store = _store(tmp_path)
    runner.invoke(
        app, ["fit-head", "knn", "-f", "bugs@tiny", "--store", store, "--no-emissions", "--name", "k"]
    )
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{oops")
    sweep = ["fit-head", "sweep", "-f", "bugs@tiny"]
    cases = [
        ([*sweep, "--grid", str(bad_json)], f"Error: --grid: {bad_json} is not valid JSON: "),
        (
            [*sweep, "--grid", str(tmp_path / "none.json")],
            f"Error: --grid: no grid file {tmp_path / 'none.json'}",
        ),
        ([*sweep, "--grid", _grid(tmp_path, {"forest": {"depth": [2]}})], "Error: --grid: "),
        (
            [*sweep, "--val-size", "0", "--select", "val"],
            "Error: bugs@tiny: the split has no validation part, and a sweep chooses",
        ),
        ([*sweep, "--ensemble", "1"], "Error: --ensemble: an ensemble needs at least 2 picks"),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--grid", str(bad_json)],
            "Error: --grid: is not an option of fit-head logistic",
        ),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--heads", "k"],
            "Error: --heads: is not an option of fit-head logistic",
        ),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--repeats", "3"],
            "Error: --repeats: counts the draws of each --shots value",
        ),
        (
            ["fit-head", "knn", "-f", "bugs@tiny", "--class-weight", "balanced"],
            "Error: --class-weight: is not an option of knn heads (knn takes scale, k)",
        ),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--class-weight", "heavy"],
            "Error: --class-weight: must be one of balanced, not 'heavy'",
        ),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--shots", "50"],
            "Error: --shots 50 is more than the 21 training image(s) of class",
        ),
        (
            ["fit-head", "logistic", "-f", "bugs@tiny", "--shots", "1,x"],
            "Error: --shots: must be a comma-separated list of whole numbers",
        ),
        (
            ["fit-head", "ensemble", "--heads", "k"],
            "Error: --heads: an ensemble needs at least 2 heads, not 1",
        ),
        (["fit-head", "ensemble", "--heads", "k,gone"], "Error: no head 'gone'"),
        (
            ["fit-head", "ensemble", "--heads", "k,k2", "-f", "bugs@tiny"],
            "Error: --features: is not an option of fit-head ensemble",
        ),
        (
            ["fit-head", "ensemble", "--heads", "k,k2", "--shots", "2"],
            "Error: --shots: is not an option of fit-head ensemble",
        ),
        (["fit-head", "sweep"], "Error: --features: give at least one feature set dataset@backbone"),
    ]
    for args, message in cases:
        out = runner.invoke(app, [*args, "--store", store, "--no-emissions"])
        assert out.exit_code == 1, (args, out.output)
        assert out.stderr.startswith(message) and len(out.stderr.splitlines()) == 1, (args, out.stderr)
    assert {h.name for h in (tmp_path / "s" / "heads").iterdir() if not h.name.startswith(".")} == {"k"}

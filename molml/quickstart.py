"""``molml quickstart``: the offline demo job.

Builds a dataset from the 5,000 NCI molecules that ship with RDKit, labelled with Crippen logP
(an RDKit-computed target, so it works on any machine without downloads), trains a small D-MPNN
on a scaffold split from ``configs/quickstart.yaml``, tests the best checkpoint, reloads it with
``molml.load_model`` and screens the whole library with it.
"""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path

import pandas as pd
import rdkit
from rdkit.Chem import Crippen

from molml.chem.parsing import parse_smiles
from molml.errors import CommandParser, InvalidMoleculeError
from molml.options import check_int, creatable_directory

CONFIG = resources.files("molml") / "configs" / "quickstart.yaml"
"""The quickstart config: package data, built from the checkout's top-level ``configs/``."""
NCI_LIBRARY = Path(rdkit.__file__).parent / "Data" / "NCI" / "first_5K.smi"


def write_logp_dataset(library: Path, out_csv: Path) -> tuple[int, int]:
    """Write ``smiles,id,logp`` for every molecule of an RDKit ``.smi`` file.

    Molecules RDKit cannot parse are written with an empty logP and the SMILES as given, so the
    training run reports them. Returns (rows, unparsable rows).
    """
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    rows = bad = 0
    with library.open() as src, out_csv.open("w", newline="") as dst:
        writer = csv.writer(dst)
        writer.writerow(["smiles", "id", "logp"])
        for line in src:
            parts = line.split()
            if not parts:
                continue
            smiles, name = parts[0], parts[1] if len(parts) > 1 else ""
            try:
                logp = f"{Crippen.MolLogP(parse_smiles(smiles)):.4f}"
            except InvalidMoleculeError:
                logp, bad = "", bad + 1
            writer.writerow([smiles, name, logp])
            rows += 1
    return rows, bad


def main(argv: list[str] | None = None) -> None:
    """Train, test, reload and screen the quickstart model; print where everything is."""
    parser = CommandParser(
        prog="molml quickstart",
        description="The offline demo job: label the 5,000 NCI molecules that ship with RDKit "
        "with Crippen logP, train a small D-MPNN on a scaffold split, test its best "
        "checkpoint, reload it with molml.load_model and screen the whole library with it.",
    )
    parser.add_argument(
        "--out",
        default="runs/quickstart",
        help="output directory: the dataset, the run (DIR/version_N) and the library scores; "
        "MLflow logs to mlflow.db beside it",
    )
    parser.add_argument("--max-epochs", type=int, default=None, help="override the config")
    args = parser.parse_args(argv)
    if args.max_epochs is not None:
        check_int(args.max_epochs, "--max-epochs", minimum=1)
    creatable_directory(args.out, f"--out {args.out} cannot be made")

    from molml.predict import load_model
    from molml.training import full_config, make_cli, prepare_mlflow_loggers

    out = Path(args.out)
    data_csv = out / "nci5k_logp.csv"
    rows, bad = write_logp_dataset(NCI_LIBRARY, data_csv)
    print(
        f"dataset: {rows} NCI molecules from {NCI_LIBRARY.name}, Crippen logP target -> {data_csv}"
    )

    cli_args = [f"--data.path={data_csv}"]  # "=": a path may start with "-"
    if args.max_epochs is not None:
        cli_args += [f"--trainer.max_epochs={args.max_epochs}"]
    with resources.as_file(CONFIG) as config:
        settings = full_config([f"--config={config}", *cli_args])
    if settings["data"].get("cache_dir"):  # beside --out, as MLflow is, not in the cwd
        settings["data"]["cache_dir"] = str(out.parent / ".molml_cache")
    for logger in settings["trainer"]["logger"]:  # the run goes under --out, MLflow beside it
        init_args = logger.setdefault("init_args", {})
        if logger["class_path"].endswith("CSVLogger"):
            init_args.update(save_dir=str(out.parent), name=out.name)
        elif logger["class_path"].endswith("MLFlowLogger"):
            init_args.update(
                tracking_uri=f"sqlite:///{out.parent / 'mlflow.db'}",
                artifact_location=str(out.parent / "mlartifacts"),
            )
    cli = make_cli(settings, run=False)
    prepare_mlflow_loggers(cli.trainer)  # as the fit verb does: the run named after its folder
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    best = cli.trainer.checkpoint_callback.best_model_path
    test_metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best)[0]

    model = load_model(best)
    library = pd.read_csv(data_csv, dtype={"id": str})
    scores = model.predict(library["smiles"].tolist())
    scores.insert(1, "id", library["id"])
    scores.insert(2, "crippen_logp", library["logp"])
    scores_path = out / "library_scores.csv"
    scores.to_csv(scores_path, index=False)
    run_dir = Path(cli.trainer.log_dir)
    mlflow_logger = next(lg for lg in cli.trainer.loggers if type(lg).__name__ == "MLFlowLogger")

    n_ok = int((scores["status"] == "ok").sum())
    print("\nmolml quickstart done")
    rmse, r2 = test_metrics["test/rmse"], test_metrics["test/r2"]
    print(f"  test RMSE (logP units): {rmse:.3f}   R2: {r2:.3f}")
    print(f"  best checkpoint: {best}")
    print(f"  metrics:         {run_dir / 'metrics.csv'}")
    print(f"  split report:    {run_dir / 'split_report.json'}")
    print(f"  MLflow run:      {mlflow_logger.run_id} in {mlflow_logger._tracking_uri}")
    print(f"                   (mlflow ui --backend-store-uri {mlflow_logger._tracking_uri})")
    print(f"  library scores:  {scores_path} ({n_ok} scored, {len(scores) - n_ok} with a reason)")
    print(f"  unparsable input molecules: {bad}")
    print("  in Python:       molml.load_model(path).predict(['CCO', 'c1ccccc1O'])")

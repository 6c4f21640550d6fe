"""``molml serve``: the FastAPI app through TestClient, and one real uvicorn process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import INVALID_SMILES, molml_server, nci_smiles
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

import molml
import molml.cli
from molml.predict import Predictor
from molml.serve import ReferenceSet, create_app
from molml.serve.cli import load_predictors, model_name

SMILES = nci_smiles(6)


@pytest.fixture(scope="module")
def predictor(graph_run: dict) -> Predictor:
    return molml.load_model(graph_run["ckpt"])


@pytest.fixture
def client(predictor: Predictor) -> Iterator[TestClient]:
    app = create_app({"logp": predictor}, max_molecules=5, max_smiles_length=100)
    with TestClient(app) as test_client:
        yield test_client


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample (None when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


class CountingPredictor(Predictor):
    """Delegates to a real predictor and records the molecules of every model call."""

    def __init__(self, inner: Predictor, delay: float = 0.0, fail: bool = False) -> None:
        self.inner, self.delay, self.fail = inner, delay, fail
        self.calls: list[int] = []
        self._lock = threading.Lock()

    tasks = property(lambda self: self.inner.tasks)
    task_type = property(lambda self: self.inner.task_type)
    metadata = property(lambda self: self.inner.metadata)

    def prediction_columns(self) -> list[str]:
        return self.inner.prediction_columns()

    def predict_values(self, smiles: list[Any], batch_size: int) -> tuple[np.ndarray, list[str]]:
        with self._lock:
            self.calls.append(len(smiles))
        if self.fail:
            raise RuntimeError("the model broke")
        time.sleep(self.delay)
        return self.inner.predict_values(smiles, batch_size)


def test_results_keep_input_order_echo_ids_and_report_invalid_molecules(
    client: TestClient, predictor: Predictor
) -> None:
    smiles = [SMILES[0], INVALID_SMILES[0], SMILES[1], "CCO junk", SMILES[2]]
    ids = ["a", "b", 7, "d", "e"]
    response = client.post("/predict", json={"smiles": smiles, "ids": ids})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "logp" and body["columns"] == ["logp", "tpsa"]
    assert [r["id"] for r in body["results"]] == ids
    assert [r["smiles"] for r in body["results"]] == smiles
    expected = predictor.predict(smiles)
    for result, (_, row) in zip(body["results"], expected.iterrows(), strict=True):
        assert result["status"] == row["status"]
        if row["status"] == "ok":
            assert result["predictions"]["logp"] == pytest.approx(row["logp"], rel=1e-5)
            assert result["predictions"]["tpsa"] == pytest.approx(row["tpsa"], rel=1e-5)
        else:
            assert result["predictions"] == {"logp": None, "tpsa": None}
    assert "invalid SMILES" in body["results"][1]["status"]
    assert "whitespace" in body["results"][3]["status"]
    assert body["results"][0]["training_similarity"] is None  # no reference set
    default_ids = client.post("/predict", json={"smiles": SMILES[:3]}).json()["results"]
    assert [r["id"] for r in default_ids] == [0, 1, 2]


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"smiles": SMILES[:1] * 6}, 413, "6 molecules in one request; the limit is 5"),
        ({"smiles": ["C" * 101]}, 422, "smiles[0] has 101 characters; the limit is 100"),
        ({"smiles": ["C" * 10_000]}, 422, "smiles[0] has 10000 characters"),
        ({"smiles": ["CCO"] * 100_000}, 413, "request body is larger than"),
        ({"smiles": ["C" * 50] * 100_000}, 413, "request body is larger than"),
        ({"smiles": ["CCO", "CC"], "ids": ["a"]}, 422, "1 ids for 2 SMILES"),
    ],
    ids=["molecules", "length", "10k-characters", "1e5-smiles", "1e5-long-smiles", "ids"],
)
def test_limits_answer_413_or_422_with_the_limit(
    client: TestClient, payload: dict, status: int, message: str
) -> None:
    response = client.post("/predict", json=payload)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert client.post("/predict", json={"smiles": ["CCO"]}).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"smiles": ["CCO"',  # malformed JSON
        b'{"smiles": "CCO"}',  # a string, not a list
        b'{"smiles": ["CCO", 5]}',  # a number among the SMILES
        b'{"smiles": []}',  # empty list
        b'{"smiles": ["CCO"], "smile": ["C"]}',  # unknown field
        b'{"ids": ["a"]}',  # no smiles
        b'["CCO"]',  # not an object
        b'{"smiles": ["C\xff\xfeO"]}',  # not UTF-8
        b"\xff\xfe\x00\x01",  # binary
        b'{"smiles": NaN}',  # not a list, and a value the error cannot echo as JSON
        b'{"smiles": ["CCO"], "ids": [-Infinity]}',
        b'{"smiles": ["CCO"], "steps": Infinity}',
    ],
    ids=[
        "malformed",
        "string",
        "number",
        "empty",
        "extra",
        "missing",
        "array",
        "latin1",
        "bin",
        "nan",
        "infinite-id",
        "infinite-field",
    ],  # fmt: skip
)
def test_bad_requests_are_4xx_with_a_message_and_the_service_keeps_serving(
    client: TestClient, body: bytes
) -> None:
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500
    assert response.json()["detail"]
    after = client.post("/predict", json={"smiles": ["CCO"]})
    assert after.status_code == 200 and after.json()["results"][0]["status"] == "ok"


def test_a_lone_surrogate_makes_one_molecule_invalid_not_the_request(
    client: TestClient,
) -> None:
    """``"\\ud800"`` is valid JSON but no UTF-8 text: that row is invalid, the rest is answered
    (it used to fail every request batched with it)."""
    body = b'{"smiles": ["CCO", "C\\ud800C"], "ids": ["a", "b\\udfffc"]}'
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert first["status"] == "ok" and first["id"] == "a"
    assert "not valid UTF-8" in second["status"] and second["id"] == "b\ufffdc"
    assert second["predictions"] == {column: None for column in first["predictions"]}


def test_metrics_count_requests_molecules_and_invalid_molecules(client: TestClient) -> None:
    assert client.post("/predict", json={"smiles": [SMILES[0], "C1CC", SMILES[1]]}).is_success
    assert client.post("/predict", json={"smiles": ["not_a_smiles", SMILES[2]]}).is_success
    assert client.post("/predict", json={"smiles": []}).status_code == 422
    assert client.get("/health").json()["models"] == ["logp"]
    text = client.get("/metrics").text
    assert metric(text, "molml_molecules_total", model="logp") == 5
    assert metric(text, "molml_invalid_molecules_total", model="logp") == 2
    assert metric(text, "molml_http_requests_total", endpoint="/predict", status="200") == 2
    assert metric(text, "molml_http_requests_total", endpoint="/predict", status="422") == 1
    assert metric(text, "molml_http_requests_total", endpoint="/health", status="200") == 1
    assert metric(text, "molml_http_request_duration_seconds_count", endpoint="/predict") == 3
    assert metric(text, "molml_model_calls_total", model="logp") == 2
    # without a reference set there is no applicability-domain metric, and /models says so
    assert metric(text, "molml_far_from_training_molecules_total", model="logp") is None
    domain = client.get("/models").json()["models"]["logp"]["applicability_domain"]
    assert domain["reference"] is None and "no reference" in domain["note"]


def test_molecules_unlike_the_reference_set_are_counted_far_from_training(
    predictor: Predictor, property_csv: Path
) -> None:
    reference = ReferenceSet.from_file(property_csv, threshold=0.3)
    assert len(reference.fingerprints) == 400 and reference.skipped == 3
    app = create_app({"logp": predictor}, reference=reference)
    unlike = "FC(F)(F)C(F)(F)C(F)(F)C(F)(F)C(F)(F)F"  # perfluoropentane: nothing like NCI's
    with TestClient(app) as client:
        body = client.post("/predict", json={"smiles": [SMILES[0], unlike, "C1CC"]}).json()
        text = client.get("/metrics").text
        info = client.get("/models").json()["models"]["logp"]["applicability_domain"]
    known, far, invalid = body["results"]
    assert known["training_similarity"] == 1.0 and known["far_from_training"] is False
    assert far["training_similarity"] < 0.3 and far["far_from_training"] is True
    assert invalid["training_similarity"] is None and invalid["far_from_training"] is None
    assert metric(text, "molml_far_from_training_molecules_total", model="logp") == 1
    assert metric(text, "molml_far_from_training_share", model="logp") == 0.5
    assert metric(text, "molml_training_similarity_count", model="logp") == 2
    assert info["molecules"] == 400 and info["far_below"] == 0.3
    assert info["reference"] == str(property_csv)


@pytest.mark.parametrize("max_batch_size", [256, 4, 0])
def test_micro_batching_gathers_concurrent_requests_into_fewer_model_calls(
    predictor: Predictor, max_batch_size: int
) -> None:
    counting = CountingPredictor(predictor, delay=0.3)
    app = create_app({"m": counting}, max_batch_size=max_batch_size, max_wait_ms=20)
    requests = [{"smiles": [SMILES[i % 6], SMILES[(i + 1) % 6]], "ids": [i, -i]} for i in range(8)]
    with TestClient(app) as client, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda r: client.post("/predict", json=r), requests))
        text = client.get("/metrics").text
    for request, response in zip(requests, responses, strict=True):
        results = response.json()["results"]
        assert [r["id"] for r in results] == request["ids"]
        assert [r["smiles"] for r in results] == request["smiles"]
        assert all(r["status"] == "ok" for r in results)
    assert sum(counting.calls) == 16
    if max_batch_size == 256:
        assert len(counting.calls) < 8 and max(counting.calls) > 2  # requests shared calls
    elif max_batch_size == 4:  # two requests of two molecules at most per call
        assert max(counting.calls) <= 4 and len(counting.calls) >= 4
    else:  # gathering off: one call per request
        assert counting.calls == [2] * 8
    assert metric(text, "molml_model_calls_total", model="m") == len(counting.calls)


def test_a_failing_model_is_a_500_with_its_reason_and_the_service_keeps_serving(
    predictor: Predictor,
) -> None:
    app = create_app({"good": predictor, "bad": CountingPredictor(predictor, fail=True)})
    with TestClient(app) as client:
        response = client.post("/predict/bad", json={"smiles": ["CCO"]})
        assert response.status_code == 500 and "the model broke" in response.json()["detail"]
        assert client.post("/predict/good", json={"smiles": ["CCO"]}).status_code == 200


def test_several_models_are_served_by_name(predictor: Predictor) -> None:
    ensemble = molml.load_model([predictor.source, predictor.source])
    app = create_app({"single": predictor, "pair": ensemble})
    with TestClient(app) as client:
        response = client.post("/predict", json={"smiles": ["CCO"]})
        assert response.status_code == 400 and "single, pair" in response.json()["detail"]
        missing = client.post("/predict/nope", json={"smiles": ["CCO"]})
        assert missing.status_code == 404 and "no model named 'nope'" in missing.json()["detail"]
        pair = client.post("/predict/pair", json={"smiles": ["CCO"]}).json()
        assert pair["columns"] == ["logp", "tpsa", "logp_std", "tpsa_std"]
        assert pair["results"][0]["predictions"]["logp_std"] == 0.0
        models = client.get("/models").json()
        schema = client.get("/openapi.json").json()["components"]["schemas"]
    assert models["default"] is None
    assert models["models"]["pair"]["kind"] == "ensemble"
    assert models["models"]["single"]["metadata"]["encoder"] == "DMPNN"
    assert {"PredictRequest", "PredictResponse", "MoleculeResult"} <= set(schema)


def test_model_names_from_the_command_line(tmp_path: Path, graph_run: dict) -> None:
    ckpt = str(graph_run["ckpt"])
    assert model_name(f"logp={ckpt}") == ("logp", ckpt)
    assert model_name(ckpt) == ("best", ckpt)
    assert model_name("runs/x/model/baseline.json") == ("model", "runs/x/model/baseline.json")
    assert model_name("runs/cv/esol/ensemble.json") == ("esol", "runs/cv/esol/ensemble.json")
    assert model_name("esol_intervals.json") == ("esol_intervals", "esol_intervals.json")
    with pytest.raises(molml.errors.DataError, match="two models are named 'best'"):
        load_predictors([ckpt, ckpt], ensemble=False)
    assert list(load_predictors([ckpt, ckpt], ensemble=True)) == ["ensemble"]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--model", "missing.ckpt"], 3, "missing.ckpt"),
        (["--model", "CKPT", "--port", "70000"], 2, "--port must be at most 65535"),
        (["--model", "CKPT", "--max-molecules", "0"], 2, "max_molecules must be an integer >= 1"),
        (["--model", "CKPT", "--reference", "nowhere.csv"], 2, "nowhere.csv"),
        (["--model", "CKPT", "--ensemble"], 2, "--ensemble needs at least two --model"),
        (
            ["--model", "CKPT", "--similarity-threshold", "0.3"],
            2,
            "--similarity-threshold applies to --reference, which is not given",
        ),
        (["--model", "CKPT", "--log-level", "loud"], 2, "--log-level: invalid choice: 'loud'"),
        (
            ["--model", "a=CKPT", "--model", "CKPT", "--ensemble"],
            2,
            "--ensemble serves one model named 'ensemble'; --model a=",
        ),
    ],
    ids=[
        "missing-model",
        "port",
        "max-molecules",
        "missing-reference",
        "ensemble-of-one",
        "threshold-without-reference",
        "log-level",
        "named-ensemble-member",
    ],
)
def test_serve_command_errors_are_one_line_with_an_exit_code(
    graph_run: dict, capsys: pytest.CaptureFixture, args: list[str], code: int, message: str
) -> None:
    args = [a.replace("CKPT", str(graph_run["ckpt"])) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        molml.cli.main(["serve", *args])
    assert exit_info.value.code == code
    err = capsys.readouterr().err.strip()
    assert err.startswith("molml serve: error:") and message in err and "\n" not in err


def test_a_port_in_use_is_a_usage_error_not_a_checkpoint_error(
    graph_run: dict, capsys: pytest.CaptureFixture
) -> None:
    """uvicorn exits 3 when it cannot bind, which is molml's code for a bad checkpoint; the
    port is tried before the models load, and the reason is said whatever the log level."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as exit_info:
            molml.cli.main(
                ["serve", "--model", str(graph_run["ckpt"]), "--port", str(port),
                 "--log-level", "critical"]
            )  # fmt: skip
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"molml serve: error: the server cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    with pytest.raises(SystemExit) as exit_info:
        molml.cli.main(["serve", "--model", str(graph_run["ckpt"]), "--host", "molml.invalid"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().startswith("molml serve: error: --host molml.invalid:")


def test_an_address_of_a_disabled_family_is_skipped_where_another_binds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """localhost's ::1 on a machine without IPv6: asyncio serves on 127.0.0.1 alone."""
    import socket

    from molml.errors import DataError
    from molml.serve.cli import check_address

    real = socket.getaddrinfo
    unassigned = ("192.0.2.1", 0)  # TEST-NET-1: no interface has it (EADDRNOTAVAIL)

    def two_addresses(host, port, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        loopback = real("127.0.0.1", port, *args, **kwargs)[0]
        return [loopback[:4] + (unassigned,), loopback]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    check_address("localhost", 0)
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: two_addresses(*a, **k)[:1])
    with pytest.raises(DataError, match="cannot listen on localhost:0: Cannot assign"):
        check_address("localhost", 0)


def test_molml_serve_runs_a_real_server(graph_run: dict, property_csv: Path) -> None:
    args = ["--model", f"logp={graph_run['ckpt']}", "--reference", str(property_csv)]
    with molml_server([*args, "--log-level", "warning"]) as url:
        response = httpx.post(f"{url}/predict", json={"smiles": [SMILES[0], "C1CC"]}, timeout=30)
        assert response.status_code == 200
        first, second = response.json()["results"]
        assert first["status"] == "ok" and first["training_similarity"] == 1.0
        assert "invalid SMILES" in second["status"]
        assert httpx.get(f"{url}/docs", timeout=10).status_code == 200
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        assert metric(metrics, "molml_molecules_total", model="logp") == 2


def test_a_graph_model_and_a_baseline_are_served_side_by_side(
    graph_run: dict, property_csv: Path, tmp_path: Path
) -> None:
    from molml.baselines import BaselineConfig, DataConfig, EstimatorConfig, fit_baseline

    baseline = fit_baseline(
        BaselineConfig(
            data=DataConfig(path=str(property_csv), target_columns=["logp", "tpsa"]),
            estimator=EstimatorConfig(params={"n_estimators": 10, "n_jobs": 1}),
            tracking_uri=None,
        )
    )
    baseline.model.save(tmp_path / "xgb")
    predictors = load_predictors([f"dmpnn={graph_run['ckpt']}", str(tmp_path / "xgb")], False)
    smiles = [SMILES[0], "C1CC"]
    with TestClient(create_app(predictors)) as client:
        models = client.get("/models").json()["models"]
        xgb = client.post("/predict/xgb", json={"smiles": smiles}).json()["results"]
        dmpnn = client.post("/predict/dmpnn", json={"smiles": smiles}).json()["results"]
        explained = client.post("/explain/xgb", json={"smiles": smiles[:1]}).json()["results"]
    assert models["xgb"]["kind"] == "baseline" and models["dmpnn"]["kind"] == "graph"
    # SHAP's share on features that map to no atom is served too: the numbers add up
    (shap,) = molml.explain.explain(molml.load_model(tmp_path / "xgb"), smiles[:1])
    assert explained[0]["unmapped_score"] == pytest.approx(shap.unmapped_score, abs=1e-6)
    assert shap.unmapped_score != 0
    assert sum(explained[0]["atom_scores"]) + explained[0]["unmapped_score"] == pytest.approx(
        shap.atom_scores.sum() + shap.unmapped_score, abs=1e-5
    )
    expected = baseline.model.predict(smiles)
    assert xgb[0]["predictions"]["logp"] == pytest.approx(expected["logp"][0], rel=1e-5)
    assert xgb[1]["status"] != "ok" and dmpnn[1]["status"] != "ok"
    assert dmpnn[0]["status"] == "ok"


def test_an_overloaded_model_answers_503_at_once_and_recovers(predictor: Predictor) -> None:
    slow = CountingPredictor(predictor, delay=1.0)
    app = create_app({"m": slow}, max_pending=3, max_batch_size=0)
    with TestClient(app) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/predict", json={"smiles": ["CCO", "CCN"]})
        time.sleep(0.3)  # the first request is being scored: 2 molecules pending
        started = time.perf_counter()
        refused = client.post("/predict", json={"smiles": ["CCC", "CCCl"]})
        assert refused.status_code == 503 and time.perf_counter() - started < 0.5
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["detail"] == (
            "model 'm' is busy: 2 molecules are waiting for this model and 2 more would go "
            "beyond its limit of 3; retry shortly"
        )
        assert first.result().status_code == 200
        # the limit never refuses a request to an idle model, even one above it
        again = client.post("/predict", json={"smiles": ["CCC", "CCCl", "CCBr", "CCI"]})
        assert again.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{"content-type": "text/plain"}, {"content-type": "application/x-www-form-urlencoded"}, {}],
)
def test_a_body_not_declared_json_is_415_naming_the_header(
    client: TestClient, headers: dict[str, str]
) -> None:
    response = client.post("/predict", content=b'{"smiles": ["CCO"]}', headers=headers)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["detail"]


def test_a_second_explanation_while_one_runs_answers_503_at_once(
    predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Explanations share the model thread with predictions: they do not queue up behind
    each other (which stalled predictions without bound), one runs at a time."""
    from molml.serve import app as serving

    def slow_explain(*args: object, **kwargs: object) -> object:
        time.sleep(1.0)
        return molml.explain.explain(*args, **kwargs)

    monkeypatch.setattr(serving, "explain", slow_explain)
    with TestClient(create_app({"m": predictor})) as client, ThreadPoolExecutor(2) as pool:
        first = pool.submit(client.post, "/explain", json={"smiles": ["CCO"], "steps": 8})
        time.sleep(0.3)
        started = time.perf_counter()
        refused = client.post("/explain", json={"smiles": ["CCN"], "steps": 8})
        assert refused.status_code == 503 and time.perf_counter() - started < 0.5
        assert refused.headers["Retry-After"] == "1"
        assert "explanations run one at a time" in refused.json()["detail"]
        assert first.result().status_code == 200
        assert client.post("/explain", json={"smiles": ["CCN"], "steps": 8}).status_code == 200


def test_explain_returns_atom_scores_in_input_order_with_statuses(
    client: TestClient, predictor: Predictor
) -> None:
    smiles = ["c1ccccc1O", INVALID_SMILES[1], "CCO"]
    response = client.post(
        "/explain", json={"smiles": smiles, "ids": ["phenol", "bad", "ethanol"], "steps": 16}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["method"] == "integrated_gradients" and body["task"] == predictor.point_columns()[0]
    assert body["explained"] == "target units"
    results = body["results"]
    assert [r["id"] for r in results] == ["phenol", "bad", "ethanol"]
    phenol, bad, ethanol = results
    assert len(phenol["atom_scores"]) == 7 and len(ethanol["atom_scores"]) == 3
    assert len(phenol["bond_scores"]) == 7 and phenol["completeness_gap"] is not None
    assert bad["status"] != "ok" and bad["atom_scores"] is None and bad["mapped_smiles"] is None
    assert ethanol["mapped_smiles"] == "[CH3:1][CH2:2][OH:3]"
    # the same scores as molml.explain on the same model
    expected, expected_phenol = molml.explain.explain(predictor, ["CCO", "c1ccccc1O"], steps=16)
    np.testing.assert_allclose(ethanol["atom_scores"], expected.atom_scores, atol=1e-5)
    np.testing.assert_allclose(phenol["atom_totals"], expected_phenol.atom_totals, atol=1e-5)
    assert ethanol["prediction"] == pytest.approx(expected.prediction, abs=1e-5)


def test_explain_refuses_what_it_cannot_do(client: TestClient, predictor: Predictor) -> None:
    shap = client.post("/explain", json={"smiles": ["CCO"], "method": "shap"})
    assert shap.status_code == 422 and "does not apply to graph models" in shap.text
    task = client.post("/explain", json={"smiles": ["CCO"], "task": "nope"})
    assert task.status_code == 422 and "unknown task 'nope'" in task.text
    probability = client.post("/explain", json={"smiles": ["CCO"], "explained": "probability"})
    assert probability.status_code == 422 and "applies to classifiers" in probability.text
    steps = client.post("/explain", json={"smiles": ["CCO"], "method": "occlusion", "steps": 8})
    assert steps.status_code == 422 and "method 'occlusion' takes none" in steps.text
    too_many = client.post("/explain", json={"smiles": ["C"] * 101})
    assert too_many.status_code == 413 and "--max-explain-molecules" in too_many.text
    assert client.post("/explain/other", json={"smiles": ["C"]}).status_code == 404
    assert client.get("/health").status_code == 200  # and the service keeps serving


def test_explain_on_an_onnx_model_says_it_has_no_attributions(
    graph_run: dict, tmp_path: Path
) -> None:
    from molml.export import export_model

    onnx_file = export_model(graph_run["ckpt"], tmp_path / "model.onnx", sample=None).path
    app = create_app({"onnx": molml.load_model(onnx_file)})
    with TestClient(app) as onnx_client:
        refused = onnx_client.post("/explain", json={"smiles": ["CCO"]})
        assert refused.status_code == 422 and "onnx models cannot be explained" in refused.text
        assert onnx_client.post("/predict", json={"smiles": ["CCO"]}).status_code == 200


def test_routes_without_a_model_name_need_a_single_model(predictor: Predictor) -> None:
    app = create_app({"a": predictor, "b": predictor})
    with TestClient(app) as two:
        for route in ("/predict", "/explain"):
            response = two.post(route, json={"smiles": ["CCO"]})
            assert response.status_code == 400 and f"POST {route}/{{model}}" in response.text
        assert two.post("/predict/b", json={"smiles": ["CCO"]}).status_code == 200

"""Bucketed row counts for reduced-precision inference (:mod:`molml.models.precision`)."""

from __future__ import annotations

import pytest
import torch
from conftest import nci_smiles

from molml.data.graphs import GraphStore, featurize_block
from molml.models import DMPNN, GATv2, MoleculeModel
from molml.models.precision import add_row_buckets, bucket_size, bucketed_rows


def test_bucket_sizes_bound_padding_and_the_number_of_shapes() -> None:
    sizes = {n: bucket_size(n) for n in range(1, 40_000)}
    assert all(n <= b < n + max(64, n / 16) for n, b in sizes.items())
    assert all(b % 64 == 0 for b in sizes.values())
    # a few shapes per octave, not one per row count
    assert len({b for n, b in sizes.items() if 4096 <= n < 8192}) <= 17
    assert len(set(sizes.values())) < 16 * 10


def model_and_store(encoder: torch.nn.Module, n: int = 300) -> tuple[MoleculeModel, GraphStore]:
    model = MoleculeModel(encoder, tasks=["y"], task_type="regression").eval()
    arrays, _, _, _ = featurize_block(model.featurizer, nci_smiles(n))
    return model, GraphStore.from_arrays([arrays])


@pytest.mark.parametrize("encoder", [DMPNN(hidden_dim=64), GATv2(hidden_dim=64)], ids=str)
def test_bucketed_rows_leave_bf16_outputs_unchanged(encoder: torch.nn.Module) -> None:
    model, store = model_and_store(encoder)
    atoms: list[int] = []
    probe = model.encoder.register_forward_hook(lambda m, a, out: atoms.append(out.shape[0]))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for start, stop in ((0, 37), (37, 150), (150, 300)):
            plain = model(store.batch(start, stop))
            with bucketed_rows(model):
                padded = model(store.batch(start, stop))
            assert padded.shape == plain.shape == (stop - start, 1)
            assert torch.allclose(padded.float(), plain.float(), atol=1e-2, rtol=1e-2)
    probe.remove()
    # the encoder still returns one row per real atom
    expected = [
        int(store.atom_ptr[b] - store.atom_ptr[a]) for a, b in ((0, 37), (37, 150), (150, 300))
    ]
    assert atoms == [n for n in expected for _ in range(2)]
    assert not any(m._forward_pre_hooks for m in model.modules())  # the hooks are gone


def test_row_buckets_are_added_once_and_stay_out_of_fp32_and_export() -> None:
    model, store = model_and_store(DMPNN(hidden_dim=64), n=40)
    handles = add_row_buckets(model)
    assert add_row_buckets(model) == []  # a second call adds nothing (no double padding)
    seen: list[int] = []
    probe = model.encoder.W_h.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[0]))
    batch = store.batch(0, 37)
    with torch.no_grad():
        model(batch)  # fp32: left-over hooks change nothing
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(batch)
    probe.remove()
    edges = int(store.edge_ptr[37] - store.edge_ptr[0])
    assert seen[:2] == [edges, edges] and seen[2] == bucket_size(edges) > edges
    for handle in handles:
        handle.remove()


def test_bf16_inference_sees_a_bounded_set_of_linear_shapes() -> None:
    model, store = model_and_store(DMPNN(hidden_dim=64), n=400)
    shapes: set[tuple[int, ...]] = set()

    def record(module: torch.nn.Module, args: tuple) -> None:
        if torch.is_autocast_enabled("cpu"):  # the head runs in fp32, outside autocast
            shapes.add(tuple(args[0].shape))

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), bucketed_rows(model):
        probes = [
            m.register_forward_pre_hook(record)
            for m in model.modules()
            if isinstance(m, torch.nn.Linear)
        ]
        for start in range(0, 380, 3):  # 127 batches of different sizes
            model(store.batch(start, start + 20))
    for probe in probes:
        probe.remove()
    # the recording hooks run after the padding hooks: every bf16 row count is a bucket
    assert shapes and all(shape[0] == bucket_size(shape[0]) for shape in shapes)
    assert len({shape[0] for shape in shapes}) <= 24


def test_bucketed_rows_leave_bf16_gradients_unchanged() -> None:
    model, store = model_and_store(DMPNN(hidden_dim=64), n=50)
    model.train()
    batch = store.batch(0, 50)

    def gradients() -> list[torch.Tensor]:
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(batch).float().square().sum()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = gradients()
    with bucketed_rows(model):
        padded = gradients()
    assert len(plain) == len(padded) > 4
    for a, b in zip(plain, padded, strict=True):
        assert torch.allclose(a, b, atol=1e-2, rtol=2e-2)


def test_reduced_precision_training_uses_bucketed_shapes_and_removes_them(
    tmp_path, property_csv
) -> None:
    import lightning as L

    from molml.data.datamodule import MoleculeDataModule

    dm = MoleculeDataModule(
        path=str(property_csv), target_columns=["logp"], batch_size=16, featurize_jobs=1
    )
    model = MoleculeModel(DMPNN(hidden_dim=32), tasks=["logp"], task_type="regression")
    rows: set[int] = set()

    class Probe(L.Callback):  # registered after setup, so it runs after the padding hook
        def on_train_start(self, trainer: L.Trainer, module: MoleculeModel) -> None:
            self.handle = module.encoder.W_h.register_forward_pre_hook(
                lambda m, args: rows.add(args[0].shape[0])
            )

        def on_train_end(self, trainer: L.Trainer, module: MoleculeModel) -> None:
            self.handle.remove()

    trainer = L.Trainer(
        max_epochs=1,
        precision="bf16-mixed",
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Probe()],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    assert len(rows) > 1 and all(n == bucket_size(n) for n in rows)
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())

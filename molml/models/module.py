"""The molml LightningModule: embed -> encoder -> readout -> feed-forward head.

Regression targets are standardized inside the module with the training split's mean and
standard deviation, kept as buffers, so they travel in the checkpoint and predictions come out in
the original units. Missing labels (NaN) are masked out of the loss and the metrics.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch
from torchmetrics import MeanMetric

from molml._version import __version__
from molml.chem.featurizer import MolGraphFeaturizer
from molml.chem.fingerprints import fingerprint_from_config
from molml.errors import DataError, TrainingError
from molml.models.encoders import (
    DMPNN,
    Encoder,
    class_path,
    guard_sync_batch_norms,
    make_activation,
    unrecorded_arguments,
)
from molml.models.files import CHECKPOINT_FORMAT, WEIGHTS_DIGEST, weights_digest
from molml.models.precision import REDUCED_PRECISIONS, add_row_buckets, check_precision
from molml.models.pretrained import TRANSFERRED as ENCODER_PARTS
from molml.models.pretrained import apply_pretrained, read_pretrained
from molml.models.readout import Readout, make_readout, readout_dim
from molml.options import check_int, plain_data, same_config
from molml.tasks import TASK_TYPES, MolecularMetrics, to_prediction

log = logging.getLogger(__name__)
FUSED_ADAM_DEVICES = ("cpu", "cuda")
FEATURE_CLIP = 10.0  # molecule-level features, in training standard deviations
MIN_VARIANCE = 1e-6  # of a mean-variance head, in standardized units


VALIDATION_MASK_SEED = 12345  # the same atoms are hidden in every validation epoch


class MoleculeModel(L.LightningModule):
    """A graph model for molecular property prediction.

    Args:
        encoder: message-passing encoder (default: ``DMPNN()``).
        readout: ``sum``, ``mean``, ``max``, ``norm`` (sum / 100), ``attention``, ``set2set``
            or ``attentivefp`` (see :func:`~molml.models.readout.make_readout`).
        ffn_hidden_dim, ffn_num_layers, dropout, activation: the feed-forward head.
        lr, weight_decay, warmup_epochs: Adam with linear warm-up from ``lr/10`` then cosine
            decay to ``lr/10``.
        tasks, task_type, num_classes: what is predicted: the data module's (``molml fit``
            links them; a Trainer refuses a model built for other data).
        task_classes: multiclass: each task's own class count (the data module's
            ``task_classes``, linked by ``molml fit``); a task with fewer classes than
            ``num_classes`` gets its extra logits set to the lowest value, so their
            probabilities are exactly 0, and it is scored on its own classes. ``None``: every
            task has ``num_classes``.
        featurizer: the featurizer config (``MolGraphFeaturizer.to_config()``); the data module's
            ``featurizer_config``; it is stored in the checkpoint.
        molecule_features: config of molecule-level features (e.g. RDKit 2D descriptors)
            concatenated to the molecule embedding before the head, standardized with the
            training split's statistics (kept as buffers); the data module's
            ``molecule_features_config``.
        pos_weight: binary classification only: weight of the positive class in the loss, per
            task: ``auto`` (negatives / positives among the training labels, set when fitting),
            a list with one weight per task, or ``None`` (unweighted).
        pretrained: start from a pretrained encoder: a shipped name (``zinc-dmpnn``), a molml
            checkpoint or a chemprop-format checkpoint (see :mod:`molml.models.pretrained`). Its
            atom/bond embeddings, encoder and readout are copied in; the head starts afresh.
        freeze_encoder_epochs: keep the embeddings, encoder and readout fixed for this many
            epochs (learning rate 0; only the head learns), then train everything.
        encoder_lr_ratio: learning rate of the embeddings, encoder and readout relative to
            ``lr`` (e.g. 0.1 to fine-tune a pretrained encoder gently).
        mean_variance: regression only: the head also predicts a variance per task and the
            model is trained with the Gaussian negative log-likelihood (a mean-variance
            estimator); predictions then come with ``<task>_std`` columns (original units).
        masked_atom_weight: a self-supervised objective for pretraining (0: off): in each
            training step ``masked_atom_rate`` of the atoms are hidden (their features set to
            zero) and an atom head predicts their elements from the encoder's atom states; the
            cross-entropy, times this weight, joins the loss of the tasks, which the model then
            predicts from the partly hidden molecules. Logged as ``train/masked_atom_loss``
            and, on validation (fixed hidden atoms, the tasks scored on whole molecules),
            ``val/masked_atom_accuracy``. The atom head is not transferred by ``pretrained``.
        masked_atom_rate: the share of atoms hidden (at least one per batch).
        pretrained_l2_weight: with ``pretrained``, add this weight times the squared distance
            of the embeddings, encoder and readout from their pretrained values to the loss
            (L2-SP, Li et al., ICML 2018: the fine-tuned encoder is pulled back towards the
            pretrained one instead of towards zero); 0 turns it off. The pretrained values are
            kept as a buffer, so a resumed run keeps its anchor. Logged as
            ``train/pretrained_distance`` (the root of the squared distance).
    """

    def __init__(
        self,
        encoder: Encoder | None = None,
        readout: Readout = "mean",
        ffn_hidden_dim: int = 300,
        ffn_num_layers: int = 2,
        dropout: float = 0.0,
        activation: str = "relu",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        warmup_epochs: int = 2,
        tasks: Sequence[str] = ("target",),
        task_type: str = "regression",
        num_classes: int = 2,
        task_classes: list[int] | None = None,
        featurizer: dict[str, Any] | None = None,
        molecule_features: dict[str, Any] | None = None,
        pos_weight: str | list[float] | None = None,
        pretrained: str | None = None,
        freeze_encoder_epochs: int = 0,
        encoder_lr_ratio: float = 1.0,
        mean_variance: bool = False,
        masked_atom_weight: float = 0.0,
        masked_atom_rate: float = 0.15,
        pretrained_l2_weight: float = 0.0,
    ) -> None:
        super().__init__()
        if not (isinstance(lr, (int, float)) and 0 <= lr < math.inf):  # NaN fails too
            raise DataError(f"model.lr must be a number >= 0, got {lr!r}")
        if not (isinstance(weight_decay, (int, float)) and 0 <= weight_decay < math.inf):
            raise DataError(f"model.weight_decay must be >= 0, got {weight_decay!r}")
        if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
            raise DataError(f"model.dropout must be in [0, 1), got {dropout!r}")
        check_int(warmup_epochs, "model.warmup_epochs", minimum=0)
        if not (isinstance(masked_atom_weight, (int, float)) and masked_atom_weight >= 0):
            raise DataError(f"model.masked_atom_weight must be >= 0, got {masked_atom_weight!r}")
        if not (isinstance(masked_atom_rate, (int, float)) and 0 < masked_atom_rate <= 1):
            raise DataError(f"model.masked_atom_rate must be in (0, 1], got {masked_atom_rate!r}")
        if not (isinstance(pretrained_l2_weight, (int, float)) and pretrained_l2_weight >= 0):
            raise DataError(
                f"model.pretrained_l2_weight must be >= 0, got {pretrained_l2_weight!r}"
            )
        check_int(freeze_encoder_epochs, "model.freeze_encoder_epochs", minimum=0)
        if not (isinstance(encoder_lr_ratio, (int, float)) and encoder_lr_ratio > 0):
            raise DataError(f"model.encoder_lr_ratio must be positive, got {encoder_lr_ratio!r}")
        if task_type not in TASK_TYPES:
            raise DataError(f"unknown task_type {task_type!r}; choose from {TASK_TYPES}")
        _check_pos_weight(pos_weight, task_type, len(tasks))
        if mean_variance and task_type != "regression":
            raise DataError(f"model.mean_variance is for regression, not {task_type}")
        if task_type != "multiclass":
            task_classes = None
        _check_task_classes(task_classes, len(tasks), num_classes)
        self.save_hyperparameters(ignore=["encoder"])
        # numpy numbers and paths from Python callers as plain data, as checkpoints hold them
        self.hparams.update(plain_data(dict(self.hparams)))
        self._row_buckets: list[torch.utils.hooks.RemovableHandle] = []
        self.encoder = encoder if encoder is not None else DMPNN()
        self.featurizer = MolGraphFeaturizer.from_config(featurizer or {})
        self.tasks = list(tasks)
        self.task_type = task_type
        self.num_classes = num_classes if task_type == "multiclass" else 1
        hidden = self.encoder.hidden_dim
        self.atom_embedding = nn.Linear(self.featurizer.atom_dim, hidden)
        self.bond_embedding = nn.Linear(self.featurizer.bond_dim, hidden)
        self.readout = make_readout(readout, self.encoder.out_dim)
        self.molecule_features = (
            fingerprint_from_config(molecule_features) if molecule_features else None
        )
        n_features = self.molecule_features.dim if self.molecule_features else 0
        self.head = _feed_forward(
            readout_dim(readout, self.encoder.out_dim) + n_features,
            ffn_hidden_dim,
            len(self.tasks) * self.num_classes * (2 if mean_variance else 1),
            ffn_num_layers,
            dropout,
            activation,
        )
        self.register_buffer("target_mean", torch.zeros(len(self.tasks)))
        self.register_buffer("target_std", torch.ones(len(self.tasks)))
        if n_features:  # only then, so checkpoints of models without them keep loading
            self.register_buffer("feature_mean", torch.zeros(n_features))
            self.register_buffer("feature_std", torch.ones(n_features))
        if masked_atom_weight > 0:  # only then, so checkpoints without it keep loading
            self.atom_head = nn.Linear(self.encoder.out_dim, self.featurizer.element_classes)
            self.masked_atom_accuracy = MeanMetric()
        if pos_weight is not None:  # only then, so checkpoints without it keep loading
            weights = torch.ones(len(self.tasks)) if pos_weight == "auto" else pos_weight
            self.register_buffer("pos_weight", torch.as_tensor(weights, dtype=torch.float32))
        if task_classes and min(task_classes) < self.num_classes:
            # derived from the hyperparameters, so not stored with the weights
            classes = torch.arange(self.num_classes)
            mask = classes[None, :] < torch.as_tensor(task_classes)[:, None]
            self.register_buffer("class_mask", mask, persistent=False)
        self.metrics = nn.ModuleDict(
            {
                stage: MolecularMetrics(task_type, self.tasks, task_classes)
                for stage in ("val", "test")
            }
        )
        # mean loss over labelled entries, summed over all ranks (exact under DDP)
        self.eval_losses = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self.test_outputs: tuple[Tensor, Tensor, Tensor] | None = None
        if pretrained_l2_weight > 0:  # only then, so checkpoints without it keep loading
            # filled from the pretrained weights below, or from a checkpoint's state
            self.register_buffer("pretrained_anchor", torch.zeros_like(self._transferred()))
            self.register_buffer("pretrained_anchor_set", torch.tensor(False))
        if pretrained is not None:
            apply_pretrained(self, read_pretrained(pretrained))
            if pretrained_l2_weight > 0:
                self.pretrained_anchor.copy_(self._transferred().detach())
                self.pretrained_anchor_set.fill_(True)

    def _encoder_parameters(self) -> list[nn.Parameter]:
        """The parameters a pretrained encoder supplies: embeddings, encoder, readout."""
        return [p for name, p in self.named_parameters() if name.startswith(ENCODER_PARTS)]

    def _transferred(self) -> Tensor:
        """The encoder parameters (:meth:`_encoder_parameters`) as one vector."""
        return torch.cat([p.flatten() for p in self._encoder_parameters()])

    # ------------------------------------------------------------------ forward
    def embed_batch(self, batch: Batch) -> Tensor:
        """Molecule embeddings (the readout output) for a PyG batch."""
        return self.embed_tensors(
            batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs
        )

    def embed_tensors(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_molecules: int,
        max_atoms: int | None = None,
    ) -> Tensor:
        """Molecule embeddings from the featurized tensors of ``num_molecules`` molecules
        (``batch[i]``: the molecule of atom ``i``). ``num_molecules`` may be a symbolic size,
        so exported graphs keep the number of molecules dynamic; so may ``max_atoms``, the
        atoms of the largest molecule, which encoders that pad molecules need in an exported
        graph (otherwise they read it from ``batch``)."""
        atoms = self.atom_states(x, edge_index, edge_attr, batch, num_molecules, max_atoms)
        return self.readout(atoms, batch, dim_size=num_molecules)

    def atom_states(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_molecules: int,
        max_atoms: int | None = None,
    ) -> Tensor:
        """The encoder's output per atom ``[n_atoms, encoder.out_dim]`` (before the readout;
        arguments as in :meth:`embed_tensors`)."""
        padded = {}
        if max_atoms is not None and self.encoder.pads_molecules:
            padded["padded_size"] = (num_molecules, max_atoms)
        return self.encoder(
            self.atom_embedding(x), edge_index, self.bond_embedding(edge_attr), batch, **padded
        )

    def forward(self, batch: Batch) -> Tensor:
        """Raw outputs: standardized values (regression) or logits (classification); a
        mean-variance model appends one raw variance output per task (see :meth:`variance`)."""
        features = batch.features if self.molecule_features is not None else None
        return self.forward_tensors(
            batch.x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs, features
        )

    def forward_tensors(
        self,
        x: Tensor,
        edge_index: Tensor,
        edge_attr: Tensor,
        batch: Tensor,
        num_molecules: int,
        features: Tensor | None = None,
        max_atoms: int | None = None,
    ) -> Tensor:
        """:meth:`forward` on the featurized tensors (see :meth:`embed_tensors`); ``features``
        are the raw molecule-level features ``[num_molecules, d]`` if the model uses them."""
        embedding = self.embed_tensors(x, edge_index, edge_attr, batch, num_molecules, max_atoms)
        return self._head_outputs(embedding, features)

    def _head_outputs(self, embedding: Tensor, features: Tensor | None) -> Tensor:
        """The head on molecule embeddings (and the raw molecule-level features). Under
        autocast the head runs in fp32: in bf16 its outputs keep 8 significant bits, so a
        screen's scores would tie by the hundreds; the head costs little next to the encoder."""
        device = embedding.device.type
        reduced = torch.is_autocast_enabled(device)
        if reduced:
            embedding = embedding.float()
        if self.molecule_features is not None:
            features = (features - self.feature_mean) / self.feature_std
            # missing descriptors sit at the training mean; extreme ones are clipped
            features = torch.nan_to_num(features, nan=0.0).clamp(-FEATURE_CLIP, FEATURE_CLIP)
            embedding = torch.cat([embedding, features.to(embedding.dtype)], dim=1)
        with torch.autocast(device, enabled=False) if reduced else nullcontext():
            out = self.head(embedding)
        if self.task_type == "multiclass":
            out = out.view(-1, len(self.tasks), self.num_classes)
            if hasattr(self, "class_mask"):  # classes a task does not have: probability 0
                out = out.masked_fill(~self.class_mask, torch.finfo(out.dtype).min)
        return out

    def to_prediction(self, out: Tensor) -> Tensor:
        """Raw outputs -> original units / probabilities, in :meth:`prediction_columns`'
        order (a mean-variance model: the means, then the standard deviations)."""
        if not self.hparams.mean_variance:
            return to_prediction(out, self.task_type, self.target_mean, self.target_std)
        mean, raw = out.chunk(2, dim=1)
        std = self.variance(raw).sqrt() * self.target_std
        mean = to_prediction(mean, "regression", self.target_mean, self.target_std)
        return torch.cat([mean, std], dim=1)

    @staticmethod
    def variance(raw: Tensor) -> Tensor:
        """A mean-variance head's raw variance outputs -> variances (standardized units)."""
        return F.softplus(raw) + MIN_VARIANCE

    def point_predictions(self, out: Tensor) -> Tensor:
        """Raw outputs -> the predictions that metrics score (no standard deviations)."""
        predictions = self.to_prediction(out)
        return predictions[:, : len(self.tasks)] if self.hparams.mean_variance else predictions

    @property
    def embedding_dim(self) -> int:
        """Width of :meth:`embed_batch`'s molecule embeddings."""
        return readout_dim(self.hparams.readout, self.encoder.out_dim)

    def prediction_columns(self) -> list[str]:
        """Names of the prediction columns: the tasks (then ``<task>_std`` for a mean-variance
        model), or ``<task>_class<k>`` for multiclass."""
        if self.hparams.mean_variance:
            return [*self.tasks, *(f"{t}_std" for t in self.tasks)]
        if self.task_type != "multiclass":
            return list(self.tasks)
        return [f"{t}_class{c}" for t in self.tasks for c in range(self.num_classes)]

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        guard_sync_batch_norms(self)

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy if self._trainer is not None else None
        layer_sync = stage == "fit" and getattr(strategy, "_layer_sync", None)
        if layer_sync and strategy.root_device.type == "cpu":
            raise DataError(
                "trainer.sync_batchnorm: PyTorch synchronises batch norm statistics over GPUs "
                "only; leave it false on CPUs"
            )
        if self._trainer is not None:
            check_precision(self.trainer.precision)
        if self._trainer is not None and str(self.trainer.precision) in REDUCED_PRECISIONS:
            # a bounded set of matrix shapes for bf16/fp16 kernels (molml.models.precision)
            self._row_buckets = self._row_buckets or add_row_buckets(self)
        if stage == "fit" and (unrecorded := unrecorded_arguments(self.encoder)):
            # checked when training starts, not when a checkpoint is rebuilt: its weights load
            raise DataError(
                f"{type(self.encoder).__name__} takes {unrecorded} but does not record them in "
                "its config: its checkpoints would rebuild it with their defaults; pass every "
                "constructor argument to Encoder.__init__ (super().__init__(name=value, ...))"
            )
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None:
            self._check_data(datamodule)
        if stage != "fit" or datamodule is None:
            return
        if self.task_type == "regression":
            mean, std = datamodule.target_statistics()
            self.target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.target_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        if self.hparams.pos_weight == "auto":
            self.pos_weight.copy_(torch.as_tensor(datamodule.positive_weights()))
        if self.molecule_features is not None:
            mean, std = datamodule.feature_statistics()
            self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.feature_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def _check_data(self, datamodule: L.LightningDataModule) -> None:
        """The model's tasks, featurizer and molecule features must be the data module's
        (``molml fit`` links them; a model built in Python without them would train on
        misread inputs, or under a default task name)."""
        given = {  # what this data module says (another kind may say less)
            name: getattr(datamodule, name)
            for name in ("tasks", "task_type", "featurizer_config", "molecule_features_config")
            if hasattr(datamodule, name)
        }
        if "featurizer_config" not in given:  # not a molecule-graph data module
            return
        own = {
            "tasks": self.tasks,
            "task_type": self.task_type,
            "featurizer_config": self.featurizer.to_config(),
            "molecule_features_config": (
                self.molecule_features.to_config() if self.molecule_features else None
            ),
        }
        differing = [
            f"{name.removesuffix('_config')}: model {own[name]!r}, data {value!r}"
            for name, value in given.items()
            if not same_config(own[name], list(value) if name == "tasks" else value)
        ]
        data_classes = getattr(datamodule, "num_classes", None)
        multiclass = self.task_type == "multiclass" == given.get("task_type")
        if multiclass and data_classes is not None and data_classes > self.num_classes:
            # fewer classes in the data (a subset to test on) are fine, more are not
            differing.append(f"num_classes: model {self.num_classes}, data {data_classes}")
        if differing:
            raise DataError(
                f"the model was built for other data than the data module gives "
                f"({'; '.join(differing)}): build it with MoleculeModel(..., tasks=dm.tasks, "
                "task_type=dm.task_type, num_classes=dm.num_classes, "
                "featurizer=dm.featurizer_config, molecule_features=dm.molecule_features_config)"
                " (molml fit links these itself)"
            )

    def teardown(self, stage: str) -> None:
        for handle in self._row_buckets:
            handle.remove()
        self._row_buckets = []

    def on_train_start(self) -> None:
        if self.hparams.pretrained_l2_weight > 0 and not self.pretrained_anchor_set:
            raise DataError(
                "model.pretrained_l2_weight pulls the encoder towards pretrained weights; "
                "set model.pretrained as well"
            )
        fine_tuning = {
            "freeze_encoder_epochs": self.hparams.freeze_encoder_epochs != 0,
            "encoder_lr_ratio": self.hparams.encoder_lr_ratio != 1,
        }
        given = [name for name, set_ in fine_tuning.items() if set_]
        if given and self.hparams.pretrained is None and self.trainer.is_global_zero:
            log.warning(
                "model.%s sets how a pretrained encoder is fine-tuned, but model.pretrained "
                "is not set: the encoder starts from random weights (a frozen random encoder "
                "is a baseline at most)",
                given[0],
            )
        self.on_train_epoch_start()  # a run resumed inside a frozen epoch

    def on_train_epoch_start(self) -> None:
        # while frozen, batch-norm statistics in the encoder must not move either
        frozen = self.current_epoch < self.hparams.freeze_encoder_epochs
        for name, module in self.named_children():
            if f"{name}." in ENCODER_PARTS:
                module.train(not frozen)

    def loss(self, out: Tensor, batch: Batch) -> Tensor:
        """Mean loss over the labelled (task, molecule) pairs of the batch."""
        mask = batch.y_mask
        # unlabelled entries may hold any value (NaN, inf); zero them so they cannot leak
        # NaN into the loss or its gradient through ``per_label * 0``
        y = torch.where(mask, batch.y, torch.zeros_like(batch.y))
        if self.task_type == "regression":
            target = (y - self.target_mean) / self.target_std
            if self.hparams.mean_variance:
                mean, raw = out.chunk(2, dim=1)
                per_label = F.gaussian_nll_loss(mean, target, self.variance(raw), reduction="none")
            else:
                per_label = F.mse_loss(out, target, reduction="none")
        elif self.task_type == "classification":
            per_label = F.binary_cross_entropy_with_logits(
                out, y, pos_weight=getattr(self, "pos_weight", None), reduction="none"
            )
        else:
            per_label = F.cross_entropy(
                out.reshape(-1, self.num_classes), y.long().reshape(-1), reduction="none"
            ).view_as(y)
        mask = mask.float()
        return (per_label * mask).sum() / mask.sum().clamp_min(1.0)

    def hide_atoms(self, batch: Batch, generator: torch.Generator | None = None) -> Tensor:
        """A boolean mask of ``masked_atom_rate`` of the batch's atoms (at least one), drawn
        with ``generator`` (a CPU generator) or the global random state."""
        draws = torch.rand(batch.num_nodes, generator=generator).to(batch.x.device)
        hidden = draws < self.hparams.masked_atom_rate
        hidden[draws.argmin()] = True
        return hidden

    def masked_forward(self, batch: Batch, hidden: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """The batch with the ``hidden`` atoms' features set to zero: the raw task outputs,
        the element logits of the hidden atoms and their true elements."""
        elements = batch.x[hidden, : self.featurizer.element_classes].argmax(dim=1)
        x = batch.x.masked_fill(hidden[:, None], 0.0)
        atoms = self.atom_states(
            x, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs
        )
        embedding = self.readout(atoms, batch.batch, dim_size=batch.num_graphs)
        features = batch.features if self.molecule_features is not None else None
        return self._head_outputs(embedding, features), self.atom_head(atoms[hidden]), elements

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        if self.hparams.masked_atom_weight > 0:
            out, logits, elements = self.masked_forward(batch, self.hide_atoms(batch))
            masked_loss = F.cross_entropy(logits.float(), elements)
            self.log(
                "train/masked_atom_loss",
                masked_loss,
                batch_size=batch.num_graphs,
                on_epoch=True,
                sync_dist=True,
            )
            loss = self.loss(out, batch) + self.hparams.masked_atom_weight * masked_loss
        else:
            loss = self.loss(self(batch), batch)
        if self.hparams.pretrained_l2_weight > 0:
            squared = (self._transferred() - self.pretrained_anchor).square().sum()
            self.log(
                "train/pretrained_distance",
                squared.detach().sqrt(),
                batch_size=batch.num_graphs,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
            )
            loss = loss + self.hparams.pretrained_l2_weight * squared
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the training loss became {loss.item()} at epoch {self.current_epoch}, batch "
                f"{batch_idx}; lower model.lr or check the targets' range"
            )
        self.log(
            "train/loss",
            loss,
            batch_size=batch.num_graphs,
            prog_bar=True,
            on_epoch=True,
            sync_dist=True,
        )
        return loss

    def _evaluate(self, batch: Batch, stage: str) -> None:
        out = self(batch)
        n_labels = batch.y_mask.sum()
        if n_labels > 0:  # a batch without labels carries no weight in the mean loss
            self.eval_losses[stage].update(self.loss(out, batch), weight=n_labels)
        self.metrics[stage].update(self.point_predictions(out), batch.y, batch.y_mask)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")
        if self.hparams.masked_atom_weight > 0:
            generator = torch.Generator().manual_seed(VALIDATION_MASK_SEED + batch_idx)
            _, logits, elements = self.masked_forward(batch, self.hide_atoms(batch, generator))
            correct = (logits.argmax(dim=1) == elements).float()
            self.masked_atom_accuracy.update(correct.mean(), weight=correct.numel())

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _log_metrics(self, stage: str) -> None:
        metric = self.metrics[stage]
        self.log(f"{stage}/loss", self.eval_losses[stage].compute(), sync_dist=True)
        self.eval_losses[stage].reset()
        values = metric.compute()
        for key, value in values.items():  # averages in the progress bar, per-task in the logs
            self.log(f"{stage}/{key}", value, prog_bar="/" not in key, sync_dist=True)
        if stage == "test":  # all ranks' outputs, kept for plots (molml.callbacks.EvaluationPlots)
            self.test_outputs = metric.computed_on
        metric.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        if self.hparams.masked_atom_weight > 0:
            accuracy = self.masked_atom_accuracy.compute()
            self.log("val/masked_atom_accuracy", accuracy, sync_dist=True)
            self.masked_atom_accuracy.reset()

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        return {"row": batch.row, "prediction": self.to_prediction(self(batch))}

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        body = self._encoder_parameters()
        head = [p for name, p in self.named_parameters() if not name.startswith(ENCODER_PARTS)]
        optimizer = torch.optim.Adam(
            [
                {"params": body, "lr": hp.lr * hp.encoder_lr_ratio},
                {"params": head, "lr": hp.lr},
            ],
            weight_decay=hp.weight_decay,
            # one fused kernel per step instead of several ops per parameter (5x less optimizer
            # time on a CPU); other devices keep the default implementation
            fused=all(p.device.type in FUSED_ADAM_DEVICES for p in self.parameters()) or None,
        )
        stepping = self.trainer.estimated_stepping_batches
        if not math.isfinite(stepping):
            raise DataError(
                "the learning-rate schedule needs a finite number of steps: set "
                "trainer.max_epochs (or trainer.max_steps), not -1"
            )
        total = max(1, int(stepping))
        epochs = max(1, self.trainer.max_epochs or 1)
        batches = self.trainer.num_training_batches  # known once the stepping batches are
        per_epoch = (
            math.ceil(batches / self.trainer.accumulate_grad_batches)
            if math.isfinite(batches)
            else total / epochs
        )
        warmup = min(total, int(hp.warmup_epochs * per_epoch))
        frozen = int(hp.freeze_encoder_epochs * per_epoch)

        def factor(step: int) -> float:
            if step < warmup:
                return 0.1 + 0.9 * step / max(1, warmup)
            progress = (step - warmup) / max(1, total - warmup)
            return 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress)))

        def body_factor(step: int) -> float:  # Adam with learning rate 0 leaves weights as is
            return 0.0 if step < frozen else factor(step)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, [body_factor, factor])
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    # ------------------------------------------------------------------ checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["molml"] = self.spec()
        checkpoint["molml"][WEIGHTS_DIGEST] = weights_digest(checkpoint["state_dict"])
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        describe = getattr(datamodule, "describe", None)
        if describe is not None:
            checkpoint["molml"]["training_data"] = describe()

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this model from plain data (no pickled code)."""
        own = set(inspect.signature(MoleculeModel.__init__).parameters) - {"self", "encoder"}
        # the pretrained weights are inside this model's state: loading it must not need them
        skip = ("tasks", "featurizer", "pretrained")
        hparams = {k: v for k, v in self.hparams.items() if k in own and k not in skip}
        spec = {
            "format": CHECKPOINT_FORMAT,
            "molml_version": __version__,
            "encoder": {
                "class_path": class_path(type(self.encoder)),
                "init_args": dict(self.encoder.config),
            },
            "hparams": hparams,
            "tasks": self.tasks,
            "task_type": self.task_type,
            "featurizer": self.featurizer.to_config(),
        }
        if self.hparams.pretrained is not None:
            spec["pretrained_from"] = self.hparams.pretrained
        return spec


def _check_pos_weight(pos_weight: object, task_type: str, n_tasks: int) -> None:
    if pos_weight is None:
        return
    if task_type != "classification":
        raise DataError(f"model.pos_weight is for binary classification, not {task_type}")
    if pos_weight == "auto":
        return
    if (
        not isinstance(pos_weight, (list, tuple))
        or len(pos_weight) != n_tasks
        or not all(isinstance(w, (int, float)) and w > 0 for w in pos_weight)
    ):
        raise DataError(
            f"model.pos_weight must be auto, null or {n_tasks} positive number(s) (one per "
            f"task), got {pos_weight!r}"
        )


def _check_task_classes(task_classes: object, n_tasks: int, num_classes: int) -> None:
    if task_classes is None:
        return
    if (
        not isinstance(task_classes, (list, tuple))
        or len(task_classes) != n_tasks
        or not all(isinstance(k, int) and 1 <= k <= num_classes for k in task_classes)
    ):
        raise DataError(
            f"model.task_classes must be {n_tasks} class count(s) (one per task), each from 1 "
            f"to num_classes ({num_classes}), got {task_classes!r}"
        )


def _feed_forward(
    in_dim: int, hidden: int, out_dim: int, num_layers: int, dropout: float, activation: str
) -> nn.Sequential:
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Dropout(dropout), nn.Linear(dim, hidden), make_activation(activation)]
        dim = hidden
    layers += [nn.Dropout(dropout), nn.Linear(dim, out_dim)]
    return nn.Sequential(*layers)

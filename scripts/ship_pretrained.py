"""Write a pretraining checkpoint as a shipped pretrained encoder: the model spec, weights and
training-data record only (no optimizer state), into ``molml/models/weights/``.

Usage:
  molml pretrain --config configs/pretrain_dmpnn.yaml
  python scripts/ship_pretrained.py runs/pretrain_dmpnn/checkpoints/best.ckpt zinc_dmpnn.ckpt

The file name must be the one ``molml.models.pretrained.SHIPPED`` maps the encoder's name to.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from molml.models.checkpoint import load_checkpoint, read_checkpoint
from molml.models.files import WEIGHTS_DIGEST, weights_digest
from molml.models.pretrained import SHIPPED, WEIGHTS_DIR


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="a molml pretrain checkpoint")
    parser.add_argument("file", choices=sorted(SHIPPED.values()), help="file in models/weights")
    args = parser.parse_args(argv)
    checkpoint = read_checkpoint(args.checkpoint)
    spec = {**checkpoint["molml"], WEIGHTS_DIGEST: weights_digest(checkpoint["state_dict"])}
    slim = {
        "molml": spec,
        "state_dict": checkpoint["state_dict"],
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
    }
    target = WEIGHTS_DIR / args.file
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, target)
    load_checkpoint(target)  # the shipped file must load as it is
    size = target.stat().st_size / 2**20
    print(f"{target}: {size:.1f} MiB, epoch {slim['epoch']}, step {slim['global_step']}")


if __name__ == "__main__":
    main()

"""Saving and loading checkpoints: atomic writes, safe reads, models rebuilt from metadata.

A checkpoint is a dict {"format", "meta", "model", ...}; meta holds what rebuilds the model
without the training script's settings: dataset, model, num_classes, in_channels, image_size,
phase, epoch and the full settings. Files are read with torch.load(weights_only=True): a file
whose pickle would run code is refused and the code does not run.
"""
import os
import pickle

import torch

from .errors import UserError, write_failure
from models import MODEL_NAMES, build_model

FORMAT = "pc-loss-checkpoint/1"


def atomic_write(path, write):
    """Call write(f) on a temporary binary file beside `path`, flush it to disk, then rename it over
    `path`: a crash at any moment leaves the previous file intact and no temporary file behind.
    A full disk, a read-only place or a lost permission is a RunError naming `path` and why."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
        raise write_failure(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def make_dirs(path):
    """os.makedirs(path, exist_ok=True); a failure is a RunError naming the folder and why."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise write_failure(path, err) from None


def append_line(path, line):
    """Append one line to a text file (a job log); a failure is a RunError naming it."""
    try:
        with open(path, "a") as f:
            f.write(line + "\n")
    except OSError as err:
        raise write_failure(path, err) from None


def save_checkpoint(path, model, meta, **extra):
    """Write {"format", "meta", "model": weights, **extra} to `path` atomically."""
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {"format": FORMAT, "meta": meta, "model": model.state_dict(), **extra}
    atomic_write(path, lambda f: torch.save(state, f))


def read_weights_file(path, map_location="cpu"):
    """torch.load(weights_only=True) of any file; any problem is a one-line UserError naming it."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: no such checkpoint file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else ""
        raise UserError(f"{path}: refused to load, its pickle would build objects other than "
                        f"tensors and plain data (unsafe or foreign file; {first[:100]})") from None
    except Exception as err:  # a cut zip, a damaged pickle, a text file ...
        raise UserError(f"{path}: truncated or not a PyTorch checkpoint "
                        f"({type(err).__name__})") from None


def is_project_checkpoint(state):
    return isinstance(state, dict) and state.get("format") == FORMAT


def load_checkpoint(path, map_location="cpu"):
    """Read a checkpoint of this project; any problem is a one-line UserError naming the file."""
    state = read_weights_file(path, map_location)
    if not is_project_checkpoint(state):
        raise UserError(f"{path}: not a checkpoint of this project (no '{FORMAT}' format tag)")
    meta = state.get("meta", {})
    if meta.get("model") not in MODEL_NAMES or "model" not in state:
        raise UserError(f"{path}: checkpoint metadata names no known model")
    return state


def model_from_checkpoint(state, path="checkpoint"):
    """Rebuild the model a checkpoint was made for and load its weights."""
    meta = state["meta"]
    model = build_model(meta["model"], meta["in_channels"], meta["image_size"], meta["num_classes"])
    load_weights(model, state["model"], path, meta)
    return model


def load_weights(model, weights, path, meta):
    """load_state_dict with a one-line error when the weights were made for another model.
    A `module.` prefix on every key (weights saved from DataParallel/DDP) is dropped."""
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k[len("module."):]: v for k, v in weights.items()}
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise UserError(f"{path}: its weights do not fit this model (made for {meta.get('model')} "
                        f"on {meta.get('dataset')}, {meta.get('num_classes')} classes)") from None

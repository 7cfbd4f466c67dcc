"""Where the scripts run: the device a DEVICE setting names, and the process group under torchrun."""
import os

import torch
import torch.distributed as dist

from .errors import UserError


def resolve_device(name):
    """DEVICE setting -> a torch device string: auto picks CUDA when present; asking for CUDA
    without one is a UserError."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device={name} but no CUDA device is available")
    return name


def start_processes(device_name):
    """(rank, world size, device). Under torchrun (RANK and WORLD_SIZE set) this process joins the
    process group, NCCL on CUDA with one device per local rank, gloo on the CPU; a plain run is
    rank 0 of 1 and joins nothing (torch.distributed.is_initialized() tells which)."""
    device = resolve_device(device_name)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, device
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), device

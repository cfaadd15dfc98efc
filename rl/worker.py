"""``python -m rl.worker --job JOB_DIR``: one rank of a data-parallel LoRA training.

Run under a launcher that starts one process per rank and describes the group in the
environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``)::

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m rl.worker --job DIR
    accelerate launch --multi_gpu --num_processes 2 -m rl.worker --job DIR

(``accelerate launch --cpu`` starts a single process unless MPI is set up; ``--multi_gpu``
runs torchrun underneath and works on CPU too.) Without a launcher it trains in one process.

Each rank reads the job (see :mod:`rl.job`), loads the base model itself, joins the process
group (gloo on CPU, nccl on CUDA) and calls ``train_lora``, which shares each step among the
ranks. Rank 0 alone writes the adapter, ``result.json`` and the progress lines; a failing
rank writes ``error-<rank>.json`` and exits 1. Workers never touch the orchestrator's
ledger: everything they need is in the job directory.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "run_job"]


def run_job(job_dir: Path) -> None:
    """Train the job in ``job_dir`` as this process's rank; raise on failure."""
    import torch

    from rl.distributed import init_from_env
    from rl.job import append_step, read_job, write_result, write_total
    from rl.train import train_lora

    job, samples = read_job(job_dir)
    if job.threads:
        torch.set_num_threads(job.threads)
    device = job.device
    if torch.device(device).type == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    world = init_from_env(device)
    # With a sharded base only rank 0 reads the weights; the others get theirs broadcast.
    skeleton = job.shard_base and world is not None and not world.is_main
    model, tokenizer = _load_base(job.base_model, job.dtype, on_meta=skeleton)
    main_rank = world is None or world.is_main
    result = train_lora(
        model,
        tokenizer,
        samples,
        job.algorithm,
        config=job.config,
        lora=job.lora,
        seed=job.seed,
        init_adapter=job.init_adapter,
        out_dir=job.out_dir,
        device=device,
        on_step=(lambda step: append_step(job_dir, step)) if main_rank else None,
        on_start=(lambda total: write_total(job_dir, total)) if main_rank else None,
        world=world,
        shard_base=job.shard_base,
    )
    if main_rank:
        write_result(job_dir, result)


def _load_base(directory: Path, dtype: str, *, on_meta: bool = False) -> tuple[Any, Any]:
    """The base causal LM and its tokenizer from a local directory (no network).

    ``on_meta``: the model's structure only, no weights read (they come from rank 0).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from rl.errors import RLError

    if not (directory / "config.json").is_file():
        raise RLError(f"{directory} is not a model directory (no config.json)")
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise RLError(f"unknown dtype {dtype!r}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        if on_meta:
            config = AutoConfig.from_pretrained(directory, local_files_only=True)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(
                directory, local_files_only=True, dtype=torch_dtype
            )
    # transformers and safetensors raise unrelated types for a broken directory.
    except Exception as error:
        raise RLError(f"cannot load base model {directory}: {error}".splitlines()[0]) from error
    model.eval()
    return model, tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rl.worker", description=__doc__.split("\n")[0])
    parser.add_argument("--job", required=True, type=Path, help="the job directory (rl.job)")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    try:
        run_job(args.job)
    except Exception as error:
        from rl.job import write_error

        traceback.print_exc()
        write_error(args.job, rank, error)
        # No group teardown: the other ranks may be waiting in a collective; exiting
        # non-zero makes the launcher stop them.
        return 1
    import torch.distributed

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank leaves while another still needs it
        torch.distributed.destroy_process_group()
        # With a sharded base, interpreter shutdown sometimes aborts in C++ ("terminate
        # called without an active exception": a collective thread still joinable) after
        # all the work is written. Everything is on disk and flushed: skip the shutdown.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())

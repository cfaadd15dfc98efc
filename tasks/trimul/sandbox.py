"""Run a candidate ``custom_kernel`` in a separate, resource-limited Python process.

Why a process: the candidate is model-written code. It may raise, loop forever, allocate
without bound, print megabytes or call ``os._exit``; none of that may reach the caller.
The parent half of this module is standard library only (so ``tasks`` stays importable
without torch); the child half runs when this file is executed as a script, in a fresh
``python -I`` interpreter, and is the only code here that imports torch.

Parent (:func:`evaluate`): takes code already extracted (:func:`extract_code`), rejects code
that does not parse or never binds ``custom_kernel`` without starting an interpreter, then starts
the child with ``sys.executable -I`` in a scratch directory, a whitelisted environment (no
API keys, tokens or proxies), stdin closed, its own session (so a timeout kills every
process the candidate started) and ``setrlimit`` limits: CPU seconds, address space (not on
a CUDA machine: the driver maps far more virtual memory than it uses), file size, no core
files; and a wall-clock timeout.

Child (:func:`_child_main`): builds seeded inputs and weights, checks the candidate against
the reference on :attr:`Limits.checks` independent inputs, then times both.

Correctness: ``max_error = max |out - ref| / (rms(ref) + |ref|)`` over every element of
every check input; correct iff ``max_error <= TOLERANCE`` (2e-2: loose enough for bf16/tf32
matmuls and a different summation order, tight enough that a missing gate or mask, or a
transposed contraction, fails by far: their max_error is of order 1). Shape must match exactly; any
floating dtype is accepted and compared in float32; NaN or inf fails.

Timing: torch threads fixed to 1 (reset before every candidate call); the check calls serve
as warm-up, then the median over :attr:`Limits.repeats` calls, each on its own freshly
generated input, so that caching results by input identity buys nothing. Three passes:
the reference alone (before the candidate's code is even executed), then both interleaved
call by call (so they share the machine's load), then the candidate alone; each side keeps
the smaller of its two medians. A candidate that slows the reference down (say by
monkeypatching torch) gains nothing, and a burst of load from other processes is forgiven
on both sides alike, which keeps the reference-against-itself speedup near 1. This guards against
accidents and naive tricks, not a determined adversary with full access to its own process.
"""

from __future__ import annotations

import ast
import contextlib
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["ENTRY", "TOLERANCE", "Limits", "Outcome", "evaluate", "extract_code", "precheck"]

#: The function the candidate must define at module level.
ENTRY = "custom_kernel"
#: Largest accepted ``max |out - ref| / (rms(ref) + |ref|)``.
TOLERANCE = 2e-2

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_LANGS = {"", "python", "py", "python3"}
# Variables a child may inherit: locale, and what torch needs to find a GPU. Nothing else
# (no *_API_KEY, tokens, proxies, PYTHONPATH, HOME with credentials).
_PASS_ENV = ("LANG", "LC_ALL", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "NVIDIA_VISIBLE_DEVICES")
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_OUTPUT_TAIL = 400
# How torch words an allocation refused by RLIMIT_AS (CPU) or by the device (CUDA).
_OOM_TEXTS = ("can't allocate memory", "not enough memory", "out of memory")


@dataclass(frozen=True)
class Limits:
    """How much one evaluation may take, and how it is measured."""

    timeout_s: float = 30.0  # wall clock for the whole child, torch import included
    cpu_s: int = 30  # RLIMIT_CPU; SIGXCPU past it
    memory_bytes: int | None = 4 << 30  # RLIMIT_AS; None: no limit
    file_bytes: int = 16 << 20  # RLIMIT_FSIZE: stdout/stderr logs and the result file
    checks: int = 3  # independent random inputs the output is checked on
    repeats: int = 5  # timed calls per implementation (median)


@dataclass(frozen=True)
class Outcome:
    """What one evaluation found; ``reason`` is ``"ok"`` exactly when ``correct``."""

    correct: bool
    reason: str
    max_error: float | None = None
    speedup: float | None = None
    candidate_ms: float | None = None
    reference_ms: float | None = None
    device: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def extract_code(text: Any) -> str | None:
    """The Python source in an answer: a fenced block (the one naming ``custom_kernel`` if
    several), an unterminated fence's remainder (a reply cut by max_tokens), or the raw text.
    ``None`` when there is nothing but whitespace."""
    if not isinstance(text, str):
        return None
    blocks = [body for lang, body in _FENCE.findall(text) if lang.lower() in _CODE_LANGS]
    code = next((b for b in blocks if ENTRY in b), blocks[0]) if blocks else text
    return code if code.strip() else None


def precheck(code: str) -> str | None:
    """Why ``code`` cannot possibly work, decided without starting torch; ``None`` if it may."""
    try:
        tree = ast.parse(code, filename="candidate.py")
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes in the source
        return f"syntax error: {_one_line(exc)}"
    if not _binds(tree, ENTRY):
        return f"no {ENTRY} defined"
    return None


def evaluate(
    code: str | None,
    shape: dict[str, Any],
    seed: int,
    reference_source: str,
    limits: Limits | None = None,
) -> Outcome:
    """Check and time ``code`` against the reference on ``shape``; never raises on bad code."""
    limits = limits or Limits()
    if code is None:
        return Outcome(False, "no code")
    problem = precheck(code)
    if problem:
        return Outcome(False, problem)
    job = {
        "candidate": code,
        "reference": reference_source,
        "shape": shape,
        "seed": seed,
        "checks": limits.checks,
        "repeats": limits.repeats,
        "tolerance": TOLERANCE,
    }
    with tempfile.TemporaryDirectory(prefix="trimul-") as scratch:
        return _run_child(Path(scratch), job, limits)


def _run_child(scratch: Path, job: dict[str, Any], limits: Limits) -> Outcome:
    (scratch / "job.json").write_text(json.dumps(job))
    env = {key: os.environ[key] for key in _PASS_ENV if key in os.environ}
    env.update({key: "1" for key in _THREAD_ENV})
    env.update({"PATH": "/usr/bin:/bin", "HOME": str(scratch), "TMPDIR": str(scratch)})
    memory = limits.memory_bytes if not Path("/dev/nvidiactl").exists() else None
    with open(scratch / "stdout.txt", "wb") as out, open(scratch / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-I", str(Path(__file__).resolve()), "job.json"],
            cwd=scratch,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=_limiter(limits.cpu_s, memory, limits.file_bytes),
        )
        try:
            returncode = proc.wait(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:
            _kill_group(proc)  # also reaps whatever the candidate left running
    if returncode is None:
        return Outcome(False, f"timeout: no result within {limits.timeout_s:g} s")
    try:
        result = json.loads((scratch / "result.json").read_text())
        return Outcome(**{k: result.get(k) for k in Outcome.__dataclass_fields__})
    except (OSError, ValueError, TypeError):
        return Outcome(False, _crash_reason(returncode, scratch, limits))


def _limiter(cpu_s: int, memory: int | None, file_bytes: int):
    # Runs in the forked child before exec: only setrlimit calls, nothing that allocates
    # locks. Soft and hard limits are equal so the candidate cannot raise them again.
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if memory is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return apply


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _crash_reason(returncode: int, scratch: Path, limits: Limits) -> str:
    if returncode == -signal.SIGXCPU:
        return f"timeout: CPU limit of {limits.cpu_s} s"
    if returncode == -signal.SIGKILL:
        return "crashed: killed by SIGKILL (CPU hard limit or the kernel's OOM killer)"
    if returncode == -signal.SIGXFSZ:
        return "crashed: output file size limit exceeded"
    if returncode < 0:
        return f"crashed: killed by {signal.Signals(-returncode).name}"
    tail = _tail(scratch / "stderr.txt")
    if "MemoryError" in tail or any(s in tail for s in _OOM_TEXTS):
        return "out of memory"
    return f"crashed: exit code {returncode} without a result" + (f" ({tail})" if tail else "")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-_OUTPUT_TAIL:] if lines else ""


def _binds(tree: ast.AST, name: str) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if node.name == name:
                return True
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            if node.id == name:
                return True
        elif isinstance(node, ast.alias) and (node.asname or node.name) == name:
            return True
    return False


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text[:_OUTPUT_TAIL]


# --------------------------------------------------------------------------- child side
# Everything below runs only inside the sandboxed interpreter.


def _child_main(job_path: str) -> None:
    job = json.loads(Path(job_path).read_text())
    Path(job_path).unlink()
    try:
        result = _child_evaluate(job)
    except BaseException as exc:  # the harness's own failure: still a result, never a hang
        result = {"correct": False, "reason": f"evaluator error: {_one_line(exc)}"}
    Path("result.json").write_text(json.dumps(result, allow_nan=False))


def _child_evaluate(job: dict[str, Any]) -> dict[str, Any]:
    import statistics
    import time

    import torch

    clock = time.perf_counter  # bound before the candidate runs, which may patch time
    torch.set_num_threads(1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    reference_ns: dict[str, Any] = {"__name__": "reference"}
    exec(compile(job["reference"], "reference.py", "exec"), reference_ns)
    reference, weight_shapes = reference_ns["reference_kernel"], reference_ns["WEIGHT_SHAPES"]
    shape, seed = job["shape"], int(job["seed"])

    def inputs(index: int):
        return _make_inputs(torch, shape, weight_shapes, seed * 1000 + index, device)

    def time_once(fn, index: int) -> float:
        data = inputs(index)
        torch.set_num_threads(1)
        sync()
        start = clock()
        fn(data)
        sync()
        return (clock() - start) * 1e3

    def timed(*fns, data_seeds) -> list[float]:  # fns interleaved call by call
        times = [[time_once(fn, index) for fn in fns] for index in data_seeds]
        return [statistics.median(column) for column in zip(*times, strict=True)]

    # The check calls double as warm-up for both implementations.
    checks, repeats = int(job["checks"]), int(job["repeats"])
    check_seeds, time_seeds = range(checks), range(checks, checks + repeats)
    with torch.no_grad():
        expected = [reference(inputs(i)) for i in check_seeds]
        (reference_pre,) = timed(reference, data_seeds=time_seeds)

    base = {"device": device.type}
    namespace: dict[str, Any] = {"__name__": "candidate"}
    try:
        exec(compile(job["candidate"], "candidate.py", "exec"), namespace)
    except BaseException as exc:
        return {**base, "correct": False, "reason": _failure("raised at import", exc)}
    kernel = namespace.get(ENTRY)
    if not callable(kernel):
        return {**base, "correct": False, "reason": f"no callable {ENTRY} defined"}

    worst = 0.0
    for index, want in zip(check_seeds, expected, strict=True):
        try:
            with torch.no_grad():
                torch.set_num_threads(1)
                got = kernel(inputs(index))
        except BaseException as exc:
            return {**base, "correct": False, "reason": _failure("raised", exc)}
        problem = _output_problem(torch, got, want)
        if problem:
            return {**base, "correct": False, "reason": problem}
        error = ((got.float() - want).abs() / (want.pow(2).mean().sqrt() + want.abs())).max()
        worst = max(worst, float(error))
    if not worst <= job["tolerance"]:
        return {**base, "correct": False, "reason": "incorrect", "max_error": _finite(worst)}

    try:
        with torch.no_grad():
            candidate_mid, reference_mid = timed(kernel, reference, data_seeds=time_seeds)
            (candidate_post,) = timed(kernel, data_seeds=time_seeds)
        reference_ms = min(reference_pre, reference_mid)
        candidate_ms = min(candidate_mid, candidate_post)
    except BaseException as exc:
        return {**base, "correct": False, "reason": _failure("raised", exc), "max_error": worst}
    return {
        **base,
        "correct": True,
        "reason": "ok",
        "max_error": worst,
        "candidate_ms": candidate_ms,
        "reference_ms": reference_ms,
        "speedup": reference_ms / max(candidate_ms, 1e-6),
    }


def _make_inputs(torch, shape, weight_shapes, seed: int, device):
    """``(z, mask, weights)`` for one seed: the same tensors in every process."""
    gen = torch.Generator().manual_seed(seed)
    B, N, C, H = shape["batch"], shape["seq_len"], shape["dim"], shape["hidden"]
    if shape["distribution"] == "cauchy":  # heavy tails: outliers up to ~6e5
        u = torch.rand(B, N, N, C, generator=gen).clamp_(1e-6, 1 - 1e-6)
        z = 2.0 * torch.tan(math.pi * (u - 0.5))
    else:
        z = torch.randn(B, N, N, C, generator=gen)
    mask = None
    if shape["masked"]:  # padding-style: pair (i, j) valid iff residues i and j are
        residues = (torch.rand(B, N, generator=gen) < 0.85).float()  # [B, N]
        mask = residues[:, :, None] * residues[:, None, :]  # [B, N, N]
    sizes = {"C": C, "H": H}
    weights = {}
    for name, dims in weight_shapes.items():
        dims = [sizes[d] for d in dims]
        if len(dims) == 2:  # Linear [out, in], variance 1/in
            value = torch.randn(*dims, generator=gen) / math.sqrt(dims[1])
        elif name.endswith(".weight"):  # LayerNorm scale near 1
            value = 1.0 + 0.1 * torch.randn(*dims, generator=gen)
        else:  # LayerNorm shift near 0
            value = 0.1 * torch.randn(*dims, generator=gen)
        weights[name] = value.to(device)
    return z.to(device), None if mask is None else mask.to(device), weights


def _output_problem(torch, got, want) -> str | None:
    if not isinstance(got, torch.Tensor):
        return f"wrong output: {type(got).__name__}, not a tensor"
    if tuple(got.shape) != tuple(want.shape):
        return f"wrong shape: {list(got.shape)}, expected {list(want.shape)}"
    if not got.is_floating_point():
        return f"wrong dtype: {got.dtype}"
    if got.device != want.device:
        return f"wrong device: {got.device}"
    if not bool(torch.isfinite(got).all()):
        return "non-finite output"
    return None


def _failure(what: str, exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, MemoryError) or any(s in text for s in _OOM_TEXTS):
        return f"out of memory: {_one_line(exc)}"
    return f"{what}: {_one_line(exc)}"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


if __name__ == "__main__":
    _child_main(sys.argv[1])

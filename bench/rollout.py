"""Rollout throughput: generated tokens/s through the harness and gateway vs raw ``generate``.

Run: ``.venv/bin/python bench/rollout.py`` (SmolLM2, the embedded default; ``--model tiny``
for a quick check). Every path completes the same prompts (the arith task's val items,
rendered by the arith harness template), greedy, with the same ``max_tokens`` and batch
size B, and counts generated tokens the same way: up to and including EOS, never padding.

  baseline   raw batched ``model.generate``: left padding, B prompts at a time.
  policy     ``HFPolicy.generate`` called directly, B requests at a time (the decode loop
             the gateway runs: seeded per-request sampling, exact logprobs, early exit).
  gateway    the gateway alone: B concurrent OpenAI clients over HTTP, no harness processes.
  harness    the full path: ``HarnessRunner.rollout``, one sandboxed process per episode
             running the template's ``agent.py`` against the gateway; tokens are counted
             from the calls the gateway recorded into the ledger. One line per episode
             concurrency (``--concurrency``, multiples of B): with exactly B episodes in
             flight, a slot is idle while its next episode process starts up; 2B keeps
             start-ups overlapping with decoding. The gateway's batch is B either way.
             Each concurrency keeps one runner (and its episode fork server) across
             rounds, as a run does; the warm-up starts it.

All model work runs on the gateway's model thread, the baseline's included, as in a run:
a second thread doing torch work makes OpenMP throttle both (``Gateway.on_model_thread``).

Last, the episode processes are timed alone (an ``agent.py`` that returns without calling
the model): the start-up cost every harness episode pays, whatever the model.

Paths run interleaved, round by round, and each is reported as its median rate over the
rounds with the spread (min-max), plus the median of the per-round ratios to the baseline:
these machines are noisy, so only ratios measured in the same run mean anything. Nothing
here asserts on wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# Run as a script, this file's folder heads sys.path; the project root goes there instead.
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)

import torch  # noqa: E402

from ledger import InMemoryRecorder  # noqa: E402
from sia.gateway import EpisodeTicket, Gateway  # noqa: E402
from sia.models import GenRequest  # noqa: E402
from sia.models.hf_backend import HFPolicy  # noqa: E402
from sia.ports import RolloutRequest  # noqa: E402
from sia.runner import EpisodeBudget, HarnessRunner  # noqa: E402
from tasks import get_task  # noqa: E402

PATHS = ("baseline", "policy", "gateway", "harness")


@dataclass
class Measure:
    """One path in one round: tokens generated, wall seconds, time inside the backend."""

    tokens: int
    seconds: float
    busy: float = 0.0
    batches: list[int] = field(default_factory=list)
    steps: int = 0  # decode forward passes (after the prefill)
    step_rows: int = 0  # rows summed over those passes
    completions: dict[int, list[int]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


@dataclass(frozen=True)
class Workload:
    item_ids: list[str]  # one per request, val items cycled
    messages: list[list[dict[str, str]]]  # request i's chat, as the harness builds it
    harness: dict[str, bytes]  # the template with max_tokens set to the bench's
    max_tokens: int
    batch: int


# ---- setup ---------------------------------------------------------------------------------


def load(name: str) -> tuple[Any, Any]:
    if name == "tiny":
        from sia.models.tiny import build_tiny

        return build_tiny(seed=0)
    from sia.models import load_model

    return load_model(name)


def workload(task: Any, n_items: int, max_tokens: int, batch: int) -> Workload:
    template = task.harness_template()
    config = json.loads(template["harness.json"])
    config["max_tokens"] = max_tokens
    config["temperature"] = 0.0
    config["retries"] = 0
    config["samples"] = 1
    harness = {**template, "harness.json": json.dumps(config).encode()}
    agent = types.ModuleType("arith_agent")
    exec(compile(template["agent.py"], "agent.py", "exec"), agent.__dict__)
    val = task.item_ids("val")
    item_ids = [val[i % len(val)] for i in range(n_items)]
    messages = [agent.build_messages(task.public_item(i), config) for i in item_ids]
    return Workload(item_ids, messages, harness, max_tokens, batch)


class Probe:
    """Seconds spent inside the policy's generate calls, and its decode step counters."""

    def __init__(self, policy: HFPolicy) -> None:
        self.policy = policy
        self.seconds = 0.0
        for name in ("generate", "generate_continuous"):
            inner = getattr(policy, name, None)
            if inner is not None:
                setattr(policy, name, self._timed(inner))

    def _timed(self, inner: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return inner(*args)
            finally:
                self.seconds += time.perf_counter() - start

        return call

    def read(self) -> tuple[float, int, int]:
        stats = getattr(self.policy, "decode_stats", {})
        return self.seconds, stats.get("steps", 0), stats.get("step_rows", 0)

    def measure(self, before: tuple[float, int, int], tokens: int, seconds: float, **kw: Any):
        now = self.read()
        return Measure(
            tokens,
            seconds,
            busy=now[0] - before[0],
            steps=now[1] - before[1],
            step_rows=now[2] - before[2],
            **kw,
        )


# ---- the four paths ------------------------------------------------------------------------


def prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=False
    )
    return [int(t) for t in encoded]


def run_baseline(model: Any, tokenizer: Any, work: Workload, eos: list[int]) -> Measure:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    prompts = [prompt_ids(tokenizer, m) for m in work.messages]
    stop = set(eos)
    completions: dict[int, list[int]] = {}
    tokens = steps = step_rows = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for first in range(0, len(prompts), work.batch):
            chunk = prompts[first : first + work.batch]
            width = max(map(len, chunk))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=work.max_tokens,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=eos,
            )
            for offset, row in enumerate(out[:, width:].tolist()):
                cut = next((k + 1 for k, t in enumerate(row) if t in stop), len(row))
                completions[first + offset] = row[:cut]
                tokens += cut
            # generate keeps every row (finished ones as padding) until the last one ends.
            steps += out.shape[1] - width - 1
            step_rows += (out.shape[1] - width - 1) * len(chunk)
    seconds = time.perf_counter() - start
    sizes = [min(work.batch, len(prompts) - i) for i in range(0, len(prompts), work.batch)]
    return Measure(tokens, seconds, seconds, sizes, steps, step_rows, completions)


def run_policy(policy: HFPolicy, work: Workload, probe: Probe) -> Measure:
    requests = [
        GenRequest(messages=m, max_tokens=work.max_tokens, temperature=0.0) for m in work.messages
    ]
    before = probe.read()
    completions: dict[int, list[int]] = {}
    start = time.perf_counter()
    for first in range(0, len(requests), work.batch):
        for offset, gen in enumerate(policy.generate(requests[first : first + work.batch])):
            completions[first + offset] = list(gen.completion_ids)
    seconds = time.perf_counter() - start
    tokens = sum(map(len, completions.values()))
    sizes = [min(work.batch, len(requests) - i) for i in range(0, len(requests), work.batch)]
    return probe.measure(before, tokens, seconds, batches=sizes, completions=completions)


def run_gateway(gateway: Gateway, work: Workload, probe: Probe) -> Measure:
    import openai

    gateway.drain_calls()
    seen = len(gateway.batch_sizes)
    local = threading.local()

    def one(index: int) -> None:
        ticket = EpisodeTicket(
            run_id="bench",
            iteration=0,
            episode_id=f"gw-{index:05d}",
            harness_commit="bench",
            adapter_tag=None,
        )
        token = gateway.register_episode(ticket)
        # One client per worker thread, as a harness process has its own; the key is per call.
        if not hasattr(local, "client"):
            local.client = openai.OpenAI(
                base_url=gateway.base_url, api_key="unused", max_retries=0, timeout=600
            )
        try:
            local.client.with_options(api_key=token).chat.completions.create(
                model="policy",
                messages=work.messages[index],  # type: ignore[arg-type]
                max_tokens=work.max_tokens,
                temperature=0.0,
            )
        finally:
            gateway.release_episode(token)

    before = probe.read()
    start = time.perf_counter()
    with ThreadPoolExecutor(work.batch) as pool:
        list(pool.map(one, range(len(work.messages))))
    seconds = time.perf_counter() - start
    calls = gateway.drain_calls()
    completions = {int(c.episode_id[3:]): list(c.completion_ids) for c in calls}
    tokens = sum(map(len, completions.values()))
    return probe.measure(
        before, tokens, seconds, batches=gateway.batch_sizes[seen:], completions=completions
    )


def harness_runner(task: Any, gateway: Gateway, work: Workload, concurrency: int) -> Any:
    """A runner that lives across rounds, as a run's does (its fork server starts once)."""
    recorder = InMemoryRecorder()
    runner = HarnessRunner(
        task,
        gateway,
        recorder,
        concurrency=concurrency,
        episode_timeout=600.0,
        budget=EpisodeBudget(max_calls=4, max_tokens=4 * work.max_tokens),
    )
    return runner, recorder


def run_harness(
    runner: HarnessRunner,
    recorder: Any,
    gateway: Gateway,
    work: Workload,
    probe: Probe,
    round_: int,
) -> Measure:
    seen = len(gateway.batch_sizes)
    request = RolloutRequest(
        run_id="bench",
        iteration=round_,
        harness_commit="bench",
        harness=work.harness,
        adapter_tag=None,
        adapter_path=None,
        item_ids=tuple(work.item_ids),
        seed=0,
    )
    before = probe.read()
    start = time.perf_counter()
    result = runner.rollout(request)
    seconds = time.perf_counter() - start
    calls = recorder.read_calls("bench", round_)
    if result.failures:
        print(f"    warning: {result.failures} of {result.episodes} harness episodes failed")
    # Episode ids end with the item id and carry the request index after the iteration.
    completions = {int(c.episode_id.split("-")[2]): list(c.completion_ids) for c in calls}
    tokens = sum(len(c.completion_ids) for c in calls)
    return probe.measure(
        before, tokens, seconds, batches=gateway.batch_sizes[seen:], completions=completions
    )


def episode_overhead(task: Any, gateway: Gateway, work: Workload, concurrency: int) -> float:
    """Seconds for the episode processes alone: a harness that answers without calling."""
    harness = {"agent.py": b"def solve(client, item, config):\n    return ''\n"}
    with InMemoryRecorder() as recorder:
        runner = HarnessRunner(task, gateway, recorder, concurrency=concurrency)
        request = RolloutRequest(
            run_id="bench-startup",
            iteration=0,
            harness_commit="bench",
            harness=harness,
            adapter_tag=None,
            adapter_path=None,
            item_ids=tuple(work.item_ids),
            seed=0,
        )
        start = time.perf_counter()
        runner.rollout(request)
        return time.perf_counter() - start


# ---- report --------------------------------------------------------------------------------


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f}  [{min(values):7.1f} - {max(values):7.1f}]"


def report(results: dict[str, list[Measure]], work: Workload) -> None:
    base = results["baseline"]
    print(
        f"\n  tokens/s: median [min - max] over {len(base)} rounds; ratio = median of per-round"
        " path/baseline"
    )
    print(
        f"    {'path':<12} {'tokens':>6} {'tok/s':>8}  {'[spread]':^19} {'ratio':>6}"
        f"  {'ratio spread':^13} {'busy':>5} {'group':>5} {'rows/step':>9}  same"
    )
    for name, runs in results.items():
        ratios = [r.rate / b.rate for r, b in zip(runs, base, strict=True)]
        busy = statistics.median(r.busy / r.seconds for r in runs)
        sizes = [s for r in runs for s in r.batches]
        mean_b = sum(sizes) / len(sizes) if sizes else float("nan")
        steps = sum(r.steps for r in runs)
        per_step = sum(r.step_rows for r in runs) / steps if steps else float("nan")
        same = sum(
            r.completions.get(i) == b.completions.get(i)
            for r, b in zip(runs, base, strict=True)
            for i in b.completions
        ) / (len(runs) * len(work.messages))
        print(
            f"    {name:<12} {runs[-1].tokens:6d} {spread([r.rate for r in runs])}"
            f" {statistics.median(ratios):6.2f}  [{min(ratios):4.2f} - {max(ratios):4.2f}]"
            f" {busy:5.0%} {mean_b:5.2f} {per_step:9.2f}  {same:4.0%}"
        )
    for name, runs in results.items():
        if name.startswith("harness"):
            ratio = statistics.median(r.rate / b.rate for r, b in zip(runs, base, strict=True))
            print(f"      => {name} / raw generate = {ratio:4.2f}  (target >= 0.9)")
    print(
        "    busy: share of wall time inside the backend's generate; group: mean requests per"
        " group handed to\n    the backend (Gateway.batch_sizes for gateway paths); rows/step:"
        " mean rows per decode\n    forward pass (the realised batch); same: completions"
        " identical to the baseline's"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name or tiny")
    parser.add_argument("--items", type=int, default=48, help="requests per path (val, cycled)")
    parser.add_argument("--batch", type=int, default=8, help="batch size B for every path")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--wait-ms", type=float, default=5.0, help="gateway batch wait")
    parser.add_argument(
        "--max-wait-ms",
        type=float,
        default=200.0,
        help="how long a batch may wait for registered episodes that have not called yet",
    )
    parser.add_argument(
        "--decode",
        choices=("auto", "packed", "padded"),
        default="auto",
        help="the policy's decode loop (see sia.models.decoding); auto: packed if the model can",
    )
    parser.add_argument("--paths", default=",".join(PATHS), help="comma-separated subset")
    parser.add_argument(
        "--concurrency",
        default="1,2",
        help="harness episodes in flight, as multiples of B (comma-separated: one line each)",
    )
    args = parser.parse_args()
    chosen = [p for p in args.paths.split(",") if p]
    paths = ["baseline"] + [p for p in PATHS[1:-1] if p in chosen]
    multiples = [int(m) for m in args.concurrency.split(",") if m]
    if "harness" in chosen:
        paths += [f"harness c={m * args.batch}" for m in multiples]

    started = time.perf_counter()
    model, tokenizer = load(args.model)
    task = get_task("arith", seed=0)
    work = workload(task, args.items, args.max_tokens, args.batch)
    packed = None if args.decode == "auto" else args.decode == "packed"
    policy = HFPolicy(model, tokenizer, max_batch_size=args.batch, packed=packed)
    eos = sorted(policy.eos_ids)  # the same stop tokens for the baseline
    probe = Probe(policy)
    prompt_lengths = [len(prompt_ids(tokenizer, m)) for m in work.messages]
    print(
        f"model {args.model}, {len(work.messages)} requests ({len(set(work.item_ids))} arith"
        f" val items), B={args.batch}, max_tokens={args.max_tokens}, greedy,"
        f" prompt {min(prompt_lengths)}-{max(prompt_lengths)} tokens,"
        f" torch threads {torch.get_num_threads()}, gateway wait {args.wait_ms:g} ms"
        f" (up to {args.max_wait_ms:g} ms for expected callers),"
        f" {'packed' if policy.packed else 'padded'} decoding"
    )

    results: dict[str, list[Measure]] = {name: [] for name in paths}
    with Gateway(
        policy,
        max_batch=args.batch,
        batch_wait_ms=args.wait_ms,
        max_batch_wait_ms=args.max_wait_ms,
    ) as gateway:
        runners: dict[str, Callable[[int], Measure]] = {
            # On the gateway's model thread, like the gateway's own decoding: a second
            # thread doing torch work would slow both (see Gateway.on_model_thread).
            "baseline": lambda r: gateway.on_model_thread(
                lambda: run_baseline(model, tokenizer, work, eos)
            ),
            "policy": lambda r: gateway.on_model_thread(lambda: run_policy(policy, work, probe)),
            "gateway": lambda r: run_gateway(gateway, work, probe),
        }
        harnesses = {m: harness_runner(task, gateway, work, m * args.batch) for m in multiples}
        for m, (runner, recorder) in harnesses.items():
            runners[f"harness c={m * args.batch}"] = lambda r, h=runner, rec=recorder: run_harness(
                h, rec, gateway, work, probe, r
            )
        # Warm up every path once on a short slice (first calls pay one-off costs).
        short = Workload(
            work.item_ids[: args.batch],
            work.messages[: args.batch],
            work.harness,
            4,
            args.batch,
        )
        gateway.on_model_thread(lambda: run_baseline(model, tokenizer, short, eos))
        gateway.on_model_thread(lambda: run_policy(policy, short, probe))
        if len(paths) > 2:
            run_gateway(gateway, short, probe)
        for runner, recorder in harnesses.values():
            run_harness(runner, recorder, gateway, short, probe, 0)
        for round_ in range(args.rounds):
            line = []
            for name in paths:
                measure = runners[name](round_ + 1)
                results[name].append(measure)
                line.append(f"{name} {measure.rate:6.1f}")
            print(f"  round {round_ + 1}: " + "   ".join(line) + "  tok/s")
        if "harness" in chosen:
            startup = episode_overhead(task, gateway, work, args.batch)
        for runner, recorder in harnesses.values():
            runner.close()
            recorder.close()
    report(results, work)
    if "harness" in chosen:
        print(
            f"    episode processes alone (agent.py returns at once, no model call): {startup:.2f}"
            f" s for {len(work.item_ids)} episodes at concurrency {args.batch}"
            f" = {startup / len(work.item_ids) * args.batch * 1e3:.0f} ms per episode slot"
        )
    print(f"total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()

"""LoRA training throughput: our GRPO and DPO steps against plain reference loops.

Run: ``.venv/bin/python bench/train.py`` (SmolLM2-135M, the embedded default) or
``--model tiny`` for a quick check.

(1) Throughput, in one process: our step (``rl.train.train_step`` on the algorithm's
prepared items) and the reference step take turns, step by step, on the same minibatches,
so that bursts of load from other processes hit both; the first step of each is warm-up and
not counted. The ratio is the median over steps of reference time / our time (both train
the same tokens per step). (2) Memory, one child process per contender running the whole
thing (``train_lora``, or the reference loop): peak RSS while training, from
``/proc/self/status`` after resetting the peak once the model is loaded (loading peaks
higher than training, so ``resource.getrusage`` alone would only measure the load).

Both sides train the same LoRA (rank, alpha, targets, seed) with AdamW on the same
synthetic rollouts (random token ids, logprobs recorded from the base model, random
rewards). The reference steps are what one would write by hand: pad, full forward, full
``log_softmax``, gather, loss, backward, clip, step. TRL's trainers are not run: trl is not
a project dependency, and its DPO/GRPO trainers take text datasets and re-tokenise or
generate, so they cannot train on recorded token ids (see ``rl/algorithms/dpo.py``).
"""

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

_HERE = Path(__file__).resolve().parent
# Run as a script, this folder heads sys.path; the project root must be importable instead.
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path[0] = str(_HERE.parent)

ALGORITHMS = ("grpo", "dpo")
# A step trains `batch` sequences: `batch` samples for GRPO, `batch // 2` pairs for DPO.
Step = Callable[[int], tuple[float, int]]  # step index -> (loss, trained tokens)


def load(model_name: str):
    if model_name == "tiny":
        from sia.models.tiny import TinyConfig, build_tiny

        return build_tiny(seed=0, config=TinyConfig(hidden_size=128, intermediate_size=256))
    from sia.models import load_model

    return load_model(model_name)


def make_samples(model, tokenizer, args):
    """Random rollouts, distinct rewards within each group, the base model's own logprobs."""
    import torch

    from rl.batch import collate
    from rl.data import Sample
    from rl.logprobs import model_logprobs

    rng = random.Random(args.seed)
    vocab = model.get_output_embeddings().weight.shape[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    placeholders = []
    for index in range(args.samples):
        if index % args.group_size == 0:  # one prompt per group, as real groups have
            prompt = tuple(rng.randrange(vocab) for _ in range(rng.randint(*args.prompt_len)))
        completion = tuple(rng.randrange(vocab) for _ in range(rng.randint(*args.completion_len)))
        group = f"item-{index // args.group_size}"
        placeholders.append(
            Sample(prompt, completion, (0.0,) * len(completion), rng.random(), group)
        )
    samples = []
    with torch.no_grad():
        for start in range(0, len(placeholders), 8):
            chunk = placeholders[start : start + 8]
            batch = collate(chunk, pad)
            for s, lp in zip(chunk, batch.split(model_logprobs(model, batch)[0]), strict=True):
                logprobs = tuple(min(x, 0.0) for x in lp.tolist())
                samples.append(Sample(s.prompt_ids, s.completion_ids, logprobs, s.reward, s.group))
    return samples, pad


def config_for(algorithm: str, args) -> dict:
    if algorithm == "grpo":
        return {"epochs": args.epochs, "minibatch_size": args.batch, "micro_batch_size": args.batch}
    half = args.batch // 2
    return {
        "epochs": args.epochs,
        "minibatch_size": half,
        "micro_batch_size": half,
        "max_pairs_per_group": args.pairs_per_group,
    }


# ---- our side ---------------------------------------------------------------------------


def ours(model, tokenizer, samples, pad, algorithm, args) -> tuple[Step, int]:
    """Our step, exactly as train_lora runs it, on the algorithm's prepared items."""
    import torch

    from rl.lora import LoraSettings, attach_lora
    from rl.policy import Policy
    from rl.registry import algorithm_config, get_algorithm
    from rl.train import make_optimizer, minibatches, train_mode, train_step, trainable_parameters

    config = algorithm_config(algorithm, config_for(algorithm, args))
    torch.manual_seed(args.seed)
    peft_model = attach_lora(model, LoraSettings(rank=args.rank, alpha=2 * args.rank))
    policy = Policy(peft_model, pad, "cpu", config.micro_batch_size)
    algo = get_algorithm(algorithm)(config)
    algo.init_heads(policy, None)
    peft_model.eval()
    items = algo.prepare(policy, samples)
    params = trainable_parameters(algo, policy)
    optimizer = make_optimizer(params, config)
    batches = list(minibatches(len(items), config, args.seed))
    train_mode(policy)

    def step(k: int) -> tuple[float, int]:
        minibatch = [items[i] for i in batches[k]]
        result = train_step(algo, policy, optimizer, params, minibatch, config, k + 1)
        return result.loss, result.tokens

    return step, len(batches)


# ---- the reference side -------------------------------------------------------------------


def reference_lora(model, args):
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(args.seed)
    config = LoraConfig(
        r=args.rank,
        lora_alpha=2 * args.rank,
        lora_dropout=0.0,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        task_type="CAUSAL_LM",
    )
    policy = get_peft_model(model, config)
    params = [p for p in policy.parameters() if p.requires_grad]
    return policy, params


def pad_rows(samples, pad):
    """Right-pad prompt + completion; mask and recorded logprobs over all T - 1 targets."""
    import torch

    total = max(len(s.prompt_ids) + len(s.completion_ids) for s in samples)
    ids = torch.full((len(samples), total), pad, dtype=torch.long)
    attention = torch.zeros((len(samples), total), dtype=torch.long)
    mask = torch.zeros((len(samples), total - 1), dtype=torch.bool)
    old = torch.zeros((len(samples), total - 1))
    for row, s in enumerate(samples):
        n = len(s.prompt_ids) + len(s.completion_ids)
        ids[row, :n] = torch.tensor(s.prompt_ids + s.completion_ids)
        attention[row, :n] = 1
        mask[row, len(s.prompt_ids) - 1 : n - 1] = True
        old[row, len(s.prompt_ids) - 1 : n - 1] = torch.tensor(s.logprobs)
    return ids, attention, mask, old


def full_logprobs(model, ids, attention):
    import torch

    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def reference_grpo(model, samples, pad, args) -> tuple[Step, int]:
    """Plain GRPO: group-normalised advantages, clipped ratio, token mean."""
    import torch

    from rl.registry import algorithm_config
    from rl.train import minibatches

    config = algorithm_config("grpo", config_for("grpo", args))
    policy, params = reference_lora(model, args)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    rewards: dict[str, list[float]] = {}
    for s in samples:
        rewards.setdefault(s.group, []).append(s.reward)
    moments = {g: (statistics.fmean(r), statistics.pstdev(r)) for g, r in rewards.items()}
    advantages = [(s.reward - moments[s.group][0]) / (moments[s.group][1] + 1e-6) for s in samples]
    batches = list(minibatches(len(samples), config, args.seed))

    def step(k: int) -> tuple[float, int]:
        chosen = batches[k]
        ids, attention, mask, old = pad_rows([samples[i] for i in chosen], pad)
        adv = torch.tensor([advantages[i] for i in chosen])[:, None]
        ratio = (full_logprobs(policy, ids, attention) - old).exp()
        surrogate = torch.minimum(ratio * adv, ratio.clamp(0.8, 1.2) * adv)
        loss = -(surrogate * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.item(), int(mask.sum())

    return step, len(batches)


def reference_dpo(model, samples, pad, args) -> tuple[Step, int]:
    """Plain DPO on the same pairs; reference logprobs precomputed with the adapter off."""
    import torch
    import torch.nn.functional as F

    from rl.algorithms.dpo import pairs_within_groups
    from rl.registry import algorithm_config
    from rl.train import minibatches

    config = algorithm_config("dpo", config_for("dpo", args))
    policy, params = reference_lora(model, args)
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    pairs = pairs_within_groups(samples, 0.0, args.pairs_per_group)

    def sequences(indices):
        ids, attention, mask, _ = pad_rows([samples[i] for i in indices], pad)
        return (full_logprobs(policy, ids, attention) * mask).sum(-1), int(mask.sum())

    involved = sorted({i for pair in pairs for i in pair})
    with torch.no_grad(), policy.disable_adapter():
        ref = dict(zip(involved, sequences(involved)[0].tolist(), strict=True))
    batches = list(minibatches(len(pairs), config, args.seed))

    def step(k: int) -> tuple[float, int]:
        batch = [pairs[i] for i in batches[k]]
        seq, tokens = sequences([c for c, _ in batch] + [r for _, r in batch])
        chosen, rejected = seq[: len(batch)], seq[len(batch) :]
        ref_chosen = torch.tensor([ref[c] for c, _ in batch])
        ref_rejected = torch.tensor([ref[r] for _, r in batch])
        logits = config.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
        loss = -F.logsigmoid(logits).mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        return loss.item(), tokens

    return step, len(batches)


def make_step(side: str, algorithm: str, model, tokenizer, samples, pad, args):
    if side == "rl":
        return ours(model, tokenizer, samples, pad, algorithm, args)
    reference = reference_grpo if algorithm == "grpo" else reference_dpo
    return reference(model, samples, pad, args)


# ---- (1) throughput, interleaved step by step ---------------------------------------------


def throughput(model, tokenizer, samples, pad, algorithm, args) -> None:
    import copy

    sides = {
        side: make_step(side, algorithm, copy.deepcopy(model), tokenizer, samples, pad, args)
        for side in ("rl", "reference")
    }
    steps = min(n for _, n in sides.values())
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    tokens: dict[str, list[int]] = {side: [] for side in sides}
    first_loss: dict[str, float] = {}
    for k in range(steps):
        # Alternate who goes first, so neither side always meets the same load.
        for side in ("rl", "reference") if k % 2 == 0 else ("reference", "rl"):
            start = time.perf_counter()
            loss, n = sides[side][0](k)
            seconds[side].append(time.perf_counter() - start)
            tokens[side].append(n)
            first_loss.setdefault(side, loss)
    assert tokens["rl"] == tokens["reference"], "both sides must train the same tokens"
    print(f"  {algorithm}: {steps} steps of ~{statistics.fmean(tokens['rl']):.0f} trained tokens")
    for side in sides:
        timed = seconds[side][1:]  # step 0 is warm-up
        rate = sum(tokens[side][1:]) / sum(timed)
        print(
            f"    {side:<10} {rate:8.1f} tok/s   median step {statistics.median(timed):6.2f} s"
            f"   first-step loss {first_loss[side]:.6f}"
        )
    ratios = [r / o for o, r in zip(seconds["rl"][1:], seconds["reference"][1:], strict=True)]
    same = abs(first_loss["rl"] - first_loss["reference"]) <= 1e-4 * max(1.0, abs(first_loss["rl"]))
    print(
        f"    => rl / reference = {statistics.median(ratios):4.2f}  (median of {len(ratios)} "
        f"step pairs; target >= 0.9); same first-step loss: {'yes' if same else 'NO'}"
    )


# ---- (2) peak RSS, one process per contender ----------------------------------------------


def rss_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since the last reset) of this process, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def worker(args) -> None:
    """Child process: one contender end to end, then print its memory use as JSON.

    Loading the model peaks higher than training, so the peak is reset (Linux's
    ``clear_refs``) once the model and samples are in memory: ``train_peak_mb`` is the
    training's own peak, ``resident_mb`` what was resident when it started.
    """
    import tempfile

    algorithm, side = args.worker.split("/")
    model, tokenizer = load(args.model)
    samples, pad = make_samples(model, tokenizer, args)
    Path("/proc/self/clear_refs").write_text("5")
    resident = rss_mb("VmRSS")
    if side == "rl":
        from rl.lora import LoraSettings
        from rl.train import train_lora

        with tempfile.TemporaryDirectory() as out:
            train_lora(
                model,
                tokenizer,
                samples,
                algorithm,
                config=config_for(algorithm, args),
                lora=LoraSettings(rank=args.rank, alpha=2 * args.rank),
                seed=args.seed,
                out_dir=Path(out),
            )
    else:
        step, steps = make_step(side, algorithm, model, tokenizer, samples, pad, args)
        for k in range(steps):
            step(k)
    report = {
        "resident_mb": resident,
        "train_peak_mb": rss_mb("VmHWM"),
        "process_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(report))


def memory(name: str) -> dict:
    command = [sys.executable, __file__, "--worker", name, *sys.argv[1:]]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name or 'tiny'")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="sequences per optimiser step")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs-per-group", type=int, default=2)
    parser.add_argument("--prompt-len", type=int, nargs=2, default=(16, 32))
    parser.add_argument("--completion-len", type=int, nargs=2, default=(16, 48))
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--section", choices=("all", "throughput", "memory"), default="all", help="what to run"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import warnings

    import torch

    # peft 0.21 calls a method transformers 5 deprecates; not ours, and noise here.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return
    started = time.perf_counter()
    print(
        f"model {args.model}, {args.samples} samples in groups of {args.group_size}, "
        f"{args.batch} sequences per step, LoRA r{args.rank}, {args.threads} threads"
    )
    if args.section in ("all", "throughput"):
        model, tokenizer = load(args.model)
        samples, pad = make_samples(model, tokenizer, args)
        print("(1) training throughput, trained tokens/s, steps interleaved")
        for algorithm in ALGORITHMS:
            throughput(model, tokenizer, samples, pad, algorithm, args)
        del model
    if args.section in ("all", "memory"):
        print("(2) memory of a whole training run, one process each, MB")
        for algorithm in ALGORITHMS:
            mine, theirs = (memory(f"{algorithm}/{side}") for side in ("rl", "reference"))
            print(
                f"    {algorithm}: peak RSS while training: rl {mine['train_peak_mb']:6.0f}   "
                f"reference {theirs['train_peak_mb']:6.0f}   "
                f"rl / reference = {mine['train_peak_mb'] / theirs['train_peak_mb']:4.2f}   "
                f"(resident before: {mine['resident_mb']:.0f}; process peak incl. model load: "
                f"{mine['process_peak_mb']:.0f})"
            )
    print(f"total {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()

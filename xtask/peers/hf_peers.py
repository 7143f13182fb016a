#!/usr/bin/env python3
"""Decode speed of Hugging Face transformers on Qwen3-0.6B's shapes, for `qwenmk bench --peers`.

Run it through `cargo xtask peers` (or directly). On a CUDA GPU it builds one Qwen3 model with
random bf16 weights from the config given (Qwen3-0.6B's by default) and measures, at each
KV-cache depth, greedy decoding of N tokens R times after a warm-up, each run from the same
depth, timed with CUDA events, for two peers:

  hf_eager    transformers as most people run it: no compilation, a DynamicCache, the
              default attention (sdpa), a Python loop of forward calls.
  hf_compile  transformers' documented fast path: a StaticCache and the one-token decode step
              under torch.compile(mode="reduce-overhead", fullgraph=True), i.e. CUDA graphs.

The cache is filled to each depth by a chunked prefill of pseudo-random tokens (uncompiled);
only the decode steps are timed. Weights: transformers' random initialisation under
torch.manual_seed(seed). They have the shapes of qwenmk's `--synthetic` weights but not the
same values; a dense model's decode time does not depend on the values.

The JSON it writes is read by `qwenmk bench --peers FILE` (see cli/src/bench/peers.rs).
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "fixtures" / "qwen3-0.6b" / "config.json"
DEFAULT_DEPTHS = "0,128,512,1024,4096,8192,16384,32768"
FILL_CHUNK = 1024


def refuse(message: str) -> None:
    print(f"peers: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config.json of the model")
    p.add_argument("--depths", default=DEFAULT_DEPTHS, help="comma-separated KV-cache depths")
    p.add_argument("-n", "--tokens", type=int, default=128, help="tokens decoded per timed run")
    p.add_argument("-r", "--repetitions", type=int, default=5, help="timed runs per depth")
    p.add_argument("--warmup", type=int, default=16, help="untimed decode steps per depth")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peers", default="hf_eager,hf_compile", help="which peers to run")
    p.add_argument("--out", type=Path, default=Path("peers.json"))
    args = p.parse_args()
    try:
        args.depths = sorted({int(d) for d in args.depths.split(",") if d.strip()})
    except ValueError:
        refuse(f"--depths takes comma-separated integers, not {args.depths!r}")
    args.peers = [s.strip() for s in args.peers.split(",") if s.strip()]
    for peer in args.peers:
        if peer not in PEERS:
            refuse(f"unknown peer {peer!r}; the peers are {', '.join(PEERS)}")
    if args.tokens < 1 or args.repetitions < 1 or args.warmup < 0 or not args.depths:
        refuse("-n and -r must be at least 1, --warmup at least 0, and --depths not empty")
    return args


def import_torch():
    """torch and transformers, or a polite refusal; and a CUDA GPU, or a polite refusal."""
    try:
        import torch
        import transformers
    except ImportError as e:
        refuse(
            f"peers need PyTorch (with CUDA) and transformers ({e}); install them with "
            "`python3 -m pip install torch transformers`, or point --python at a Python "
            "that has them"
        )
    if not torch.cuda.is_available():
        refuse(
            "peers need a CUDA GPU: torch.cuda.is_available() is False on this machine "
            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda})"
        )
    return torch, transformers


def kernel_driver_version() -> str | None:
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if "Kernel Module" in line:
            for word in line.split():
                if word[:1].isdigit() and "." in word:
                    return word
    return None


def mean_sd(xs: list[float]) -> tuple[float | None, float | None]:
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


class Bench:
    """One model, shared by the peers, and the measurement loop they have in common."""

    def __init__(self, torch, transformers, args):
        from transformers import Qwen3Config, Qwen3ForCausalLM

        self.torch, self.transformers, self.args = torch, transformers, args
        self.config = Qwen3Config.from_json_file(str(args.config))
        self.config._attn_implementation = "sdpa"
        torch.manual_seed(args.seed)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device("cuda"):
                self.model = Qwen3ForCausalLM(self.config)
        finally:
            torch.set_default_dtype(default)
        self.model.eval()
        self.max_len = max(args.depths) + max(args.tokens, args.warmup)
        generator = torch.Generator().manual_seed(args.seed)
        self.tokens = torch.randint(
            0, self.config.vocab_size, (self.max_len + 1,), generator=generator
        ).to("cuda")
        forward = inspect.signature(self.model.forward).parameters
        self.keep_last = (
            {"logits_to_keep": 1}
            if "logits_to_keep" in forward
            else {"num_logits_to_keep": 1} if "num_logits_to_keep" in forward else {}
        )

    def fill(self, cache, start: int, depth: int) -> None:
        """Prefill positions start..depth in chunks (uncompiled, untimed)."""
        torch = self.torch
        for lo in range(start, depth, FILL_CHUNK):
            hi = min(depth, lo + FILL_CHUNK)
            positions = torch.arange(lo, hi, device="cuda")
            self.model(
                input_ids=self.tokens[lo:hi][None],
                position_ids=positions[None],
                cache_position=positions,
                past_key_values=cache,
                use_cache=True,
                **self.keep_last,
            )

    def time_runs(self, step, depth: int, rewind) -> list[float]:
        """Warm-up, then the timed runs of `step`, each from `depth`."""
        torch, args = self.torch, self.args
        first = self.tokens[depth : depth + 1][None]

        def decode(n: int) -> None:
            token = first
            for i in range(n):
                token = step(token, depth + i)

        if args.warmup:
            decode(args.warmup)
            rewind(depth)
        samples = []
        for _ in range(args.repetitions):
            torch.cuda.synchronize()
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record()
            decode(args.tokens)
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3)
            rewind(depth)
        return samples

    def sweep(self, name: str, make_cache, step_for, rewind_for) -> dict:
        torch, args = self.torch, self.args
        cache = make_cache()
        step, rewind = step_for(cache), rewind_for(cache)
        results, filled = [], 0
        for depth in args.depths:
            entry = {"depth": depth, "tokens": args.tokens}
            try:
                with torch.inference_mode():
                    self.fill(cache, filled, depth)
                    filled = depth
                    samples = self.time_runs(step, depth, rewind)
                rates = [args.tokens / s for s in samples]
                m, sd = mean_sd(rates)
                entry.update(samples_s=samples, tokens_per_s=rates, tok_s_mean=m, tok_s_sd=sd)
            except torch.cuda.OutOfMemoryError as e:
                entry.update(tok_s_mean=None, error=f"out of memory: {e}".splitlines()[0])
                torch.cuda.empty_cache()
                print(f"peers: {name} at depth {depth}: out of memory", file=sys.stderr)
                break
            print(
                f"peers: {name} depth {depth}: {entry['tok_s_mean']:.1f} tok/s",
                file=sys.stderr,
            )
            results.append(entry)
        del cache
        torch.cuda.empty_cache()
        return results

    def positions(self, position: int):
        p = self.torch.tensor([position], device="cuda")
        return p, p[None]

    def run_eager(self) -> dict:
        from transformers import DynamicCache

        def step_for(cache):
            def step(token, position):
                cache_position, position_ids = self.positions(position)
                logits = self.model(
                    input_ids=token,
                    position_ids=position_ids,
                    cache_position=cache_position,
                    past_key_values=cache,
                    use_cache=True,
                ).logits
                return logits[:, -1:].argmax(-1)

            return step

        def make_cache():
            try:
                return DynamicCache(config=self.config)
            except TypeError:
                return DynamicCache()

        results = self.sweep("hf_eager", make_cache, step_for, lambda cache: cache.crop)
        return {
            "name": "hf_eager",
            "label": "HF eager bf16",
            "description": "transformers without compilation: DynamicCache, sdpa attention, "
            "one forward call per token from Python",
            "results": results,
        }

    def run_compile(self) -> dict:
        from transformers import StaticCache

        torch = self.torch

        def make_cache():
            kwargs = dict(config=self.config, max_cache_len=self.max_len)
            for extra in (
                dict(max_batch_size=1, device="cuda", dtype=torch.bfloat16),
                dict(batch_size=1, device="cuda", dtype=torch.bfloat16),
                {},
            ):
                try:
                    return StaticCache(**kwargs, **extra)
                except TypeError:
                    continue
            refuse("this transformers' StaticCache takes none of the known argument sets")

        def step_for(cache):
            def decode_one(token, cache_position, position_ids):
                logits = self.model(
                    input_ids=token,
                    position_ids=position_ids,
                    cache_position=cache_position,
                    past_key_values=cache,
                    use_cache=True,
                    return_dict=False,
                )[0]
                return logits[:, -1:].argmax(-1)

            compiled = torch.compile(decode_one, mode="reduce-overhead", fullgraph=True)

            def step(token, position):
                cache_position, position_ids = self.positions(position)
                # CUDA graphs reuse their output buffers: keep a copy.
                return compiled(token, cache_position, position_ids).clone()

            return step

        # A static cache is rewound by writing from the depth again: the causal mask, built
        # from cache_position, hides what lies beyond.
        results = self.sweep("hf_compile", make_cache, step_for, lambda cache: lambda depth: None)
        return {
            "name": "hf_compile",
            "label": "HF static cache + torch.compile",
            "description": 'transformers with a StaticCache and the decode step under '
            'torch.compile(mode="reduce-overhead", fullgraph=True) (CUDA graphs)',
            "results": results,
        }


PEERS = {"hf_eager": Bench.run_eager, "hf_compile": Bench.run_compile}


def main() -> None:
    args = parse_args()
    torch, transformers = import_torch()
    bench = Bench(torch, transformers, args)
    peers = [PEERS[name](bench) for name in args.peers]
    report = {
        "tool": "cargo xtask peers (xtask/peers/hf_peers.py)",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "gpu": torch.cuda.get_device_name(0),
        "driver": kernel_driver_version(),
        "cuda": torch.version.cuda,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "config": str(args.config),
        "tokens": args.tokens,
        "repetitions": args.repetitions,
        "warmup": args.warmup,
        "weights": f"random bf16 (transformers' initialisation, torch.manual_seed({args.seed})): "
        "the shapes of qwenmk's --synthetic weights, not their values",
        "timer": "CUDA events around each run of decode steps",
        "peers": peers,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"peers: wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch side of the trainer benchmark (scripts/bench-trainer.sh).

The same networks, input preparation, loss, AdamW and step as
`deepcuts-trainer bench` (services/trainer/src/bench.rs), so the two rates
compare the Rust training loop with plain PyTorch on the same libtorch.
Prints one JSON line with the fields of the Rust `BenchResult` plus "tool".
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

SEED_FILTERS = (64, 128, 256, 512)


def seed_output_hw(bands, frames):
    # Four blocks of (conv 2x2 stride 2, pool 2x2), both valid: floor halvings.
    return bands >> 8, frames >> 8


class SeedBody(nn.Module):
    def __init__(self, bands, frames, embedding_dim):
        super().__init__()
        in_channels = 3
        for i, filters in enumerate(SEED_FILTERS):
            self.add_module(f"conv{i}", nn.Conv2d(in_channels, filters, 2, stride=2))
            in_channels = filters
        h, w = seed_output_hw(bands, frames)
        self.dense = nn.Linear(SEED_FILTERS[-1] * h * w, embedding_dim)

    def forward(self, x):
        for i in range(len(SEED_FILTERS)):
            x = F.max_pool2d(F.elu(getattr(self, f"conv{i}")(x)), 2, 2)
        return F.elu(self.dense(x.flatten(1)))


class DefaultBody(nn.Module):
    def __init__(self, width, embedding_dim):
        super().__init__()
        in_channels, channels = 1, width
        for i in range(4):
            self.add_module(f"conv{i}", nn.Conv2d(in_channels, channels, 3, padding=1, bias=False))
            self.add_module(f"norm{i}", nn.BatchNorm2d(channels))
            in_channels, channels = channels, channels * 2
        self.embed = nn.Linear(2 * in_channels, embedding_dim)

    def forward(self, x):
        for i in range(4):
            x = getattr(self, f"norm{i}")(getattr(self, f"conv{i}")(x))
            x = F.max_pool2d(F.relu(x), 2, 2)
        over_time = x.mean(2)
        return self.embed(torch.cat([over_time.mean(2), over_time.amax(2)], 1))


class Network(nn.Module):
    """Module names follow the Rust VarStore paths (body.conv0.weight, ...)."""

    def __init__(self, architecture, bands, frames, classes, embedding_dim=128, width=32):
        super().__init__()
        self.architecture = architecture
        if architecture == "seed":
            if 0 in seed_output_hw(bands, frames):
                raise SystemExit(f"the seed architecture needs windows of at least 256x256; got {bands}x{frames}")
            self.body = SeedBody(bands, frames, embedding_dim)
            self.dropout = 0.5
        else:
            self.body = DefaultBody(width, embedding_dim)
            self.dropout = 0.3
        self.classifier = nn.Linear(embedding_dim, classes)

    def prepare_input(self, windows):
        x = windows.float() / 255.0
        if self.architecture == "seed":
            # The 2017 network read greyscale images as RGB.
            return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
        return x.unsqueeze(1)

    def forward(self, x):
        embedding = self.body(x)
        # The seed embedding is already post-ELU; the default one is linear.
        hidden = embedding if self.architecture == "seed" else F.relu(embedding)
        return self.classifier(F.dropout(hidden, self.dropout, self.training))


def rust_param_count(architecture, bands, frames, classes, embedding_dim=128, width=32):
    """Trainable variables network.rs creates, counted from its layer shapes."""
    if architecture == "seed":
        total, in_ch = 0, 3
        for filters in SEED_FILTERS:
            total += filters * in_ch * 2 * 2 + filters
            in_ch = filters
        h, w = seed_output_hw(bands, frames)
        total += SEED_FILTERS[-1] * h * w * embedding_dim + embedding_dim
    else:
        total, in_ch, ch = 0, 1, width
        for _ in range(4):
            total += ch * in_ch * 3 * 3 + 2 * ch  # conv (no bias) + norm scale and shift
            in_ch, ch = ch, ch * 2
        total += 2 * in_ch * embedding_dim + embedding_dim
    return total + embedding_dim * classes + classes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="seed", choices=["seed", "default"])
    p.add_argument("--bands", type=int, default=256)
    p.add_argument("--frames", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=9)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = libtorch's default)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    device = torch.device("cuda:0" if args.device == "cuda" else "cpu")
    seed = 17
    torch.manual_seed(seed)

    net = Network(args.model, args.bands, args.frames, args.classes).to(device).train()
    params = sum(t.numel() for t in net.parameters() if t.requires_grad)
    expected = rust_param_count(args.model, args.bands, args.frames, args.classes)
    print(f"parameters: {params} (deepcuts: {expected})", file=sys.stderr)
    if params != expected:
        raise SystemExit(f"parameter count {params} differs from the Rust network's {expected}")

    # The Rust AdamW decays matrices and kernels only, not biases or norm scales.
    decay = [t for t in net.parameters() if t.dim() >= 2]
    no_decay = [t for t in net.parameters() if t.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
    )

    gen = torch.Generator().manual_seed(seed)
    window_len = args.bands * args.frames
    # A few distinct batches, reused, so data generation is not timed.
    batches = [
        (
            torch.randint(0, 256, (args.batch_size * window_len,), dtype=torch.uint8, generator=gen),
            torch.randint(0, args.classes, (args.batch_size,), dtype=torch.int64, generator=gen),
        )
        for _ in range(4)
    ]

    def step(i):
        pixels, labels = batches[i % len(batches)]
        # Zeroing in place (not to None) is what the Rust AdamW does.
        optimizer.zero_grad(set_to_none=False)
        # Tensor::from_slice copies the host buffer every step; clone does the same.
        windows = pixels.clone().view(args.batch_size, args.bands, args.frames).to(device)
        labels = labels.clone().to(device)
        logits = net(net.prepare_input(windows))
        loss = F.cross_entropy(logits.float(), labels)
        # genre_loss reads the argmax count, and the loop reads the loss, every step.
        _correct = logits.argmax(1).eq(labels).sum().item()
        value = loss.item()
        if not math.isfinite(value):
            raise SystemExit(f"benchmark diverged: loss {value}")
        loss.backward()
        optimizer.step()

    for i in range(args.warmup):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for i in range(args.steps):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started

    print(json.dumps({
        "architecture": args.model,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "seconds": seconds,
        "windows_per_second": args.steps * args.batch_size / max(seconds, 1e-9),
        "threads": torch.get_num_threads(),
        # tch's Debug spelling, so both sides' rows read alike.
        "device": "Cuda(0)" if device.type == "cuda" else "Cpu",
        "tool": "pytorch",
    }))


if __name__ == "__main__":
    main()

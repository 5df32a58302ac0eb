#!/usr/bin/env python3
"""PyTorch baseline for `weft train`: the same MLP on Fashion-MNIST with DistributedDataParallel
over Gloo, 2 processes (torch.multiprocessing.spawn), one BLAS/OpenMP thread per process.

  scripts/torch_mlp_baseline.py [--epochs 2] [--batch 128] [--depth 3] [--width 256] [--lr 1e-3]
  scripts/torch_mlp_baseline.py --compare build/bin/weft --repeats 3
      runs weft (2 data-parallel ranks) and PyTorch alternately, `repeats` times each, and prints
      the median samples/s of both, their ratio and the test accuracies.

Needs Debian's python3-torch (run with /usr/bin/python3) and OpenBLAS as the system BLAS
(libopenblas0): Debian's torch calls libblas.so.3, which is the slow reference BLAS otherwise.
The global batch is split evenly over the ranks, the optimizer is Adam (or SGD with momentum),
and the reported throughput counts training steps only, as weft's does.
"""
import argparse
import gzip
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import time

FMNIST_DIR = os.environ.get("WEFT_FMNIST_DIR", "/usr/share/datasets/fashion-mnist")


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return data[4 + 4 * dims:], shape


def load(prefix):
    import numpy as np
    img, ishape = read_idx(os.path.join(FMNIST_DIR, f"{prefix}-images-idx3-ubyte.gz"))
    lab, _ = read_idx(os.path.join(FMNIST_DIR, f"{prefix}-labels-idx1-ubyte.gz"))
    x = np.frombuffer(img, dtype=np.uint8).reshape(ishape[0], -1).astype(np.float32) / 255.0
    y = np.frombuffer(lab, dtype=np.uint8).astype(np.int64)
    return x, y


def worker(rank, world, port, args, queue):
    # One thread everywhere, set before torch starts its pools.
    for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[v] = "1"
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(args.seed)
    layers, inp = [], 784
    for _ in range(args.depth):
        layers += [nn.Linear(inp, args.width), nn.ReLU()]
        inp = args.width
    layers.append(nn.Linear(inp, 10))
    model = nn.parallel.DistributedDataParallel(nn.Sequential(*layers))
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loss_fn = nn.CrossEntropyLoss()
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    xtr, ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(xte), torch.from_numpy(yte)
    n = xtr.shape[0]
    steps = n // args.batch
    per_rank = args.batch // world
    train_s, samples = 0.0, 0
    for epoch in range(args.epochs):
        g = torch.Generator()
        g.manual_seed(args.seed * 7777 + epoch)
        perm = torch.randperm(n, generator=g)
        model.train()
        dist.barrier()
        t0 = time.perf_counter()
        total = 0.0
        for k in range(steps):
            idx = perm[k * args.batch + rank * per_rank:k * args.batch + (rank + 1) * per_rank]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xtr[idx]), ytr[idx])
            loss.backward()
            opt.step()
            total += loss.item()
        dist.barrier()
        el = time.perf_counter() - t0
        train_s += el
        samples += steps * args.batch
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        if rank == 0:
            print(f"epoch {epoch + 1}: loss {total / steps:.4f} test accuracy {100 * acc:.2f}% "
                  f"({el:.1f} s, {steps * args.batch / el:.0f} samples/s)", flush=True)
    if rank == 0:
        print(f"RESULT samples_per_s={samples / train_s:.1f} test_accuracy={acc:.4f} ranks={world}",
              flush=True)
    dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torch(args):
    import torch.multiprocessing as mp
    mp.spawn(worker, args=(args.ranks, free_port(), args, None), nprocs=args.ranks, join=True)


def result_of(text):
    m = re.search(r"RESULT samples_per_s=([0-9.]+) test_accuracy=([0-9.]+)", text)
    if not m:
        raise RuntimeError("no RESULT line in:\n" + text[-2000:])
    return float(m.group(1)), float(m.group(2))


def compare(args):
    weft = args.compare
    common = ["--epochs", str(args.epochs), "--batch", str(args.batch), "--depth", str(args.depth),
              "--width", str(args.width), "--lr", str(args.lr), "--optimizer", args.optimizer,
              "--momentum", str(args.momentum), "--seed", str(args.seed)]
    weft_cmd = [weft, "run", "-n", str(args.ranks), "--", weft, "train", "--pp", "1", "--dp",
                str(args.ranks), "--quiet"] + common
    torch_cmd = ["/usr/bin/python3", os.path.abspath(__file__), "--ranks", str(args.ranks)] + common
    rows = {"weft": [], "torch": []}
    for rep in range(args.repeats):
        for name, cmd in (("weft", weft_cmd), ("torch", torch_cmd)):
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            if out.returncode != 0:
                sys.exit(f"{name} failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
            sps, acc = result_of(out.stdout)
            rows[name].append((sps, acc))
            print(f"repeat {rep + 1} {name:5s}: {sps:9.0f} samples/s, test accuracy {100 * acc:.2f}%",
                  flush=True)
    w = statistics.median(s for s, _ in rows["weft"])
    t = statistics.median(s for s, _ in rows["torch"])
    wa = statistics.median(a for _, a in rows["weft"])
    ta = statistics.median(a for _, a in rows["torch"])
    print(f"\nmedian of {args.repeats}: weft {w:.0f} samples/s, PyTorch DDP/Gloo {t:.0f} samples/s, "
          f"ratio {w / t:.2f}x; test accuracy weft {100 * wa:.2f}%, PyTorch {100 * ta:.2f}% "
          f"(difference {100 * (wa - ta):+.2f} points)")
    print("commands:\n  " + " ".join(weft_cmd) + "\n  " + " ".join(torch_cmd))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--optimizer", choices=["adam", "sgd"], default="adam")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--compare", metavar="WEFT_BINARY", help="compare with weft train")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.batch % args.ranks:
        sys.exit(f"--batch {args.batch} must be divisible by --ranks {args.ranks}")
    if args.compare:
        compare(args)
    else:
        run_torch(args)


if __name__ == "__main__":
    main()

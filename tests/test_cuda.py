"""GPU readiness: the same trainer on CUDA. Skipped where torch sees no CUDA device (CI, these CPUs).

Run on a GPU machine with `BENCH_DATA_DIR=... python -m pytest -m cuda tests/test_cuda.py`.
"""

import pytest
import torch

from bench.config import TrainConfig
from bench.train import train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (torch.cuda.is_available() is False)"),
]


def config(device: str, **overrides) -> TrainConfig:
    settings = dict(variant="lenet", dataset="mnist", epochs=2, max_train_samples=4000, seed=0, device=device)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_a_short_cuda_run_computes_in_native_bf16_and_lands_near_the_cpu_run():
    seen = {}

    class Probe:
        def on_train_start(self, info):
            seen["device"] = info.device
            seen["param_device"] = next(info.model.parameters()).device.type
            seen["dtype"] = info.compute_dtype
            # What the first layer really computes in during training (its output's dtype under autocast).
            first = next(m for m in info.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
            first.register_forward_hook(lambda module, args, out: seen.setdefault("computed", out.dtype))

    on_gpu = train(config("cuda"), [Probe()], progress=False)
    on_cpu = train(config("cpu"), progress=False)
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert seen["dtype"] == ("bfloat16" if native else "float32") and seen["param_device"] == "cuda"
    assert seen["computed"] == (torch.bfloat16 if native else torch.float32)
    assert seen["device"] == torch.cuda.get_device_name(0)
    # bf16 autocast and other kernels: not bit-identical, but the same model to within 2 points
    assert abs(on_gpu.final.val_acc - on_cpu.final.val_acc) < 0.02
    assert abs(on_gpu.test_acc - on_cpu.test_acc) < 0.02


def test_the_training_split_stays_resident_on_the_device():
    resident = {}

    class Memory:
        def on_epoch_end(self, metrics):
            resident[metrics.epoch] = torch.cuda.memory_allocated()

    result = train(config("cuda", epochs=3), [Memory()], progress=False)
    images = 4000 * 1 * 28 * 28 * 4  # bytes of the normalised float32 training split
    assert all(allocated >= images for allocated in resident.values()), resident
    assert result.history[-1].images_per_s > 0


def test_cuda_runs_repeat_with_the_same_seed():
    first = train(config("cuda", epochs=1), progress=False)
    second = train(config("cuda", epochs=1), progress=False)
    assert abs(first.final.val_acc - second.final.val_acc) <= 0.002  # cuDNN may pick other kernels


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_suite_workers_take_one_device_each(tmp_path):
    from bench import tracking
    from bench.suites import load_suite, run_suite_workers

    path = tmp_path / "two-gpus.toml"
    path.write_text(
        '[suite]\nname = "two-gpus"\ndataset = "mnist"\nseeds = [0, 1, 2, 3]\n'
        "[defaults]\nmax_train_samples = 4000\n[profiles.quick]\nepochs = 2\n[profiles.full]\nepochs = 2\n"
        '[[variants]]\nvariant = "lenet"\n'
    )
    outcome = run_suite_workers(load_suite(path), "quick", workers=2, log_models=False, echo=lambda _: None)
    children = tracking.child_runs(outcome.parent_run_id)
    by_pid = children.groupby("tags.bench.pid")["params.device"].agg(set)
    assert all(len(devices) == 1 for devices in by_pid), by_pid  # each worker stays on its own device
    assert len(by_pid) == 2 and set().union(*by_pid) == {"cuda:0", "cuda:1"}, by_pid  # and both devices worked
    # Each run measured its own device's GEMM rate and computed in its dtype there.
    assert set(children["tags.bench.compute_dtype"]) <= {"bfloat16", "float32"}

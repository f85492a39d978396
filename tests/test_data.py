import shutil

import pytest
import torch

import bench.data as data_module
from bench.data import DataError, dataset_info, load_dataset


@pytest.mark.parametrize(
    "name, train, test, classes",
    [("mnist", 60_000, 10_000, 10), ("fashion-mnist", 60_000, 10_000, 10), ("cifar2", 10_000, 2_000, 2), ("cifar10", 50_000, 10_000, 10)],
)
def test_real_datasets_have_their_published_sizes(name, train, test, classes):
    splits = load_dataset(name, val_fraction=0.1)
    shape = splits.info.shape
    assert len(splits.train) + len(splits.val) == train
    assert len(splits.val) == round(train * 0.1)
    assert len(splits.test) == test
    for split in (splits.train, splits.val, splits.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (shape.channels, shape.size, shape.size)
        assert split.labels.min() == 0 and split.labels.max() == classes - 1
    # CIFAR and Fashion-MNIST test splits are exactly balanced.
    if name != "mnist":
        assert torch.all(splits.test.labels.bincount() == test // classes)
    assert all(0.05 < m < 0.6 for m in splits.mean) and all(0.2 < s < 0.45 for s in splits.std)


def test_cifar2_is_airplane_and_bird_balanced():
    splits = load_dataset("cifar2", val_from_test=True)
    assert splits.info.classes == ("airplane", "bird")
    assert torch.equal(splits.train.labels.bincount(), torch.tensor([5000, 5000]))
    assert splits.val is splits.test
    assert "JPEG" in splits.source


def test_holdout_is_seeded_disjoint_and_normalisation_comes_from_train():
    a = load_dataset("mnist", seed=1)
    b = load_dataset("mnist", seed=1)
    c = load_dataset("mnist", seed=2)
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    train_rows = {bytes(img.numpy().tobytes()) for img in a.train.images[:2000]}
    assert not any(bytes(img.numpy().tobytes()) in train_rows for img in a.val.images[:2000])
    expected = a.train.images.double().mean().item() / 255
    assert a.mean[0] == pytest.approx(expected, rel=1e-9)


def test_max_train_samples_takes_a_seeded_subset():
    a = load_dataset("mnist", max_train_samples=500)
    b = load_dataset("mnist", max_train_samples=500)
    assert len(a.train) == 500 and len(a.val) == 6000
    assert torch.equal(a.train.labels, b.train.labels)


def test_second_load_reads_the_cache_not_the_files(monkeypatch):
    load_dataset("fashion-mnist")

    def must_not_decode(*args, **kwargs):
        raise AssertionError("decoded again although the cache was warm")

    monkeypatch.setattr(data_module, "_read_idx_pair", must_not_decode)
    assert len(load_dataset("fashion-mnist").test) == 10_000


def test_truncated_idx_file_is_named_and_nothing_is_cached(tmp_path, data_root, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_root / "MNIST" / "raw").iterdir():
        shutil.copy(f, raw / f.name)
    truncated = raw / "t10k-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: truncated or damaged IDX file: 5000 bytes"):
        load_dataset("mnist", tmp_path)
    assert not list(cache.glob("tensors/*"))


def test_offline_with_no_data_says_where_it_looked_and_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))

    def offline(info, downloads):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(data_module, "_download", offline)
    with pytest.raises(DataError) as err:
        load_dataset("cifar10", tmp_path / "empty")
    message = str(err.value)
    assert str(tmp_path / "empty") in message and "cifar-10-batches-py" in message
    assert "name resolution" in message and "BENCH_DATA_DIR" in message


def test_torchvision_download_is_used_when_no_root_has_the_files(tmp_path, data_root, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    monkeypatch.delenv("BENCH_DATA_DIR")
    calls = []

    def fake_download(info, downloads):  # what torchvision leaves behind: MNIST/raw/*-ubyte
        calls.append(downloads)
        shutil.copytree(data_root / "MNIST", downloads / "MNIST")

    monkeypatch.setattr(data_module, "_download", fake_download)
    assert len(load_dataset("mnist").test) == 10_000
    assert calls == [cache / "downloads"]
    assert len(load_dataset("mnist").test) == 10_000
    assert len(calls) == 1  # found in the download cache the second time


def test_image_folder_of_your_own(tmp_path, make_image_folder):
    root = make_image_folder(tmp_path / "pets")
    info = dataset_info(f"imagefolder:{root}")
    assert info.classes == ("cats", "dogs") and info.shape.size == 12 and info.shape.num_classes == 2
    splits = load_dataset(f"imagefolder:{root}", val_fraction=0.25)
    assert len(splits.train) == 9 and len(splits.val) == 3 and len(splits.test) == 6
    assert splits.test.labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_image_folder_with_mixed_sizes_is_resized(tmp_path, make_image_folder):
    from PIL import Image

    root = make_image_folder(tmp_path / "pets")
    Image.new("RGB", (20, 30)).save(root / "train" / "cats" / "000.png")
    info = dataset_info(f"imagefolder:{root}")
    assert info.shape.size == data_module.DEFAULT_FOLDER_SIZE
    assert load_dataset(f"imagefolder:{root}").train.images.shape[-2:] == (64, 64)


def test_corrupt_image_is_named_and_nothing_is_cached(tmp_path, make_image_folder, monkeypatch):
    root = make_image_folder(tmp_path / "pets")
    (root / "test" / "dogs" / "001.png").write_bytes(b"not a png at all")
    cache = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(cache))
    with pytest.raises(DataError, match=r"dogs/001.png: cannot decode image"):
        load_dataset(f"imagefolder:{root}")
    assert not list(cache.glob("tensors/*"))


def test_image_folder_needs_train_and_test(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="missing: test"):
        dataset_info(f"imagefolder:{tmp_path}")


def test_a_val_fraction_that_leaves_no_val_images_is_refused():
    with pytest.raises(DataError, match=r"val_fraction=1e-09 of 60,000 train images leaves 0 for val"):
        load_dataset("mnist", val_fraction=1e-9)

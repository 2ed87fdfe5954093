"""The data side: label mapping, discovery, the tf.data pipeline, the synthetic tree, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label, labels, trainId2label

from datasets import augment, options, pipeline, synthetic
from datasets import cityscapes as cs
from utils.labels import CLASS_NAMES, ID_TO_TRAIN_ID, NUM_CLASSES, TRAIN_ID_TO_ID


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------- label mapping


def test_id_to_train_id_matches_cityscapesscripts_for_every_id() -> None:
    lut = ID_TO_TRAIN_ID
    for label in labels:
        if label.id < 0:
            continue
        expected = label.trainId if 0 <= label.trainId <= 18 else 255
        assert lut[label.id] == expected, label.name
    # Values that are not Cityscapes ids map to ignore as well.
    assert (lut[max(id2label) + 1 :] == 255).all()


def test_train_id_to_id_matches_cityscapesscripts() -> None:
    lut = TRAIN_ID_TO_ID
    for train_id in range(19):
        assert lut[train_id] == trainId2label[train_id].id
    assert CLASS_NAMES[0] == "road" and CLASS_NAMES[18] == "bicycle"
    assert len(CLASS_NAMES) == NUM_CLASSES


def test_read_label_maps_ids_and_keeps_train_id_files(tmp_path: Path) -> None:
    ids = np.array([[7, 8, 0], [26, 33, 1]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a_gtFine_labelIds.png"), ids)
    np.testing.assert_array_equal(
        cs.read_label(tmp_path / "a_gtFine_labelIds.png"), [[0, 1, 255], [13, 18, 255]]
    )
    train = np.array([[0, 18, 255]], dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a_gtFine_labelTrainIds.png"), train)
    np.testing.assert_array_equal(cs.read_label(tmp_path / "a_gtFine_labelTrainIds.png"), train)


# ---------------------------------------------------------------------------- synthetic tree


def test_synthetic_tree_has_the_official_layout_and_formats(synthetic_root: Path) -> None:
    for split, n in (("train", 4), ("val", 3)):
        samples = cs.find_samples(synthetic_root, split)
        assert len(samples) == n
        for sample in samples:
            assert sample.image.name == f"{sample.name}_leftImg8bit.png"
            assert sample.label.name == f"{sample.name}_gtFine_labelIds.png"
            image, label = cs.load_pair(sample)  # the loader's own checks pass
            assert image.shape == (128, 256, 3) and image.dtype == np.uint8
            color = cv2.imread(str(sample.label).replace("labelIds", "color"), cv2.IMREAD_UNCHANGED)
            ids = cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)
            # The colour file uses the official palette of each label id (stored BGRA).
            for label_id in np.unique(ids):
                expected = id2label[int(label_id)].color
                pixel = color[ids == label_id][0]
                assert tuple(pixel[2::-1]) == expected and pixel[3] == 255
            instances = cv2.imread(str(sample.instance), cv2.IMREAD_UNCHANGED)
            assert instances.dtype == np.uint16
            # Instance classes are id*1000+k, the others their label id.
            np.testing.assert_array_equal(
                np.where(instances >= 1000, instances // 1000, instances), ids
            )
            assert (instances >= 1000).any()
            assert len(np.unique(label[label != 255])) >= 5


def test_synthetic_generation_is_repeatable(tmp_path: Path) -> None:
    a = synthetic.generate(tmp_path / "a", num=1, size=(64, 128), seed=5, splits=("val",))
    b = synthetic.generate(tmp_path / "b", num=1, size=(64, 128), seed=5, splits=("val",))
    name = "leftImg8bit/val/synthville/synthville_000000_000019_leftImg8bit.png"
    np.testing.assert_array_equal(cv2.imread(str(a / name)), cv2.imread(str(b / name)))


def test_coarse_split_is_added_with_c(synthetic_root: Path) -> None:
    fine = cs.find_samples(synthetic_root, "train")
    both = cs.find_samples(synthetic_root, "train", coarse=True)
    coarse = [s for s in both if "gtCoarse" in str(s.label)]
    assert len(both) == len(fine) + 2 and len(coarse) == 2
    assert all("train_extra" in str(s.image) for s in coarse)


def test_label_train_ids_files_are_preferred(tmp_path: Path, synthetic_root: Path) -> None:
    root = _copy_tree(synthetic_root, tmp_path / "cs")
    sample = cs.find_samples(root, "val")[0]
    train_ids = cs.read_label(sample)
    cv2.imwrite(str(sample.label).replace("labelIds", "labelTrainIds"), train_ids)
    again = cs.find_samples(root, "val")[0]
    assert again.train_ids and again.label.name.endswith("_labelTrainIds.png")
    np.testing.assert_array_equal(cs.read_label(again), train_ids)


# ---------------------------------------------------------------------------- pipeline


def test_training_pipeline_shapes_dtypes_and_ranges(synthetic_root: Path) -> None:
    samples = cs.find_samples(synthetic_root, "train")
    ds = pipeline.build_dataset(samples, batch_size=2, crop_size=(64, 96), training=True, seed=0)
    batches = list(ds)
    assert len(batches) == 2  # 4 images, drop_remainder when training
    for images, labels_ in batches:
        assert images.shape == (2, 64, 96, 3) and images.dtype.name == "uint8"
        assert labels_.shape == (2, 64, 96) and labels_.dtype.name == "uint8"
        values = np.unique(labels_.numpy())
        assert set(values.tolist()) <= set(range(19)) | {255}


def test_evaluation_pipeline_resizes_and_keeps_order(synthetic_root: Path) -> None:
    samples = cs.find_samples(synthetic_root, "val")
    ds = pipeline.build_dataset(samples, batch_size=2, crop_size=(64, 128), training=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [2, 1]  # nothing dropped
    first = cs.load_pair(samples[0])[1]
    expected = cv2.resize(first, (128, 64), interpolation=cv2.INTER_NEAREST_EXACT)
    np.testing.assert_array_equal(batches[0][1][0].numpy(), expected)


def test_pipeline_is_repeatable_with_a_seed(synthetic_root: Path) -> None:
    samples = cs.find_samples(synthetic_root, "train")

    def run(seed: int, epoch: int = 0) -> list[np.ndarray]:
        ds = pipeline.build_dataset(samples, 1, (64, 96), training=True, seed=seed, epoch=epoch)
        return [img.numpy() for img, _ in ds]

    a, b, c, d = run(7), run(7), run(8), run(7, epoch=1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert not all((x == y).all() for x, y in zip(a, c, strict=True))
    assert not all((x == y).all() for x, y in zip(a, d, strict=True))


def test_zoom_out_pads_labels_with_ignore() -> None:
    image = np.full((40, 80, 3), 200, np.uint8)
    label = np.full((40, 80), 3, np.uint8)
    rng = np.random.default_rng(0)
    img, lab = augment.scale_crop(image, label, (64, 128), 0.5, rng)
    assert img.shape == (64, 128, 3) and lab.shape == (64, 128)
    assert (lab == 3).sum() == 20 * 40 and (lab == 255).sum() == 64 * 128 - 800
    assert (img[lab == 255] == 0).all() and (img[lab == 3] == 200).all()


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_keeps_image_and_label_aligned(seed: int) -> None:
    # Each 16x16 block has a random class; its colour encodes that class.
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 19, size=(16, 32)).astype(np.uint8)
    label = np.kron(blocks, np.ones((16, 16), np.uint8))
    image = np.repeat((label * 12)[..., None], 3, axis=2)
    aug = augment.Augment(photometric=False)
    img, lab = augment.augment_pair(image, label, (128, 192), seed=seed, aug=aug)
    # Away from block borders (where bilinear filtering blends colours) every pixel's colour
    # must decode to its label exactly; a shift of even one pixel would break this.
    kernel = np.ones((3, 3), np.uint8)
    interior = (cv2.dilate(lab, kernel) == cv2.erode(lab, kernel)) & (lab != 255)
    interior[[0, -1], :] = interior[:, [0, -1]] = False  # blends with pixels outside the crop
    # OpenCV's fixed-point bilinear resize may round a uniform colour by one level, never by
    # the 12 levels that separate two classes.
    decoded = np.round(img[..., 0].astype(np.float32) / 12).astype(np.int32)
    assert interior.mean() > 0.3
    np.testing.assert_array_equal(decoded[interior], lab[interior].astype(np.int32))


def test_colour_jitter_changes_colours_not_geometry() -> None:
    ramp = np.tile(np.arange(256, dtype=np.uint8)[None, :, None], (8, 1, 3))  # a grey ramp
    matrix = augment.jitter_matrix(np.random.default_rng(1), augment.Augment())
    out = cv2.transform(ramp, matrix)
    assert out.shape == ramp.shape and out.dtype == np.uint8 and not (out == ramp).all()
    # Saturation mixing keeps grey grey; contrast and brightness keep the ramp's order.
    assert (np.abs(out[..., 0].astype(int) - out[..., 2]) <= 1).all()
    assert (np.diff(out[0, :, 0].astype(int)) >= 0).all()
    # Against the affine map computed in float64.
    expected = np.clip(
        ramp.astype(np.float64) @ matrix[:, :3].T.astype(np.float64) + matrix[:, 3], 0, 255
    )
    assert np.abs(out - np.round(expected)).max() <= 1


def test_saturation_jitter_mixes_towards_grey() -> None:
    aug = augment.Augment(brightness=0, contrast=0, saturation=0.5)
    rng = np.random.default_rng(0)
    matrix = augment.jitter_matrix(rng, aug)
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 200
    out = cv2.transform(red, matrix)[0, 0].astype(int)
    gain = float(matrix[0, 0] - matrix[1, 0])  # the saturation factor
    # Grey level of pure red is 0.299 * 200; each channel moves towards it by (1 - gain).
    grey = 0.299 * 200
    np.testing.assert_allclose(out, np.round(grey + gain * (np.array([200, 0, 0]) - grey)), atol=1)


@pytest.mark.parametrize("scale", [0.7, 1.6])
def test_flip_colour_and_label_mapping_commute_with_scale_crop(scale: float) -> None:
    # Applied on the source window (zoom in) or on the resized crop (zoom out), flip, colour
    # and label-id mapping give what applying them to the plain result gives.
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 34, size=(8, 16)).astype(np.uint8)
    label = np.kron(blocks, np.ones((16, 16), np.uint8))
    image = cv2.GaussianBlur(rng.integers(40, 200, (128, 256, 3)).astype(np.uint8), (9, 9), 3)
    matrix = np.array([[1.1, 0, 0, -5], [0, 0.9, 0, 8], [0, 0, 1.0, 3]], np.float32)
    lut = ID_TO_TRAIN_ID
    plain_img, plain_lab = augment.scale_crop(
        image, label, (96, 160), scale, np.random.default_rng(3)
    )
    img, lab = augment.scale_crop(
        image,
        label,
        (96, 160),
        scale,
        np.random.default_rng(3),
        flip=True,
        colour=matrix,
        label_lut=lut,
    )
    content = cv2.flip(plain_lab, 1) != 255
    expected_lab = np.where(content, lut[cv2.flip(plain_lab, 1)], 255)
    assert np.mean(lab == expected_lab) > 0.995  # nearest-neighbour ties may flip a pixel
    expected_img = cv2.transform(cv2.flip(plain_img, 1), matrix)
    inner = cv2.erode(content.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.abs(img.astype(int) - expected_img)[inner].max() <= 2
    assert (img[~content] == 0).all()  # padding stays black, unjittered


@pytest.mark.parametrize("scale", [0.6, 1.0, 1.5])  # zoom out, no resize, zoom in
def test_overwrite_gives_the_same_crop_and_plain_calls_leave_inputs_alone(scale: float) -> None:
    rng = np.random.default_rng(1)
    label = np.kron(rng.integers(0, 34, size=(8, 16)), np.ones((16, 16))).astype(np.uint8)
    image = rng.integers(0, 256, (128, 256, 3)).astype(np.uint8)
    options = {
        "flip": True,
        "colour": np.array([[1.1, 0, 0, -5], [0, 0.9, 0, 8], [0, 0, 1.0, 3]], np.float32),
        "label_lut": ID_TO_TRAIN_ID,
    }
    kept_image, kept_label = image.copy(), label.copy()
    plain = augment.scale_crop(image, label, (96, 160), scale, np.random.default_rng(5), **options)
    np.testing.assert_array_equal(image, kept_image)
    np.testing.assert_array_equal(label, kept_label)
    in_place = augment.scale_crop(
        image, label, (96, 160), scale, np.random.default_rng(5), overwrite=True, **options
    )
    for a, b in zip(plain, in_place, strict=True):
        np.testing.assert_array_equal(a, b)
        # 64-byte aligned and contiguous: TensorFlow takes the arrays without copying them.
        assert b.flags.c_contiguous and b.ctypes.data % 64 == 0


def test_label_ids_mapped_after_cropping_equal_mapped_first(synthetic_root: Path) -> None:
    sample = cs.find_samples(synthetic_root, "train")[0]
    image, ids = cs.load_pair(sample, map_ids=False)
    _, train = cs.load_pair(sample)
    for seed in range(4):
        a = augment.augment_pair(image, train, (96, 160), seed)
        b = augment.augment_pair(image, ids, (96, 160), seed, label_lut=ID_TO_TRAIN_ID)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_sharding_splits_files_without_overlap(synthetic_root: Path) -> None:
    samples = cs.find_samples(synthetic_root, "train", coarse=True)
    shards = [cs.shard_samples(samples, 3, i) for i in range(3)]
    names = [s.name for shard in shards for s in shard]
    assert sorted(names) == sorted(s.name for s in samples) and len(set(names)) == len(names)
    ds = pipeline.build_dataset(samples, 1, None, training=False, shard=(3, 1))
    assert sum(1 for _ in ds) == len(shards[1])
    with pytest.raises(ValueError, match="shard index"):
        cs.shard_samples(samples, 2, 2)


@pytest.mark.parametrize("cache", [False, True])
def test_workers_share_one_stream_in_blocks(synthetic_root: Path, cache: bool) -> None:
    """Two workers with blocks of 2 images: put back in block order, their images are the
    stream of one process (order, crops, augmentation), across a pass boundary and after skip."""
    samples = cs.find_samples(synthetic_root, "train")  # 4 files: 12 images = 3 passes

    def images(take: int, **kwargs) -> np.ndarray:
        ds = pipeline.build_dataset(
            samples, 1, (32, 64), training=True, seed=3, repeat=True, cache=cache, **kwargs
        )
        return np.stack([np.asarray(x) for x, _ in ds.take(take)])[:, 0]

    single = images(12)
    workers = [images(6, stream_shard=(2, k, 2)) for k in range(2)]
    rebuilt = np.concatenate([workers[k][i : i + 2] for i in range(0, 6, 2) for k in range(2)])
    np.testing.assert_array_equal(rebuilt, single)
    # skip counts the worker's own images: a resumed worker goes on where it stopped
    np.testing.assert_array_equal(images(2, stream_shard=(2, 1, 2), skip=4), workers[1][4:])
    with pytest.raises(ValueError, match="stream_shard must be"):
        pipeline.build_dataset(samples, 1, (32, 64), training=True, stream_shard=(2, 2, 1))


@pytest.mark.parametrize("kind", ["grey", "grey_alpha", "rgba", "rgb16", "jpeg"])
def test_read_image_gives_rgb_uint8_for_any_png_or_jpeg(tmp_path: Path, kind: str) -> None:
    from PIL import Image

    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[:, :5] = (200, 40, 10)
    path = tmp_path / ("x.jpg" if kind == "jpeg" else "x.png")
    if kind == "grey":
        Image.fromarray(rgb[..., 0]).save(path)
        expected = np.repeat(rgb[..., :1], 3, axis=2)
    elif kind == "grey_alpha":
        Image.fromarray(np.dstack([rgb[..., 0], np.full((6, 10), 99, np.uint8)]), "LA").save(path)
        expected = np.repeat(rgb[..., :1], 3, axis=2)
    elif kind == "rgba":
        Image.fromarray(np.dstack([rgb, np.full((6, 10), 7, np.uint8)])).save(path)
        expected = rgb
    elif kind == "rgb16":
        cv2.imwrite(str(path), rgb[..., ::-1].astype(np.uint16) * 257)  # OpenCV writes BGR
        expected = rgb
    else:
        Image.fromarray(rgb).save(path, quality=100)
        expected = rgb
    image = cs.read_image(path)
    assert image.shape == (6, 10, 3) and image.dtype == np.uint8
    if kind == "jpeg":  # lossy, and chroma subsampling blurs the edge: compare away from it
        image, expected = image[:, [0, 1, 8, 9]], expected[:, [0, 1, 8, 9]]
    assert np.abs(image.astype(int) - expected).max() <= (3 if kind == "jpeg" else 0)


def test_read_png_names_missing_truncated_and_non_png_files(tmp_path: Path) -> None:
    from utils.io import read_png

    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    np.testing.assert_array_equal(read_png(good), np.arange(64 * 64).reshape(64, 64))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_png = tmp_path / "text.png"
    not_png.write_text("hello")
    for path, reason in (
        (tmp_path / "missing.png", "No such file"),
        (truncated, "corrupt or truncated"),
        (not_png, "not a PNG"),
    ):
        with pytest.raises(ValueError, match=f"cannot read label '{path}'.*{reason}"):
            read_png(path, "label")


# ---------------------------------------------------------------------------- bad input


def test_no_path_and_no_environment_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    with pytest.raises(ValueError, match="CITYSCAPES_DATASET.*--synthetic"):
        options.resolve_root(None)


def test_environment_variable_is_used(
    monkeypatch: pytest.MonkeyPatch, synthetic_root: Path
) -> None:
    monkeypatch.setenv("CITYSCAPES_DATASET", str(synthetic_root))
    assert options.resolve_root(None) == synthetic_root


def test_missing_root_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        options.resolve_root(tmp_path / "nowhere")
    (tmp_path / "leftImg8bit").mkdir()
    with pytest.raises(ValueError, match="no gtFine folder"):
        options.resolve_root(tmp_path)


def test_empty_split(tmp_path: Path) -> None:
    for d in ("leftImg8bit/val", "gtFine/val"):
        (tmp_path / d).mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no .*leftImg8bit.png"):
        cs.find_samples(tmp_path, "val")
    with pytest.raises(ValueError, match="leftImg8bit/train' does not exist"):
        cs.find_samples(tmp_path, "train")


def test_image_without_label_and_label_without_image(tmp_path: Path, synthetic_root: Path) -> None:
    root = _copy_tree(synthetic_root, tmp_path / "a")
    sample = cs.find_samples(root, "val")[1]
    sample.label.unlink()
    with pytest.raises(ValueError, match=f"image .*{sample.name}_leftImg8bit.png' has no label"):
        cs.find_samples(root, "val")
    root = _copy_tree(synthetic_root, tmp_path / "b")
    sample = cs.find_samples(root, "val")[2]
    sample.image.unlink()
    with pytest.raises(
        ValueError, match=f"label .*{sample.name}_gtFine_labelIds.png' has no image"
    ):
        cs.find_samples(root, "val")


def test_corrupt_png_is_named_at_first_read(tmp_path: Path, synthetic_root: Path) -> None:
    root = _copy_tree(synthetic_root, tmp_path / "cs")
    sample = cs.find_samples(root, "val")[0]
    data = sample.image.read_bytes()
    sample.image.write_bytes(data[: len(data) // 3])  # truncated
    with pytest.raises(ValueError, match=sample.image.name):
        cs.load_pair(sample)
    ds = pipeline.build_dataset(cs.find_samples(root, "val"), 1, None, training=False)
    with pytest.raises(Exception, match=sample.image.name):
        list(ds)


@pytest.mark.parametrize(
    "training, crop, cache", [(False, None, False), (True, (64, 96), False), (True, (64, 96), True)]
)
def test_skip_bad_leaves_the_file_out(
    tmp_path: Path,
    synthetic_root: Path,
    caplog: pytest.LogCaptureFixture,
    training: bool,
    crop: tuple[int, int] | None,
    cache: bool,
) -> None:
    root = _copy_tree(synthetic_root, tmp_path / "cs")
    samples = cs.find_samples(root, "val")
    samples[1].label.write_bytes(b"not a png")
    ds = pipeline.build_dataset(
        samples, 1, crop, training=training, seed=0, cache=cache, skip_bad=True
    )
    with caplog.at_level("WARNING"):
        batches = list(ds)
    assert len(batches) == 2
    if crop is not None:
        assert all(images.shape == (1, *crop, 3) for images, _ in batches)
    assert samples[1].name in caplog.text


def test_label_with_ids_cityscapes_does_not_have(tmp_path: Path, synthetic_root: Path) -> None:
    root = _copy_tree(synthetic_root, tmp_path / "cs")
    sample = cs.find_samples(root, "val")[0]
    label = cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)
    label[0, 0] = 77
    cv2.imwrite(str(sample.label), label)
    with pytest.raises(ValueError, match=r"holds values \[77\]"):
        cs.read_label(sample)


def test_label_of_another_size(tmp_path: Path, synthetic_root: Path) -> None:
    root = _copy_tree(synthetic_root, tmp_path / "cs")
    sample = cs.find_samples(root, "val")[0]
    label = cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(sample.label), label[:64])
    with pytest.raises(ValueError, match="is 256x64 but its image is 256x128"):
        cs.load_pair(sample)


@pytest.mark.slow
def test_check_cli_bad_input_exits_2_with_one_line(
    tmp_path: Path, synthetic_root: Path, run_cli
) -> None:
    root = _copy_tree(synthetic_root, tmp_path / "cs")
    sample = cs.find_samples(root, "val")[2]
    sample.label.write_bytes(b"\x89PNG broken")
    result = run_cli("-m", "datasets.cityscapes", "-p", str(root), "--split", "val", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and sample.label.name in lines[0]
    ok = run_cli("-m", "datasets.cityscapes", "-p", str(synthetic_root), timeout=120)
    assert ok.returncode == 0 and "4 images read without error" in ok.stdout


def test_class_sets_against_the_label_table() -> None:
    from utils.labels import CLASS_SETS, get_class_set

    cs19, categories, rail = (CLASS_SETS[n] for n in ("cityscapes19", "categories", "rail20"))
    np.testing.assert_array_equal(cs19.from_label_ids, ID_TO_TRAIN_ID)
    assert categories.names == (
        "flat", "construction", "object", "nature", "sky", "human", "vehicle"
    )  # fmt: skip
    assert rail.num_classes == 20 and rail.names[19] == "rail track"
    for label in labels:
        if not 0 <= label.id < 256:
            continue
        scored = not label.ignoreInEval
        expected_train = label.trainId if scored else 255
        assert cs19.from_label_ids[label.id] == expected_train, label.name
        expected_category = categories.names.index(label.category) if scored else 255
        assert categories.from_label_ids[label.id] == expected_category, label.name
        expected_rail = 19 if label.name == "rail track" else expected_train
        assert rail.from_label_ids[label.id] == expected_rail, label.name
    # back to label ids: a class's first label (the official evaluation reads label ids)
    assert [id2label[i].name for i in cs19.to_label_ids] == list(cs19.names)
    assert id2label[int(rail.to_label_ids[19])].name == "rail track"
    assert [id2label[i].category for i in categories.to_label_ids] == list(categories.names)
    with pytest.raises(ValueError, match="unknown class set 'coco'; choose one of cityscapes19"):
        get_class_set("coco")

"""Produce mmsegmentation reference outputs for the Keras equivalence tests.

Run with the reference environment (see requirements-reference.txt)::

    .venv-ref/bin/python tests/reference/make_reference.py MODEL OUT_DIR \
        [--size H,W] [--seed N] [--threads N]

MODEL is one of the keys of ``MODEL_CONFIGS`` below. For that model this

1. builds the mmsegmentation 1.2.2 Cityscapes model from mmseg's own config
   file as shipped in the installed wheel (``mmseg/.mim/configs/...``), with
   every pretrained checkpoint reference removed (nothing is downloaded);
2. gives it seeded random weights: mmseg's own ``init_weights()``, then
   every batch-norm layer gets random running statistics
   (running_mean ~ N(0, 0.1), running_var ~ U(0.5, 2)) and a random affine
   part (weight ~ U(0.75, 1.25), bias ~ N(0, 0.1)), and every other bias
   (conv / linear) ~ N(0, 0.05), so that a converter that drops or swaps a
   BN buffer or a bias gives visibly different numbers; finally each
   conv/linear layer is rescaled by one positive factor so that its output
   has unit std on the reference input (``normalise_scales``: keeps every
   model's activations and logits O(1) instead of 1e-1 .. 1e8);
3. runs mmseg's own inference path in eval mode: the model's
   ``data_preprocessor`` (BGR->RGB, (x - mean) / std), then
   ``model.predict`` (``test_cfg.mode='whole'``: ``encode_decode`` resizes the
   decode head's output to the input size with the head's align_corners, then
   ``postprocess_result`` resizes to ``ori_shape`` with the segmentor's
   align_corners, an identity here since ori_shape == input size);
4. writes into OUT_DIR
   - ``MODEL.pth``: ``{'meta': {...}, 'state_dict': OrderedDict}`` via
     ``torch.save``, the layout of mmseg's published checkpoints;
   - ``MODEL_io.npz``: ``image`` (1, H, W, 3) uint8 RGB, ``input`` (1, H, W, 3)
     float32 after the preprocessor, ``mean``/``std`` (RGB order),
     ``bgr_to_rgb``, ``logits`` (1, H, W, 19) float32 = mmseg's
     ``seg_logits``, ``head_logits`` (1, h, w, 19) float32 = the final decode
     head's ``forward`` output at its own resolution, ``align_corners``
     (used for head -> input resize), ``postprocess_align_corners``,
     ``pred`` (1, H, W) int64 argmax, and ``seed``;
   - ``MODEL_keys.txt``: every state_dict key and its shape, one per line;
   - ``MODEL_summary.json``: config used, parameter count, decode-head output
     stride, strided convolutions and pooling layers, timing.

What is *not* reproduced: the dataset's test pipeline (``Resize`` to
2048x1024 keeping the ratio). The image is fed at its own size, as the
Keras side will be.

``SyncBN`` in the configs is reverted to ``BatchNorm2d`` after building
(``mmengine.model.revert_sync_batchnorm``, as for single-device use); in eval
mode both compute ``(x - running_mean) / sqrt(running_var + eps) * w + b`` and
the state_dict keys are the same.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections import OrderedDict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mmseg_env  # noqa: E402  (must come before any mmseg import)

mmseg_env.install_ext_stand_in()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

# Config files relative to the installed mmseg package's .mim/configs.
MODEL_CONFIGS: dict[str, str] = {
    "pidnet-s": "pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py",
    "pidnet-m": "pidnet/pidnet-m_2xb6-120k_1024x1024-cityscapes.py",
    "pidnet-l": "pidnet/pidnet-l_2xb6-120k_1024x1024-cityscapes.py",
    "ddrnet-23-slim": "ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py",
    "ddrnet-23": "ddrnet/ddrnet_23_in1k-pre_2xb6-120k_cityscapes-1024x1024.py",
    "bisenetv2": "bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py",
    "fastscnn": "fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py",
    "hrnet-w18-small-ocr": "ocrnet/ocrnet_hr18s_4xb2-160k_cityscapes-512x1024.py",
    "hrnet-w48-ocr": "ocrnet/ocrnet_hr48_4xb2-160k_cityscapes-512x1024.py",
}

# Noise from building the training losses; irrelevant at inference.
warnings.filterwarnings("ignore", message=".*build_loss.*would be deprecated")
warnings.filterwarnings("ignore", message=".*avg_non_ignore.*")

# The common base of BatchNorm1d/2d/3d, SyncBatchNorm and mmengine's
# _BatchNormXd (what revert_sync_batchnorm turns SyncBN into: it is *not* a
# BatchNorm2d subclass).
BN_TYPES = (nn.modules.batchnorm._BatchNorm,)


def config_root() -> Path:
    import mmseg

    root = Path(mmseg.__file__).resolve().parent / ".mim" / "configs"
    if not root.is_dir():
        raise FileNotFoundError(f"mmseg configs not shipped at {root}")
    return root


def _strip_pretrained(node) -> None:
    """Drop every `pretrained=` and every init_cfg that loads a checkpoint."""
    if isinstance(node, dict):
        if "pretrained" in node:
            node["pretrained"] = None
        init_cfg = node.get("init_cfg")
        if init_cfg is not None:
            cfgs = init_cfg if isinstance(init_cfg, list) else [init_cfg]
            if any(isinstance(c, dict) and c.get("type") == "Pretrained" for c in cfgs):
                node["init_cfg"] = None
        for value in node.values():
            _strip_pretrained(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _strip_pretrained(value)


def load_config(model_name: str):
    from mmengine.config import Config

    path = config_root() / MODEL_CONFIGS[model_name]
    cfg = Config.fromfile(str(path))
    # As mmseg.apis.init_model does, plus every nested Pretrained init_cfg.
    cfg.model.pretrained = None
    cfg.model.train_cfg = None
    _strip_pretrained(cfg.model)
    return cfg, path


def build_model(cfg, seed: int) -> nn.Module:
    from mmengine.model import revert_sync_batchnorm
    from mmseg.registry import MODELS

    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    model = revert_sync_batchnorm(model)
    randomise(model, seed)
    model.eval()
    return model


@torch.no_grad()
def randomise(model: nn.Module, seed: int) -> int:
    """Random BN statistics/affine and random non-BN biases (seeded).

    Returns the number of batch-norm layers randomised.
    """
    gen = torch.Generator().manual_seed(seed + 1)
    bn_params: set[int] = set()
    n_bn = 0
    for module in model.modules():
        if isinstance(module, BN_TYPES):
            n_bn += 1
            n = module.num_features
            if module.track_running_stats:
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
            if module.affine:
                module.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                bn_params.update((id(module.weight), id(module.bias)))
    for name, param in model.named_parameters():
        if name.endswith("bias") and id(param) not in bn_params:
            param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    n_stats = sum(1 for k in model.state_dict() if k.endswith("running_var"))
    if n_bn != n_stats:
        raise AssertionError(f"randomised {n_bn} BN layers but the state_dict has {n_stats}")
    return n_bn


@torch.no_grad()
def normalise_scales(model: nn.Module, inputs: torch.Tensor) -> int:
    """Rescale each conv/linear so that its output has unit std on `inputs`.

    mmseg's own initialisations leave the random networks at very different
    scales (logits ~1e-1 for BiSeNetV2/Fast-SCNN, ~1e8 for HRNet-W48). One
    forward pass with hooks fixes that: when a layer runs for the first time
    its output's std s is measured, its weight and bias are divided by s and
    the hook hands the divided output on, which is exactly what the layer
    with the new weights computes (it is linear), so every later layer is
    measured on the already-rescaled network. Weights stay random; only one
    positive factor per layer changes. Returns the number of layers rescaled.
    """
    done: set[int] = set()

    def hook(module, args, output):
        if id(module) in done or not isinstance(output, torch.Tensor):
            return None
        done.add(id(module))
        std = float(output.float().std()) if output.numel() > 1 else 0.0
        if not np.isfinite(std) or std < 1e-12:
            return None
        module.weight.div_(std)
        if module.bias is not None:
            module.bias.div_(std)
        return output / std

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    ]
    try:
        model.extract_feat(inputs)
        head_forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return len(done)


def make_image(size: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth street-like RGB picture plus noise, (1, H, W, 3) uint8."""
    h, w = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = yy / max(h - 1, 1), xx / max(w - 1, 1)
    img = np.zeros((h, w, 3), np.float32)
    horizon = 0.45 + 0.05 * np.sin(2 * np.pi * x)
    sky = y < horizon
    img[sky] = np.stack([110 + 60 * y, 150 + 50 * y, 220 - 20 * y], -1)[sky]
    # Buildings: blocks of random height and colour along the horizon.
    edges = np.sort(rng.uniform(0, 1, size=7))
    edges = np.concatenate([[0.0], edges, [1.0]])
    for left, right in zip(edges[:-1], edges[1:], strict=True):
        top = rng.uniform(0.1, 0.4)
        colour = rng.uniform(60, 200, size=3)
        block = (x >= left) & (x < right) & (y >= top) & sky
        img[block] = colour * (0.8 + 0.2 * np.cos(6 * np.pi * y[block]))[:, None]
    # Road: a grey trapezoid widening towards the bottom, lane marking.
    road = ~sky
    img[road] = np.stack([90 + 40 * y, 90 + 40 * y, 95 + 40 * y], -1)[road]
    lane = road & (np.abs(x - 0.5) < 0.01 + 0.02 * (y - horizon).clip(0))
    img[lane] = 235
    sidewalk = road & (np.abs(x - 0.5) > 0.15 + 0.6 * (y - horizon).clip(0))
    img[sidewalk] = np.array([170.0, 150.0, 140.0])
    img += rng.normal(0, 8, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)[None]


def final_head(model):
    head = model.decode_head
    return head[-1] if isinstance(head, nn.ModuleList) else head


@torch.no_grad()
def head_forward(model, inputs: torch.Tensor) -> torch.Tensor:
    """The last decode head's forward output, as encode_decode computes it."""
    x = model.extract_feat(inputs)
    if isinstance(model.decode_head, nn.ModuleList):  # CascadeEncoderDecoder
        out = model.decode_head[0].forward(x)
        for i in range(1, len(model.decode_head)):
            out = model.decode_head[i].forward(x, out)
        return out
    return model.decode_head.forward(x)


def describe_layers(model: nn.Module) -> dict:
    """Strided convolutions and pooling layers, for the converter's author."""
    convs, pools = [], []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and max(m.stride) > 1:
            convs.append(
                {
                    "module": name,
                    "kernel": list(m.kernel_size),
                    "stride": list(m.stride),
                    "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
                    "groups": m.groups,
                    "in": m.in_channels,
                    "out": m.out_channels,
                }
            )
        elif isinstance(m, (nn.AvgPool2d, nn.MaxPool2d)):
            entry = {
                "module": name,
                "type": type(m).__name__,
                "kernel": m.kernel_size,
                "stride": m.stride,
                "padding": m.padding,
                "ceil_mode": m.ceil_mode,
            }
            if isinstance(m, nn.AvgPool2d):
                entry["count_include_pad"] = m.count_include_pad
            pools.append(entry)
        elif isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            pools.append({"module": name, "type": type(m).__name__, "output_size": m.output_size})
    return {"strided_convs": convs, "pools": pools}


def run(model_name: str, out_dir: Path, size: tuple[int, int], seed: int) -> dict:
    import logging

    import mmcv
    import mmengine
    import mmseg
    from mmengine.logging import MMLogger
    from mmseg.datasets import CityscapesDataset
    from mmseg.structures import SegDataSample

    t0 = time.perf_counter()
    mmseg_env.register_mmseg()
    # init_weights() logs one INFO record per parameter; keep warnings only.
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    cfg, cfg_path = load_config(model_name)
    model = build_model(cfg, seed)
    t_build = time.perf_counter() - t0

    h, w = size
    image = make_image(size, seed)
    preproc = model.data_preprocessor
    bgr_to_rgb = bool(preproc.channel_conversion)
    # mmseg's LoadImageFromFile yields BGR (cv2) and the preprocessor flips
    # it when bgr_to_rgb=True; hand it BGR so that the model sees RGB.
    chw = torch.from_numpy(np.ascontiguousarray(image[0].transpose(2, 0, 1)))
    if bgr_to_rgb:
        chw = chw[[2, 1, 0]]
    meta = {"ori_shape": (h, w), "img_shape": (h, w), "pad_shape": (h, w)}
    data = {"inputs": [chw], "data_samples": [SegDataSample(metainfo=meta)]}

    t1 = time.perf_counter()
    with torch.no_grad():
        batch = preproc(data, False)
        inputs = batch["inputs"]
        n_rescaled = normalise_scales(model, inputs)
        samples = model.predict(inputs, batch["data_samples"])
        logits = samples[0].seg_logits.data[None]
        head = head_forward(model, inputs)
        # Cross-check: the two mmseg entry points and our head replay agree.
        enc = model.encode_decode(inputs, [s.metainfo for s in batch["data_samples"]])
    t_infer = time.perf_counter() - t1
    head_module = final_head(model)
    resized = torch.nn.functional.interpolate(
        head, size=(h, w), mode="bilinear", align_corners=head_module.align_corners
    )
    if not torch.equal(enc, logits) or not torch.equal(resized, logits):
        raise AssertionError(f"{model_name}: inference paths disagree")

    mean = (preproc.mean.flatten() if preproc._enable_normalize else torch.zeros(3)).numpy()
    std = (preproc.std.flatten() if preproc._enable_normalize else torch.ones(3)).numpy()

    out_dir.mkdir(parents=True, exist_ok=True)
    state_dict = OrderedDict((k, v.detach().cpu().clone()) for k, v in model.state_dict().items())
    checkpoint = {
        "meta": {
            "mmseg_version": str(mmseg.__version__),
            "mmcv_version": str(mmcv.__version__),
            "mmengine_version": str(mmengine.__version__),
            "torch_version": str(torch.__version__),
            "config": cfg.pretty_text,
            "config_file": str(cfg_path.relative_to(config_root())),
            "seed": seed,
            "weights": "random (make_reference.py), randomised BN statistics",
            "dataset_meta": dict(CityscapesDataset.METAINFO),
        },
        "state_dict": state_dict,
    }
    torch.save(checkpoint, out_dir / f"{model_name}.pth")

    def nhwc(t: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(t.permute(0, 2, 3, 1).numpy().astype(np.float32))

    np.savez(
        out_dir / f"{model_name}_io.npz",
        image=image,
        input=nhwc(inputs),
        mean=mean.astype(np.float32),
        std=std.astype(np.float32),
        bgr_to_rgb=np.bool_(bgr_to_rgb),
        logits=nhwc(logits),
        head_logits=nhwc(head),
        align_corners=np.bool_(head_module.align_corners),
        postprocess_align_corners=np.bool_(model.align_corners),
        pred=samples[0].pred_sem_seg.data.numpy().astype(np.int64),
        seed=np.int64(seed),
    )
    with open(out_dir / f"{model_name}_keys.txt", "w") as fh:
        for key, value in state_dict.items():
            fh.write(f"{key} {list(value.shape)}\n")

    n_params = sum(p.numel() for p in model.parameters())
    summary = {
        "model": model_name,
        "config_file": str(cfg_path.relative_to(config_root())),
        "segmentor": type(model).__name__,
        "backbone": type(model.backbone).__name__,
        "decode_head": type(head_module).__name__,
        "num_params": n_params,
        "num_state_dict_keys": len(state_dict),
        "layers_rescaled": n_rescaled,
        "input_size": [h, w],
        "head_logits_size": list(head.shape[2:]),
        "head_output_stride": [h / head.shape[2], w / head.shape[3]],
        "align_corners": bool(head_module.align_corners),
        "postprocess_align_corners": bool(model.align_corners),
        "backbone_align_corners": getattr(model.backbone, "align_corners", None),
        "mean": mean.tolist(),
        "std": std.tolist(),
        "bgr_to_rgb": bgr_to_rgb,
        "logits_absmax": float(logits.abs().max()),
        "logits_std": float(logits.std()),
        "build_s": round(t_build, 3),
        "infer_s": round(t_infer, 3),
        **describe_layers(model),
    }
    with open(out_dir / f"{model_name}_summary.json", "w") as fh:
        json.dump(summary, fh, indent=1)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", choices=sorted(MODEL_CONFIGS))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--size", default="128,256", help="H,W (default 128,256)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("REF_THREADS", "1")), help="torch threads"
    )
    args = parser.parse_args(argv)
    size = tuple(int(v) for v in args.size.split(","))
    if len(size) != 2:
        parser.error("--size must be H,W")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    summary = run(args.model, args.out_dir, size, args.seed)
    print(
        f"{args.model}: {summary['config_file']} params={summary['num_params']} "
        f"head {summary['head_logits_size']} (stride {summary['head_output_stride']}) "
        f"align_corners={summary['align_corners']} |logits|max={summary['logits_absmax']:.3g} "
        f"total {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

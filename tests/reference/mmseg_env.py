"""Make mmsegmentation 1.2.2 importable on top of mmcv-lite (no compiled ops).

Import this module before anything from ``mmseg`` (tests/reference is not a
package: put this folder on sys.path, as make_reference.py does)::

    import mmseg_env  # registers the stand-in on import

    mmseg_env.register_mmseg()  # mmseg.utils.register_all_modules()
    from mmseg.registry import MODELS

Why this is needed
------------------
mmcv comes in two flavours: ``mmcv`` (with the C++/CUDA extension
``mmcv/_ext*.so``) and ``mmcv-lite`` (pure Python, no extension). Only the
lite one installs from PyPI without a compiler and a matching CUDA toolkit, so
the reference environment uses it.

mmsegmentation, however, imports ``mmcv.ops`` at import time of some of its
*always imported* modules: ``mmseg/utils/mask_classification.py`` (pulled in
by ``mmseg.utils``), ``mmseg/models/utils/point_sample.py``,
``mmseg/models/decode_heads/san_head.py`` and
``mmseg/models/losses/focal_loss.py``. ``mmcv/ops/__init__.py`` imports about
fifty op modules, and each one calls
``mmcv.utils.ext_loader.load_ext('_ext', [names...])`` at module level. That
function does ``importlib.import_module('mmcv._ext')`` and then asserts
``hasattr(ext, name)`` for every listed kernel name. With mmcv-lite the
import fails with ``ModuleNotFoundError: No module named 'mmcv._ext'`` and so
does ``import mmseg.utils``.

None of the models we compare against (PIDNet, DDRNet, BiSeNetV2, Fast-SCNN,
HRNet+OCR) calls a compiled op at inference: they are built from plain
``torch.nn`` layers (mmcv.cnn.ConvModule etc. are pure Python). So it is
enough to let the *imports* succeed. We put a stand-in module object into
``sys.modules['mmcv._ext']`` before ``mmcv.ops`` is first imported:

* ``importlib.import_module('mmcv._ext')`` finds it in ``sys.modules`` and
  returns it without looking for a file;
* its module-level ``__getattr__`` answers every kernel name with a stub, so
  the ``hasattr`` asserts in ``load_ext`` pass;
* the stub raises ``NotImplementedError`` when *called*, so if a reference
  model ever did reach a compiled kernel, the run fails loudly instead of
  producing numbers from a fake op.

Dunder names (``__path__``, ``__file__``, ``__spec__`` ...) are *not*
answered, so the import system keeps treating the stand-in as a plain,
non-package module. ``mmcv.ops.point_sample`` (used by mask_classification)
is pure PyTorch (``F.grid_sample``) and keeps working for real.

Nothing is written to disk and the installed packages are left unchanged; the
stand-in only lives in this interpreter.
"""

from __future__ import annotations

import sys
import types

_EXT_NAME = "mmcv._ext"


class _MissingKernel:
    """Callable placeholder for one compiled mmcv kernel."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __call__(self, *args, **kwargs):
        raise NotImplementedError(
            f"mmcv._ext.{self.__name__} is a stand-in (mmcv-lite has no compiled ops); "
            "the reference models must not call compiled mmcv ops"
        )

    def __repr__(self) -> str:
        return f"<mmcv._ext stand-in kernel {self.__name__}>"


class _StandInExt(types.ModuleType):
    """Module object whose every non-dunder attribute is a ``_MissingKernel``."""

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        kernel = _MissingKernel(name)
        setattr(self, name, kernel)
        return kernel


def install_ext_stand_in() -> None:
    """Register the stand-in ``mmcv._ext`` unless a real (or our) one is present."""
    if _EXT_NAME in sys.modules:
        return
    import importlib.machinery
    import importlib.util

    import mmcv  # the package itself has no compiled parts

    if importlib.util.find_spec(_EXT_NAME) is not None:
        return  # full mmcv with real ops: use those
    stand_in = _StandInExt(
        _EXT_NAME, "stand-in for mmcv's compiled ops (see tests/reference/mmseg_env.py)"
    )
    # A spec keeps importlib.util.find_spec('mmcv._ext') from raising on a
    # sys.modules entry without one; loader=None: nothing to load from disk.
    stand_in.__spec__ = importlib.machinery.ModuleSpec(_EXT_NAME, None, origin="stand-in")
    sys.modules[_EXT_NAME] = stand_in
    mmcv._ext = stand_in  # what `from mmcv import _ext` would bind


def register_mmseg() -> None:
    """Install the stand-in, then register mmseg's modules in the mmengine registries."""
    install_ext_stand_in()
    import mmseg.utils

    mmseg.utils.register_all_modules(init_default_scope=True)


install_ext_stand_in()

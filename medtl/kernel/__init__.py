"""The kernel: what every layer of medtl may import, and which imports no other layer.

* :mod:`medtl.kernel.errors`: the error contract (``MedtlError``, ``InputError(path,
  reason, fix)``, ``ConfigError``) and the ``Rejection`` record of a set-aside input;
* :mod:`medtl.kernel.files`: atomic writes, so that no partial output looks complete;
* :mod:`medtl.kernel.device`: the device decision, autocast, the ``channels_last_3d``
  layout and out-of-memory errors that name the setting to lower.

The layers above it are written down once, in ``tests/test_layers.py`` (and drawn in
``docs/architecture.md``).
"""

"""Restora's engine: face detection, alignment, restoration and paste-back over onnxruntime.

No Qt here (enforced by import-linter). The public API:

- ``engine.imageio``: ``load_image``, ``save_image``, ``Image``
- ``engine.pipeline``: ``EnhanceSettings``, ``Enhancer``, ``compose``, ``CancelToken``
- ``engine.batch``: ``collect_inputs``, ``BatchOptions``, ``run_batch``
- ``engine.models``: ``ModelStore``, ``ModelSpec``
- ``engine.cli``: ``main(argv, env) -> ExitStatus``
"""

__version__ = "0.1.0"

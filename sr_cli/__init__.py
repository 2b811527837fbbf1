"""srx: one-step diffusion super-resolution (``srx`` on the command line).

Python API::

    from sr_cli import load_model
    model = load_model("osediff")          # or a saved-model directory
    sr = model.upscale(pil_image)          # PIL in, PIL out (x4 by default)

Heavy imports (torch, diffusers) happen on first use so that ``srx --help`` stays quick.
"""

__version__ = "0.1.0"

__all__ = ["load_model", "UpscaleOptions", "__version__"]


def __getattr__(name):
    if name == "load_model":
        from .models.loading import load_model

        return load_model
    if name == "UpscaleOptions":
        from .engine.pipeline import UpscaleOptions

        return UpscaleOptions
    raise AttributeError(name)

"""Data shipped with fitplan: model presets (Hugging Face config.json files), GPU specs, sweeps,
calibration and published reference measurements. Installed as the package ``fitplan.data``."""

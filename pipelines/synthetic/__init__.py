"""Synthetic raw deliveries for all sources, shaped by published Dutch statistics.

`generate` writes one delivery per source (data file + manifest.json) exactly per
pipelines.contract; `write_manifest` writes a valid manifest for any data file.
"""

from .delivery import DEFAULT_FORMATS, SUPPLIER_OINS, write_manifest
from .population import build_population, generate

__all__ = ["DEFAULT_FORMATS", "SUPPLIER_OINS", "build_population", "generate", "write_manifest"]

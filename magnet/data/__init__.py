"""Data: the manifest CSV (the one input format), Camelyon16/17 adapters and split protocols.

Kept import-light on purpose (``magnet.config_io`` imports ``magnet.atomic``); import the submodules
``magnet.data.manifest`` and ``magnet.data.camelyon`` directly.
"""

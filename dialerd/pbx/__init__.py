"""PBX adapters behind one port (:mod:`dialerd.ports`); build one with :func:`factory.build_pbx`.

The adapters themselves (``ari``, ``ami``, ``fake``) are imported where used, so importing the port
never loads aiohttp or panoramisk.
"""

"""PBX adapters behind one port (:mod:`dialerd.ports`); the composition root builds one (``daemon.build_pbx``).

The adapters themselves (``ari``, ``ami``, ``fake``) are imported where used, so importing the port
never loads aiohttp or panoramisk.
"""

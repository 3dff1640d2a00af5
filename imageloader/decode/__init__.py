"""Decoding: worker-side pure functions (codecs, colour, LUTs) and the DecodePool.

Everything here except :mod:`.pool` runs in worker processes: it imports only
numpy, pydicom and codec packages, never the loader or asyncio machinery.
"""

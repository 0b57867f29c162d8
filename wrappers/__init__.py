"""Gymnasium / PettingZoo wrappers and SB3 replay buffers (installed as ``diffgym.wrappers``)."""
